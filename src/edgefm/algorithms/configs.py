"""Every built-in method's config: its hyper-parameters, their checks, and its Strategy's name.

Torch-free on purpose: reading and validating a YAML config imports this module and nothing
heavier; the Strategy named in ``strategy`` is imported only when a run is built. A new method
adds its config here with one ``register`` line, and its Strategy in a module of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edgefm.config import AlgorithmConfig, ConfigError, check_range
from edgefm.registry import register


@register("algorithm", "fedavg")
@dataclass(frozen=True)
class FedAvgConfig(AlgorithmConfig):
    """FedAvg (McMahan et al. 2017): sample-weighted averaging of adapters + head."""

    strategy = "edgefm.algorithms.fedavg:FedAvg"
    name: str = "fedavg"


@register("algorithm", "fedprox")
@dataclass(frozen=True)
class FedProxConfig(AlgorithmConfig):
    """FedProx (Li et al. 2020): FedAvg with a proximal term in every client's loss."""

    strategy = "edgefm.algorithms.fedprox:FedProx"
    name: str = "fedprox"
    mu: float = 0.01  # proximal weight; 0 is FedAvg

    def __post_init__(self) -> None:
        check_range("algorithm.mu", self.mu, lo=0.0)


@register("algorithm", "local")
@dataclass(frozen=True)
class LocalConfig(AlgorithmConfig):
    """Local-only training: each device fine-tunes alone (the lower bound of collaboration)."""

    strategy = "edgefm.algorithms.local:Local"
    merges_updates = False
    name: str = "local"


@register("algorithm", "centralized")
@dataclass(frozen=True)
class CentralizedConfig(AlgorithmConfig):
    """Every client's data pooled in one datacenter (the upper bound)."""

    strategy = "edgefm.algorithms.centralized:Centralized"
    merges_updates = False
    name: str = "centralized"


@register("algorithm", "fedms")
@dataclass(frozen=True)
class FedMSConfig(AlgorithmConfig):
    """FedMS (Wu et al., arXiv 2312.15926): global + local experts, a gate, Sparsely Activated LoRA."""

    strategy = "edgefm.algorithms.fedms:FedMS"
    tasks = ("classify",)  # experts are classifier heads
    name: str = "fedms"
    stage1_rounds: int = 2  # rounds in which every client trains only the global expert
    # how many blocks get LoRA each round (Sparsely Activated LoRA): progressive grows m0 + round / delta,
    # fixed keeps m0, all: every block
    sal: Literal["progressive", "fixed", "all"] = "progressive"
    m0: int = 2  # LoRA blocks at the start (sal progressive or fixed)
    delta: int = 5  # rounds between one more LoRA block (sal progressive)
    full_depth_flops: float = 150e9  # FLOP/s at which a device trains every block
    gate_hidden: int = 16  # hidden width of the gate that mixes the global and local experts
    gate_lr: float = 1e-3  # learning rate of the gate
    local_weight: float = 0.5  # weight of the local expert's own cross-entropy in a client's loss
    # learned: the gate mixing the experts trains; fixed: it keeps its initial weights
    gate: Literal["learned", "fixed"] = "learned"
    # share of each client's stage-2 examples held out of the local expert's training and used to
    # train the gate alone (a fixed split per client); 0: experts and gate train together on all
    gate_holdout: float = 0.0
    # which experts predict: the mixture, the global alone or the local alone
    experts: Literal["mixture", "global", "local"] = "mixture"

    def __post_init__(self) -> None:
        check_range("algorithm.stage1_rounds", self.stage1_rounds, lo=0)
        for key in ("m0", "delta", "gate_hidden"):
            check_range(f"algorithm.{key}", getattr(self, key), lo=1)
        for key in ("gate_lr", "full_depth_flops"):
            check_range(f"algorithm.{key}", getattr(self, key), lo=0.0, open_lo=True)
        check_range("algorithm.local_weight", self.local_weight, lo=0.0)
        check_range("algorithm.gate_holdout", self.gate_holdout, lo=0.0, hi=1.0, open_hi=True)


