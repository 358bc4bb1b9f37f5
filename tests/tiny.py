"""A tiny analytic-world config that runs both stages in seconds."""

from rtdmd.config import resolve

TINY = {
    "world": {"kind": "gmm", "prompts": {"left": [0], "right": [1], "any": [0, 1]},
              "components": [{"weight": 0.5, "mean": [-2.0, 0.0], "cov": 0.3},
                             {"weight": 0.5, "mean": [2.0, 0.0], "cov": 0.3}]},
    "backbone": {"kind": "mlp", "hidden": 16, "depth": 2, "fit_steps": 20, "fit_batch": 64, "fit_points": 2000},
    "reward": {"kind": "linear", "w": [0.0, 1.0]},
    "distill": {"iterations": 6, "batch_size": 16, "fake_update_ratio": 2, "checkpoint_every": 0, "log_every": 1},
    "align": {"iterations": 4, "prompts_per_iteration": 2, "group_size": 4, "micro_batch": 4,
              "checkpoint_every": 0, "log_every": 1, "ema_every": 1},
    "run": {"progress": False, "eval_samples": 64},
}


def tiny_config(*overrides: str):
    return resolve(TINY, list(overrides))
