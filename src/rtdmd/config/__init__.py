"""Typed, validated configuration: the sections (:mod:`.sections`), the presets (:mod:`.presets`), loading YAML
with overrides (:mod:`.loading`) and the strict construction of dataclasses it rests on (:mod:`.strict`)."""

from rtdmd.config.loading import dump_config, find_config, load_config, parse_override, resolve, resolve_rewards
from rtdmd.config.presets import PRESETS
from rtdmd.config.sections import AlignConfig, Config, DistillConfig, OptimConfig, RewardEntry, RunConfig

__all__ = ["AlignConfig", "Config", "DistillConfig", "OptimConfig", "PRESETS", "RewardEntry", "RunConfig",
           "dump_config", "find_config", "load_config", "parse_override", "resolve", "resolve_rewards"]
