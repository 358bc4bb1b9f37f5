"""Loading a configuration: a YAML file (or a shipped config name) plus ``key=value`` overrides, the preset's
defaults, strict construction of the sections (:mod:`rtdmd.config.strict`), and the YAML that is saved with
every run (:func:`dump_config`, whose parse gives the same config back)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import yaml

from rtdmd import registry
from rtdmd.config import strict
from rtdmd.config.presets import PRESETS
from rtdmd.config.sections import Config, RewardEntry
from rtdmd.errors import ConfigError, suggest


def _resolver(section: str, kind: str) -> type:
    return registry.config_class(section, kind)


def _list_index(node: list, part: str, dotted: str) -> int:
    try:
        index = int(part)
    except ValueError:
        raise ConfigError(f"cannot set '{dotted}': '{part}' must be a list index (0 to {len(node) - 1})") from None
    if not 0 <= index < len(node):
        raise ConfigError(f"cannot set '{dotted}': index {index} is out of range (the list has {len(node)} entries)")
    return index


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        if isinstance(node, list):
            nxt = node[_list_index(node, part, dotted)]
        else:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
        if not isinstance(nxt, (dict, list)):
            raise ConfigError(f"cannot set '{dotted}': '{part}' is not a section")
        node = nxt
    if isinstance(node, list):
        node[_list_index(node, parts[-1], dotted)] = value
    else:
        node[parts[-1]] = value


def _has_dotted(tree: dict, dotted: str) -> bool:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node or node[part] is None:
            return False
        node = node[part]
    return True


def parse_override(item: str) -> tuple[str, Any]:
    """``"distill.iterations=300"`` -> ``("distill.iterations", 300)``; the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key=value (e.g. distill.iterations=300)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{item}' has no key")
    try:
        return key, yaml.safe_load(raw)
    except yaml.YAMLError:
        return key, raw


def _normalise_rewards(raw: dict) -> None:
    entries = raw.get("rewards")
    if not isinstance(entries, list) or not entries:
        raise ConfigError("'rewards' must be a non-empty list of {kind: ..., weight: ...}")
    common = {f.name for f in dataclasses.fields(RewardEntry)} - {"params"}
    normalised = []
    for i, entry in enumerate(entries):
        path = f"rewards[{i}]"
        if not isinstance(entry, dict) or "kind" not in entry:
            raise ConfigError(f"{path}: needs a 'kind' key (e.g. kind: linear)")
        specific = {k: v for k, v in entry.items() if k not in common or k == "kind"}
        params_cls = registry.config_class("reward", entry["kind"])
        params = strict.build(params_cls, specific, path, _resolver)
        normalised.append({**{k: v for k, v in entry.items() if k in common},
                           "name": entry.get("name") or entry["kind"], "params": params})
    raw["rewards"] = normalised


def resolve_rewards(entries: list[dict]) -> tuple[RewardEntry, ...]:
    """Reward entries from a list of ``{kind: ..., weight: ..., ...}`` (checked like a config's ``rewards``)."""
    raw = {"rewards": copy.deepcopy(entries)}
    _normalise_rewards(raw)
    out = []
    for i, entry in enumerate(raw["rewards"]):
        params = entry.pop("params")
        out.append(dataclasses.replace(strict.build(RewardEntry, entry, f"rewards[{i}]", _resolver), params=params))
    return tuple(out)


KINDED = ("world", "backbone", "rewards.0")


def _apply_overrides(raw: dict, overrides) -> dict:
    for item in overrides:
        key, value = parse_override(item)
        if key == "reward" or key.startswith("reward."):
            key = "rewards.0" + key[len("reward"):]
            if "reward" in raw:
                raw["rewards"] = [raw.pop("reward")]
        _set_dotted(raw, key, value)
    return raw


def _kinds(raw: dict) -> dict[str, tuple[Any, list[str]]]:
    """``section -> (kind, its other keys)`` for each kinded section of a raw config (``rewards.0``: the first
    reward, also when given as ``reward``)."""
    found = {}
    rewards = raw.get("rewards") if "reward" not in raw else [raw["reward"]]
    sections = {"world": raw.get("world"), "backbone": raw.get("backbone"),
                "rewards.0": rewards[0] if isinstance(rewards, list) and rewards else None}
    for section, node in sections.items():
        if isinstance(node, dict) and "kind" in node:
            found[section] = (node["kind"], [str(k) for k in node if k != "kind"])
    return found


def _explain_switch(err: ConfigError, before: dict, after: dict) -> ConfigError:
    """An unknown key after ``--set SECTION.kind=NEW``: the key belongs to the section's old kind, so the closest
    key of the new kind (what the plain message suggests) is beside the point."""
    for section, (old, keys) in before.items():
        new = after.get(section, (old, []))[0]
        label = section.replace(".0", "[0]")
        if new == old or f"unknown config key '{label}." not in str(err):
            continue
        return ConfigError(f"--set {section}.kind={new} switches {section} from kind '{old}' to '{new}', but the "
                           f"section keeps the keys of '{old}' ({', '.join(keys)}), which '{new}' does not have: "
                           f"write a config whose {section} section is one for '{new}' (see the shipped configs) "
                           f"instead of switching its kind with --set")
    return err


