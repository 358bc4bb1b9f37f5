"""Reports of finished runs: plots and tables (matplotlib with the Agg backend, no display needed)."""
