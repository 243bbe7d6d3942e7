"""Exact FLOP accounting for variable-length batches from three measurements.

``torch.utils.flop_counter.FlopCounterMode`` counts the matmul/attention FLOPs a step really
executes (so frozen weights get no weight-gradient FLOPs under LoRA). Counting every batch
that way slows training, so we measure one example at three sequence lengths and fit
``f(L) = c0 + c1 L + c2 L^2`` — exact for transformer encoders, whose matmuls are linear in
the token count and whose attention is quadratic — then charge a batch ``B * f(L)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count


# torch counts fused attention on CUDA but not its CPU kernel; without this, attention scores
# would be free on CPU except when a model falls back to the unfused path (e.g. RaFFM's narrow
# query/key heads), which would charge such models more than the full one.
def _cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


CPU_ATTENTION = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward,
}

PROBE_LENGTHS = (8, 16, 32)


def count_flops(
    model: nn.Module,
    seq_len: int,
    batch: int = 1,
    train: bool = True,
    loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    step: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
) -> int:
    """FLOPs of one forward (and backward when ``train``) pass on a ``batch x seq_len`` input,
    or of a custom training ``step(input_ids, attention_mask)`` (e.g. a mixture of experts)."""
    device = next(model.parameters()).device
    ids = torch.full((batch, seq_len), 100, dtype=torch.long, device=device)
    mask = torch.ones_like(ids)
    fixed = next((m for m in model.modules() if hasattr(m, "example_input")), None)
    if fixed is not None:  # an image or audio encoder reads one input size: the count is constant
        ids = fixed.example_input(batch).to(device)
        mask = torch.ones(batch, 1, dtype=torch.long, device=device)
    was_training = model.training
    model.eval()  # dropout draws random numbers but costs no counted FLOPs
    try:
        with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
            if step is not None:
                step(ids, mask)
            elif train:
                logits = model(ids, mask)
                (loss_fn(logits) if loss_fn else logits.float().pow(2).mean()).backward()
            else:
                with torch.no_grad():
                    model(ids, mask)
        return int(counter.get_total_flops())
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)


class FlopModel:
    """Per-example FLOPs as a quadratic in sequence length, fitted from three exact counts."""

    def __init__(self, model: nn.Module, train: bool, step: Callable | None = None):
        counts = [count_flops(model, L, train=train, step=step) for L in PROBE_LENGTHS]
        vander = np.vander(np.array(PROBE_LENGTHS, dtype=float), 3, increasing=True)
        self.coef = np.linalg.solve(vander, np.array(counts, dtype=float))

    def __sub__(self, other: FlopModel) -> FlopModel:
        """The FLOPs of a step less those of a part of it (both exact quadratics: so is this)."""
        out = object.__new__(FlopModel)
        out.coef = self.coef - other.coef
        return out

    def per_example(self, seq_len: int) -> float:
        c0, c1, c2 = self.coef
        return float(c0 + c1 * seq_len + c2 * seq_len * seq_len)

    def batch(self, batch_size: int, seq_len: int) -> float:
        return batch_size * self.per_example(seq_len)
