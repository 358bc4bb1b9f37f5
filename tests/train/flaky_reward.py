"""A reward kind for tests only (registered by the tests that use it): the linear reward, with a NaN or an
infinity in one sample on chosen calls, or on every call."""

from dataclasses import dataclass
from typing import Literal

from rtdmd.worlds.gmm.rewards import Linear


@dataclass(frozen=True)
class FlakyConfig:
    kind: Literal["flaky"] = "flaky"
    w: tuple[float, ...] = (0.0, 1.0)
    nan_calls: tuple[int, ...] = ()  # 1-based numbers of the calls that return a NaN
    inf_calls: tuple[int, ...] = ()
    always: bool = False  # a NaN on every call


class Flaky:
    differentiable = False  # so that the reward is called once per iteration (no back-propagation path)

    def __init__(self, cfg: FlakyConfig):
        self.cfg, self.calls, self.linear = cfg, 0, Linear(cfg.w)

    def tilt(self, mixture, beta):  # the evaluation's exact target: that of the linear reward
        return self.linear.tilt(mixture, beta)

    def __call__(self, x, prompts=(), metadata=None):
        self.calls += 1
        r = self.linear(x).clone()
        if self.cfg.always or self.calls in self.cfg.nan_calls:
            r[-1] = float("nan")
        if self.calls in self.cfg.inf_calls:
            r[0] = float("inf")
        return r


def build(cfg: FlakyConfig, *, world=None, device="cpu") -> Flaky:
    return Flaky(cfg)
