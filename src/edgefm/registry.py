"""A tiny name -> object registry, one namespace per kind (algorithm, partitioner, model).

Objects register themselves with one decorator line, as peft's tuners do, so the runtime and
the config never hold if/elif chains over names. The registry imports nothing of edgefm: the
modules that hold the built-in entries are named here as strings (``PROVIDERS``) and imported
on the first look-up of their kind, as transformers' auto classes do. So looking up an
algorithm's config imports only the torch-free ``edgefm.algorithms.configs``, and a plug-in of
your own is a ``register`` line in a module you import before the look-up.

An ``algorithm`` entry is the method's config class (an ``AlgorithmConfig``); the config names
its Strategy as ``"module:Class"``, imported only when a run is built (:func:`resolve`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

from edgefm import EdgefmError

PROVIDERS: dict[str, tuple[str, ...]] = {
    "algorithm": ("edgefm.algorithms.configs",),
    "partitioner": ("edgefm.data.partition",),
    "model": ("edgefm.models.backbones", "edgefm.models.media"),
}
KINDS = tuple(PROVIDERS)
_REGISTRY: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
_loaded: set[str] = set()

T = TypeVar("T")


def register(kind: str, name: str) -> Callable[[T], T]:
    """Decorator: ``@register("partitioner", "iid")`` on a class or function."""
    if kind not in _REGISTRY:
        raise ValueError(f"unknown registry kind {kind!r}; expected one of {', '.join(KINDS)}")

    def wrap(obj: T) -> T:
        if name in _REGISTRY[kind] and _REGISTRY[kind][name] is not obj:
            raise ValueError(f"{kind} {name!r} is registered twice")
        _REGISTRY[kind][name] = obj
        return obj

    return wrap


def _load(kind: str) -> None:
    if kind not in _REGISTRY:
        raise ValueError(f"unknown registry kind {kind!r}; expected one of {', '.join(KINDS)}")
    if kind not in _loaded:
        _loaded.add(kind)
        for module in PROVIDERS[kind]:
            importlib.import_module(module)


def get(kind: str, name: str) -> Any:
    """The object registered as ``name``; a clear error naming the allowed names otherwise."""
    _load(kind)
    table = _REGISTRY[kind]
    if name not in table:
        raise EdgefmError(f"unknown {kind} {name!r}; expected one of {', '.join(sorted(table))}")
    return table[name]


def names(kind: str) -> list[str]:
    _load(kind)
    return sorted(_REGISTRY[kind])


def resolve(path: str) -> Any:
    """The object a ``"package.module:attribute"`` string names (imported now)."""
    module, _, attr = path.partition(":")
    if not module or not attr:
        raise ValueError(f"{path!r}: expected 'package.module:attribute'")
    return getattr(importlib.import_module(module), attr)
