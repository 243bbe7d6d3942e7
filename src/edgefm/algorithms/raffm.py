"""RaFFM: resource-aware federated foundation models with elastic subnetworks.

Yu, Muñoz, Jannesari, "Bridging the Gap Between Foundation Models and Heterogeneous Federated
Learning" (arXiv 2310.00247). The server keeps the global model in salience order (SPP,
:mod:`edgefm.models.elastic`); every device receives the largest subnetwork its profile can
train, fine-tunes it, and sends it back; the server writes each slice into the global tensors.

Choices the paper leaves open, made here:
- *Budget.* A device fits a subnetwork when the training memory (weights, gradients, AdamW
  state, one batch of activations; :func:`edgefm.models.elastic.cost`) fits ``memory_bytes`` and
  one training step (``train.batch_size`` examples of ``budget_seq_len`` tokens) takes at most
  ``step_budget_s`` seconds at its sustained FLOP/s. The search space is FFN width k/8 x
  query/key width k/4, uniform over layers; the largest feasible subnetwork (by parameters) wins.
  ``space=heterofl`` offers only the widths 1, 1/2, 1/4 of both (Diao et al., ICLR 2021) and
  ``space=full`` only the whole model (full-size FedAvg on the same backbone).
- *Devices that fit nothing* (``unfit``): ``drop`` leaves them out of the round (a ``dropped``
  row in the ledger, no traffic), ``force`` trains the smallest allowed network anyway (the
  ledger shows the straggler's time).
- *Embeddings.* The word-embedding table is half of MiniLM and not elastic; it stays frozen and
  is never sent (``train_embeddings=true`` trains and exchanges it, for randomly initialised models) (``model.finetune=full`` trains every other weight; ``lora`` trains LoRA on the
  subnetwork plus the head, and downloads the frozen elastic weights each round because SPP
  reorders them). The unused BERT pooler is frozen too.
- *SPP runs after every aggregation* (and on the initial model), so the state the server holds
  is always in salience order; with LoRA it ranks the effective weight W + s*BA.
- *Aggregation.* ``coverage``: each coordinate is the sample-weighted mean over the clients that
  trained it, others keep their value. ``participants`` (the original code's rule): every client's
  model is the global model with its slice written in, and the new global is their plain mean, so
  a coordinate trained by k of n clients moves k/n of the way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from edgefm import EdgefmError
from edgefm.algorithms.fedavg import client_accuracies
from edgefm.config import AlgorithmConfig, ConfigError
from edgefm.data.encode import Encoded
from edgefm.edge.devices import TIERS, DeviceProfile
from edgefm.fl.aggregate import coverage_mean
from edgefm.fl.strategy import ClientData, ClientTask, ClientUpdate, Strategy, Tensors
from edgefm.models import elastic as E
from edgefm.models.flops import FlopModel
from edgefm.models.workbench import Workbench
from edgefm.registry import register

FROZEN = ("encoder.embeddings.", "encoder.pooler.")
FFN_RATIOS = [k / 8 for k in range(8, 0, -1)]
QK_RATIOS = [k / 4 for k in range(4, 0, -1)]
HETEROFL_RATIOS = [1.0, 0.5, 0.25]


@dataclass(frozen=True)
class RaFFMConfig(AlgorithmConfig):
    name: str = "raffm"
    salience: Literal["spp", "none", "independent_qk"] = "spp"
    space: Literal["elastic", "heterofl", "full"] = "elastic"
    aggregation: Literal["coverage", "participants"] = "coverage"
    unfit: Literal["drop", "force"] = "drop"
    step_budget_s: float = 3.0  # one training step must take at most this long on a device
    budget_seq_len: int = 64
    train_embeddings: bool = False  # for randomly initialised models, whose embeddings must learn

    def __post_init__(self) -> None:
        if not self.step_budget_s > 0:
            raise ConfigError(f"algorithm.step_budget_s: {self.step_budget_s!r}; expected a positive number of seconds")
        if self.budget_seq_len < 1:
            raise ConfigError(f"algorithm.budget_seq_len: {self.budget_seq_len!r}; expected at least 1")


def candidates(arch: E.Arch, space: str) -> list[E.Spec]:
    """The subnetworks a space offers, largest (by parameters) first."""
    if space == "full":
        specs = [E.Spec.full(arch)]
    elif space == "heterofl":
        specs = [E.Spec.uniform(arch, r, r) for r in HETEROFL_RATIOS]
    else:
        specs = [E.Spec.uniform(arch, f, q) for f in FFN_RATIOS for q in QK_RATIOS]
    unique = {s: E.cost(arch, s, 1, 1).params for s in specs}
    return sorted(unique, key=lambda s: (-unique[s], -s.qk[0]))


def choose_spec(
    arch: E.Arch,
    device: DeviceProfile,
    space: str,
    batch: int,
    seq_len: int,
    step_budget_s: float,
    lora_rank: int | None,
) -> tuple[E.Spec, str]:
    """The largest subnetwork ``device`` can train, and "" — or the smallest one and why it does not fit."""
    specs = candidates(arch, space)
    for spec in specs:
        c = E.cost(arch, spec, seq_len, batch, lora_rank)
        if c.memory_bytes <= device.memory_bytes and batch * c.flops_per_example / device.flops_per_s <= step_budget_s:
            return spec, ""
    c = E.cost(arch, specs[-1], seq_len, batch, lora_rank)
    step = batch * c.flops_per_example / device.flops_per_s
    return specs[-1], (
        f"device {device.device_id} ({device.tier}) cannot train even the smallest subnetwork: "
        f"{step:.3g} s per step (budget {step_budget_s:g} s), {c.memory_bytes / 2**30:.2f} GiB "
        f"(has {device.memory_bytes / 2**30:.2f} GiB)"
    )


@register("algorithm", "raffm")
class RaFFM(Strategy):
    Config = RaFFMConfig

    def __init__(self, cfg):
        super().__init__(cfg)
        self.lora = cfg.model.finetune == "lora"
        self.lora_rank = cfg.model.lora.r if self.lora else None
        self.scaling = cfg.model.lora.alpha / cfg.model.lora.r
        self._flops: dict[E.Spec, FlopModel] = {}
        self.arch: E.Arch | None = None
        self.trained_keys: set[str] = set()
        self._specs: dict[int, E.Spec] = {}

    # -- global state ---------------------------------------------------------------------
    def _prepare(self, workbench) -> None:
        if self.arch is not None:
            return
        if not any(E.rule(n) for n, _ in workbench.model.named_parameters()):
            raise EdgefmError(
                f"algorithm raffm: model {self.cfg.model.name!r} has no BERT-style query/key/intermediate/output "
                "layers to make elastic; expected a BERT-family encoder (minilm, tiny_bert, or such a model.path)"
            )
        self.arch = E.Arch.of(workbench.model)
        frozen = FROZEN[1:] if self.algo.train_embeddings else FROZEN
        for name, p in workbench.model.named_parameters():
            if name.startswith(frozen):
                p.requires_grad = False
        self.trained_keys = {n for n, p in workbench.model.named_parameters() if p.requires_grad}

    def _reorder(self, state: Tensors) -> Tensors:
        if self.algo.salience == "none":
            return state
        qk = "independent" if self.algo.salience == "independent_qk" else "joint"
        return E.reorder(state, self.arch, qk=qk, lora_scaling=self.scaling)

    def initial_state(self, workbench) -> Tensors:
        self._prepare(workbench)
        # the trained tensors, plus (LoRA) the frozen elastic ones that SPP reorders
        state = {
            n: p.detach().cpu().clone()
            for n, p in workbench.model.named_parameters()
            if n in self.trained_keys or E.rule(n) is not None
        }
        return self._reorder(state)

    def trainable_parameters(self, workbench) -> int:
        self._prepare(workbench)
        return sum(p.numel() for n, p in workbench.model.named_parameters() if n in self.trained_keys)

    # -- rounds ---------------------------------------------------------------------------
    def spec_for(self, device: DeviceProfile, space: str | None = None) -> tuple[E.Spec, str]:
        a = self.algo
        return choose_spec(
            self.arch,
            device,
            space or a.space,
            self.cfg.train.batch_size,
            a.budget_seq_len,
            a.step_budget_s,
            self.lora_rank,
        )

    def configure(self, rnd: int, state: Tensors, devices: list[DeviceProfile]) -> dict[int, ClientTask]:
        if self.arch is None:
            raise EdgefmError("raffm: configure called before initial_state")
        tasks = {}
        for d in devices:
            spec, unfit = self.spec_for(d)
            if unfit and self.algo.unfit == "drop":
                tasks[d.device_id] = ClientTask(d.device_id, rnd, {}, {"declined": unfit})
                continue
            payload = E.slice_state(state, spec, self.arch)
            tasks[d.device_id] = ClientTask(
                d.device_id, rnd, payload, {"spec": spec.to_list(), "over_budget": int(bool(unfit))}
            )
        return tasks

    def expected_update(self, state: Tensors, task: ClientTask) -> Tensors:
        return {k: v for k, v in task.payload.items() if k in self.trained_keys}

    def client_update(self, task: ClientTask, workbench, data: ClientData, private: Tensors | None) -> ClientUpdate:
        self._prepare(workbench)
        if task.config.get("declined"):  # the engine never sends these; a direct caller gets the reason
            raise EdgefmError(task.config["declined"])
        spec = E.Spec.from_list(task.config["spec"])
        sub = E.extract(workbench.model, spec, self.arch)
        E.load_tensors(sub, task.payload)
        bench = Workbench(sub, workbench.tokenizer, workbench.device)
        if spec not in self._flops:
            self._flops[spec] = FlopModel(sub, train=True)
        seed = self.client_seed(task.round, task.client_id)
        fit = bench.fit(
            data.train,
            self.cfg.train,
            self.client_generator(task.round, task.client_id),
            seed,
            flops_model=self._flops[spec],
        )
        payload = {n: p.detach().cpu().clone() for n, p in sub.named_parameters() if n in self.trained_keys}
        return ClientUpdate(
            task.client_id,
            task.round,
            payload,
            num_examples=len(data.train),
            flops=fit.flops,
            metrics={
                "train_loss": fit.loss,
                "steps": fit.steps,
                "subnet_params": sum(p.numel() for p in sub.parameters()),
                "ffn_width": float(np.mean(spec.ffn)),
                "qk_width": float(np.mean(spec.qk)),
                "over_budget": task.config.get("over_budget", 0),
            },
        )

    def aggregate(self, rnd: int, state: Tensors, updates: list[ClientUpdate], tasks=None):
        # the server chose every client's spec; merge reads it from the round's tasks
        self._specs = {
            cid: E.Spec.from_list(t.config["spec"]) for cid, t in (tasks or {}).items() if "spec" in t.config
        }
        return super().aggregate(rnd, state, updates, tasks)

    def merge(self, rnd: int, state: Tensors, updates: list[ClientUpdate]) -> Tensors:
        placed, masks = [], []
        for u in updates:
            spec = self._specs.get(u.client_id, E.Spec.full(self.arch))
            full, mask = {}, {}
            for k, v in u.payload.items():
                full[k], mask[k] = E.scatter(k, state[k], v, spec, self.arch)
            placed.append(full)
            masks.append(mask)
        if self.algo.aggregation == "coverage":
            merged = coverage_mean(placed, masks, [u.num_examples for u in updates], state)
        else:
            merged = participants_mean(placed, state)
        return self._reorder(merged)

    def load_state(self, workbench, state: Tensors) -> None:
        self._prepare(workbench)
        E.load_tensors(workbench.model, state)  # a full-width state; the embeddings stay as they are

    def evaluate(
        self, state: Tensors, workbench, test: Encoded, clients: list[ClientData], private: dict[int, Tensors]
    ) -> dict[str, float]:
        self.load_state(workbench, state)
        metrics = {"accuracy": workbench.accuracy(test), **client_accuracies(workbench, clients)}
        return {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}


def participants_mean(placed: list[Tensors], previous: Tensors) -> Tensors:
    """The original RaFFM rule: the plain mean of the participants' full-size models, each the
    previous global model with that client's slice written in."""
    out = {}
    for key, prev in previous.items():
        acc = torch.zeros_like(prev, dtype=torch.float64)
        for p in placed:
            acc += p.get(key, prev).double()
        out[key] = (acc / len(placed)).to(prev.dtype)
    return out


