"""Non-finite losses and rewards: skip the update on every rank together, count it, and stop with a checkpoint
when they keep coming (``run.nonfinite_patience`` consecutive skips of the same update)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from rtdmd.errors import UserError


class NonFiniteGuard:
    """``skipped``: updates skipped so far (saved in checkpoints, logged as ``skipped_steps``);
    ``consecutive[what]``: skips in a row of one update (``"fake loss"``, ``"generator loss"``, ``"reward"``),
    so that a generator loss that is always NaN stops the run even when the fake loss is fine."""

    def __init__(self, dist, patience: int = 20):
        self.dist, self.patience = dist, patience
        self.skipped = 0
        self.consecutive: dict[str, int] = {}

    def finite(self, value: Tensor) -> bool:
        """True when ``value`` is finite everywhere on every rank (a collective: call it on all ranks)."""
        bad = torch.tensor([0.0 if bool(torch.isfinite(value.detach()).all()) else 1.0], device=value.device)
        return self.dist.all_reduce_sum(bad).item() == 0

    def record(self, what: str, ok: bool) -> bool:
        """Count a skipped (``ok`` false) or a completed update of ``what``; returns ``ok``."""
        if ok:
            self.consecutive[what] = 0
        else:
            self.skipped += 1
            self.consecutive[what] = self.consecutive.get(what, 0) + 1
        return ok

    def check(self, save: Callable[[], None]) -> None:
        """After ``patience`` consecutive skips of one update: write a checkpoint and stop with a clear message."""
        what, count = max(self.consecutive.items(), key=lambda item: item[1], default=("update", 0))
        if count >= self.patience:
            save()
            raise UserError(f"{count} consecutive steps had a NaN or infinite {what} (run.nonfinite_patience="
                            f"{self.patience}); a checkpoint was written. Lower the learning rates or check the "
                            f"rewards and inputs, then --resume")
