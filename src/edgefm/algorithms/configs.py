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
    name: str = "local"


@register("algorithm", "centralized")
@dataclass(frozen=True)
class CentralizedConfig(AlgorithmConfig):
    """Every client's data pooled in one datacenter (the upper bound)."""

    strategy = "edgefm.algorithms.centralized:Centralized"
    name: str = "centralized"


@register("algorithm", "fedms")
@dataclass(frozen=True)
class FedMSConfig(AlgorithmConfig):
    """FedMS (Wu et al., arXiv 2312.15926): global + local experts, a gate, Sparsely Activated LoRA."""

    strategy = "edgefm.algorithms.fedms:FedMS"
    tasks = ("classify",)  # experts are classifier heads
    name: str = "fedms"
    stage1_rounds: int = 2
    sal: Literal["progressive", "fixed", "all"] = "progressive"
    m0: int = 2
    delta: int = 5
    full_depth_flops: float = 150e9  # FLOP/s at which a device trains every block
    gate_hidden: int = 16
    gate_lr: float = 1e-3
    local_weight: float = 0.5
    gate: Literal["learned", "fixed"] = "learned"
    experts: Literal["mixture", "global", "local"] = "mixture"

    def __post_init__(self) -> None:
        check_range("algorithm.stage1_rounds", self.stage1_rounds, lo=0)
        for key in ("m0", "delta", "gate_hidden"):
            check_range(f"algorithm.{key}", getattr(self, key), lo=1)
        for key in ("gate_lr", "full_depth_flops"):
            check_range(f"algorithm.{key}", getattr(self, key), lo=0.0, open_lo=True)
        check_range("algorithm.local_weight", self.local_weight, lo=0.0)


@register("algorithm", "raffm")
@dataclass(frozen=True)
class RaFFMConfig(AlgorithmConfig):
    """RaFFM (Yu et al., arXiv 2310.00247): salience-ordered elastic subnetworks sized to each device."""

    strategy = "edgefm.algorithms.raffm:RaFFM"
    tasks = ("classify",)  # the elastic space is a BERT encoder's
    name: str = "raffm"
    salience: Literal["spp", "none", "independent_qk"] = "spp"
    space: Literal["elastic", "heterofl", "full"] = "elastic"
    aggregation: Literal["coverage", "participants", "official"] = "coverage"
    unfit: Literal["drop", "force"] = "drop"
    step_budget_s: float = 3.0  # one training step must take at most this long on a device
    budget_seq_len: int = 64
    train_embeddings: bool = False  # for randomly initialised models, whose embeddings must learn

    def __post_init__(self) -> None:
        if not self.step_budget_s > 0:
            raise ConfigError(f"algorithm.step_budget_s: {self.step_budget_s!r}; expected a positive number of seconds")
        check_range("algorithm.budget_seq_len", self.budget_seq_len, lo=1)
