"""What a config builds: its world, the backbone (the three roles) and the reward set, on one device."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rtdmd import registry
from rtdmd.backbones.base import Backbone
from rtdmd.config import Config
from rtdmd.devices import resolve_device, torch_dtype
from rtdmd.rewards.base import PlacedReward, RewardSet, WeightedReward
from rtdmd.worlds.base import World


@dataclass
class Components:
    world: World
    backbone: Backbone
    rewards: RewardSet


def build_rewards(entries: Sequence[Any], *, world: World | None = None, device="cpu", reward_device=None,
                  offload: bool = False) -> RewardSet:
    """The reward set of a config's ``rewards:`` entries (``kind``, ``weight``, ``bp_scale``, ``name``, ``params``),
    built on ``reward_device`` (default: ``device``) and wrapped in :class:`PlacedReward` when that differs from
    ``device`` or the weights are offloaded between calls."""
    home = torch.device(reward_device or device)

    def reward(entry):
        built = registry.builder("reward", entry.kind)(entry.params, world=world, device=home)
        return PlacedReward(built, home, offload) if offload or home != torch.device(device) else built

    return RewardSet([WeightedReward(e.name or e.kind, reward(e), e.weight, e.bp_scale) for e in entries])


def build_components(config: Config, device: torch.device) -> Components:
    world = registry.builder("world", config.world.kind)(config.world)
    backbone = registry.builder("backbone", config.backbone.kind)(
        config.backbone, world=world, device=device, dtype=torch_dtype(config.run.dtype))
    run = config.run
    reward_device = resolve_device(run.reward_device, key="run.reward_device") if run.reward_device else device
    return Components(world, backbone, build_rewards(config.rewards, world=world, device=device,
                                                     reward_device=reward_device, offload=run.reward_offload))
