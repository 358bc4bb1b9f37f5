"""The presets: defaults of the loss weighting that the config loader fills in for the keys a user did not set
(spec section 1). ``paper`` reproduces the published recipe; ``exact`` aims the fixed point at p~ for the
configured beta. Explicit keys always win, so ``--set preset=exact`` switches and any single key can be changed.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # The published recipe: three loss weights on z-scored advantages (no fixed beta corresponds to it).
    "paper": {
        "align.log_prob": "simplified",
        "align.advantages": "paper",
        "align.dm_loss": "dmd",
        "align.dm_weight": 1e-3,
        "align.bp_loss": "hinge",
        "align.bp_weight": 1e-4,
        "align.step_weighting": "published",
        "align.old_log_prob": "behaviour",
        "align.fake_weighting": "min1_10s2",
        "align.fake_consistency_gamma": 0.01,
        "align.dm_backprop": "last_step",
        "distill.consistency_kernel": "cps",
    },
    # One explicit beta: raw rewards / beta, exact Gaussian log-probs, unbiased estimators and an unnormalised
    # data-level DM term at small sigma, so that the fixed point is p~ (spec section 1).
    "exact": {
        "align.log_prob": "gaussian",
        "align.advantages": "exact",
        "align.dm_loss": "score",
        "align.dm_weight": 1.0,
        "align.bp_loss": "linear",
        "align.bp_weight": 1.0,
        "align.step_weighting": "unbiased",
        "align.old_log_prob": "recomputed",
        "align.dm_sigma_range": [0.03, 0.15],
        "align.fake_weighting": "uniform",
        "align.fake_consistency_gamma": 0.0,  # the fake score must be unbiased at low noise: no regulariser
        "align.dm_backprop": "full",
        "distill.consistency_kernel": "forward",
    },
}
