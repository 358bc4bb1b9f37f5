"""Checks of a run that need no model, done before any weights load and before joining the process group, so
that a bad launch fails in seconds with one line instead of after minutes of loading (or in a collective that
waits for a rank that already exited).

- the number of processes against the global batch (``distill.batch_size``; ``align.prompts_per_iteration x
  group_size``): rank ``r`` takes the ``r``-th equal slice of it;
- the device (``run.device``);
- stage 2: the stage-1 run it starts from (a run directory of ``rtdmd distill`` with a complete checkpoint, the
  same world and backbone, the same generator step list);
- each kind's own checks: a world, backbone or reward config class may define ``preflight(self, config)``,
  raising :class:`~rtdmd.errors.UserError`, for what depends on the file system or on other sections (weights
  present, guidance mode allowed for the model, ...).
"""

from __future__ import annotations

from rtdmd.config import Config
from rtdmd.devices import resolve_device
from rtdmd.errors import ConfigError
from rtdmd.train.parallel import env_world_size


def check_distill(config: Config, world_size: int | None = None) -> None:
    world_size = env_world_size() if world_size is None else world_size
    batch = config.distill.batch_size
    if batch % world_size:
        raise ConfigError(f"distill.batch_size ({batch}) must be divisible by the number of processes ({world_size}): "
                          f"use a multiple of {world_size}, e.g. {_round_up(batch, world_size)}")
    _common(config)


def check_align(config: Config, stage1: Config | None, world_size: int | None = None) -> None:
    """``stage1``: the config of the stage-1 run that ``--from`` names."""
    world_size = env_world_size() if world_size is None else world_size
    cfg = config.align
    total = cfg.samples_per_iteration
    if total % world_size:
        raise ConfigError(f"align.prompts_per_iteration x align.group_size ({cfg.prompts_per_iteration} x "
                          f"{cfg.group_size} = {total}) must be divisible by the number of processes ({world_size})")
    if stage1 is not None and tuple(stage1.distill.step_list) != tuple(cfg.step_list):
        raise ConfigError(f"align.step_list {list(cfg.step_list)} differs from the step list the stage-1 generator "
                          f"was distilled for ({list(stage1.distill.step_list)}): set align.step_list to it")
    _common(config)


def _common(config: Config) -> None:
    resolve_device(config.run.device)
    if config.run.reward_device:
        resolve_device(config.run.reward_device, key="run.reward_device")
    for section in (config.world, config.backbone, *(r.params for r in config.rewards)):
        hook = getattr(section, "preflight", None)
        if hook is not None:
            hook(config)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple

