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
- *Data-aware salience* (``salience=activation``, ours, :mod:`edgefm.models.salience`): after
  training, each client measures per-coordinate activation statistics of its own data on the
  subnetwork it holds (``salience_examples`` examples, one forward pass, counted in its FLOPs)
  and sends them with its update (counted in its bytes); the server ranks from their
  sample-weighted mean after each aggregation. The initial model is kept as it is (no data has
  been seen yet; on MiniLM the weight order cuts worse than none). Not with differential
  privacy: the statistics would bypass its noise.
- *Aggregation* (every rule scatters each client's slice into full-size tensors first):
  ``coverage`` (default): each coordinate is the sample-weighted mean over the clients that
  trained it; coordinates nobody trained keep their value. ``official``: the rule of the
  official code: each global tensor is zeroed and every participant's slice added divided by
  M, the number of participants, so a coordinate trained by m of M clients becomes the sum of
  their values over M (it shrinks by m/M) and one trained by nobody becomes zero. ``participants``
  (HeteroFL-like, ours): the plain mean of the participants' full-size models, each the previous
  global model with its slice written in, so a coordinate trained by m of M clients moves m/M of
  the way from its previous value.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from edgefm import EdgefmError
from edgefm.algorithms.configs import RaFFMConfig
from edgefm.edge.devices import TIERS, DeviceProfile
from edgefm.fl.aggregate import coverage_mean
from edgefm.fl.strategy import ClientData, ClientTask, ClientUpdate, Strategy, Tensors
from edgefm.models import elastic as E
from edgefm.models import hf_export
from edgefm.models import salience as S
from edgefm.models.flops import FlopModel
from edgefm.models.workbench import Workbench

FROZEN = ("encoder.embeddings.", "encoder.pooler.")
FFN_RATIOS = [k / 8 for k in range(8, 0, -1)]
QK_RATIOS = [k / 4 for k in range(4, 0, -1)]
HETEROFL_RATIOS = [1.0, 0.5, 0.25]


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


class RaFFM(Strategy):
    Config = RaFFMConfig

    def __init__(self, cfg):
        super().__init__(cfg)
        self.lora = cfg.model.finetune == "lora"
        self.lora_rank = cfg.model.lora.r if self.lora else None
        self.scaling = cfg.model.lora.alpha / cfg.model.lora.r
        self._flops: dict[tuple[E.Spec, bool], FlopModel] = {}
        self.measured = self.algo.salience == "activation"
        if self.measured and cfg.privacy.enabled:
            raise EdgefmError(
                "algorithm.salience=activation: the clients' activation statistics would bypass differential "
                "privacy's noise; expected salience=spp (or none) with privacy (privacy.epsilon or privacy.noise_multiplier set)"
            )
        self.arch: E.Arch | None = None
        self.trained_keys: set[str] = set()

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

    def _reorder(self, state: Tensors, stats: Tensors | None = None) -> Tensors:
        if self.algo.salience == "none" or (self.measured and not stats):
            return state
        if self.measured:
            return E.apply_permutations(state, S.activation_permutations(state, stats, self.arch, self.scaling))
        qk = "independent" if self.algo.salience == "independent_qk" else "joint"
        return E.reorder(state, self.arch, qk=qk, lora_scaling=self.scaling)

    def _flop_model(self, spec: E.Spec, sub: nn.Module, train: bool) -> FlopModel:
        if (spec, train) not in self._flops:
            self._flops[(spec, train)] = FlopModel(sub, train=train)
        return self._flops[(spec, train)]

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
                tasks[d.device_id] = ClientTask(d.device_id, rnd, {}, declined=unfit)
                continue
            payload = E.slice_state(state, spec, self.arch)
            tasks[d.device_id] = ClientTask(
                d.device_id, rnd, payload, {"spec": spec.to_list(), "over_budget": int(bool(unfit))}
            )
        return tasks

    def expected_update(self, state: Tensors, task: ClientTask) -> Tensors:
        out = {k: v for k, v in task.payload.items() if k in self.trained_keys}
        if self.measured:
            out.update(S.expected(E.Spec.from_list(task.config["spec"]), self.arch))
        return out

    def client_update(self, task: ClientTask, workbench, data: ClientData, private: Tensors | None) -> ClientUpdate:
        self._prepare(workbench)
        if task.declined:  # the engine never sends these; a direct caller gets the reason
            raise EdgefmError(task.declined)
        spec = E.Spec.from_list(task.config["spec"])
        sub = E.extract(workbench.model, spec, self.arch)
        E.load_tensors(sub, task.payload)
        bench = Workbench.of(sub, workbench.tokenizer, workbench.device, workbench.task)
        seed = self.client_seed(task.round, task.client_id)
        fit = bench.fit(
            data.train,
            self.cfg.train,
            self.client_generator(task.round, task.client_id),
            seed,
            flops_model=self._flop_model(spec, sub, train=True),
        )
        payload = {n: p.detach().cpu().clone() for n, p in sub.named_parameters() if n in self.trained_keys}
        flops = fit.flops
        if self.measured:  # the statistics of its own data the server ranks by
            limit, eval_flops = self.algo.salience_examples, self._flop_model(spec, sub, train=False)
            stats, spent = S.measure(sub, data.train, workbench.device, limit, eval_flops)
            payload.update({k: v.float() for k, v in stats.items()})
            flops += spent
        return ClientUpdate(
            task.client_id,
            task.round,
            payload,
            num_examples=len(data.train),
            flops=flops,
            metrics={
                "train_loss": fit.loss,
                "steps": fit.steps,
                "subnet_params": sum(p.numel() for p in sub.parameters()),
                "ffn_width": float(np.mean(spec.ffn)),
                "qk_width": float(np.mean(spec.qk)),
                "over_budget": task.config.get("over_budget", 0),
            },
        )

    def merge(self, rnd: int, state: Tensors, updates: list[ClientUpdate], tasks: dict[int, ClientTask]) -> Tensors:
        placed, masks, reports = [], [], []
        for u in updates:  # the server chose every client's spec: it is in the round's tasks
            spec = E.Spec.from_list(tasks[u.client_id].config["spec"])
            full, mask = {}, {}
            if self.measured:
                reports.append(({k: v for k, v in u.payload.items() if S.is_stat(k)}, spec, float(u.num_examples)))
            for k, v in u.payload.items():
                if S.is_stat(k):
                    continue
                full[k], mask[k] = E.scatter(k, state[k], v, spec, self.arch)
            placed.append(full)
            masks.append(mask)
        rule = self.algo.aggregation
        robust = self.robust(placed, [u.num_examples for u in updates], state, masks)
        if robust is not None:  # a Byzantine-robust rule over the coordinates each client trained
            merged = robust
        elif rule == "coverage":
            merged = coverage_mean(placed, masks, [u.num_examples for u in updates], state)
        elif rule == "official":
            merged = official_mean(placed, masks, state)
        else:
            merged = participants_mean(placed, state)
        return self._reorder(merged, S.combine(reports, self.arch) if self.measured else None)

    def load_state(self, workbench, state: Tensors) -> None:
        self._prepare(workbench)
        E.load_tensors(workbench.model, state)  # a full-width state; the embeddings stay as they are

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
        """Deployment-time scaling: the trained global model cut, without retraining, to the
        largest subnetwork a device tier can train, to a uniform width (``50%``: half the FFN and
        query/key width of every layer) or not at all (``full``). ``reorder`` orders first:
        ``weight`` by SPP, ``activation`` by the statistics of the clients' own data (``data``:
        the run's clients, each measured at full width and combined sample-weighted, as
        ``salience=activation`` does in training); "" cuts as trained."""
        width = _width(budget)
        if budget != "full" and width is None and budget not in TIERS:
            raise EdgefmError(
                f"--budget {budget!r}: expected a device tier ({', '.join(TIERS)}), full, or a width such as 50%"
            )
        self._prepare(workbench)
        if reorder == "weight":
            state = E.reorder(state, self.arch, lora_scaling=self.scaling)
        elif reorder == "activation":
            if not data:
                raise EdgefmError("--spp activation: needs the clients' data to measure; none was given")
            self.load_state(workbench, state)
            full, limit = E.Spec.full(self.arch), self.algo.salience_examples
            reports = [
                (S.measure(workbench.model, c.train, workbench.device, limit)[0], full, float(len(c.train)))
                for c in data
            ]
            stats = S.combine(reports, self.arch)
            state = E.apply_permutations(state, S.activation_permutations(state, stats, self.arch, self.scaling))
        elif reorder:
            raise EdgefmError(f"--spp {reorder!r}: expected weight or activation")
        self.load_state(workbench, state)
        # a model trained at full size is cut on the finest grid
        space = "elastic" if self.algo.space == "full" else self.algo.space
        if budget == "full":
            spec, why = E.Spec.full(self.arch), ""
        elif width is not None:
            spec, why = E.Spec.uniform(self.arch, width, width), ""
        else:
            spec, why = self.spec_for(TIERS[budget], space)
        sub = E.extract(workbench.model, spec, self.arch)
        return sub, {"fits": not why, "reason": why, "ffn_width": list(spec.ffn), "qk_width": list(spec.qk)}

    def save_pretrained(self, module: nn.Module, tokenizer, folder, adapter: bool = False, facts=None) -> dict:
        """A subnetwork cut below full: LoRA merged, then padded with zeros into the
        architecture its config builds (``elastic.padded``: the same function), so plain
        transformers loads it; ``edgefm.json`` gives its real widths."""
        spec = E.widths(module)
        if spec == E.Spec.full(self.arch):
            return super().save_pretrained(module, tokenizer, folder, adapter, facts)
        if adapter:
            raise EdgefmError(
                "--adapter: a subnetwork cut below full is written with its LoRA merged (its rows are padded "
                "back to a shape transformers builds); expected --budget full, or no --adapter"
            )
        plain = copy.deepcopy(module).cpu().float().eval()
        hf_export.unload_lora(plain, merge=True)
        cut = {
            "ffn_width": list(spec.ffn),
            "qk_width": list(spec.qk),
            "padding": "query/key rows and FFN neurons the subnetwork drops are zeros: the same function",
        }
        return hf_export.save(E.padded(plain), tokenizer, folder, False, {**(facts or {}), "subnetwork": cut})


def _width(budget: str) -> float | None:
    """``50%`` -> 0.5; None for anything that is not a percentage in (0, 100]."""
    if not budget.endswith("%"):
        return None
    try:
        value = float(budget[:-1]) / 100
    except ValueError:
        return None
    return value if 0 < value <= 1 else None


def participants_mean(placed: list[Tensors], previous: Tensors) -> Tensors:
    """The plain mean of the participants' full-size models, each the previous global model with
    that client's slice written in (a coordinate trained by m of M clients moves m/M of the way)."""
    out = {}
    for key, prev in previous.items():
        acc = torch.zeros_like(prev, dtype=torch.float64)
        for p in placed:
            acc += p.get(key, prev).double()
        out[key] = (acc / len(placed)).to(prev.dtype)
    return out


def official_mean(placed: list[Tensors], masks: list[Tensors], previous: Tensors) -> Tensors:
    """The official RaFFM code's rule: each global tensor zeroed, then every participant's slice
    added divided by M, the number of participants (``placed[k]`` holds client k's slice where
    ``masks[k]`` is set). A coordinate trained by m of M clients becomes their sum over M; one that
    no participant sent becomes zero. Tensors nobody sends (frozen ones) keep their values."""
    out = {}
    for key, prev in previous.items():
        if not any(key in p for p in placed):
            out[key] = prev
            continue
        acc = torch.zeros_like(prev, dtype=torch.float64)
        for p, m in zip(placed, masks, strict=True):
            if key in p:
                acc += torch.where(m[key], p[key].double(), 0.0)
        out[key] = (acc / len(placed)).to(prev.dtype)
    return out
