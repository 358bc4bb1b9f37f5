"""Non-finite losses: skip the step on every rank together, count it, and stop with a checkpoint when they
keep coming."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from rtdmd.errors import UserError


class NonFiniteGuard:
    def __init__(self, dist, patience: int = 20):
        self.dist, self.patience = dist, patience
        self.skipped = 0
        self.consecutive = 0

    def finite(self, value: Tensor) -> bool:
        """True when ``value`` is finite everywhere on every rank (a collective: call it on all ranks)."""
        bad = torch.tensor([0.0 if bool(torch.isfinite(value.detach()).all()) else 1.0], device=value.device)
        return self.dist.all_reduce_sum(bad).item() == 0

    def skip(self) -> None:
        self.skipped += 1
        self.consecutive += 1

    def backward(self, loss: Tensor) -> bool:
        """Back-propagate ``loss`` if it is finite on every rank; otherwise count a skipped step."""
        if not self.finite(loss):
            self.skip()
            return False
        self.consecutive = 0
        loss.backward()
        return True

    def check(self, save: Callable[[], None]) -> None:
        """After ``patience`` consecutive skipped steps: write a checkpoint and stop with a clear message."""
        if self.consecutive >= self.patience:
            save()
            raise UserError(f"{self.consecutive} consecutive steps produced a NaN or infinite loss or reward; a "
                            f"checkpoint was written. Lower the learning rates or check the rewards, then --resume")
