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
for. Steps run through ``algorithms/splitfed_steps.py`` (the device's and the edge's halves),
the same objects on both engines: in-process ``client_update`` plays both sides; on Flower the
ServerApp is the edge server and holds the edge parts, and each split step is a message round
trip with the node (activations up, the gradient down; ``Strategy.interactive``). V1's devices
step side by side, V2's one after another (``serial``: they share the one edge part).
"""

from __future__ import annotations

import torch

from edgefm.algorithms.configs import SplitFedConfig
from edgefm.algorithms.fedavg import FedAvg
from edgefm.algorithms.splitfed_steps import DeviceDropped, DeviceSide, EdgeSide
from edgefm.edge.devices import TIERS, DeviceProfile
from edgefm.fl import participation
from edgefm.fl.strategy import ClientData, ClientTask, ClientUpdate, Step, Tensors
from edgefm.models.split import split

__all__ = ["DeviceDropped", "SplitFed"]

EDGE = TIERS["edge_server"]


class SplitFed(FedAvg):
    Config = SplitFedConfig
    interactive = True

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
        self.edge_start = {c: edge for c, (_, edge) in parts.items()}  # what each device's edge copy starts from
        self.edge_live = dict(parts[self.algo.cut][1] if self.algo.cut in parts else {})  # v2: one edge part
        self.edge_copies: dict[int, Tensors] = {}  # v1: the edge's part per device, once it finishes
        self.sessions: dict[int, EdgeSide] = {}  # the edge's half of each device's round under way
        self.loaded: int | None = None  # whose edge part the server's model holds
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
            config = {"serving": serving, "cut": cut}  # the edge part stays on the server
            payload = parts[cut][0]
            tasks[d.device_id] = ClientTask(d.device_id, rnd, payload, config, arch=self.fits[d.device_id].arch)
        return tasks

    def expected_update(self, state: Tensors, task: ClientTask) -> Tensors:
        return task.payload

    def client_update(self, task: ClientTask, workbench, data: ClientData, private: Tensors | None) -> ClientUpdate:
        """In one process: the device's and the edge's halves answer each other in turn."""
        side, down = self._device(task, workbench, data, None), None
        self._edge(task, workbench)  # loaded before the device's graph exists (loading writes in place)
        while (step := side.advance(down)).update is None:
            down = self.serve(task, workbench, step.up)
        return self.finish(task, step.update)

    def serial(self) -> bool:
        return self.algo.variant == "v2"  # one edge part, updated device after device

    def _device(self, task: ClientTask, workbench, data: ClientData, carry: Tensors | None) -> DeviceSide:
        workbench.use(self.archs[0])
        return DeviceSide(self, task, workbench, data.train, split(workbench.model, task.config["cut"]), carry)

    def client_step(self, task, workbench, data, private, carry, down) -> tuple[Step, Tensors]:
        side = self._device(task, workbench, data, carry)
        step = side.advance(down)
        return step, ({} if step.update is not None else side.carry())

    def serve(self, task: ClientTask, workbench, up: Tensors) -> Tensors:
        return self._edge(task, workbench).answer(up, workbench.task.name)

    def _edge(self, task: ClientTask, workbench) -> EdgeSide:
        """The edge's half of this device's round, opened at its first step (V1: a fresh edge
        copy; V2: the edge part as the previous device left it) and loaded into the model."""
        cid, cut = task.client_id, task.config["cut"]
        if cid not in self.sessions:
            workbench.use(self.archs[0])
            self.sessions[cid] = EdgeSide(self, workbench, split(workbench.model, cut), self._edge_start(cut), cut)
        session = self.sessions[cid]
        if self.loaded != cid:  # V1's devices step side by side on Flower: swap edge copies in
            if self.loaded in self.sessions:
                self.sessions[self.loaded].save()
            session.load()
            self.loaded = cid
        return session

    def _edge_start(self, cut: int) -> Tensors:
        """Where a device's edge part starts: V1 a fresh copy of the round's, V2 the one as it is now."""
        return self.edge_live if self.algo.variant == "v2" else self.edge_start[cut]

    def finish(self, task: ClientTask, update: ClientUpdate) -> ClientUpdate:
        cid = task.client_id
        session = self.sessions.pop(cid, None)
        if session is None:  # no step ran (no data): the edge part is as it started
            edge, numbers = (
                dict(self._edge_start(task.config["cut"])),
                {"loss": float("nan"), "act": 0, "grad": 0, "side": 0, "flops": 0.0},
            )
        else:
            if self.loaded == cid:
                session.save()
                self.loaded = None
            edge = session.values
            numbers = {
                "loss": session.loss_sum / max(session.seen, 1),
                "act": int(session.act),
                "grad": int(session.grad),
                "side": int(session.side),
                "flops": session.flops,
            }
        if self.algo.variant == "v2":
            self.edge_live = edge
        else:  # the edge server's copy for this device, averaged at the end of the round
            self.edge_copies[cid] = edge
        update.metrics.update(train_loss=numbers["loss"], act_bytes_up=numbers["act"], grad_bytes_down=numbers["grad"])
        update.extra_bytes_up = numbers["act"] + numbers["side"]
        update.extra_bytes_down = numbers["grad"]
        update.server_flops = numbers["flops"]
        update.server_seconds = numbers["flops"] * task.config["serving"] / EDGE.flops_per_s
        return update

    def device_flops(self, workbench, parts, cut: int):
        """Exact training FLOPs per batch of the device part (FlopCounter, fitted over lengths)."""

        def step(ids, mask):
            acts = parts.device(ids, mask)
            acts.backward(torch.ones_like(acts))

        return workbench.flop_model(train=True, key=f"split{cut}:device", step=step)

    def edge_flops(self, workbench, parts, cut: int):
        """Exact training FLOPs per batch of the edge part, from activations of the cut's shape."""

        def step(ids, mask):
            positions = parts.positions or ids.shape[1]  # fixed for images and audio
            acts = torch.zeros(ids.shape[0], positions, parts.width, device=ids.device, requires_grad=True)
            parts.edge(acts, mask).float().pow(2).mean().backward()

        return workbench.flop_model(train=True, key=f"split{cut}:edge", step=step)

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
        robust = self.robust(device, p, glob)  # a Byzantine-robust rule replaces the participation merge
        if robust is not None:
            out.update(robust)
        elif self.algo.aggregation == "unbiased":
            out.update(participation.unbiased(glob, device, p, q))
        else:
            out.update(participation.naive(glob, device, p))
        return out
