"""The shared models that simulated clients take turns on, and the local training loop.

Memory rule (ARCHITECTURE.md): simulated clients share one model instance per architecture in a
process; a client's private state is only its small trainable tensors, loaded into this
workbench before it trains and read back after. A run whose devices train different
architectures (language models sized to each device) builds each one the first time a client
asks for it (:meth:`Workbench.use`). The task (classification, language modelling) supplies the
models, the loss and the metrics. Nothing here knows about federation.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from edgefm import EdgefmError
from edgefm.config import TrainConfig
from edgefm.data.encode import Batch, Encoded
from edgefm.models.flops import FlopModel
from edgefm.models.lora import Tensors, get_trainable_state, set_trainable_state


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EdgefmError("device: 'cuda' requested but no CUDA device is available; expected cpu or auto")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 natively (not emulated, which is slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private: absent means no
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    return False


def resolve_precision(device: torch.device, precision: str) -> str:
    """``fp32`` or ``bf16``: ``auto`` becomes bf16 where ``device`` runs it natively."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision not in ("fp32", "bf16"):
        raise EdgefmError(f"train.precision: {precision!r}; expected 'fp32', 'bf16' or 'auto'")
    return precision


def autocast(device: torch.device, precision: str):
    """The forward pass's precision: bf16 runs it under torch.autocast (matmuls in bfloat16,
    weights, gradients, optimizer state and the loss's reduction in float32); fp32 as it is;
    auto: :func:`resolve_precision`."""
    if resolve_precision(device, precision) == "fp32":
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast(device_type=device.type, dtype=torch.bfloat16))
    if device.type == "cpu":
        # torch's fused CPU attention trains ~15x slower backward in bfloat16 than the plain
        # math path (benchmarks/results/precision.md); the math path computes the same function
        stack.enter_context(sdpa_kernel(SDPBackend.MATH))
    return stack


@dataclass
class FitResult:
    steps: int
    examples: int
    flops: float
    loss: float


def param_groups(named: Iterable[tuple[str, nn.Parameter]], train: TrainConfig) -> list[dict]:
    """AdamW's groups for the trainable ones of ``named``: the body (LoRA or full weights) at
    ``train.lr``, the classification head at ``train.head_lr``. Per-parameter, so a model's
    parts (split learning's device and edge) may each take their own optimizer and train the same."""
    params = [(n, p) for n, p in named if p.requires_grad]
    head = [p for n, p in params if n.startswith("head.")]
    body = [p for n, p in params if not n.startswith("head.")]
    return [{"params": body, "lr": train.lr}, {"params": head, "lr": train.head_lr}]


def batch_plan(data: Encoded, train: TrainConfig, generator: torch.Generator) -> Iterator[np.ndarray]:
    """The rows of every local step, in order: ``train.epochs`` shuffles of ``data`` by
    ``generator``, stopped after ``train.max_steps`` (no further shuffle is drawn once the
    budget is spent, so the generator is consumed exactly as the steps need)."""
    steps = 0
    for _ in range(train.epochs):
        if train.max_steps is not None and steps >= train.max_steps:
            return
        for index in data.batch_indices(train.batch_size, generator=generator, shuffle=True):
            if train.max_steps is not None and steps >= train.max_steps:
                return
            steps += 1
            yield index


