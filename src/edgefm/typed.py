"""Typed, frozen dataclasses from plain mappings (parsed YAML), with one-line errors.

Every value is checked against its field's annotation; an unknown key, a wrong type or a value
out of range raises :class:`ConfigError` naming the dotted key, the bad value and what is
allowed. A dataclass may pick its concrete subclass from the mapping it is built from by
defining a classmethod ``resolve_class(raw, prefix)`` (the algorithm section does: its ``name``
selects the method's own config class).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from edgefm import EdgefmError


class ConfigError(EdgefmError):
    """A bad config value; the message names the key and what is expected."""


def check_range(
    key: str,
    value: float,
    lo: float | None = None,
    hi: float | None = None,
    open_lo: bool = False,
    open_hi: bool = False,
) -> None:
    if value != value:  # NaN compares false with every bound
        raise ConfigError(f"{key}: {value!r} is not a number; expected a finite value")
    bad_lo = lo is not None and (value <= lo if open_lo else value < lo)
    bad_hi = hi is not None and (value >= hi if open_hi else value > hi)
    if bad_lo or bad_hi:
        left = "(" if open_lo else "["
        right = ")" if open_hi else "]"
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        raise ConfigError(f"{key}: {value!r} is out of range; expected a value in {left}{lo_s}, {hi_s}{right}")


def type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    if origin is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against annotation ``tp``; return it in canonical form (tuples, floats)."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in get_args(tp):
            return None
        for arg in get_args(tp):
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} has the wrong type; expected {type_name(tp)}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{key}: {value!r} is not allowed; expected one of {type_name(tp)}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: {value!r} has the wrong type; expected a list")
        (item_tp, _) = get_args(tp)
        return tuple(_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: {value!r} has the wrong type; expected a mapping")
        k_tp, v_tp = get_args(tp)
        return {_coerce(f"{key}", k, k_tp): _coerce(f"{key}.{k}", v, v_tp) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, prefix=key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: {value!r} has the wrong type; expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: {value!r} has the wrong type; expected an integer")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string; accept numeric text
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: {value!r} has the wrong type; expected a number")
        if not math.isfinite(value):  # no setting means anything at NaN or infinity
            what = "is not a number" if value != value else "is infinite"
            raise ConfigError(f"{key}: {value!r} {what}; expected a finite value")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: {value!r} has the wrong type; expected a string")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} at {key}")


def build(cls: type, raw: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a plain mapping, rejecting unknown keys and bad types."""
    where = prefix or "config"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {raw!r} has the wrong type; expected a mapping")
    if hasattr(cls, "resolve_class"):
        cls = cls.resolve_class(raw, prefix)
    hints = typing.get_type_hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{join(prefix, str(key))}: unknown key; expected one of {', '.join(allowed)}")
    kwargs = {k: _coerce(join(prefix, k), v, hints[k]) for k, v in raw.items()}
    for f in dataclasses.fields(cls):  # absent sections are built too, so each gets its typed class
        if f.name not in kwargs and dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = build(hints[f.name], {}, join(prefix, f.name))
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # a dataclass's own check
        raise ConfigError(f"{where}: {exc}") from None


def join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key
