"""Typed, frozen experiment configs: YAML in, dotted ``--set key=value`` overrides, validated.

One nested tree of frozen dataclasses (minGPT's CfgNode idea, typed). Every value is checked
against its annotation; an unknown key, a wrong type, a value out of range or an unknown
registered name raises :class:`ConfigError` with one line naming the key, the bad value and
what is allowed. Algorithm sections are typed by the algorithm itself: each registered
algorithm carries a ``Config`` dataclass, so ``algorithm.mu`` exists only for FedProx.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from edgefm import EdgefmError


class ConfigError(EdgefmError):
    """A bad config value; the message names the key and what is expected."""


@dataclass(frozen=True)
class DataConfig:
    name: str | None = "sst2"  # a named dataset (sst2, agnews, flipkart, ddxplus, bbcnews) or None
    path: str | None = None  # a local TSV/CSV/JSON/JSONL/parquet file instead of a named dataset
    test_path: str | None = None  # its test file; without it test_fraction of `path` is held out
    text_column: str = "text"
    label_column: str = "label"
    max_train: int | None = 3000  # seeded subsample of the training pool (None: all of it)
    max_test: int | None = None
    max_length: int = 64  # tokens per example after truncation
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.name is None and self.path is None:
            raise ConfigError("data: set data.name (a named dataset) or data.path (a local file)")
        _check_range("data.max_length", self.max_length, lo=4)
        _check_range("data.test_fraction", self.test_fraction, lo=0.0, hi=1.0, open_lo=True, open_hi=True)
        for key in ("max_train", "max_test"):
            value = getattr(self, key)
            if value is not None:
                _check_range(f"data.{key}", value, lo=1)


@dataclass(frozen=True)
class PartitionConfig:
    name: str = "dirichlet"  # iid | dirichlet | pathological | natural
    alpha: float = 0.5  # Dirichlet concentration: small = strong label skew
    classes_per_client: int = 2  # pathological partitioner
    column: str | None = None  # natural partitioner: the column that names each example's owner
    local_test_fraction: float = 0.2  # each client's local test split, same label mix as its train
    min_size: int = 4  # Dirichlet redraws until every client holds at least this many examples

    def __post_init__(self) -> None:
        _check_range("partition.alpha", self.alpha, lo=0.0, open_lo=True)
        _check_range("partition.classes_per_client", self.classes_per_client, lo=1)
        _check_range("partition.local_test_fraction", self.local_test_fraction, lo=0.0, hi=1.0, open_hi=True)
        _check_range("partition.min_size", self.min_size, lo=1)


@dataclass(frozen=True)
class LoraConfig:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("query", "value")

    def __post_init__(self) -> None:
        _check_range("model.lora.r", self.r, lo=1)
        _check_range("model.lora.dropout", self.dropout, lo=0.0, hi=1.0, open_hi=True)
        if not self.target_modules:
            raise ConfigError("model.lora.target_modules: empty; expected module names such as [query, value]")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "minilm"  # minilm | tiny_bert | path
    path: str | None = None  # a local transformers checkpoint folder, with name=path
    finetune: Literal["lora", "full"] = "lora"
    lora: LoraConfig = field(default_factory=LoraConfig)

    def __post_init__(self) -> None:
        if self.name == "path" and not self.path:
            raise ConfigError("model.path: required when model.name=path; expected a local model folder")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1  # local epochs per round
    batch_size: int = 32
    lr: float = 1e-3  # LoRA (or full) weights
    head_lr: float = 1e-2  # the freshly initialised classifier head learns faster
    weight_decay: float = 0.0
    max_steps: int | None = None  # cap on local optimizer steps per round

    def __post_init__(self) -> None:
        _check_range("train.epochs", self.epochs, lo=1)
        _check_range("train.batch_size", self.batch_size, lo=1)
        _check_range("train.lr", self.lr, lo=0.0, open_lo=True)
        _check_range("train.head_lr", self.head_lr, lo=0.0, open_lo=True)
        _check_range("train.weight_decay", self.weight_decay, lo=0.0)
        if self.max_steps is not None:
            _check_range("train.max_steps", self.max_steps, lo=1)


@dataclass(frozen=True)
class EdgeConfig:
    # Mix of device tiers in the population (weights, normalised); see edge/devices.py.
    tiers: dict[str, float] = field(
        default_factory=lambda: {
            "low_end_phone": 0.3,
            "high_end_phone": 0.3,
            "embedded_gpu": 0.2,
            "laptop": 0.1,
            "edge_server": 0.1,
        }
    )
    jitter: float = 0.2  # each device's numbers vary by up to this relative amount

    def __post_init__(self) -> None:
        from edgefm.edge.devices import TIERS

        for name, weight in self.tiers.items():
            if name not in TIERS:
                raise ConfigError(f"edge.tiers: unknown tier {name!r}; expected one of {', '.join(TIERS)}")
            _check_range(f"edge.tiers.{name}", weight, lo=0.0)
        if sum(self.tiers.values()) <= 0:
            raise ConfigError("edge.tiers: weights sum to 0; expected at least one positive weight")
        _check_range("edge.jitter", self.jitter, lo=0.0, hi=1.0, open_hi=True)


@dataclass(frozen=True)
class FlowerConfig:
    """Settings of the Flower engine (``engine: flower``); ignored by the in-process engine."""

    round_timeout: float = 600.0  # seconds a round waits for replies; late clients count as dropped
    client_cpus: int = 1  # CPUs (and torch threads) per simulated client
    parallel: int | None = None  # simulated clients at once (default: the machine's cores / client_cpus)

    def __post_init__(self) -> None:
        _check_range("flower.round_timeout", self.round_timeout, lo=0.0, open_lo=True)
        _check_range("flower.client_cpus", self.client_cpus, lo=1)
        if self.parallel is not None:
            _check_range("flower.parallel", self.parallel, lo=1)


@dataclass(frozen=True)
class AlgorithmConfig:
    """Base of every algorithm's own config; subclasses add their hyper-parameters."""

    name: str = "fedavg"


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    rounds: int = 5
    clients: int = 10
    fraction: float = 1.0  # share of clients sampled each round
    device: Literal["auto", "cpu", "cuda"] = "auto"
    engine: Literal["inprocess", "flower"] = "inprocess"  # where clients run (see fl/flower.py)
    eval_every: int = 1  # evaluate the global model every k rounds (and always at the last)
    data: DataConfig = field(default_factory=DataConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    edge: EdgeConfig = field(default_factory=EdgeConfig)
    flower: FlowerConfig = field(default_factory=FlowerConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)

    def __post_init__(self) -> None:
        _check_range("rounds", self.rounds, lo=1)
        _check_range("clients", self.clients, lo=1)
        _check_range("fraction", self.fraction, lo=0.0, hi=1.0, open_lo=True)
        _check_range("eval_every", self.eval_every, lo=1)


# ----------------------------------------------------------------------------- validation


def _check_range(
    key: str,
    value: float,
    lo: float | None = None,
    hi: float | None = None,
    open_lo: bool = False,
    open_hi: bool = False,
) -> None:
    bad_lo = lo is not None and (value <= lo if open_lo else value < lo)
    bad_hi = hi is not None and (value >= hi if open_hi else value > hi)
    if bad_lo or bad_hi:
        left = "(" if open_lo else "["
        right = ")" if open_hi else "]"
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        raise ConfigError(f"{key}: {value!r} is out of range; expected a value in {left}{lo_s}, {hi_s}{right}")


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
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
        raise ConfigError(f"{key}: {value!r} has the wrong type; expected {_type_name(tp)}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{key}: {value!r} is not allowed; expected one of {_type_name(tp)}")
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
    if cls is AlgorithmConfig or (isinstance(cls, type) and issubclass(cls, AlgorithmConfig)):
        cls = _algorithm_config_class(raw, prefix)
    hints = typing.get_type_hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{_join(prefix, str(key))}: unknown key; expected one of {', '.join(allowed)}")
    kwargs = {k: _coerce(_join(prefix, k), v, hints[k]) for k, v in raw.items()}
    for f in dataclasses.fields(cls):  # absent sections are built too, so each gets its typed class
        if f.name not in kwargs and dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = build(hints[f.name], {}, _join(prefix, f.name))
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # a dataclass's own check
        raise ConfigError(f"{where}: {exc}") from None


def _algorithm_config_class(raw: dict, prefix: str) -> type:
    from edgefm import registry

    name = raw.get("name", AlgorithmConfig.name)
    if not isinstance(name, str):
        raise ConfigError(f"{_join(prefix, 'name')}: {name!r} has the wrong type; expected a string")
    try:
        algo = registry.get("algorithm", name)
    except EdgefmError as exc:
        raise ConfigError(f"{_join(prefix, 'name')}: {exc}") from None
    return algo.Config


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


# ----------------------------------------------------------------------------- loading


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["rounds=3", "algorithm.name=fedprox"]`` -> nested dict; values parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. rounds=3 or data.max_train=500")
        key, _, text = item.partition("=")
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {item!r}: empty key; expected a dotted key such as train.lr")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part} is a value, not a section")
        node[parts[-1]] = value
    return tree


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def loads(text: str, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """A config from YAML text (how the Flower engine ships it to nodes), with overrides."""
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config text is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError("config text: expected a mapping at the top level")
    return build(RunConfig, merge(raw, parse_overrides(overrides)))


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML config (or start from defaults), apply overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist; expected a YAML file")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0]
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {first}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {str(path)!r}: expected a mapping at the top level")
    raw = merge(raw, parse_overrides(overrides))
    return build(RunConfig, raw)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain, YAML-safe dict of a config (tuples as lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def dump(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