class Workbench:
    """One model per architecture (built on first use), the run's tokenizer and its task."""

    def __init__(self, build: Callable[[str], nn.Module], default: str, tokenizer, device: torch.device, task=None):
        self._build = build
        self.models: dict[str, nn.Module] = {}
        self.tokenizer = tokenizer
        self.device = device
        self.task = task
        self.default = default
        self._flops: dict[str, FlopModel] = {}
        self.use(default)

    @classmethod
    def of(cls, model: nn.Module, tokenizer, device: torch.device, task) -> Workbench:
        """A workbench around one given model (e.g. a subnetwork cut from another)."""
        return cls(lambda _: model, "given", tokenizer, device, task)

    def use(self, arch: str) -> nn.Module:
        """Make ``arch``'s model the active one (built, seeded, the first time) and return it."""
        if arch not in self.models:
            self.models[arch] = self._build(arch).to(self.device)
        self.arch, self.model = arch, self.models[arch]
        return self.model

    # -- state ------------------------------------------------------------------------
    def get_state(self) -> Tensors:
        return {k: v.cpu() for k, v in get_trainable_state(self.model).items()}

    def set_state(self, state: Tensors) -> None:
        set_trainable_state(self.model, {k: v.to(self.device) for k, v in state.items()})

    def parameter_counts(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.model.parameters())
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        return {"total": total, "trainable": trainable}

    # -- FLOPs ------------------------------------------------------------------------
    def flop_model(self, train: bool, key: str = "default", step: Callable | None = None) -> FlopModel:
        """Cached per ``key``: a method changes the key when it changes what is trainable, and
        passes its own training ``step(input_ids, attention_mask)`` when that is not one
        forward and backward pass of the model (e.g. a mixture of experts)."""
        k = f"{self.arch}:{key}:{'train' if train else 'eval'}"
        if k not in self._flops:
            self._flops[k] = FlopModel(self.model, train=train, step=step)
        return self._flops[k]

    # -- training ---------------------------------------------------------------------
    def loss(self, batch: Batch) -> torch.Tensor:
        """The default objective: the task's loss of the active model."""
        return self.task.loss(self.model, batch)

    def fit(
        self,
        data: Encoded,
        train: TrainConfig,
        generator: torch.Generator,
        seed: int,
        flop_key: str = "default",
        step_loss: Callable[[Batch], torch.Tensor] | None = None,
        penalty: Callable[[], torch.Tensor] | None = None,
        groups: list[dict] | None = None,
        flops_model: FlopModel | None = None,
    ) -> FitResult:
        """Local epochs of AdamW on ``data``.

        ``seed`` seeds dropout inside a forked RNG, so a client's update depends only on its
        own seed and never leaks into (or reads) global random state. Methods with their own
        objective pass ``step_loss`` (batch -> loss), a ``penalty`` added to every step's loss
        but not to the reported training loss (FedProx's proximal term), their optimizer
        ``groups`` and the ``flops_model`` of that step; by default: :meth:`loss`, LoRA/body at
        ``train.lr`` and the head at ``train.head_lr``.
        """
        if len(data) == 0:
            return FitResult(0, 0, 0.0, float("nan"))
        if groups is None:
            groups = param_groups(self.model.named_parameters(), train)
        opt = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=train.weight_decay)
        flops_model = flops_model or self.flop_model(train=True, key=flop_key)
        step_loss = step_loss or self.loss
        steps, seen, flops, loss_sum = 0, 0, 0.0, 0.0
        self.model.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for index in batch_plan(data, train, generator):
                batch = data.collate(index).to(self.device)
                with autocast(self.device, train.precision):
                    loss = step_loss(batch)
                    total = loss if penalty is None else loss + penalty()
                opt.zero_grad(set_to_none=True)
                total.float().backward()
                opt.step()
                b, length = batch.input_ids.shape
                steps += 1
                seen += b
                flops += flops_model.batch(b, length)
                loss_sum += loss.float().item() * b
        self.model.zero_grad(set_to_none=True)
        return FitResult(steps, seen, flops, loss_sum / max(seen, 1))

    # -- evaluation -------------------------------------------------------------------
    def predict(self, data: Encoded, batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
        return predict(self.model, data, self.device, batch_size)

    def accuracy(self, data: Encoded) -> float:
        return accuracy(self.model, data, self.device)


@torch.no_grad()
def predict(
    model: nn.Module, data: Encoded, device: torch.device, batch_size: int = 128
) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted labels, true labels) of any ``model(input_ids, attention_mask) -> scores``, in
    ``data``'s order (batched in length order: least padding)."""
    model.eval()
    order, preds = [], []
    idx = np.argsort(data.lengths, kind="stable")
    for start in range(0, len(data), batch_size):
        chunk = idx[start : start + batch_size]
        batch = data.collate(chunk).to(device)
        preds.append(model(batch.input_ids, batch.attention_mask).argmax(-1).cpu())
        order.append(torch.as_tensor(chunk))
    if not preds:
        return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    out = torch.empty(len(data), dtype=torch.long)
    out[torch.cat(order)] = torch.cat(preds)
    return out, torch.as_tensor(data.labels)


def accuracy(model: nn.Module, data: Encoded, device: torch.device) -> float:
    """Share of ``data`` that ``model`` labels right (NaN for no data)."""
    if len(data) == 0:
        return math.nan
    pred, true = predict(model, data, device)
    return int((pred == true).sum()) / len(data)  # exact, not a float32 mean
