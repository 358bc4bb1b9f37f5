"""Worlds: what to generate (prompt sets, and for synthetic worlds the target distribution and evaluation)."""
