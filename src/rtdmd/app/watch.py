"""Watching for reward hacking during stage 2: the held-out signal next to the training rewards.

At every evaluation ``i`` (step ``e_i``) the watch records the held-out signal ``h_i`` (e.g. the oracle's
accuracy on held-out prompts, which training never sees) and the training reward ``R_i``, the mean of the
weighted training reward logged over the iterations ``(e_{i-1}, e_i]`` (the rollouts' own rewards: an
average over an interval, because one iteration's reward is noisy).

The rule (:func:`hacking_warning`): take the last ``window`` evaluations that have a training reward and fit a
least-squares line to ``R`` and one to ``h`` against the step. Over the steps those evaluations span, the fitted
changes are ``dR = slope_R * span`` and ``dh = slope_h * span``. Warn when ``dR > min_rise`` (the training
reward rose) and ``dh < -min_drop`` (the held-out signal fell by more than ``min_drop``). Fitted lines rather
than end points, so that one noisy evaluation neither raises nor hides a warning.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from rtdmd.train.logging import read_metrics


@dataclass(frozen=True)
class HackingRule:
    window: int = 4  # evaluations (with a training reward) in the fit
    min_drop: float = 0.03  # fitted fall of the held-out signal over the window that triggers a warning
    min_rise: float = 0.0  # fitted rise of the training reward over the window that must accompany it

    def __post_init__(self):
        if self.window < 2:
            raise ValueError(f"window must be >= 2 evaluations, got {self.window}")


def fitted_change(steps: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` against ``steps``, times the span of ``steps``."""
    n = len(steps)
    mx, my = sum(steps) / n, sum(values) / n
    sxx = sum((x - mx) ** 2 for x in steps)
    if sxx == 0:
        return 0.0
    slope = sum((x - mx) * (y - my) for x, y in zip(steps, values)) / sxx
    return slope * (max(steps) - min(steps))


def hacking_warning(steps: Sequence[int], train_reward: Sequence[float | None], held_out: Sequence[float],
                    rule: HackingRule = HackingRule(), signal: str = "held-out signal") -> str | None:
    """The rule of the module docstring on the evaluations so far (``train_reward[i]`` None: no training
    reward yet, e.g. the evaluation before the first iteration). Returns the warning's text or None."""
    points = [(s, r, h) for s, r, h in zip(steps, train_reward, held_out) if r is not None]
    if len(points) < rule.window:
        return None
    points = points[-rule.window:]
    xs = [float(s) for s, _, _ in points]
    d_reward = fitted_change(xs, [r for _, r, _ in points])
    d_signal = fitted_change(xs, [h for _, _, h in points])
    if d_reward > rule.min_rise and d_signal < -rule.min_drop:
        return (f"possible reward hacking at step {points[-1][0]}: over the last {rule.window} evaluations (steps "
                f"{points[0][0]}-{points[-1][0]}) the training reward rose by {d_reward:+.3f} while the "
                f"{signal} fell by {-d_signal:.3f} (fitted lines; threshold {rule.min_drop})")
    return None


class RewardHackingWatch:
    """A stage-2 evaluation hook (``evaluate(parts, step) -> dict``, as :func:`rtdmd.train.align.run` takes).

    ``evaluate`` computes the held-out metrics of the EMA generator (``signal`` among them); the watch adds the
    training rewards logged since the previous evaluation (``train_reward/<name>``, read from the run's
    ``metrics.jsonl``), applies the rule, prints and records a warning, and returns everything to be logged."""

    def __init__(self, run_dir: Path, evaluate: Callable[..., dict], signal: str = "accuracy",
                 rule: HackingRule = HackingRule(), stage: str = "align", echo: Callable[[str], None] = print):
        self.run_dir, self.evaluate, self.signal, self.rule, self.stage = Path(run_dir), evaluate, signal, rule, stage
        self.echo = echo
        self.history: list[dict] = []
        self.warnings: list[dict] = []

    def training_rewards(self, after: int, upto: int) -> dict[str, float]:
        """Means of the logged ``reward/*`` metrics of the iterations ``(after, upto]``."""
        rows = [r for r in read_metrics(self.run_dir, self.stage) if after < r["step"] <= upto]
        keys = sorted({k for r in rows for k, v in r.items() if k.startswith("reward/") and isinstance(v, (int, float))})
        return {f"train_{k}": sum(r[k] for r in rows if k in r) / sum(1 for r in rows if k in r) for k in keys}

    def __call__(self, parts, step: int) -> dict:
        result = dict(self.evaluate(parts, step))
        after = self.history[-1]["step"] if self.history else 0
        result.update(self.training_rewards(after, step) if step > after else {})
        self.history.append({"step": step, **result})
        warning = hacking_warning([h["step"] for h in self.history],
                                  [h.get("train_reward/total") for h in self.history],
                                  [h[self.signal] for h in self.history], self.rule, f"held-out {self.signal}")
        if warning is not None:
            self.echo(f"rtdmd: warning: {warning}")
            self.warnings.append({"step": step, "message": warning})
        result["hacking_warning"] = float(warning is not None)
        return result

    def record(self) -> dict:
        """What the report keeps: the rule, every evaluation, the warnings."""
        return {"rule": asdict(self.rule), "signal": self.signal, "history": self.history, "warnings": self.warnings}
