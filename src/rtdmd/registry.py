"""The one place that maps a config ``kind`` to code. Each entry names a module, its config class and its
builder; modules are imported only when their kind is used, so ``import rtdmd`` stays light."""

from __future__ import annotations

import importlib

from rtdmd.errors import ConfigError, suggest

# section -> kind -> (module, config class, builder)
KINDS: dict[str, dict[str, tuple[str, str, str]]] = {
    "world": {
        "gmm": ("rtdmd.worlds.gmm", "GMMWorldConfig", "build"),
        "prompts": ("rtdmd.worlds.prompts", "PromptsWorldConfig", "build"),
        "shapes": ("rtdmd.worlds.shapes", "ShapesWorldConfig", "build"),
    },
    "backbone": {
        "mlp": ("rtdmd.backbones.mlp", "MLPBackboneConfig", "build"),
        "sd3": ("rtdmd.backbones.sd3", "SD3Config", "build"),
        "flux1": ("rtdmd.backbones.flux1", "Flux1Config", "build"),
        "flux2_klein": ("rtdmd.backbones.flux2_klein", "Flux2KleinConfig", "build"),
    },
    "reward": {
        "linear": ("rtdmd.worlds.gmm.rewards", "LinearConfig", "build_linear"),
        "quadratic": ("rtdmd.worlds.gmm.rewards", "QuadraticConfig", "build_quadratic"),
        "region": ("rtdmd.worlds.gmm.rewards", "RegionConfig", "build_region"),
        "clipscore": ("rtdmd.rewards.clipscore", "ClipScoreConfig", "build_clipscore"),
        "pickscore": ("rtdmd.rewards.pickscore", "PickScoreConfig", "build_pickscore"),
        "aesthetic": ("rtdmd.rewards.aesthetic", "AestheticConfig", "build_aesthetic"),
        "hpsv2": ("rtdmd.rewards.hpsv2", "HPSv2Config", "build_hpsv2"),
        "compositional": ("rtdmd.rewards.compositional", "CompositionalConfig", "build_compositional"),
        "remote": ("rtdmd.rewards.remote", "RemoteConfig", "build_remote"),
        "shapes_clip": ("rtdmd.worlds.shapes.rewards", "ShapesCLIPConfig", "build_clip"),
        "shapes_pref": ("rtdmd.worlds.shapes.rewards", "ShapesPrefConfig", "build_pref"),
        "shapes_oracle": ("rtdmd.worlds.shapes.rewards", "ShapesOracleConfig", "build_oracle"),
        "shapes_soft": ("rtdmd.worlds.shapes.rewards", "ShapesSoftConfig", "build_soft"),
    },
}


def _entry(section: str, kind: str) -> tuple[str, str, str]:
    kinds = KINDS[section]
    if kind not in kinds:
        raise ConfigError(f"{section}.kind: unknown kind {kind!r}{suggest(str(kind), kinds)}")
    return kinds[kind]


def config_class(section: str, kind: str) -> type:
    module, cls, _ = _entry(section, kind)
    return getattr(importlib.import_module(module), cls)


def builder(section: str, kind: str):
    module, _, fn = _entry(section, kind)
    return getattr(importlib.import_module(module), fn)