@register("algorithm", "raffm")
@dataclass(frozen=True)
class RaFFMConfig(AlgorithmConfig):
    """RaFFM (Yu et al., arXiv 2310.00247): salience-ordered elastic subnetworks sized to each device."""

    strategy = "edgefm.algorithms.raffm:RaFFM"
    tasks = ("classify",)  # the elastic space is a BERT encoder's
    name: str = "raffm"
    # how the server orders weights (SPP: the paper's weight salience; activation: from statistics of
    # the clients' own data, sent with their updates; none: as they are; independent_qk: query and key
    # ranked apart)
    salience: Literal["spp", "activation", "none", "independent_qk"] = "spp"
    salience_examples: int = 256  # salience=activation: examples of its own data each client measures
    # subnetworks offered: elastic widths, heterofl (1, 1/2, 1/4), or full (the whole model only)
    space: Literal["elastic", "heterofl", "full"] = "elastic"
    # coverage: mean over the clients that trained a coordinate; participants; official: the official
    # code's rule
    aggregation: Literal["coverage", "participants", "official"] = "coverage"
    # a device that fits no subnetwork: drop it from the round, or force the smallest on it
    unfit: Literal["drop", "force"] = "drop"
    step_budget_s: float = 3.0  # one training step must take at most this long on a device
    budget_seq_len: int = 64  # tokens per example when sizing a training step against step_budget_s
    train_embeddings: bool = False  # for randomly initialised models, whose embeddings must learn

    def __post_init__(self) -> None:
        if not self.step_budget_s > 0:
            raise ConfigError(f"algorithm.step_budget_s: {self.step_budget_s!r}; expected a positive number of seconds")
        check_range("algorithm.budget_seq_len", self.budget_seq_len, lo=1)
        check_range("algorithm.salience_examples", self.salience_examples, lo=1)


@register("algorithm", "deepfusion")
@dataclass(frozen=True)
class DeepFusionConfig(AlgorithmConfig):
    """DeepFusion (Li et al., arXiv 2602.14301): one-shot distillation of heterogeneous on-device
    LMs into a global mixture of experts, through View-Aligned Attention."""

    strategy = "edgefm.algorithms.deepfusion:DeepFusion"
    tasks = ("lm",)
    merges_updates = False
    name: str = "deepfusion"
    experts: int = 4  # K: experts of the global MoE, = knowledge domains (clusters of devices)
    moe_size: Literal["s", "m", "l"] = "s"  # the dense base (qwen3 of this size) each expert comes from
    local_steps: int = 40  # a device's training steps on its own text (its one round)
    embed_dim: int = 16  # device embeddings reduced by PCA on the server (0: the raw 384 dimensions)
    embed_blocks: int = 64  # blocks of its text (evenly spaced) a device's embedding averages
    clustering: Literal["kmeans", "none"] = "kmeans"  # none: one proxy per architecture
    distill: Literal["vaa", "linear", "fedmkt", "ofa"] = "vaa"  # Phase II: the method and its baselines
    alpha: float = 1.0  # feature-matching weight (ofa: stage projectors' weight)
    beta: float = 1.0  # logit-distillation weight
    temperature: float = 1.0  # softmax temperature of the logit distillation
    stages: int = 4  # J (capped by the shallower model's depth)
    patches: int = 64  # Pq
    vaa_width: int = 256  # d
    vaa_heads: int = 4  # attention heads of View-Aligned Attention
    vaa_residual: bool = False  # add a residual path around View-Aligned Attention
    distill_steps: int = 60  # Phase II: distillation steps per expert
    distill_lr: float = 2e-3  # Phase II: learning rate of the expert being distilled
    vaa_lr: float = 1e-3  # Phase II: learning rate of the View-Aligned Attention modules
    merge_steps: int = 40  # Phase III: router and shared layers fine-tuned, experts frozen
    merge_lr: float = 5e-4  # Phase III: learning rate
    balance: float = 0.01  # load-balancing loss coefficient
    fedmkt_top_k: int = 128  # logits a FedMKT teacher keeps per token

    def __post_init__(self) -> None:
        for key in (
            "experts",
            "local_steps",
            "embed_blocks",
            "stages",
            "patches",
            "vaa_width",
            "vaa_heads",
            "distill_steps",
            "fedmkt_top_k",
        ):
            check_range(f"algorithm.{key}", getattr(self, key), lo=1)
        check_range("algorithm.embed_dim", self.embed_dim, lo=0)
        check_range("algorithm.merge_steps", self.merge_steps, lo=0)
        for key in ("alpha", "beta", "balance"):
            check_range(f"algorithm.{key}", getattr(self, key), lo=0.0)
        for key in ("temperature", "distill_lr", "vaa_lr", "merge_lr"):
            check_range(f"algorithm.{key}", getattr(self, key), lo=0.0, open_lo=True)
        if self.vaa_width % self.vaa_heads:
            raise ConfigError(
                f"algorithm.vaa_width: {self.vaa_width} is not a multiple of vaa_heads ({self.vaa_heads})"
            )

    def check(self, run) -> None:
        if run.rounds != 1:
            raise ConfigError(f"rounds: {run.rounds}; deepfusion is one-shot: every device uploads once (rounds=1)")
        if run.data.public_fraction <= 0:
            raise ConfigError(
                "data.public_fraction: 0.0; deepfusion distils on public data held by the server: expected > 0"
            )
        if self.experts > run.clients:
            raise ConfigError(
                f"algorithm.experts: {self.experts} exceeds the {run.clients} devices; expected at most one per device"
            )
        if run.model.finetune != "full":
            raise ConfigError("model.finetune: deepfusion's devices upload whole models; expected full")


