"""Checks every market instance shares (numpy only): per-entity arrays of the right length and
finite, values in range, known keys, present sections, positive constants. Each failure is an
``error`` (the market's InstanceError) whose one-line message names the field and what was
expected, so a bad instance file never reaches a mechanism."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np


def number_list(value: Any, where: str, error: type[Exception]) -> np.ndarray:
    """A JSON list of numbers (booleans and strings refused) as a float array."""
    if isinstance(value, bool | str) or not isinstance(value, list | tuple | np.ndarray):
        raise error(f"{where}: {short(value)}; expected a list of numbers")
    if any(isinstance(v, bool) or not isinstance(v, int | float | np.number) for v in value):
        bad = next(v for v in value if isinstance(v, bool) or not isinstance(v, int | float | np.number))
        raise error(f"{where}: {short(bad)} is not a number; expected a list of numbers")
    return np.asarray(value, dtype=float).reshape(-1)


def number(value: Any, where: str, error: type[Exception]) -> float:
    """A JSON number (not a boolean, not a string) as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise error(f"{where}: {short(value)}; expected a number")
    return float(value)


def arrays(obj: Any, names: Iterable[str], n: int, where: str, error: type[Exception], per: str) -> None:
    """Each ``obj.NAME`` has ``n`` entries (one per ``per``) and only finite values."""
    for name in names:
        arr = getattr(obj, name)
        if len(arr) != n:
            raise error(f"{_join(where, name)}: {len(arr)} values; expected one per {per} ({n})")
        if not np.all(np.isfinite(arr)):
            i = int(np.flatnonzero(~np.isfinite(arr))[0])
            raise error(f"{_join(where, name)}[{i}]: {float(arr[i])!r}; expected a finite number")


def ranges(obj: Any, checks: Iterable[tuple[str, Callable[[np.ndarray], np.ndarray], str]], where: str, error) -> None:
    """For each (field, predicate over its array, what is expected): the first entry that fails."""
    for name, test, expected in checks:
        arr = getattr(obj, name)
        ok = np.asarray(test(arr), dtype=bool)
        if not np.all(ok):
            i = int(np.flatnonzero(~ok)[0])
            raise error(f"{_join(where, name)}[{i}]: {float(arr[i])!r}; expected {expected}")


def positive(obj: Any, names: Iterable[str], where: str, error: type[Exception], allow_zero: bool = False) -> None:
    """Scalar constants that must be finite and > 0 (or >= 0)."""
    for name in names:
        v = getattr(obj, name)
        if not (math.isfinite(v) and (v >= 0 if allow_zero else v > 0)):
            raise error(
                f"{_join(where, name)}: {v!r}; expected a {'non-negative' if allow_zero else 'positive'} number"
            )


def mapping(raw: Any, where: str, error: type[Exception], required: Iterable[str] = ()) -> Mapping:
    """``raw`` is a JSON object holding every key in ``required``."""
    if not isinstance(raw, dict):
        raise error(f"{where}: {short(raw)}; expected a JSON object")
    for key in required:
        if key not in raw:
            raise error(f"{_join(where, key)}: missing")
    return raw


def known_keys(raw: Mapping, allowed: Iterable[str], where: str, error: type[Exception]) -> None:
    allowed = sorted(allowed)
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise error(f"{_join(where, unknown[0])}: unknown key; expected one of {', '.join(allowed)}")


def construct(cls: type, kwargs: dict[str, Any], error: type[Exception]) -> Any:
    """``cls(**kwargs)`` with any other TypeError/ValueError turned into a one-line ``error``."""
    try:
        return cls(**kwargs)
    except error:
        raise
    except (TypeError, ValueError) as exc:
        raise error(f"instance: {exc}") from None


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
