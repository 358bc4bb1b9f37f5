"""What a config builds: its world, the backbone (the three roles) and the reward set, on one device."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rtdmd import registry
from rtdmd.backbones.base import Backbone
from rtdmd.config import Config
from rtdmd.devices import torch_dtype
from rtdmd.rewards.base import RewardSet, WeightedReward
from rtdmd.worlds.base import World


@dataclass
class Components:
    world: World
    backbone: Backbone
    rewards: RewardSet


def build_rewards(entries: Sequence[Any], *, world: World | None = None, device="cpu") -> RewardSet:
    """The reward set of a config's ``rewards:`` entries (``kind``, ``weight``, ``bp_scale``, ``name``, ``params``)."""
    return RewardSet([WeightedReward(e.name or e.kind, registry.builder("reward", e.kind)(e.params, world=world,
                                                                                         device=device),
                                     e.weight, e.bp_scale) for e in entries])


def build_components(config: Config, device: torch.device) -> Components:
    world = registry.builder("world", config.world.kind)(config.world)
    backbone = registry.builder("backbone", config.backbone.kind)(
        config.backbone, world=world, device=device, dtype=torch_dtype(config.run.dtype))
    return Components(world, backbone, build_rewards(config.rewards, world=world, device=device))
