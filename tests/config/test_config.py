import pytest
import yaml

from rtdmd.config import PRESETS, dump_config, load_config, resolve
from rtdmd.errors import ConfigError

BASE = {
    "world": {"kind": "gmm", "components": [{"weight": 1.0, "mean": [0.0, 0.0], "cov": 0.5}], "prompts": {"a": [0]}},
    "backbone": {"kind": "mlp"},
    "reward": {"kind": "linear", "w": [1.0, 0.0]},
}


def test_unknown_key_names_the_closest_valid_one():
    with pytest.raises(ConfigError, match=r"unknown config key 'distill.itrations' \(did you mean 'distill.iterations'\?\)"):
        resolve({**BASE, "distill": {"itrations": 3}})
    with pytest.raises(ConfigError, match="did you mean 'align'"):
        resolve({**BASE, "allign": {}})
    with pytest.raises(ConfigError, match=r"world.kind: unknown kind 'gmn' \(did you mean 'gmm'\?\)"):
        resolve({**BASE, "world": {**BASE["world"], "kind": "gmn"}})
    with pytest.raises(ConfigError, match=r"unknown config key 'rewards\[0\].ww' \(did you mean 'rewards\[0\].w'\?\)"):
        resolve({**BASE, "reward": {"kind": "linear", "ww": [1, 0]}})


@pytest.mark.parametrize("override, message", [
    ("distill.iterations=1.5", "distill.iterations: expected an integer"),
    ("distill.iterations=0", "distill.iterations must be >= 1"),
    ("distill.eta=2", "distill.eta must lie in"),
    ("distill.method=dmd2", "not allowed.*did you mean 'dmd'"),
    ("align.group_size=1", "align.group_size must be >= 2"),
    ("align.subset_size=4", r"align.subset_size must lie in \[1, 3\]"),
    ("align.log_prob=exactly", "not allowed"),
    ("beta=0", "beta must be positive"),
    ("distill.random_stop=true", "unknown config key 'distill.random_stop'"),
    ("run.dtype=fp64", "not allowed"),
    ("distill.generator.lr=-1", "distill.generator.lr must be positive"),
    ("distill.step_list=[1000,500,750]", "strictly decreasing"),
    ("align.step_list=[1000,1000,500]", "align.step_list must be at least 2 strictly decreasing"),
    ("align.step_list=[1500,500]", r"in \(0, 1000\]"),
    ("align.step_list=[1000]", "at least 2"),
    ("run.nonfinite_patience=0", "run.nonfinite_patience must be >= 1"),
    ("run.parallel=zero3", "not allowed"),
    ("world.components.0.cov=[[1,2],[2,1]]", "positive definite"),
    ("world.prompts.a=[3]", "component indices"),
])
def test_bad_values_are_rejected_with_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        resolve(BASE, [override])


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="key=value"):
        resolve(BASE, ["distill.iterations"])
    with pytest.raises(ConfigError, match=r"index 5 is out of range \(the list has 1 entries\)"):
        resolve(BASE, ["world.components.5.cov=1"])
    with pytest.raises(ConfigError, match="'x' must be a list index"):
        resolve(BASE, ["world.components.x.cov=1"])
    with pytest.raises(ConfigError, match="'weight' is not a section"):
        resolve(BASE, ["world.components.0.weight.x=1"])


def test_preset_fills_defaults_and_explicit_values_win():
    paper = resolve(BASE)
    assert paper.preset == "paper"
    assert (paper.align.log_prob, paper.align.advantages, paper.align.dm_weight) == ("simplified", "paper", 1e-3)
    exact = resolve(BASE, ["preset=exact"])
    for dotted, value in PRESETS["exact"].items():
        section, key = dotted.split(".")
        got = getattr(getattr(exact, section), key)
        assert got == (tuple(value) if isinstance(value, list) else value), dotted
    mixed = resolve(BASE, ["preset=exact", "align.log_prob=simplified", "beta=0.5"])
    assert mixed.align.log_prob == "simplified" and mixed.align.advantages == "exact" and mixed.beta == 0.5
    with pytest.raises(ConfigError, match="did you mean 'exact'"):
        resolve(BASE, ["preset=exakt"])


def test_exact_preset_refuses_a_back_propagation_only_scale():
    with pytest.raises(ConfigError, match=r"rewards\[0\].bp_scale is 0.5, but preset exact needs 1"):
        resolve(BASE, ["preset=exact", "reward.bp_scale=0.5"])
    assert resolve(BASE, ["reward.bp_scale=0.5"]).rewards[0].bp_scale == 0.5  # the paper recipe's PickScore / 26


def test_consistency_default_depends_on_method():
    assert resolve(BASE).distill.consistency_gamma == 0.01
    assert resolve(BASE, ["distill.method=dmd"]).distill.consistency_gamma == 0.0
    assert resolve(BASE, ["distill.method=dmd", "distill.consistency_gamma=0.5"]).distill.consistency_gamma == 0.5


def test_scientific_notation_from_yaml_and_overrides():
    cfg = resolve(BASE, ["distill.generator.lr=1e-4"])
    assert cfg.distill.generator.lr == 1e-4


def test_dump_and_reload_round_trip():
    cfg = resolve(BASE, ["preset=exact", "distill.iterations=7", "reward.w=[0.5, 2]"])
    again = resolve(yaml.safe_load(dump_config(cfg)))
    assert again == cfg
    assert cfg.rewards[0].params.w == (0.5, 2.0)


def test_reward_list_with_weights():
    cfg = resolve({**{k: v for k, v in BASE.items() if k != "reward"},
                   "rewards": [{"kind": "linear", "w": [1, 0], "weight": 2.0, "name": "x"},
                               {"kind": "region", "normal": [0, 1], "offset": 0.5}]})
    assert [(r.name, r.weight) for r in cfg.rewards] == [("x", 2.0), ("region", 1.0)]
    with pytest.raises(ConfigError, match="either 'reward'"):
        resolve({**BASE, "rewards": [{"kind": "linear"}]})


def test_shipped_config_and_file_errors(tmp_path):
    cfg = load_config("gmm/default")
    assert cfg.world.kind == "gmm" and cfg.rewards[0].kind == "linear"
    with pytest.raises(ConfigError, match="not found.*gmm/default"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("world:\n  kind: gmm\n   x: [1\n")
    with pytest.raises(ConfigError, match="line"):
        load_config(bad)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("beta: 1.0 # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(latin)
