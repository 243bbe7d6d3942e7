"""The one plug-in point for federated methods (ARCHITECTURE.md).

A method is a :class:`Strategy`. The runtime owns the loop, sampling, the ledger, checkpoints
and the transport, and calls only these hooks, the same way in both engines:

- training: ``initial_state``, ``configure`` (who trains what; a task may be *declined*),
  ``client_update`` (on the device), ``aggregate`` (validate, then ``merge``); methods whose
  update needs the server as it trains (split learning) also ``client_step``, ``serve`` and
  ``finish``, one message at a time;
- the population: ``population`` (e.g. the centralized baseline pools every client's data);
- the models a run ends with: ``model_for`` (the global model, or a client's own given its
  private state) and ``export`` (that model cut to a budget, for deployment);
- evaluation: ``evaluate_server`` (from the global state, on the server) and
  ``evaluate_client`` (each client's own model, on the device); the runtime combines them
  with :func:`combine_metrics`, once, for both engines;
- reports: ``trainable_parameters``; optional diagnostics: ``expert_breakdown``.

Payloads are what would cross the network: the ledger counts their bytes. Every default here
is sample-weighted federated averaging of the workbench's trainable state.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from edgefm import EdgefmError
from edgefm.config import AlgorithmConfig, RunConfig
from edgefm.data.encode import Encoded
from edgefm.edge.devices import DeviceProfile
from edgefm.fl import privacy, robust
from edgefm.fl.aggregate import validate_count, validate_update
from edgefm.fl.events import seed_for as seed_for  # defined light, for launchers; imported from here too

Tensors = dict[str, torch.Tensor]
log = logging.getLogger("edgefm.fl")


@dataclass
class ClientData:
    client_id: int
    train: Encoded
    test: Encoded  # local test split, same label mix as train
    raw_bytes: int = 0  # size of the raw training data (what pooling it would ship: data/sources.raw_bytes)
    # rows of the run's training pool that ``train`` and ``test`` hold, in their order (one
    # example per row; a language model packs its rows' documents into several blocks each)
    train_index: np.ndarray | None = None
    test_index: np.ndarray | None = None


@dataclass
class ClientTask:
    client_id: int
    round: int
    payload: Tensors  # what the server sends down (counted in the ledger)
    config: dict[str, Any] = field(default_factory=dict)  # the method's hyper-parameters; small, not counted
    # Non-empty: the device cannot take this task, and why. The engine does not contact it and
    # records it as dropped with this reason.
    declined: str = ""
    arch: str = ""  # the architecture the device trains ("": the run's only one); in the ledger
    memory_bytes: float = 0.0  # the device's estimated training memory for this task; in the ledger


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
    extra_bytes_down: int = 0  # traffic received during the round beyond the task (split learning's gradients)
    server_flops: float = 0.0  # work a server did for this client during its round (an edge part)
    server_seconds: float = 0.0  # the simulated time of that work, which the device waits for


@dataclass
class Step:
    """One message of an update that needs the server while it trains (``Strategy.interactive``):
    what goes up to the server, or, once the device is done, its update."""

    up: Tensors = field(default_factory=dict)
    update: ClientUpdate | None = None


@dataclass
class AggregateResult:
    state: Tensors
    rejected: dict[int, str] = field(default_factory=dict)  # client id -> reason


@dataclass
class ClientEval:
    """One client's evaluation of the model it ends the round with."""

    local: dict[str, float] = field(default_factory=dict)  # on its local test split
    # its own model on the global test set (methods without one global model, e.g. local-only)
    global_: dict[str, float] = field(default_factory=dict)
    client: int = -1  # which client (the engine fills it in)


def combine_metrics(server: dict[str, float], clients: list[ClientEval]) -> dict[str, float]:
    """A round's metrics: the server's, plus for every client-local metric ``k`` its mean and
    range over the clients that report it (``client_k_mean``, ``client_k_min``,
    ``client_k_max``), plus the mean over clients of each global-test metric the server did not
    compute itself."""
    out = {k: v for k, v in server.items() if math.isfinite(v)}
    for part, summarize in (("local", True), ("global_", False)):
        keys = sorted({k for c in clients for k in getattr(c, part)})
        for key in keys:
            values = [getattr(c, part)[key] for c in clients if math.isfinite(getattr(c, part).get(key, math.nan))]
            if not values:
                continue
            if summarize:
                out[f"client_{key}_mean"] = float(np.mean(values))
                out[f"client_{key}_min"] = float(np.min(values))
                out[f"client_{key}_max"] = float(np.max(values))
            elif key not in out:
                out[key] = float(np.mean(values))
    return out


