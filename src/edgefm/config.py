"""Typed, frozen experiment configs: YAML in, dotted ``--set key=value`` overrides, validated.

One nested tree of frozen dataclasses (minGPT's CfgNode idea, typed). Every value is checked
against its annotation; an unknown key, a wrong type, a value out of range or an unknown
registered name raises :class:`ConfigError` with one line naming the key, the bad value and
what is allowed (``typed.py``). Algorithm sections are typed by the algorithm itself: each
registered algorithm has its own config class (``algorithms/configs.py``), so ``algorithm.mu``
exists only for FedProx.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from edgefm import EdgefmError, registry
from edgefm.edge.devices import TIERS
from edgefm.models.families import FAMILIES
from edgefm.typed import ConfigError, build, check_range, join

__all__ = ["ConfigError", "build", "check_range", "load", "loads", "dump", "RunConfig", "AlgorithmConfig"]


@dataclass(frozen=True)
class DataConfig:
    name: str | None = "sst2"  # a named dataset (task lm: a corpus, or several joined by +) or None
    path: str | None = None  # a local TSV/CSV/JSON/JSONL/parquet file instead of a named dataset
    test_path: str | None = None  # its test file; without it test_fraction of `path` is held out
    text_column: str = "text"  # the text column of a local file
    label_column: str = "label"  # the label column of a local file (classification)
    max_train: int | None = 3000  # seeded subsample of the training pool (None: all of it)
    max_test: int | None = None  # seeded subsample of the test set (None: all of it)
    max_length: int = 64  # tokens per example after truncation (classification)
    test_fraction: float = 0.2  # share of a named dataset or local file held out for testing when it has no test split
    # language modelling (task: lm)
    domain_column: str | None = None  # a local file's column naming each document's domain
    block_length: int = 64  # tokens per packed training block
    tokenizer: str = "model"  # model (MiniLM's WordPiece) or bpe:N (trained on the run's text)
    public_fraction: float = 0.0  # share of the training pool held by the server, disjoint from devices

    def __post_init__(self) -> None:
        if self.name is None and self.path is None:
            raise ConfigError("data: set data.name (a named dataset) or data.path (a local file)")
        check_range("data.max_length", self.max_length, lo=4)
        check_range("data.block_length", self.block_length, lo=2)
        check_range("data.public_fraction", self.public_fraction, lo=0.0, hi=1.0, open_hi=True)
        m = re.fullmatch(r"bpe:(\d+)", self.tokenizer)
        if self.tokenizer != "model" and (m is None or not 300 <= int(m.group(1)) <= 200_000):
            raise ConfigError(
                f"data.tokenizer: {self.tokenizer!r} cannot be built; expected model or bpe:N with 300 <= N <= 200000"
            )
        check_range("data.test_fraction", self.test_fraction, lo=0.0, hi=1.0, open_lo=True, open_hi=True)
        for key in ("max_train", "max_test"):
            value = getattr(self, key)
            if value is not None:
                check_range(f"data.{key}", value, lo=1)


@dataclass(frozen=True)
class PartitionConfig:
    name: str = "dirichlet"  # iid | dirichlet | pathological | natural
    alpha: float = 0.5  # Dirichlet concentration: small = strong label skew
    classes_per_client: int = 2  # pathological partitioner
    column: str | None = None  # natural partitioner: the column that names each example's owner
    local_test_fraction: float = 0.2  # each client's local test split, same label mix as its train
    # share of each client's local test split drawn from the global test set (outside its training
    # mix: the examples a personalised model meets beyond its own label skew); 0: none
    local_test_global: float = 0.0
    min_size: int = 4  # Dirichlet redraws until every client holds at least this many examples

    def __post_init__(self) -> None:
        check_range("partition.alpha", self.alpha, lo=0.0, open_lo=True)
        check_range("partition.classes_per_client", self.classes_per_client, lo=1)
        check_range("partition.local_test_fraction", self.local_test_fraction, lo=0.0, hi=1.0, open_hi=True)
        check_range("partition.local_test_global", self.local_test_global, lo=0.0, hi=1.0, open_hi=True)
        check_range("partition.min_size", self.min_size, lo=1)


@dataclass(frozen=True)
class LoraConfig:
    r: int = 8  # LoRA rank
    alpha: int = 16  # LoRA scaling numerator (the update is scaled by alpha / r)
    dropout: float = 0.0  # dropout on the LoRA input
    target_modules: tuple[str, ...] | None = None  # None: the model's own (BERT: query, value; LMs: q/v projections)
    target_parameters: tuple[str, ...] | None = None  # None: the model's own (a MoE: its fused experts)

    def __post_init__(self) -> None:
        check_range("model.lora.r", self.r, lo=1)
        check_range("model.lora.alpha", self.alpha, lo=1)
        check_range("model.lora.dropout", self.dropout, lo=0.0, hi=1.0, open_hi=True)
        if self.target_modules is not None and not self.target_modules:
            raise ConfigError("model.lora.target_modules: empty; expected module names such as [query, value]")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "minilm"  # classify: minilm | tiny_bert | path; lm: a causal-LM family or path
    path: str | None = None  # a local transformers checkpoint folder, with name=path
    # lora: adapters + head train, the backbone is frozen; full: every weight trains
    finetune: Literal["lora", "full"] = "lora"
    lora: LoraConfig = field(default_factory=LoraConfig)
    # language modelling: the sizes a device may train (it picks the largest that fits its
    # memory), and the families devices are spread over (default: just ``name``)
    sizes: tuple[Literal["s", "m", "l"], ...] = ("s", "m", "l")
    families: tuple[str, ...] = ()  # lm: the families devices are spread over (empty: just model.name)
    # qwen3_moe only: > 0 builds a MoE of this many experts, each as wide as a dense qwen3's whole
    # MLP (the layout DeepFusion assembles); 0: the family's own fine-grained experts
    experts: int = 0
    # classify: the dropout probability inside the backbone (hidden states and attention); null
    # keeps the pretrained model's own (0.1 for MiniLM). Dropout's random masks cost about a third
    # of a CPU training step (benchmarks/results/precision_profile.md)
    backbone_dropout: float | None = None

    def __post_init__(self) -> None:
        check_range("model.experts", self.experts, lo=0)
        if self.backbone_dropout is not None:
            check_range("model.backbone_dropout", self.backbone_dropout, lo=0.0, hi=1.0, open_hi=True)
        if self.name == "path" and not self.path:
            raise ConfigError("model.path: required when model.name=path; expected a local model folder")
        if self.path and "path" not in (self.name, *self.families):
            raise ConfigError(
                f"model.path: {self.path!r} is set but model.name is {self.name!r}, so it would be ignored; "
                "expected model.name=path (or no model.path)"
            )
        if not self.sizes:
            raise ConfigError("model.sizes: empty; expected some of s, m, l")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1  # local epochs per round
    batch_size: int = 32  # examples per local step
    lr: float = 1e-3  # LoRA (or full) weights
    head_lr: float = 1e-2  # the freshly initialised classifier head learns faster
    weight_decay: float = 0.0  # AdamW weight decay
    max_steps: int | None = None  # cap on local optimizer steps per round
    # bf16: forward passes under torch.autocast in bfloat16 (float32 weights, optimizer and loss);
    # auto: bf16 where the hardware runs it natively (CUDA with bf16, a CPU with AVX-512 BF16 or
    # AMX), else fp32. fp32 gives the same numbers on every machine.
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    # keep frozen passes' per-example outputs on the device (the blocks below the lowest trained
    # one, FedMS's frozen experts) and reuse them across epochs and rounds (models/prefix.py)
    prefix_cache: bool = True
    # what the simulating process holds of all clients' caches; a client whose cache would not fit
    # recomputes (and is charged for it) like a device without the memory
    prefix_cache_mb: float = 2048.0

    def __post_init__(self) -> None:
        check_range("train.epochs", self.epochs, lo=1)
        check_range("train.batch_size", self.batch_size, lo=1)
        check_range("train.lr", self.lr, lo=0.0, open_lo=True)
        check_range("train.head_lr", self.head_lr, lo=0.0, open_lo=True)
        check_range("train.weight_decay", self.weight_decay, lo=0.0)
        if self.max_steps is not None:
            check_range("train.max_steps", self.max_steps, lo=1)
        check_range("train.prefix_cache_mb", self.prefix_cache_mb, lo=0.0)


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
    # multiplies every device's memory: scale the population with the model, e.g. 0.1 when
    # 10M-parameter stand-ins play 1B-parameter on-device LMs
    memory_scale: float = 1.0

    def __post_init__(self) -> None:
        check_range("edge.memory_scale", self.memory_scale, lo=0.0, open_lo=True)
        for name, weight in self.tiers.items():
            if name not in TIERS:
                raise ConfigError(f"edge.tiers: unknown tier {name!r}; expected one of {', '.join(TIERS)}")
            check_range(f"edge.tiers.{name}", weight, lo=0.0)
        if sum(self.tiers.values()) <= 0:
            raise ConfigError("edge.tiers: weights sum to 0; expected at least one positive weight")
        check_range("edge.jitter", self.jitter, lo=0.0, hi=1.0, open_hi=True)


@dataclass(frozen=True)
class FlowerConfig:
    """Settings of the Flower engine (``engine: flower``); ignored by the in-process engine."""

    round_timeout: float = 600.0  # seconds a round waits for replies; late clients count as dropped
    client_cpus: int = 1  # CPUs (and torch threads) per simulated client
    # simulated clients at once (default: the machine's cores / client_cpus); each holds its own training
    # memory: parallel=1 with client_cpus=<cores> trains as in-process (benchmarks/results/flower_engine.md)
    parallel: int | None = None

    def __post_init__(self) -> None:
        check_range("flower.round_timeout", self.round_timeout, lo=0.0, open_lo=True)
        check_range("flower.client_cpus", self.client_cpus, lo=1)
        if self.parallel is not None:
            check_range("flower.parallel", self.parallel, lo=1)


@dataclass(frozen=True)
class AggregationConfig:
    """How the server merges client updates against Byzantine clients (``fl/robust.py``)."""

    # mean: each method's own sample-weighted mean; median, trimmed (coordinate-wise), krum
    # (Multi-Krum), clip (norm bounding) replace it for every method's payloads
    rule: Literal["mean", "median", "trimmed", "krum", "clip"] = "mean"
    trim: float = 0.2  # trimmed: share of a coordinate's largest and of its smallest values dropped
    byzantine: int = 1  # krum: f, the attackers tolerated (the n - f best-scored updates are averaged)
    clip: float = 2.0  # clip: a client's change bounded at this many times the round's median change norm

    def __post_init__(self) -> None:
        check_range("aggregation.trim", self.trim, lo=0.0, hi=0.5, open_hi=True)
        check_range("aggregation.byzantine", self.byzantine, lo=0)
        check_range("aggregation.clip", self.clip, lo=0.0, open_lo=True)


@dataclass(frozen=True)
class PrivacyConfig:
    """Client-level differential privacy (DP-FedAvg, ``fl/privacy.py``): off unless ``epsilon``
    or ``noise_multiplier`` is set."""

    epsilon: float | None = None  # the whole run's epsilon at delta; sigma calibrated by opacus's RDP accountant
    noise_multiplier: float | None = None  # sigma, the noise std in units of clip (instead of epsilon)
    clip: float = 1.0  # L2 bound on a client's change (every tensor it sends), and the noise's scale
    delta: float = 1e-5  # delta of the (epsilon, delta) guarantee

    def __post_init__(self) -> None:
        if self.epsilon is not None:
            check_range("privacy.epsilon", self.epsilon, lo=0.0, open_lo=True)
        if self.noise_multiplier is not None:
            check_range("privacy.noise_multiplier", self.noise_multiplier, lo=0.0)
        if self.epsilon is not None and self.noise_multiplier is not None:
            raise ConfigError("privacy.noise_multiplier: set privacy.epsilon or privacy.noise_multiplier, not both")
        check_range("privacy.clip", self.clip, lo=0.0, open_lo=True)
        check_range("privacy.delta", self.delta, lo=0.0, hi=1.0, open_lo=True, open_hi=True)

    @property
    def enabled(self) -> bool:
        return self.epsilon is not None or self.noise_multiplier is not None


@dataclass(frozen=True)
class FaultsConfig:
    """Faults injected into every round, on both engines: devices that drop out, stragglers cut."""

    dropout: float = 0.0  # chance that a device asked to train drops out of a round (seeded per device and round)
    # simulated seconds a round waits (download, compute, upload and edge time, from the device
    # profiles); a device that would take longer is a straggler and its update is discarded
    deadline: float | None = None

    def __post_init__(self) -> None:
        check_range("faults.dropout", self.dropout, lo=0.0, hi=1.0, open_hi=True)
        if self.deadline is not None:
            check_range("faults.deadline", self.deadline, lo=0.0, open_lo=True)


@dataclass(frozen=True)
class AttackConfig:
    """Simulated Byzantine clients (``fl/attacks.py``): a fixed share of devices send hostile updates."""

    # sign_flip: the change reversed and amplified; scale: amplified; noise: Gaussian noise in
    # its place; label_flip: honest training on flipped labels (classification)
    kind: Literal["none", "sign_flip", "scale", "noise", "label_flip"] = "none"
    fraction: float = 0.0  # share of the devices that are malicious (drawn once from the seed)
    strength: float = 4.0  # sign_flip and scale: the factor on the change; noise: its std in RMSs of the change

    def __post_init__(self) -> None:
        check_range("attack.fraction", self.fraction, lo=0.0, hi=0.5)
        check_range("attack.strength", self.strength, lo=0.0, open_lo=True)


@dataclass(frozen=True)
class AlgorithmConfig:
    """Base of every algorithm's own config; subclasses add their hyper-parameters.

    Each subclass is registered as ``algorithm`` under its name and names its Strategy class as
    ``"package.module:Class"`` in ``strategy``, imported only when a run is built, so reading a
    config never imports torch (``edgefm/algorithms/configs.py`` holds the built-in ones).
    """

    strategy: ClassVar[str] = ""
    tasks: ClassVar[tuple[str, ...]] = ("classify", "lm")  # the tasks the method can train
    merges_updates: ClassVar[bool] = True  # whether the server averages client updates (robust rules apply)
    name: str = "fedavg"

    @classmethod
    def strategy_class(cls) -> type:
        return registry.resolve(cls.strategy)

    def check(self, run: RunConfig) -> None:
        """Constraints between the method and the rest of the run (default: none)."""

    @classmethod
    def resolve_class(cls, raw: dict, prefix: str) -> type:
        """The registered config class that ``raw["name"]`` names (how ``build`` types the section)."""
        name = raw.get("name", AlgorithmConfig.name)
        if not isinstance(name, str):
            raise ConfigError(f"{join(prefix, 'name')}: {name!r} has the wrong type; expected a string")
        try:
            return registry.get("algorithm", name)
        except EdgefmError as exc:
            raise ConfigError(f"{join(prefix, 'name')}: {exc}") from None


TRACKERS = ("none", "mlflow", "tensorboard", "wandb")  # tracking's values (fl/tracking.py)


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0  # seeds everything: data split, devices, sampling, initialisation; same seed, same numbers
    task: Literal["classify", "lm"] = "classify"  # text classification, or causal language modelling
    rounds: int = 5  # communication rounds
    clients: int = 10  # devices in the population (each holds one data partition)
    fraction: float = 1.0  # share of clients sampled each round
    device: Literal["auto", "cpu", "cuda"] = "auto"  # torch device for training; auto: cuda when present
    engine: Literal["inprocess", "flower"] = "inprocess"  # where clients run (see fl/flower.py)
    eval_every: int = 1  # evaluate the global model every k rounds (and always at the last)
    # an update claiming more training examples is rejected (a huge count would dominate the mean)
    max_examples: int = 10_000_000
    # clients' private state (local models, experts, heads) the in-process engine holds in memory;
    # beyond it, one file per client in a temporary folder (fl/private.py)
    private_memory_mb: float = 1024.0
    # after each client trains or is evaluated, the in-process engine hands the heap it freed back
    # to the OS (glibc malloc_trim, fl/heap.py): peak memory of 1,000 clients stays near one
    # client's, at the price of faulting pages in again (benchmarks/results/client_memory.md)
    trim_memory: bool = False
    # every process that builds the run (the in-process engine, Flower's actors and ServerApp)
    # serves allocations of at least this many KiB from memory maps of their own, handed back to
    # the OS when freed (glibc mallopt, fl/heap.py); 0: glibc's adaptive default. 128 held 1,000
    # simulated clients to 1.19x the peak of one, at 1.4x the time (benchmarks/results/client_memory.md)
    mmap_threshold_kb: int = 0
    # experiment tracking (fl/tracking.py): none, or mlflow, tensorboard, wandb, comma-separated;
    # mlflow logs to $MLFLOW_TRACKING_URI, else a SQLite store mlflow.db beside the run folder
    tracking: str = "none"
    data: DataConfig = field(default_factory=DataConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    edge: EdgeConfig = field(default_factory=EdgeConfig)
    flower: FlowerConfig = field(default_factory=FlowerConfig)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)

    def __post_init__(self) -> None:
        check_range("seed", self.seed, lo=0)  # numpy's generators take no negative seeds
        check_range("rounds", self.rounds, lo=1)
        check_range("clients", self.clients, lo=1)
        check_range("fraction", self.fraction, lo=0.0, hi=1.0, open_lo=True)
        check_range("eval_every", self.eval_every, lo=1)
        check_range("max_examples", self.max_examples, lo=1)
        check_range("private_memory_mb", self.private_memory_mb, lo=0.0)
        check_range("mmap_threshold_kb", self.mmap_threshold_kb, lo=0, hi=32768)  # glibc: fl/heap.py
        if not isinstance(self.tracking, str) or any(b.strip() not in TRACKERS for b in self.tracking.split(",")):
            raise ConfigError(
                f"tracking: {self.tracking!r}; expected none, or one or more of mlflow, tensorboard, wandb "
                "separated by commas"
            )
        if self.task not in type(self.algorithm).tasks:
            raise ConfigError(
                f"task: algorithm {self.algorithm.name!r} does not train {self.task!r}; expected one of "
                f"{', '.join(type(self.algorithm).tasks)}"
            )
        self.algorithm.check(self)
        if self.aggregation.rule != "mean" and not type(self.algorithm).merges_updates:
            raise ConfigError(
                f"aggregation.rule: {self.aggregation.rule}; algorithm {self.algorithm.name!r} averages no client "
                "updates; expected mean"
            )
        if self.privacy.enabled and (self.aggregation.rule != "mean" or not type(self.algorithm).merges_updates):
            raise ConfigError(
                f"privacy.epsilon: differential privacy is a private mean of client updates; expected "
                f"aggregation.rule mean (got {self.aggregation.rule}) and an algorithm that averages updates "
                f"(got {self.algorithm.name!r})"
            )
        if self.attack.kind == "label_flip" and self.task != "classify":
            raise ConfigError(f"attack.kind: label_flip needs labels; task {self.task!r} has none (expected classify)")
        if self.task == "lm":
            for family in (self.model.name, *self.model.families):
                if family != "path" and family not in FAMILIES:
                    raise ConfigError(
                        f"model.name: {family!r} is not a causal-LM family; expected one of {', '.join(FAMILIES)} or path"
                    )
        if self.model.experts and "qwen3_moe" not in (self.model.name, *self.model.families):
            raise ConfigError(f"model.experts: {self.model.experts}; only a qwen3_moe model has experts to set")


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


# `edgefm demo` (and configs/demo.yaml): the built-in defaults, with bfloat16 where the hardware
# runs it natively and no dropout inside the frozen backbone (its random masks cost a third of a
# CPU step): benchmarks/results/precision.md measures both, speed and accuracy. The library's
# defaults stay fp32 (the same numbers on every machine) and the pretrained model's dropout.
DEMO = ("train.precision=auto", "model.backbone_dropout=0.0")


def loads(text: str, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """A config from YAML text (how the Flower engine ships it to nodes), with overrides."""
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config text is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError("config text: expected a mapping at the top level")
    return build(RunConfig, with_overrides(raw, parse_overrides(overrides)))


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
    return build(RunConfig, with_overrides(raw, parse_overrides(overrides)))


def with_overrides(raw: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with ``over`` merged in. An override that switches the method (``algorithm.name``)
    drops the file's other algorithm keys, which belong to the method it replaces; algorithm keys
    given with the switch are kept (and checked against the new method)."""
    algo, new = raw.get("algorithm"), over.get("algorithm")
    if isinstance(algo, dict) and isinstance(new, dict) and "name" in new and new["name"] != algo.get("name"):
        raw = {**raw, "algorithm": {}}
    return merge(raw, over)


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
