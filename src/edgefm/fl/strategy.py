"""The one plug-in point for federated methods (ARCHITECTURE.md).

A method is a :class:`Strategy` with four steps — ``configure``, ``client_update``,
``aggregate``, ``evaluate`` — and the runtime owns everything else: sampling, the ledger,
checkpoints and the transport. The in-process engine and the Flower engine call exactly these
four, so a method written once runs in both. Payloads are what would cross the network.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from edgefm.config import AlgorithmConfig, RunConfig
from edgefm.data.encode import Encoded
from edgefm.edge.devices import DeviceProfile
from edgefm.fl.aggregate import validate_update

Tensors = dict[str, torch.Tensor]
log = logging.getLogger("edgefm.fl")


@dataclass
class ClientData:
    client_id: int
    train: Encoded
    test: Encoded  # local test split, same label mix as train
    raw_bytes: int = 0  # UTF-8 size of the raw training text (what pooling it would ship)


@dataclass
class ClientTask:
    client_id: int
    round: int
    payload: Tensors  # what the server sends down (counted in the ledger)
    # hyper-parameters; small, not counted. config["declined"] = reason: the device cannot take
    # this task, so the engine does not contact it and records it as dropped with that reason.
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class ClientUpdate:
    client_id: int
    round: int
    payload: Tensors  # what the client sends up (counted in the ledger)
    num_examples: int
    flops: float
    metrics: dict[str, float] = field(default_factory=dict)
    private: Tensors | None = None  # state that stays on the device (never counted, never sent)
    extra_bytes_up: int = 0  # non-tensor traffic, e.g. raw data shipped to a datacenter
    colocated: bool = False  # trainer and server are one machine: the payload crosses no network


@dataclass
class AggregateResult:
    state: Tensors
    rejected: dict[int, str] = field(default_factory=dict)  # client id -> reason


def seed_for(*parts: int) -> int:
    """A 63-bit seed derived from integers (run seed, round, client): no global RNG state."""
    return int(np.random.SeedSequence([abs(int(p)) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


class Strategy(ABC):
    """Base class; the default steps implement sample-weighted federated averaging."""

    Config: ClassVar[type[AlgorithmConfig]] = AlgorithmConfig
    personalized: ClassVar[bool] = False  # clients keep private models (evaluate per client)
    pooled: ClassVar[bool] = False  # all data pooled on one datacenter device (centralized)
    flower_ready: ClassVar[bool] = True  # its per-client evaluation works on Flower nodes

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.algo = cfg.algorithm

    @abstractmethod
    def initial_state(self, workbench) -> Tensors:
        """The global state before round 1."""

    @abstractmethod
    def configure(self, rnd: int, state: Tensors, devices: list[DeviceProfile]) -> dict[int, ClientTask]:
        """Who trains what this round, from each sampled device's profile."""

    @abstractmethod
    def client_update(self, task: ClientTask, workbench, data: ClientData, private: Tensors | None) -> ClientUpdate:
        """Local training on one device; returns the payload it would send."""

    @abstractmethod
    def merge(self, rnd: int, state: Tensors, updates: list[ClientUpdate]) -> Tensors:
        """Combine validated updates into the next global state (a pure function)."""

    @abstractmethod
    def evaluate(
        self, state: Tensors, workbench, test: Encoded, clients: list[ClientData], private: dict[int, Tensors]
    ) -> dict[str, float]:
        """Global (and, for personalized methods, per-client) metrics."""

    # Set when the global accuracy is that of the global state alone (computed on the server);
    # otherwise it is the mean over clients of their own models (computed on the nodes).
    global_from_state: ClassVar[bool] = True

    def load_state(self, workbench, state: Tensors) -> None:
        """Put a (global or client) state into the workbench, e.g. to evaluate it on a Flower node."""
        workbench.set_state(state)

    def global_accuracy(self, state: Tensors, workbench, test: Encoded) -> float:
        """The global model's accuracy on ``test`` (the server side of ``evaluate`` on Flower)."""
        self.load_state(workbench, state)
        return workbench.accuracy(test)

    def client_accuracy(self, state: Tensors, workbench, data: ClientData, private: Tensors | None) -> float:
        """One client's accuracy on its local test split, with its own model for personalized
        methods (the node side of ``evaluate`` on Flower)."""
        self.load_state(workbench, private if self.personalized and private is not None else state)
        return workbench.accuracy(data.test)

    def trainable_parameters(self, workbench) -> int:
        """Parameters this method trains on a device (for reports)."""
        return workbench.parameter_counts()["trainable"]

    def expected_update(self, state: Tensors, task: ClientTask) -> Tensors:
        """The keys and shapes a valid upload must have (default: those of the global state)."""
        return state

    def aggregate(
        self, rnd: int, state: Tensors, updates: list[ClientUpdate], tasks: dict[int, ClientTask] | None = None
    ) -> AggregateResult:
        """Validate every update (keys, shapes, finite values), reject and log bad ones, merge the rest."""
        good, rejected = [], {}
        for u in updates:
            ref = self.expected_update(state, tasks[u.client_id]) if tasks else state
            reason = validate_update(u.payload, ref)
            if reason is None and u.num_examples <= 0:
                reason = f"num_examples={u.num_examples}; expected a positive count"
            if reason is not None:
                log.warning("round %d: rejected update from client %d: %s", rnd, u.client_id, reason)
                rejected[u.client_id] = reason
            else:
                good.append(u)
        if not good:
            return AggregateResult(state, rejected)
        return AggregateResult(self.merge(rnd, state, good), rejected)

    # Per-client derived randomness, identical in every engine and after a resume.
    def client_seed(self, rnd: int, client_id: int) -> int:
        return seed_for(self.cfg.seed, 1000 + rnd, client_id)

    def client_generator(self, rnd: int, client_id: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.client_seed(rnd, client_id))
