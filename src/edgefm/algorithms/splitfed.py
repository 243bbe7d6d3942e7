"""Split federated fine-tuning: device and edge server train one model together (SFL-V1, SFL-V2).

SplitFed (Thapa, Chamikara, Camtepe, Sun; AAAI 2022) as PRINCE (Li, Hu, Min, Huang; arXiv
2503.04971) uses it for foundation models. The model is cut after ``algorithm.cut`` blocks
(``models/split.py``): the device holds the embeddings and the blocks before the cut, the edge
server the rest and the head. Every local step the device runs its part and sends the smashed
activations (with the padding mask and the targets) up; the edge runs its part, computes the
loss, back-propagates, and sends the gradient at the cut down; the device finishes the backward
pass; both parts take an AdamW step.

- ``variant=v1`` (default): the edge keeps a copy of its part per device; at the end of the
  round each device's whole model (its uploaded part and its edge copy) is averaged.
- *Per-device cuts*: ``cuts`` (cycled over devices; empty: ``cut`` for all) lets a weak device
  keep fewer blocks; each device's whole model is still one model, so V1 averages models cut
  anywhere (V2's one edge part needs one cut).
- ``variant=v2``: one edge part, updated device after device in the round's order; the device
  parts are averaged at the end of the round.
- *Independent participation*: device n takes part in a round with probability q_n
  (``participation``, cycled over devices; clamped to at least 0.05), drawn per device and
  round from the run seed; a device that sits out is recorded as dropped with the reason.
  ``aggregation=unbiased`` merges with Horvitz-Thompson weights p_n / q_n (p_n its data share),
  ``naive`` with the participants' p_n renormalised (``fl/participation.py``).
- *Faults*: with ``step_drop`` > 0 a device may disconnect inside a split step (seeded): the
  step and the device's round are discarded (V1: its edge copy is never kept; V2: the shared
  edge part takes a device's work only when it finishes) and the ledger records the device as
  dropped, naming the step.

The ledger gets, per device and round: the device part down and up (the payload); every step's
activations, padding mask and targets up and gradient down (``extra_bytes_*``; the client's
``act_bytes_up`` and ``grad_bytes_down`` metrics hold the activations and gradients alone);
the device's FLOPs (``flops``) and the edge's (``server_flops``), both exact (FlopCounter per part);
and the edge's simulated seconds with its capacity shared by the devices it serves that round
(``server_s`` = edge FLOPs x devices served / the edge server's FLOP/s), which the device waits
for. Runs on the in-process engine; on Flower each step would be a message round trip, which is
not built yet (refused).
"""

from __future__ import annotations

import numpy as np
import torch

from edgefm import EdgefmError
from edgefm.algorithms.configs import SplitFedConfig
from edgefm.algorithms.fedavg import FedAvg
from edgefm.data.encode import Batch
from edgefm.edge.devices import TIERS, DeviceProfile
from edgefm.fl import participation
from edgefm.fl.strategy import ClientData, ClientTask, ClientUpdate, Tensors
from edgefm.models.split import split, split_step

EDGE = TIERS["edge_server"]


class DeviceDropped(EdgefmError):
    """A device disconnected in the middle of a split step (``algorithm.step_drop``)."""


