"""rtdmd: Reward-Tilted Distribution Matching Distillation for flow-matching text-to-image models.

The math lives in :mod:`rtdmd.functional`; model families plug in behind :mod:`rtdmd.backbones.base`,
rewards behind :mod:`rtdmd.rewards.base`; the two training stages are :mod:`rtdmd.train.distill` and
:mod:`rtdmd.train.align`.
"""

__version__ = "0.1.0"