class Strategy(ABC):
    """Base class; the default hooks implement sample-weighted federated averaging."""

    Config: ClassVar[type[AlgorithmConfig]] = AlgorithmConfig

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.algo = cfg.algorithm
        self.round_metrics: dict[str, float] = {}  # server-side figures of the last aggregation
        # devices the same edge server serves for other tenants in a round (fl/tenants.py sets it)
        self.edge_co_load: Callable[[int], int] = lambda rnd: 0
        self.round = 0  # the round being aggregated
        self.noise_sigma: float | None = None  # differential privacy's sigma, once calibrated
        self._private_groups = 0  # groups merged privately this round (each draws its own noise)

    def edge_demand(self, rnd: int) -> int:
        """How many of this run's devices the edge server serves at once in round ``rnd`` (a
        method that runs part of the model on the edge says; 0: none). Pure in ``rnd``, so
        tenants sharing one edge server can ask each other before any of them trains."""
        return 0

    # -- training -------------------------------------------------------------------------
    @abstractmethod
    def initial_state(self, workbench) -> Tensors:
        """The global state before round 1."""

    @abstractmethod
    def configure(self, rnd: int, state: Tensors, devices: list[DeviceProfile]) -> dict[int, ClientTask]:
        """Who trains what this round, from each sampled device's profile."""

    @abstractmethod
    def client_update(self, task: ClientTask, workbench, data: ClientData, private: Tensors | None) -> ClientUpdate:
        """Local training on one device; returns the payload it would send."""

    # -- updates that need the server while they train (split learning) ------------------
    # ``interactive`` methods exchange messages with the server during a client's update (the
    # server runs the model's edge part every step). In-process ``client_update`` plays both
    # sides. On Flower the transport relays: the node answers each message with
    # ``client_step`` (keeping nothing between messages but the ``carry`` it returns), the
    # server each ``Step.up`` with ``serve``, and ``finish`` completes the update on the server.
    interactive: ClassVar[bool] = False

    def serial(self) -> bool:
        """Whether clients' exchanges must run one after another (they share one server part)."""
        return False

    def client_step(
        self,
        task: ClientTask,
        workbench,
        data: ClientData,
        private: Tensors | None,
        carry: Tensors | None,
        down: Tensors | None,
    ) -> tuple[Step, Tensors]:
        """One message on the device: the server's answer ``down`` (None: the task itself),
        given what the device kept (``carry``; None at the start). Returns the step and the
        new carry."""
        raise EdgefmError(f"algorithm {self.algo.name!r} does not exchange messages during an update")

    def serve(self, task: ClientTask, workbench, up: Tensors) -> Tensors:
        """The server's answer to one message of a client's update."""
        raise EdgefmError(f"algorithm {self.algo.name!r} does not exchange messages during an update")

    def finish(self, task: ClientTask, update: ClientUpdate) -> ClientUpdate:
        """The update as the server completes it (what it measured while serving)."""
        return update

    @abstractmethod
    def merge(self, rnd: int, state: Tensors, updates: list[ClientUpdate], tasks: dict[int, ClientTask]) -> Tensors:
        """Combine validated updates (and the tasks that asked for them) into the next global state."""

    def expected_update(self, state: Tensors, task: ClientTask) -> Tensors:
        """The keys and shapes a valid upload must have (default: those of the global state)."""
        return state

    def aggregate(
        self, rnd: int, state: Tensors, updates: list[ClientUpdate], tasks: dict[int, ClientTask]
    ) -> AggregateResult:
        """Validate every update (keys, shapes, finite values), reject and log bad ones, merge the rest."""
        self.round, self._private_groups = rnd, 0
        good, rejected = [], {}
        for u in updates:
            task = tasks.get(u.client_id)
            reason = "no task was sent to this client" if task is None else None
            if reason is None:
                reason = validate_update(u.payload, self.expected_update(state, task))
            if reason is None:
                reason = validate_count(u.num_examples, self.cfg.max_examples)
            if reason is not None:
                log.warning("round %d: rejected update from client %d: %s", rnd, u.client_id, reason)
                rejected[u.client_id] = reason
            else:
                good.append(u)
        if not good:
            return AggregateResult(state, rejected)
        return AggregateResult(self.merge(rnd, state, good, tasks), rejected)

    def robust(
        self, payloads: list[Tensors], weights: list[float], previous: Tensors, masks: list[Tensors] | None = None
    ) -> Tensors | None:
        """``payloads`` (each with ``previous``'s keys, or ``masks`` saying which coordinates it
        trained) merged by the run's Byzantine-robust rule (``aggregation.rule``, ``fl/robust.py``)
        or privately (``privacy.*``, ``fl/privacy.py``); None under a plain ``mean``, where the
        method keeps its own mean. What the rule did goes into the round's metrics."""
        agg = self.cfg.aggregation
        if self.cfg.privacy.enabled:
            return self._private(payloads, previous, masks)
        if agg.rule == "mean":
            return None
        merged, info = robust.combine(payloads, weights, previous, agg.rule, masks, agg.trim, agg.byzantine, agg.clip)
        for k, v in info.items():  # several groups in a round (architectures, experts): summed
            self.round_metrics[k] = self.round_metrics.get(k, 0.0) + v
        return merged

    def _private(self, payloads: list[Tensors], previous: Tensors, masks: list[Tensors] | None) -> Tensors:
        cfg, priv = self.cfg, self.cfg.privacy
        q = privacy.sample_rate(cfg.fraction, cfg.clients)
        if self.noise_sigma is None:
            sigma = priv.noise_multiplier
            self.noise_sigma = (
                sigma if sigma is not None else privacy.noise_multiplier(priv.epsilon, priv.delta, q, cfg.rounds)
            )
        gen = torch.Generator().manual_seed(seed_for(cfg.seed, 6000 + self.round, self._private_groups))
        self._private_groups += 1
        merged, info = privacy.dp_mean(payloads, previous, priv.clip, self.noise_sigma, q * cfg.clients, gen, masks)
        self.round_metrics["dp_clipped"] = self.round_metrics.get("dp_clipped", 0.0) + info["dp_clipped"]
        self.round_metrics["dp_sigma"] = self.noise_sigma
        eps = privacy.spent(self.noise_sigma, q, self.round, priv.delta)
        if math.isfinite(eps):  # sigma 0 (clipping alone) gives no guarantee: no epsilon to report
            self.round_metrics["dp_epsilon"] = eps
        return merged

    # -- the population -----------------------------------------------------------------
    def population(
        self, clients: list[ClientData], devices: list[DeviceProfile], workbench
    ) -> tuple[list[ClientData], list[DeviceProfile]]:
        """The clients and devices that take part, and with which models (default: every client
        on its own device, with the run's one model)."""
        return clients, devices

    def server_data(self, public: Encoded | None) -> None:
        """The public data the server holds (``data.public_fraction``), for methods that use it."""
        self.public = public

    # -- the models a run ends with -------------------------------------------------------
    def load_state(self, workbench, state: Tensors) -> None:
        """Put a global state into the workbench."""
        workbench.set_state(state)

    def model_for(
        self, workbench, state: Tensors, private: Tensors | None = None, client: int | None = None
    ) -> nn.Module:
        """The model client ``client`` ends with, given its private state, or (both None) the
        global model: a module mapping (input_ids, attention_mask) to the task's scores. It may
        be the workbench's own model, valid until the workbench is next changed."""
        self.load_state(workbench, state)
        return workbench.model

    def export(
        self,
        workbench,
        state: Tensors,
        private: Tensors | None,
        budget: str,
        reorder: str = "",
        client: int | None = None,
        data: list[ClientData] | None = None,
    ) -> tuple[nn.Module, dict]:
        """The model to deploy for ``budget`` (a device tier, or ``full``) and facts about it
        (e.g. its widths); ``reorder`` (``weight``, ``activation``): put the most salient
        weights first before cutting, ranked by weights or by the clients' ``data``. By default
        a method trains one size of model and has no salience order."""
        if budget != "full":
            raise EdgefmError(
                f"--budget {budget!r}: algorithm {self.algo.name!r} trains one size of model; expected full"
            )
        if reorder:
            raise EdgefmError(f"--spp: algorithm {self.algo.name!r} has no salience order to cut by")
        return self.model_for(workbench, state, private, client), {}

    def save_pretrained(
        self, module: nn.Module, tokenizer, folder: Path, adapter: bool = False, facts: dict | None = None
    ) -> dict[str, Any]:
        """Write a model :meth:`export` returned as a folder plain transformers (and peft) load
        (``models/hf_export.py``; ``adapter``: LoRA kept apart as a peft adapter); returns what
        was written. A method whose models are not one transformers model says how it writes them."""
        from edgefm.models import hf_export

        return hf_export.save(module, tokenizer, folder, adapter, facts)

    # -- evaluation -----------------------------------------------------------------------
    def evaluate_server(self, state: Tensors, workbench, test: Encoded) -> dict[str, float]:
        """Metrics the server computes from the global state: the global model on the test set."""
        return workbench.task.evaluate(self.model_for(workbench, state), test, workbench.device)

    def evaluate_client(
        self, state: Tensors, workbench, data: ClientData, private: Tensors | None, test: Encoded
    ) -> ClientEval:
        """One client's own model on its local test split (runs where the client's data is)."""
        if len(data.test) == 0:
            return ClientEval()
        model = self.model_for(workbench, state, private, data.client_id)
        return ClientEval(workbench.task.local(model, data.test, workbench.device))

    # -- reports --------------------------------------------------------------------------
    def trainable_parameters(self, workbench) -> int:
        """Parameters this method trains on a device (for reports)."""
        return workbench.parameter_counts()["trainable"]

    def expert_breakdown(
        self, state: Tensors, workbench, clients: list[ClientData], private: dict[int, Tensors]
    ) -> dict[str, Any]:
        """Per client, a mixture of experts against its own experts (``edgefm experts``)."""
        raise EdgefmError(f"algorithm {self.algo.name!r} has no mixture of experts to break down")

    # -- per-client derived randomness, identical in every engine and after a resume -------
    def client_seed(self, rnd: int, client_id: int) -> int:
        return seed_for(self.cfg.seed, 1000 + rnd, client_id)

    def client_generator(self, rnd: int, client_id: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.client_seed(rnd, client_id))


def build_strategy(cfg: RunConfig) -> Strategy:
    """The Strategy that ``cfg.algorithm`` names (its config class says which)."""
    return type(cfg.algorithm).strategy_class()(cfg)
