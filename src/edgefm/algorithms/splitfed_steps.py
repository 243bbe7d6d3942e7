"""The two halves of a split-learning round, one step at a time (used by ``algorithms/splitfed.py``).

SplitFed (Thapa et al., AAAI 2022) as PRINCE (arXiv 2503.04971) uses it: every local step the
device runs its part and sends the smashed activations up, the edge server runs the rest,
computes the loss, back-propagates and sends the gradient at the cut down, and the device
finishes its backward pass. Each half is an object that takes one message and answers it:

- :class:`DeviceSide` holds the device part, its AdamW and its round's batches. It can be
  rebuilt from a ``carry`` (its trainable tensors, optimizer moments, step and counters), so a
  Flower node, which keeps nothing between messages but its context's records, answers each
  message afresh; it then recomputes the forward pass of the step whose gradient arrives (the
  same weights, input and dropout draws: the same activations). In one process it keeps the
  autograd graph instead.
- :class:`EdgeSide` holds one device's edge part (V1: the edge's copy for that device; V2: the
  one edge part, as the previous device left it), its AdamW and what the round cost the edge.

Both engines run these same two objects, so they train identically. AdamW is per parameter,
so an optimizer per half steps exactly as one optimizer over the whole model would. Dropout
draws from one random stream in the unsplit order (the device's forward, then the edge's),
whose state travels with each message (``rng``, ~5 KB; counted in Flower's wire bytes, not in
the ledger's split traffic, since a real deployment would not need it: it only makes runs
reproducible across engines). What goes up with the activations is what the edge computes the
loss with: the padding mask (a byte a position) and the targets (labels; next-token ids as
int32). The ledger's activation, gradient and side bytes are these tensors' own sizes.
"""

from __future__ import annotations

import numpy as np
import torch

from edgefm import EdgefmError
from edgefm.data.encode import Batch, Encoded
from edgefm.fl.strategy import ClientUpdate, Step, Tensors
from edgefm.models.split import Split
from edgefm.models.workbench import autocast, batch_plan, param_groups


class DeviceDropped(EdgefmError):
    """A device disconnected in the middle of a split step (``algorithm.step_drop``)."""


class _Given(torch.nn.Module):
    """Hands a task's loss outputs already computed (the edge part's), so the loss is the task's own."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.out = out

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.out


def start_rng(seed: int) -> torch.Tensor:
    """The random stream's state at a client's first step (as ``Workbench.fit`` seeds it)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.get_rng_state()


def part_params(model: torch.nn.Module, part: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """The trainable parameters of ``part``, named as in the whole ``model`` (``head.`` marks the head)."""
    mine = {id(p) for p in part.parameters()}
    return [(n, p) for n, p in model.named_parameters() if id(p) in mine and p.requires_grad]


def load_part(workbench, values: Tensors) -> None:
    """Load one part's trainable tensors, the rest of the model's as they are (the trainable
    state is loaded whole: adapters and head go through peft's own naming)."""
    workbench.set_state({**workbench.get_state(), **values})


def _opt_tensors(opt: torch.optim.Optimizer) -> Tensors:
    return {f"opt.{i}.{k}": v for i, s in opt.state_dict()["state"].items() for k, v in s.items()}


def _load_opt(opt: torch.optim.Optimizer, carry: Tensors) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in carry.items():
        if key.startswith("opt."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})


