"""``rtdmd plan``: per-rank peak memory and FLOPs of both stages of a config on a number of GPUs, from one
iteration run on fake tensors at the config's true sizes (:mod:`rtdmd.app.plan.planner`), and the fewest GPUs
each stage fits on (:mod:`rtdmd.app.plan.report`)."""