def export_subnetworks(run_dir: Path, budgets: list[str], spp: bool = False) -> dict:
    """Deployment-time scaling: cut the trained global model for each budget (a device tier, or
    ``full``) without retraining, and measure each cut's test accuracy, size and FLOPs.

    ``spp`` reorders the weights by salience before cutting (for a model trained without SPP;
    a model trained with it is already in salience order)."""
    from edgefm.fl import checkpoint
    from edgefm.fl.scenario import build
    from edgefm.models.flops import count_flops

    unknown = [b for b in budgets if b != "full" and b not in TIERS]
    if unknown:
        raise EdgefmError(f"--budget {unknown[0]!r}: not a device tier; expected one of {', '.join(TIERS)} or full")
    cfg = checkpoint.run_config(run_dir)
    if cfg.algorithm.name != "raffm":
        raise EdgefmError(f"{str(run_dir)!r} is a {cfg.algorithm.name} run; expected a raffm run to export")
    state = checkpoint.load(Path(run_dir), flag="")["state"]
    sc = build(cfg)
    strategy: RaFFM = sc.strategy
    strategy._prepare(sc.workbench)
    if spp:
        state = E.reorder(state, strategy.arch, lora_scaling=strategy.scaling)
    space = "elastic" if cfg.algorithm.space == "full" else cfg.algorithm.space  # a full-size model is cut finely
    E.load_tensors(sc.workbench.model, state)
    rows = []
    for budget in budgets:
        spec, why = (E.Spec.full(strategy.arch), "") if budget == "full" else strategy.spec_for(TIERS[budget], space)
        sub = E.extract(sc.workbench.model, spec, strategy.arch)
        params = sum(p.numel() for p in sub.parameters())
        rows.append(
            {
                "budget": budget,
                "fits": not why,
                "reason": why,
                "ffn_width": list(spec.ffn),
                "qk_width": list(spec.qk),
                "params": params,
                "size_mb": params * 4 / 1e6,  # fp32 weights
                "flops_per_example": count_flops(sub, cfg.algorithm.budget_seq_len, train=False),
                "accuracy": Workbench(sub, sc.workbench.tokenizer, sc.workbench.device).accuracy(sc.test),
            }
        )
        del sub
    return {
        "run": str(run_dir),
        "dataset": sc.bundle.name,
        "seq_len": cfg.algorithm.budget_seq_len,
        "subnetworks": rows,
    }