class DeviceSide:
    """The device's half of one client's round (see the module docstring)."""

    def __init__(self, strategy, task, workbench, data: Encoded, parts: Split, carry: Tensors | None):
        self.s, self.task, self.wb, self.data, self.parts = strategy, task, workbench, data, parts
        self.train = strategy.cfg.train
        self.plan = list(batch_plan(data, self.train, strategy.client_generator(task.round, task.client_id)))
        workbench.model.train()
        self.named = part_params(workbench.model, parts.device)
        groups = param_groups(self.named, self.train)
        self.opt = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=self.train.weight_decay)
        self.live: tuple[int, torch.Tensor] | None = None  # (step, activations with their graph), in-process
        if carry is None:  # the round starts: the device part the server sent
            self.keys = sorted(task.payload)
            load_part(workbench, task.payload)
            self.step, self.rng = -1, start_rng(strategy.client_seed(task.round, task.client_id))
            self.flops = self.sent = 0.0
        else:  # later messages carry no payload: the part is the device's own, as it left it
            self.keys = sorted(k[2:] for k in carry if k.startswith("w."))
            load_part(workbench, {k: carry["w." + k] for k in self.keys})
            _load_opt(self.opt, carry)
            self.step, self.rng = int(carry["step"]), carry["rng"]
            self.flops, self.sent = float(carry["flops"]), float(carry["sent"])
        self.flop_model = strategy.device_flops(workbench, parts, task.config["cut"])

    def carry(self) -> Tensors:
        """Everything needed to answer the next message in a fresh process."""
        state = {"w." + k: v for k, v in self.part_state().items()}
        numbers = {"step": torch.tensor(self.step), "flops": torch.tensor(self.flops, dtype=torch.float64)}
        numbers["sent"] = torch.tensor(self.sent, dtype=torch.float64)
        return {**state, **_opt_tensors(self.opt), **numbers, "rng": self.rng}

    def part_state(self) -> Tensors:
        state = self.wb.get_state()
        return {k: state[k] for k in self.keys}

    def _forward(self, k: int) -> tuple[torch.Tensor, Batch, torch.Tensor]:
        """Step ``k``'s activations from the random stream's state before it; and the state after."""
        batch = self.data.collate(self.plan[k]).to(self.wb.device)
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.rng)
            with autocast(self.wb.device, self.train.precision):
                acts = self.parts.device(batch.input_ids, batch.attention_mask)
            after = torch.get_rng_state()
        return acts, batch, after

    def advance(self, down: Tensors | None) -> Step:
        """Finish the step whose gradient ``down`` brings (if any), then start the next one:
        its activations go up, or, the round's steps done, the update."""
        task = self.task
        if down is not None:
            kept = self.live is not None and self.live[0] == self.step
            # a fresh process runs the same forward again (same weights, input, dropout draws)
            acts = self.live[1] if kept else self._forward(self.step)[0]
            acts.backward(down["grad"].to(acts.dtype))
            self.opt.step()
            self.rng = down["rng"]  # where the edge's forward left the stream
        self.live = None
        k = self.step + 1
        if k == len(self.plan):
            self.wb.model.zero_grad(set_to_none=True)
            state = self.part_state()
            metrics = {"steps": len(self.plan), "cut": task.config["cut"]}
            return Step(update=ClientUpdate(task.client_id, task.round, state, len(self.data), self.flops, metrics))
        drop = np.random.default_rng([self.s.cfg.seed, 31, task.round, task.client_id, k])
        if self.s.algo.step_drop and drop.random() < self.s.algo.step_drop:
            # the device vanishes between its activations and the edge's gradient: the step and
            # the device's round are discarded (the edge keeps a device's work once it finishes)
            raise DeviceDropped(
                f"disconnected in split step {k + 1}: its partial step and round discarded "
                f"({int(self.sent)} activation bytes had gone up)"
            )
        self.opt.zero_grad(set_to_none=True)
        acts, batch, after = self._forward(k)  # self.rng stays the state it started from
        self.step, self.live = k, (k, acts)
        b, length = batch.input_ids.shape[:2]
        self.flops += self.flop_model.batch(b, length)
        self.sent += acts.numel() * acts.element_size()
        lm = self.wb.task.name == "lm"
        up = {
            "acts": acts.detach(),
            "mask": batch.attention_mask.to(torch.uint8),
            "targets": batch.input_ids.to(torch.int32) if lm else batch.labels,
            "shape": torch.tensor([b, length]),
            "rng": after,
        }
        return Step(up=up)


class EdgeSide:
    """The edge server's half of one client's round: its edge part, optimizer and costs."""

    def __init__(self, strategy, workbench, parts: Split, start: Tensors, cut: int):
        self.wb, self.parts, self.train = workbench, parts, strategy.cfg.train
        self.values = {k: v.clone() for k, v in start.items()}
        self.named = part_params(workbench.model, parts.edge)
        groups = param_groups(self.named, self.train)
        self.opt = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=self.train.weight_decay)
        self.flop_model = strategy.edge_flops(workbench, parts, cut)
        self.loss_sum = self.seen = self.act = self.grad = self.side = self.flops = 0.0
        self.steps = 0

    def load(self) -> None:
        """Put this device's edge part into the shared model (several may take turns on it)."""
        load_part(self.wb, self.values)
        self.wb.model.train()

    def save(self) -> None:
        state = self.wb.get_state()
        self.values = {k: state[k].detach().clone() for k in self.values}

    def answer(self, up: Tensors, task_name: str) -> Tensors:
        """One step on the edge: forward from the activations, the task's loss, backward, an
        AdamW step; the gradient at the cut (and the random stream) go down."""
        device = self.wb.device
        received = up["acts"].to(device).detach().requires_grad_(True)
        mask = up["mask"].to(device).long()
        targets = up["targets"].to(device).long()
        b, length = (int(x) for x in up["shape"])
        ids, labels = (targets, targets.new_zeros(b)) if task_name == "lm" else (mask, targets)
        self.opt.zero_grad(set_to_none=True)
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(up["rng"])
            with autocast(device, self.train.precision):
                out = self.parts.edge(received, mask)
                loss = self.wb.task.loss(_Given(out), Batch(ids, mask, labels))
                loss.backward()
            rng = torch.get_rng_state()
        self.opt.step()
        self.steps += 1
        self.seen += b
        self.loss_sum += loss.detach().float().item() * b
        self.act += received.numel() * received.element_size()
        self.grad += received.grad.numel() * received.grad.element_size()
        self.side += (
            up["mask"].numel() * up["mask"].element_size() + up["targets"].numel() * up["targets"].element_size()
        )
        self.flops += self.flop_model.batch(b, length)
        return {"grad": received.grad.detach(), "rng": rng}
