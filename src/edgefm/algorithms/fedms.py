"""FedMS: two-stage federated learning with a Mixture of Foundation Models and Sparsely Activated LoRA.

Wu, Li, Wang, Wang, "FedMS: Federated Learning with Mixture of Sparsely Activated Foundations
Models" (arXiv 2312.15926). Choices the abstract leaves open, as fixed by the project's issue:

- One frozen backbone shared by both experts. An expert is a LoRA set plus a classifier head:
  the global expert is peft adapter ``default`` + ``head``, the local expert adapter ``local`` +
  ``local_head`` (initialised from the global expert when stage 2 starts).
- Stage 1 (``stage1_rounds``): every sampled client trains the global expert; the server
  averages it, each tensor over the clients that trained it (sample-weighted).
- Stage 2: the global expert is frozen. Each client trains its local expert and a gate. The gate
  reads the bare backbone's pooled feature, passes it through a bottleneck **gate adapter**
  (shared: the only thing uploaded and averaged) and a private linear layer, and outputs weights
  over the two experts. Prediction = the gate-weighted mixture of the experts' probabilities.
  Loss = mixture NLL + ``local_weight`` x the local expert's own cross-entropy.
- Sparsely Activated LoRA: only the top m_t blocks (from the output) carry an active, trained
  LoRA; m_t = min(b_k, m0 + floor(t / delta)) (``progressive``), min(b_k, m0) (``fixed``) or
  every block (``all``). b_k, the blocks device k can afford, is proportional to its sustained
  FLOP/s relative to ``full_depth_flops`` (a flagship phone affords them all), at least 1.
  Blocks below the lowest active one get no backward pass, so the measured FLOPs fall.
- Compute only what changes (``train.prefix_cache``, ``models/prefix.py``): the frozen blocks
  below the lowest active one, the bare backbone's feature for the gate and the frozen global
  expert (stage 2) run in eval mode (no dropout), so their per-example outputs are constants a
  device keeps and reuses across epochs and rounds; the ledger charges them once, when computed.
- Ablations: ``gate=fixed`` (0.5/0.5 mixture, nothing uploaded in stage 2), ``experts=global``
  (stage 2 skipped: FedAvg with SAL) and ``experts=local`` (local expert alone in stage 2).
- ``gate_holdout`` (ours, default 0): a fixed share of each client's examples is kept from
  the local expert, which trains first (gate frozen), and the gate then trains alone on those
  examples. Trained jointly, the gate sees the local expert on examples it has fitted and can
  over-trust it.
- Learning rates: ``train.lr`` for LoRA, ``train.head_lr`` for heads, ``gate_lr`` for the gate.
- ``expert_breakdown`` (``edgefm experts RUN``) re-evaluates a finished run's clients: global
  expert, local expert, the better of the two per client, the mixture and the gate's weight, so
  a mixture is judged against its own experts, not against separately trained runs.
- A client's model (``model_for``, used by evaluation, ``robust`` and ``export``) is its
  mixture once it has a local expert (stage 2), else the global expert. ``export --out``
  writes the mixture as peft keeps several adapters on one model (``fedms_passes.Mixture``).
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from edgefm import EdgefmError
from edgefm.algorithms.configs import FedMSConfig
from edgefm.algorithms.fedavg import FedAvg
from edgefm.algorithms.fedms_passes import Mixture, Passes, breakdown
from edgefm.edge.devices import DeviceProfile
from edgefm.fl.strategy import ClientData, ClientTask, ClientUpdate, Tensors
from edgefm.models import lora as L
from edgefm.models import prefix as P
from edgefm.models.backbones import LORA_TARGETS
from edgefm.models.prefix import PrefixCache, PrefixCaches

GATE = "gate_adapter."


class Gate(nn.Module):
    """Pooled feature -> gate adapter (residual bottleneck, shared) -> linear (private) -> 2 weights."""

    def __init__(self, hidden: int, bottleneck: int):
        super().__init__()
        self.adapter = nn.Sequential(nn.Linear(hidden, bottleneck), nn.GELU(), nn.Linear(bottleneck, hidden))
        self.out = nn.Linear(hidden, 2)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.out(feature + self.adapter(feature)), dim=-1)


def _prepare(workbench, cfg) -> None:
    """Add the local expert and the gate to the shared model once (seeded, idempotent)."""
    model = workbench.model
    if hasattr(model, "gate"):
        return
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft warns that a second adapter is being added: intended
        torch.manual_seed(cfg.seed + 17)
        L.add_adapter(model, cfg.model.lora, "local", LORA_TARGETS)
        model.local_head = nn.Linear(model.head.in_features, model.head.out_features)
        model.gate = Gate(model.head.in_features, cfg.algorithm.gate_hidden)
    model.to(workbench.device)
    for p in [*model.local_head.parameters(), *model.gate.parameters()]:
        p.requires_grad = False
    L.route_adapters(model, "default", None, train=False)


class FedMS(FedAvg):
    Config = FedMSConfig

    # -- bookkeeping --------------------------------------------------------------------
    def stage(self, rnd: int) -> int:
        return 1 if rnd <= self.algo.stage1_rounds or self.algo.experts == "global" else 2

    def blocks(self, rnd: int, device: DeviceProfile, total: int) -> set[int]:
        """The top m_t blocks this device trains in round ``rnd`` (Sparsely Activated LoRA)."""
        a = self.algo
        b_k = max(1, min(total, round(total * min(1.0, device.flops_per_s / a.full_depth_flops))))
        if a.sal == "all":
            m = total
        elif a.sal == "fixed":
            m = min(b_k, a.m0)
        else:
            m = min(b_k, a.m0 + (rnd - 1) // a.delta)
        return set(range(total - m, total))

    def initial_state(self, workbench) -> Tensors:
        _prepare(workbench, self.cfg)
        state = workbench.get_state()  # global expert: default LoRA + head
        state.update({GATE + k: v.detach().clone() for k, v in workbench.model.gate.adapter.state_dict().items()})
        return state

    def trainable_parameters(self, workbench) -> int:
        """What this mode trains at some point: the global expert, the local expert (LoRA + head)
        unless ``experts=global``, and the gate when it is learned."""
        _prepare(workbench, self.cfg)
        model, a = workbench.model, self.algo
        n = sum(v.numel() for v in workbench.get_state().values())
        if a.experts != "global":
            n += sum(v.numel() for v in L.get_adapter_state(model, "local").values())
            n += sum(p.numel() for p in model.local_head.parameters())
        if a.experts == "mixture" and a.gate == "learned":
            n += sum(p.numel() for p in model.gate.parameters())
        return n

    def configure(self, rnd: int, state: Tensors, devices: list[DeviceProfile]) -> dict[int, ClientTask]:
        total = self._total_blocks(state)
        tasks = {}
        for d in devices:
            blocks = self.blocks(rnd, d, total)
            if self.stage(rnd) == 1:  # send only what the client trains: its blocks' LoRA + head
                payload = {k: v for k, v in state.items() if _in_blocks(k, blocks) or k.startswith("head.")}
            else:  # the frozen global expert (for the mixture) + the shared gate adapter
                payload = dict(state)
            conf = {"blocks": ",".join(map(str, sorted(blocks))), "memory": d.memory_bytes * self.cfg.edge.memory_scale}
            tasks[d.device_id] = ClientTask(d.device_id, rnd, payload, conf)
        return tasks

    def expected_update(self, state: Tensors, task: ClientTask) -> Tensors:
        if self.stage(task.round) == 1:
            return {k: v for k, v in task.payload.items() if not k.startswith(GATE)}
        if self.algo.gate == "fixed" or self.algo.experts == "local":
            return {}
        return {k: v for k, v in state.items() if k.startswith(GATE)}

    def merge(self, rnd: int, state: Tensors, updates: list[ClientUpdate], tasks: dict[int, ClientTask]) -> Tensors:
        """Each tensor averaged over the clients that sent it (sample-weighted); the rest kept."""
        out = dict(state)
        if self.cfg.aggregation.rule != "mean":  # a robust rule, over the updates sending the same tensors
            groups: dict[frozenset, list[ClientUpdate]] = {}
            for u in updates:
                groups.setdefault(frozenset(u.payload), []).append(u)
            for keys, group in groups.items():
                previous = {k: state[k] for k in sorted(keys)}
                out.update(self.robust([u.payload for u in group], [u.num_examples for u in group], previous))
            return out
        for key in state:
            sent = [(u.payload[key], u.num_examples) for u in updates if key in u.payload]
            if sent:
                total = float(sum(w for _, w in sent))
                out[key] = (sum(t.double() * w for t, w in sent) / total).to(state[key].dtype)
        return out

    # -- clients --------------------------------------------------------------------------
    def client_update(self, task: ClientTask, workbench, data: ClientData, private: Tensors | None) -> ClientUpdate:
        _prepare(workbench, self.cfg)
        model = workbench.model
        blocks = {int(b) for b in str(task.config["blocks"]).split(",") if b}
        seed, gen = self.client_seed(task.round, task.client_id), self.client_generator(task.round, task.client_id)
        if self.stage(task.round) == 1:
            L.set_adapter_state(model, "default", {k: v for k, v in task.payload.items() if "lora_" in k})
            model.head.load_state_dict({k[len("head.") :]: v for k, v in task.payload.items() if k.startswith("head.")})
            L.route_adapters(model, "default", blocks, train=True)
            for p in model.head.parameters():
                p.requires_grad = True
            fit, extra = self._fit_stage1(task, workbench, data, blocks, seed, gen)
            up = {k: v for k, v in workbench.get_state().items() if _in_blocks(k, blocks) or k.startswith("head.")}
            L.route_adapters(model, "default", None, train=False)
            return ClientUpdate(
                task.client_id,
                task.round,
                up,
                len(data.train),
                fit.flops + extra["flops"],
                {"train_loss": fit.loss, "blocks": len(blocks), "cache_mb": extra["cache_mb"]},
                private=private,
            )
        return self._stage2(task, workbench, data, private, blocks, seed, gen)

    # -- frozen passes computed once (models/prefix.py) -----------------------------------
    def _cache(self, task: ClientTask, workbench, data: ClientData, key: tuple) -> PrefixCache:
        if not hasattr(self, "_caches"):
            self._caches = PrefixCaches()
        memory = float(task.config.get("memory", 0.0))
        return self._caches.for_client(task.client_id, key, workbench.model, data.train, self.cfg.train, memory)

    def _fit_stage1(self, task, workbench, data, blocks, seed, gen):
        """Stage 1 on the active blocks; with a frozen prefix below them, from its cached output."""
        model, k = workbench.model, min(blocks)
        parts = P.cut_below(model, k)
        if parts is None:  # every block trains: nothing frozen below
            fit = workbench.fit(data.train, self.cfg.train, gen, seed, flop_key=f"fedms-s1-{len(blocks)}")
            return fit, {"flops": 0.0, "cache_mb": 0.0}
        cache = self._cache(task, workbench, data, ("s1", k))
        positions = P.positions(data.train, parts)

        def compute(ids, mask):
            return {"h": parts.device(ids, mask)}, {}

        def step(frozen, batch):
            return nn.functional.cross_entropy(parts.edge(frozen[0]["h"], batch.attention_mask), batch.labels)

        flops_compute, flops_step = P.flop_models(workbench, f"fedms-s1-cut{k}", compute, step)
        fit = workbench.fit(
            data.train,
            self.cfg.train,
            gen,
            seed,
            flops_model=flops_step,
            step_loss=lambda b: step(cache.lookup(model, b, compute, flops_compute, positions), b),
        )
        return fit, {"flops": cache.take_flops(), "cache_mb": cache.nbytes / 2**20 if cache.enabled else 0.0}

    def _load_stage2(self, workbench, payload: Tensors, private: Tensors | None) -> None:
        model = workbench.model
        workbench.set_state({k: v for k, v in payload.items() if not k.startswith(GATE)})  # global expert
        model.gate.adapter.load_state_dict({k[len(GATE) :]: v for k, v in payload.items() if k.startswith(GATE)})
        if private is None:  # the local expert starts as a copy of the global one
            L.set_adapter_state(model, "local", {k: v for k, v in payload.items() if "lora_" in k})
            model.local_head.load_state_dict(model.head.state_dict())
            return
        L.set_adapter_state(
            model, "local", {k[len("local.") :]: v for k, v in private.items() if k.startswith("local.")}
        )
        model.local_head.load_state_dict(
            {k[len("local_head.") :]: v for k, v in private.items() if k.startswith("local_head.")}
        )
        model.gate.out.load_state_dict(
            {k[len("gate_out.") :]: v for k, v in private.items() if k.startswith("gate_out.")}
        )

    def _private(self, model) -> Tensors:
        out = {f"local.{k}": v for k, v in L.get_adapter_state(model, "local").items()}
        out.update({f"local_head.{k}": v.detach().clone() for k, v in model.local_head.state_dict().items()})
        out.update({f"gate_out.{k}": v.detach().clone() for k, v in model.gate.out.state_dict().items()})
        return out

    def gate_split(self, client: int, n: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(rows the experts train on, rows the gate trains on) of a client's ``n`` training
        examples: the same split every round (seeded by the run and the client), None when
        ``gate_holdout`` is 0 or would leave either side empty."""
        k = int(round(self.algo.gate_holdout * n))
        if k == 0 or k == n:
            return None
        order = np.random.default_rng([self.cfg.seed, client, 16]).permutation(n)
        return np.sort(order[k:]), np.sort(order[:k])

    @staticmethod
    def _blocks_of(private: Tensors) -> set[int]:
        return {int(b) for b in private["blocks"].tolist()}

    def _passes(self, model, blocks: set[int], parts=None, train: bool = False) -> Passes:
        return Passes(self.algo, model, blocks, parts, train)

    def _stage2(self, task, workbench, data, private, blocks, seed, gen) -> ClientUpdate:
        model, train = workbench.model, self.cfg.train
        self._load_stage2(workbench, task.payload, private)
        L.route_adapters(model, "local", blocks, train=True)
        for p in model.head.parameters():
            p.requires_grad = False
        for p in model.local_head.parameters():
            p.requires_grad = True
        gate_params = (
            list(model.gate.parameters()) if self.algo.gate == "learned" and self.algo.experts == "mixture" else []
        )
        # with a held-out split the experts train first (gate frozen), the gate alone after, on
        # examples the experts never saw; without one, all three train together
        held = self.gate_split(task.client_id, len(data.train)) if gate_params else None
        for p in gate_params:
            p.requires_grad = held is None
        lora = [p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
        groups = [
            {"params": lora, "lr": train.lr},
            {"params": list(model.local_head.parameters()), "lr": train.head_lr},
        ]
        gate_group = {"params": gate_params, "lr": self.algo.gate_lr}
        if gate_params and held is None:
            groups.append(gate_group)
        k = min(blocks)
        parts = P.cut_below(model, k)
        # the frozen global expert is part of what the cache holds: it names it
        digest = P.digest({key: v for key, v in task.payload.items() if not key.startswith(GATE)})
        cache = self._cache(task, workbench, data, ("s2", k, digest))
        positions = P.positions(data.train, parts) if parts is not None else 0
        passes = self._passes(model, blocks, parts, train=True)
        key = f"fedms-s2-{self.algo.experts}-{self.algo.gate}-{len(blocks)}-cut{k if parts else 0}"
        flops_compute, flops_step = P.flop_models(workbench, key, passes.frozen, passes.loss)

        def on(rows: np.ndarray | None):
            """The step's loss, its frozen passes read from the cache over all of data.train."""

            def step(b):
                whole = b if rows is None else replace(b, index=rows[b.index])
                return passes.loss(cache.lookup(model, whole, passes.frozen, flops_compute, positions), b)

            return step

        rows = None if held is None else held[0]
        part = data.train if rows is None else data.train.subset(rows)
        fit = workbench.fit(part, train, gen, seed, groups=groups, flops_model=flops_step, step_loss=on(rows))
        if held is not None:
            for p in [*lora, *model.local_head.parameters()]:
                p.requires_grad = False
            for p in gate_params:
                p.requires_grad = True
            _, flops_gate = P.flop_models(workbench, key + "-gate", passes.frozen, passes.loss)
            gate_fit = workbench.fit(
                data.train.subset(held[1]),
                train,
                gen,
                seed + 1,
                groups=[gate_group],
                flops_model=flops_gate,
                step_loss=on(held[1]),
            )
            fit = replace(fit, flops=fit.flops + gate_fit.flops)
        for p in [*model.local_head.parameters(), *model.gate.parameters()]:
            p.requires_grad = False
        up = {GATE + k: v.detach().clone() for k, v in model.gate.adapter.state_dict().items()} if gate_params else {}
        private = self._private(model)
        private["blocks"] = torch.tensor(sorted(blocks))  # evaluate the local expert as it was trained
        L.route_adapters(model, "default", None, train=False)
        return ClientUpdate(
            task.client_id,
            task.round,
            up,
            len(data.train),
            fit.flops + cache.take_flops(),
            {"train_loss": fit.loss, "blocks": len(blocks), "cache_mb": cache.nbytes / 2**20 if cache.enabled else 0.0},
            private=private,
        )

    # -- the models a run ends with ---------------------------------------------------------
    def load_state(self, workbench, state: Tensors) -> None:
        """The global expert alone (the gate adapter needs a client's local expert)."""
        _prepare(workbench, self.cfg)
        L.route_adapters(workbench.model, "default", None)
        workbench.set_state({k: v for k, v in state.items() if not k.startswith(GATE)})

    def model_for(
        self, workbench, state: Tensors, private: Tensors | None = None, client: int | None = None
    ) -> nn.Module:
        """A client's mixture once it has a local expert (stage 2), else the global expert."""
        if private is None:
            return super().model_for(workbench, state)
        _prepare(workbench, self.cfg)
        self._load_stage2(workbench, state, private)
        return Mixture(self._passes(workbench.model, self._blocks_of(private)))

    def save_pretrained(self, module: nn.Module, tokenizer, folder, adapter: bool = False, facts=None) -> dict:
        """A client's mixture: the shared base, each expert as a peft adapter, heads and gate
        (``Mixture.save_pretrained``); the global expert as any LoRA classifier."""
        if isinstance(module, Mixture):
            return module.save_pretrained(tokenizer, folder, facts)
        return super().save_pretrained(module, tokenizer, folder, adapter, facts)

    @torch.no_grad()
    def expert_breakdown(
        self, state: Tensors, workbench, clients: list[ClientData], private: dict[int, Tensors]
    ) -> dict[str, Any]:
        """Why a mixture wins or loses, on each client's local test split: accuracy of the global
        expert alone, the local expert alone, the better of the two (a per-client oracle) and the
        mixture, and the gate's mean weight on the local expert (0.5 for a fixed gate)."""
        if self.algo.experts != "mixture":
            raise EdgefmError(f"algorithm fedms with experts={self.algo.experts}: no mixture; expected experts=mixture")
        _prepare(workbench, self.cfg)
        rows = []
        for c in clients:
            if private.get(c.client_id) is None or len(c.test) == 0:
                continue
            row = self._breakdown(state, workbench, c.test, private[c.client_id])
            row["oracle"] = max(row["acc_global"], row["acc_local"])
            rows.append({"client": c.client_id, "n_test": len(c.test), **row})
        if not rows:
            raise EdgefmError("no client has a local expert yet; expected a run that reached stage 2")
        keys = ["acc_global", "acc_local", "acc_mixture", "oracle", "gate_local"]
        return {
            "clients": rows,
            "mean": {k: float(np.mean([r[k] for r in rows])) for k in keys},
            "worst": {k: float(np.min([r[k] for r in rows])) for k in keys},
        }

    def _breakdown(self, state: Tensors, workbench, data, private: Tensors) -> dict[str, float]:
        passes = self._passes(workbench.model, self._blocks_of(private))
        self._load_stage2(workbench, state, private)
        row = breakdown(passes, data, workbench.device)
        L.route_adapters(workbench.model, "default", None)
        return row

    @staticmethod
    def _total_blocks(state: Tensors) -> int:
        return 1 + max(k for k in map(L.block_of, state) if k is not None)


def _in_blocks(key: str, blocks: set[int]) -> bool:
    return L.block_of(key) in blocks
