"""Studies that decide the paper's claims with seeds (``python -m studies.claims``); not part of the library."""
