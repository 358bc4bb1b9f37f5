"""Strict construction of frozen dataclasses from plain dicts (YAML), in the spirit of nanoGPT's configurator.

Unknown keys are rejected with the closest valid key, values are type-checked (ints stay ints, a bool is not
a number, ``Literal`` values are checked), and nested sections are built recursively. A field whose type is
a "kinded" section (``world``, ``backbone``, ``rewards``) is dispatched on its ``kind`` key through a
registry of config classes.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args, get_origin

from rtdmd.errors import ConfigError, suggest

KindResolver = Callable[[str, str], type]
"""``resolver(section, kind) -> config dataclass``; raises ConfigError for an unknown kind."""


def _describe(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp, path: str, resolver: KindResolver | None) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path, resolver)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: {value!r} is not a valid {_describe(tp)}")
    if origin is Literal:
        options = get_args(tp)
        if value not in options:
            hint = suggest(str(value), [str(o) for o in options])
            raise ConfigError(f"{path}: {value!r} is not allowed{hint}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{path}: expected a list of {len(args)} values, got {len(value)}")
            items = [_coerce(v, a, f"{path}[{i}]", resolver) for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_tp = args[0] if args else Any
            items = [_coerce(v, item_tp, f"{path}[{i}]", resolver) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        key_tp, val_tp = get_args(tp)
        return {_coerce(k, key_tp, path, resolver): _coerce(v, val_tp, f"{path}.{k}", resolver)
                for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path, resolver)
    if isinstance(tp, str) or getattr(tp, "__rtdmd_kinded__", False):
        return _build_kinded(tp, value, path, resolver)
    raise TypeError(f"unsupported config type {tp!r} at {path}")


class Kinded:
    """Type marker for a section dispatched on its ``kind`` key: ``Kinded["world"]``."""

    def __class_getitem__(cls, section: str):
        return type(f"Kinded_{section}", (), {"__rtdmd_kinded__": True, "section": section})


def _build_kinded(tp, value, path: str, resolver: KindResolver | None):
    if not isinstance(value, Mapping) or "kind" not in value:
        raise ConfigError(f"{path}: needs a 'kind' key")
    if resolver is None:
        raise TypeError("a kinded section needs a resolver")
    cls = resolver(tp.section, value["kind"])
    return build(cls, value, path, resolver)


def _with_values(err: ConfigError, obj_fields, data: Mapping, path: str) -> str:
    """A ``__post_init__`` check's message with the values of the keys it names (``log_every >= 1`` says which
    value broke it only with ``distill.log_every = 0`` beside it)."""
    message = str(err)
    named = [name for name in obj_fields if re.search(rf"\b{re.escape(name)}\b", message) and name in data]
    if not named:
        return message
    shown = {name: repr(data[name]) if len(repr(data[name])) <= 60 else repr(data[name])[:57] + "..." for name in named}
    values = ", ".join(f"{path + '.' if path else ''}{name} = {text}" for name, text in shown.items())
    return f"{message} (given: {values})"


def build(cls, data: Any, path: str = "", resolver: KindResolver | None = None):
    """Build the frozen dataclass ``cls`` from ``data`` strictly (see module docstring)."""
    label = path or "config"
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{label}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        where = f"{path}.{key}" if path else key
        raise ConfigError(f"unknown config key '{where}'{suggest(str(key), fields, f'{path}.' if path else '')}")
    kwargs = {}
    for name, field in fields.items():
        sub = f"{path}.{name}" if path else name
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], sub, resolver)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing config key '{sub}'")
    try:
        return cls(**kwargs)
    except ConfigError as err:
        message = _with_values(err, fields, data, path)
        if path and not message.startswith(path):
            raise ConfigError(f"{path}.{message}") from None
        raise ConfigError(message) from None


def to_dict(obj) -> Any:
    """Plain (YAML-safe) dict of a config, tuples as lists."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def check(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless condition; used in ``__post_init__``."""
    if not condition:
        raise ConfigError(message)