class _Given(torch.nn.Module):
    """Hands a task's loss outputs already computed (the edge part's), so the loss is the task's own."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.out = out

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.out


class SplitFed(FedAvg):
    Config = SplitFedConfig

    def population(self, clients: list[ClientData], devices: list[DeviceProfile], workbench):
        out = super().population(clients, devices, workbench)
        workbench.use(self.archs[0])
        cuts = self.algo.cuts or (self.algo.cut,)
        self.cut_of = {d.device_id: cuts[d.device_id % len(cuts)] for d in devices}
        # each cut's device part: its modules' names in the whole model (state keys start with them)
        names = {id(m): n for n, m in workbench.model.named_modules()}
        self.prefixes: dict[int, tuple[str, ...]] = {}
        for cut in sorted(set(self.cut_of.values())):
            parts = split(workbench.model, cut)  # a bad cut fails here, before anything runs
            # the device part's modules: single ones, and the members of its module lists (blocks)
            owners = [m for m in parts.device.children() if not isinstance(m, torch.nn.ModuleList)]
            blocks = [b for c in parts.device.children() if isinstance(c, torch.nn.ModuleList) for b in c]
            self.prefixes[cut] = tuple(names[id(m)] + "." for m in [*owners, *blocks] if id(m) in names)
        total = sum(len(c.train) for c in clients)
        self.share = {c.client_id: len(c.train) / total for c in clients}
        qs = self.algo.participation or (1.0,)
        self.q = {d.device_id: float(participation.clamp([qs[d.device_id % len(qs)]])[0]) for d in devices}
        return out

    def on_device(self, key: str, cut: int) -> bool:
        """Whether state entry ``key`` lies on a device that cuts after ``cut`` blocks."""
        return key.startswith(self.prefixes[cut])

    # -- rounds ----------------------------------------------------------------------------------
    def came(self, rnd: int) -> dict[int, bool]:
        """Which devices take part in round ``rnd`` (independent draws from the run seed)."""
        ids = sorted(self.q)
        return dict(zip(ids, participation.participants(self.cfg.seed, rnd, [self.q[i] for i in ids]), strict=True))

    def edge_demand(self, rnd: int) -> int:
        return sum(self.came(rnd).values())

    def configure(self, rnd: int, state: Tensors, devices: list[DeviceProfile]) -> dict[int, ClientTask]:
        came = self.came(rnd)
        # the edge server's capacity is shared by every device it serves at once: this run's
        # participants and, when tenants share it (fl/tenants.py), theirs
        serving = sum(bool(came[d.device_id]) for d in devices) + self.edge_co_load(rnd)
        # each cut's device part and edge part of the state, split once a round (shared, read-only)
        parts = {
            c: (
                {k: v for k, v in state.items() if self.on_device(k, c)},
                {k: v for k, v in state.items() if not self.on_device(k, c)},
            )
            for c in self.prefixes
        }
        self.edge_live = dict(parts[self.algo.cut][1] if self.algo.cut in parts else {})  # v2: one edge part
        self.edge_copies: dict[int, Tensors] = {}  # v1: the edge's part per device
        tasks = {}
        for d in devices:
            if declined := self.unfit(d, rnd):  # the whole model's fit (conservative: a device holds part)
                tasks[d.device_id] = declined
                continue
            if not came[d.device_id]:
                why = f"sat out round {rnd} (participation probability {self.q[d.device_id]:.2f})"
                tasks[d.device_id] = ClientTask(d.device_id, rnd, {}, declined=why)
                continue
            cut = self.cut_of[d.device_id]
            payload, edge = parts[cut]
            config = {"serving": serving, "edge": edge, "cut": cut}
            tasks[d.device_id] = ClientTask(d.device_id, rnd, payload, config, arch=self.fits[d.device_id].arch)
        return tasks

    def expected_update(self, state: Tensors, task: ClientTask) -> Tensors:
        return task.payload

    def client_update(self, task: ClientTask, workbench, data: ClientData, private: Tensors | None) -> ClientUpdate:
        v2 = self.algo.variant == "v2"
        workbench.use(self.archs[0])
        edge = self.edge_live if v2 else task.config["edge"]
        workbench.set_state({**edge, **task.payload})
        cut = task.config["cut"]
        parts = split(workbench.model, cut)
        device_flops, edge_flops = self.flop_models(workbench, parts, cut)
        loss_fn = lambda out, batch: workbench.task.loss(_Given(out), batch)  # noqa: E731
        sent = {"act": 0, "grad": 0, "side": 0, "edge_flops": 0.0, "steps": 0}
        drops = np.random.default_rng([self.cfg.seed, 31, task.round, task.client_id])

        def step(batch: Batch) -> torch.Tensor:  # one split step, and what it sent and cost the edge
            sent["steps"] += 1
            if self.algo.step_drop and drops.random() < self.algo.step_drop:
                # the device vanishes between its activations and the edge's gradient: the step
                # and the device's round are discarded (the edge parts change only when it finishes)
                raise DeviceDropped(
                    f"disconnected in split step {sent['steps']}: its partial step and round discarded "
                    f"({sent['act']} activation bytes had gone up)"
                )
            loss, acts, grad = split_step(parts, batch, loss_fn)
            sent["act"] += acts.numel() * acts.element_size()
            sent["grad"] += grad.numel() * grad.element_size()
            sent["side"] += side_bytes(batch, workbench.task.name)
            sent["edge_flops"] += edge_flops.batch(*batch.input_ids.shape)
            return loss

        fit = workbench.fit(
            data.train,
            self.cfg.train,
            self.client_generator(task.round, task.client_id),
            self.client_seed(task.round, task.client_id),
            flops_model=device_flops,
            backward_step=step,
        )
        act_up, grad_down, server_flops = sent["act"], sent["grad"], sent["edge_flops"]
        state = workbench.get_state()
        edge_after = {k: v.clone() for k, v in state.items() if not self.on_device(k, cut)}
        if v2:
            self.edge_live = edge_after
        else:  # the edge server's copy for this device, averaged at the end of the round
            self.edge_copies[task.client_id] = edge_after
        return ClientUpdate(
            task.client_id,
            task.round,
            {k: v for k, v in state.items() if self.on_device(k, cut)},
            num_examples=len(data.train),
            flops=fit.flops,
            metrics={
                "train_loss": fit.loss,
                "steps": fit.steps,
                "act_bytes_up": act_up,
                "grad_bytes_down": grad_down,
                "cut": cut,
            },
            private=None,
            extra_bytes_up=act_up + sent["side"],
            extra_bytes_down=grad_down,
            server_flops=server_flops,
            server_seconds=server_flops * task.config["serving"] / EDGE.flops_per_s,
        )

    def flop_models(self, workbench, parts, cut: int):
        """Exact training FLOPs per batch of each part (FlopCounter, fitted over lengths)."""
        width = parts.width

        def device_step(ids, mask):
            acts = parts.device(ids, mask)
            acts.backward(torch.ones_like(acts))

        def edge_step(ids, mask):
            positions = parts.positions or ids.shape[1]  # fixed for images and audio
            acts = torch.zeros(ids.shape[0], positions, width, device=ids.device, requires_grad=True)
            parts.edge(acts, mask).float().pow(2).mean().backward()

        key = f"split{cut}"
        return (
            workbench.flop_model(train=True, key=key + ":device", step=device_step),
            workbench.flop_model(train=True, key=key + ":edge", step=edge_step),
        )

    # -- the server ------------------------------------------------------------------------------
    def merge(self, rnd: int, state: Tensors, updates: list[ClientUpdate], tasks: dict[int, ClientTask]) -> Tensors:
        out = dict(state)
        if not updates:
            return out
        p = [self.share[u.client_id] for u in updates]
        q = [self.q[u.client_id] for u in updates]
        device = [dict(u.payload) for u in updates]
        if self.algo.variant == "v2":
            edges = None
            out.update(self.edge_live)
        else:
            edges = [self.edge_copies.pop(u.client_id) for u in updates]  # kept at the edge, never sent
        if edges is not None:  # v1: each device's whole model (its part + its edge copy), whatever its cut
            device = [{**e, **d} for e, d in zip(edges, device, strict=True)]
        glob = {k: v for k, v in state.items() if k in device[0]}
        if self.algo.aggregation == "unbiased":
            out.update(participation.unbiased(glob, device, p, q))
        else:
            out.update(participation.naive(glob, device, p))
        return out


def side_bytes(batch: Batch, task: str) -> int:
    """What travels up with the activations: the padding mask (a byte a position) and the
    targets the edge computes the loss with (labels, or the next tokens: int32 ids)."""
    b, length = batch.attention_mask.shape  # [B, 1] for images and audio
    return b * length + (b * length * 4 if task == "lm" else b * 8)