def resolve(raw: dict, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build a :class:`Config` from a raw dict plus ``key=value`` overrides, applying the preset's defaults."""
    raw = copy.deepcopy(raw) if raw else {}
    kinds = _kinds(raw)
    try:
        return _resolve(raw, overrides)
    except ConfigError as err:
        try:
            after = _kinds(_apply_overrides(copy.deepcopy(raw), overrides))
        except ConfigError:
            raise err from None
        raise _explain_switch(err, kinds, after) from None


def _resolve(raw: dict, overrides) -> Config:
    raw = _apply_overrides(copy.deepcopy(raw), overrides)
    preset = raw.get("preset", "paper")
    if preset not in PRESETS:
        raise ConfigError(f"preset: {preset!r} is not allowed{suggest(str(preset), PRESETS)}")
    for key, value in PRESETS[preset].items():
        if not _has_dotted(raw, key):
            _set_dotted(raw, key, copy.deepcopy(value))
    if "reward" in raw and "rewards" in raw:
        raise ConfigError("give either 'reward' (one) or 'rewards' (a weighted list), not both")
    if "reward" not in raw and "rewards" not in raw:
        raise ConfigError("missing config key 'reward' (e.g. reward: {kind: linear, w: [0, 1]})")
    entries = raw.pop("rewards", None) or [raw.pop("reward")]
    if not isinstance(entries, list):
        raise ConfigError("'rewards' must be a non-empty list of {kind: ..., weight: ...}")
    # RewardEntry.params is a built dataclass: keep it out of the generic coercion of the other sections.
    rewards = resolve_rewards(entries)
    return dataclasses.replace(strict.build(Config, {**raw, "rewards": []}, "", _resolver), rewards=rewards)


def _override_key(item: str) -> str:
    """The dotted key an override sets, as :func:`resolve` applies it (``reward.x`` is ``rewards.0.x``)."""
    key = parse_override(item)[0]
    return "rewards.0" + key[len("reward"):] if key == "reward" or key.startswith("reward.") else key


def _overlap(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def check_overrides(overrides: list[str] | tuple[str, ...]) -> None:
    """A key given twice (or a key and a section holding it) is a mistake on the command line, not "last wins"."""
    seen: list[tuple[str, str]] = []
    for item in overrides:
        key = _override_key(item)
        for other_key, other in seen:
            if key == other_key:
                raise ConfigError(f"--set {key} is given twice ({other!r}, then {item!r}): give each key once")
            if _overlap(key, other_key):
                outer = min(key, other_key, key=len)
                raise ConfigError(f"--set {other!r} and --set {item!r} set the same key ({outer} holds the other): "
                                  "give one of them")
        seen.append((key, item))


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = (),
                defaults: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (a path, or the name of a shipped config such as ``gmm/default``) with the ``key=value``
    ``overrides`` of the command line (each key at most once). ``defaults`` (e.g. a demo's ``--quick`` settings)
    apply first, and an override of the same key replaces them."""
    check_overrides(overrides)
    keys = [_override_key(item) for item in overrides]
    defaults = [d for d in defaults if not any(_overlap(_override_key(d), key) for key in keys)]
    file = find_config(path)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {file} is not valid UTF-8") from None
    except OSError as err:
        raise ConfigError(f"config file {file} cannot be read: {err.strerror}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {file}{where} is not valid YAML: {getattr(err, 'problem', err)}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"config file {file} must hold a mapping of sections (world, backbone, reward, ...)")
    return resolve(raw or {}, [*defaults, *overrides])


SHIPPED_CONFIGS = Path(__file__).parents[1] / "configs"


def find_config(path: str | Path) -> Path:
    file = Path(path)
    if file.is_file():
        return file
    if file.is_dir():
        own = file / "config.yaml"
        hint = f" (this run directory's own is {own})" if own.is_file() else ""
        raise ConfigError(f"config '{path}' is a directory, not a YAML file: give the config file itself{hint}")
    for candidate in (SHIPPED_CONFIGS / f"{path}.yaml", SHIPPED_CONFIGS / str(path)):
        if candidate.is_file():
            return candidate
    shipped = sorted(str(p.relative_to(SHIPPED_CONFIGS).with_suffix("")) for p in SHIPPED_CONFIGS.rglob("*.yaml"))
    raise ConfigError(f"config '{path}' not found: give a YAML file path or a shipped config ({', '.join(shipped)})")


def dump_config(config: Config) -> str:
    """YAML text of the resolved config; :func:`resolve` of its parse gives the same config back."""
    data = strict.to_dict(config)
    data["rewards"] = [{**{k: v for k, v in r.items() if k != "params"}, **{
        k: v for k, v in r["params"].items()}} for r in data["rewards"]]
    return yaml.safe_dump(data, sort_keys=False)
