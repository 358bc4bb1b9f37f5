"""Applications built from the library: commands that compose evaluation, runs and reports."""
