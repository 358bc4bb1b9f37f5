"""Worlds: what a run generates, its prompts and how its samples are judged (one module per kind)."""
