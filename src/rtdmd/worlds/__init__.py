"""Worlds: what to generate (prompts, the teacher's distribution) and how to judge it."""
