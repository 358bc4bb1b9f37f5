"""Metrics of every step to ``RUN/metrics.jsonl``, and to TensorBoard or Weights & Biases when asked for and
installed. Only rank 0 writes."""

from __future__ import annotations

import json
import math
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from rtdmd.errors import UserError
from rtdmd.train.checkpoint import write_atomic


def progress(iterable, desc: str, enabled: bool, **kwargs):
    """A tqdm bar; redirected to a file it refreshes every 30 s instead of many times a second."""
    interval = 0.1 if sys.stderr.isatty() else 30.0
    return tqdm(iterable, desc=desc, disable=not enabled, mininterval=interval, **kwargs)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLogger:
    def __init__(self, run_dir: Path, stage: str, *, enabled: bool = True, resume_step: int | None = None,
                 tensorboard: bool = False, wandb: bool = False, wandb_project: str = "rtdmd",
                 config: Mapping[str, Any] | None = None):
        self.stage, self.enabled = stage, enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self._tb = self._wandb = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            # Drop records of the steps after the checkpoint we resume from (they are recomputed; those of its own
            # step stay: that step is in the checkpoint), and a last line cut short by a kill.
            records = [(line, _parse(line)) for line in self.path.read_text(encoding="utf-8").splitlines()]
            kept = [line for line, record in records
                    if record is not None and not (record.get("stage") == stage and record.get("step", -1) > resume_step)]
            write_atomic(self.path, "".join(line + "\n" for line in kept).encode("utf-8"))
        # A fresh start replaces the log of a run that stopped before its first checkpoint (no steps twice).
        self._file = open(self.path, "a" if resume_step is not None else "w", encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except ImportError:
                warnings.warn("run.tensorboard is on but tensorboard is not installed: pip install tensorboard", stacklevel=2)
        if wandb:
            try:
                import wandb as wandb_module

                self._wandb = wandb_module.init(project=wandb_project, dir=str(run_dir), config=dict(config or {}),
                                                resume="allow", name=Path(run_dir).name)
            except ImportError:
                warnings.warn("run.wandb is on but wandb is not installed: pip install wandb", stacklevel=2)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"stage": self.stage, "step": step, **{k: _plain(v) for k, v in metrics.items()}}
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except OSError as err:
            raise UserError(f"cannot write {self.path} ({err.strerror}): free space, then continue with --resume "
                            "(from the last checkpoint)") from None
        numeric = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        if self._tb is not None:
            for key, value in numeric.items():
                self._tb.add_scalar(f"{self.stage}/{key}", value, step)
        if self._wandb is not None:
            self._wandb.log({f"{self.stage}/{k}": v for k, v in numeric.items()}, step=step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _parse(line: str) -> dict[str, Any] | None:
    """One record, or None for a blank or damaged line (e.g. the last one, cut short when a run was killed)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def read_metrics(run_dir: Path, stage: str | None = None) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    records = [r for r in map(_parse, path.read_text(encoding="utf-8").splitlines()) if r is not None]
    return [r for r in records if stage is None or r.get("stage") == stage]
