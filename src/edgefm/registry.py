"""A tiny name -> object registry, one namespace per kind (algorithm, partitioner, model).

Methods register themselves with one decorator line, as peft's tuners do, so the runtime and
the config never hold if/elif chains over method names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from edgefm import EdgefmError

KINDS = ("algorithm", "partitioner", "model", "mechanism")
_REGISTRY: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}

T = TypeVar("T")


def register(kind: str, name: str) -> Callable[[T], T]:
    """Decorator: ``@register("algorithm", "fedavg")`` on a class or function."""
    if kind not in _REGISTRY:
        raise ValueError(f"unknown registry kind {kind!r}; expected one of {', '.join(KINDS)}")

    def wrap(obj: T) -> T:
        if name in _REGISTRY[kind] and _REGISTRY[kind][name] is not obj:
            raise ValueError(f"{kind} {name!r} is registered twice")
        _REGISTRY[kind][name] = obj
        return obj

    return wrap


def _load_builtins() -> None:
    # Importing the packages runs their register() lines; done lazily so that importing the
    # registry never drags torch into the numpy-only markets.
    import edgefm.algorithms  # noqa: F401
    import edgefm.data.partition  # noqa: F401
    import edgefm.models.backbones  # noqa: F401


def get(kind: str, name: str) -> Any:
    """The object registered as ``name``; a clear error naming the allowed names otherwise."""
    _load_builtins()
    table = _REGISTRY[kind]
    if name not in table:
        raise EdgefmError(f"unknown {kind} {name!r}; expected one of {', '.join(sorted(table))}")
    return table[name]


def names(kind: str) -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY[kind])
