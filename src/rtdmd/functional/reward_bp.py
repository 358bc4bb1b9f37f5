"""Losses of the deterministic final step: direct reward back-propagation (spec 5.6)."""

from __future__ import annotations

from torch import Tensor


def reward_bp_loss_paper(reward_sum: Tensor, margin: float = 3.0) -> Tensor:
    """Published hinge ``max(0, margin - sum_j r_j)`` per sample (plain reward ascent while it does not bind)."""
    return (margin - reward_sum.float()).clamp_min(0.0)


def reward_bp_loss_exact(reward_sum: Tensor, beta: float) -> Tensor:
    """``-r / beta`` per sample: its gradient is ``-grad r / beta``, the pathwise term of ``grad E[r] / beta``."""
    return -reward_sum.float() / beta