@register("algorithm", "fedjets")
@dataclass(frozen=True)
class FedJetsConfig(AlgorithmConfig):
    """FedJETS-style federated MoE (Dun et al., arXiv 2306.08586): each device trains the shared
    layers and the experts its text routes to most; DeepFusion's multi-round baseline."""

    strategy = "edgefm.algorithms.fedjets:FedJets"
    tasks = ("lm",)
    name: str = "fedjets"
    active: int = 2  # experts a device downloads and trains each round

    def __post_init__(self) -> None:
        check_range("algorithm.active", self.active, lo=1)

    def check(self, run) -> None:
        if run.model.name != "qwen3_moe" or run.model.families or run.model.experts < 2:
            raise ConfigError(
                f"model.name: {run.model.name!r}; fedjets trains one global MoE: expected model.name=qwen3_moe, "
                "no model.families, model.experts >= 2"
            )
        if self.active > run.model.experts:
            raise ConfigError(f"algorithm.active: {self.active} exceeds model.experts ({run.model.experts})")


@register("algorithm", "splitfed")
@dataclass(frozen=True)
class SplitFedConfig(AlgorithmConfig):
    """Split federated fine-tuning (SplitFed, Thapa et al. 2022; PRINCE, arXiv 2503.04971): the
    device trains the blocks before the cut, the edge server the rest."""

    strategy = "edgefm.algorithms.splitfed:SplitFed"
    tasks = ("classify", "lm")
    name: str = "splitfed"
    cut: int = 1  # blocks on the device
    cuts: tuple[int, ...] = ()  # per-device cuts, cycled over devices (empty: cut for every device; v1 only)
    variant: Literal["v1", "v2"] = "v1"  # v1: an edge copy per device, averaged; v2: one edge part, in turn
    aggregation: Literal["naive", "unbiased"] = "unbiased"  # unbiased: Horvitz-Thompson p_n / q_n
    participation: tuple[float, ...] = ()  # q_n, cycled over devices (empty: every device, every round)
    step_drop: float = 0.0  # chance a device disconnects during any one split step (fault injection)

    def __post_init__(self) -> None:
        check_range("algorithm.cut", self.cut, lo=1)
        for c in self.cuts:
            check_range("algorithm.cuts", c, lo=1)
        if self.cuts and self.variant == "v2":
            raise ConfigError("algorithm.cuts: per-device cuts need variant v1; v2 has one edge part for every device")
        check_range("algorithm.step_drop", self.step_drop, lo=0.0, hi=0.99)
        for q in self.participation:
            check_range("algorithm.participation", q, lo=0.0, hi=1.0)

    def check(self, run) -> None:
        if run.model.families:
            raise ConfigError("model.families: splitfed trains one model architecture; leave model.families empty")
