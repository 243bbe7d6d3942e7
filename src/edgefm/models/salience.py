"""Data-aware salience for RaFFM's elastic BERT: rank coordinates by what they carry on real data.

RaFFM (Yu et al., arXiv 2310.00247) orders weights by their L1 norm (SPP, ``elastic.py``). On a
pretrained MiniLM that weight order keeps less of the model, cut to half width, than no
reordering at all (issue 21: hidden-state cosine to the full model 0.50 against 0.58), while a
ranking from activations on real sentences keeps far more. This module measures activations and
ranks from them, in a form federated learning can carry: each client sums per-coordinate
statistics of its own data while it trains (a few KB per layer, sent with its update); the
server combines them sample-weighted and ranks.

Statistics (mean over non-padding tokens), per layer i:
- ``query``/``key``: E|q_j| and E|k_j| for every query/key coordinate j (all heads);
- ``ffn``: E|a_n| for every FFN neuron n after the activation function.

Scores (ours, in the spirit of Wanda, Sun et al. 2023: weight magnitude times input norm):
- query/key coordinate j of a head: E|q_j| E|k_j|, its typical contribution to the score q.k;
  Q and K share the permutation, as in SPP, so every kept score term stays intact;
- FFN neuron n: E|a_n| ||W2[:, n]||_1, its typical contribution to the layer's output.
Coordinates nobody measured (beyond every client's width) score -inf and keep their order at
the end (stable sort), so the ranking never promotes what no data has seen.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torch import nn

from edgefm.data.encode import Encoded
from edgefm.models.elastic import Arch, Spec, Tensors, effective_weight, kept
from edgefm.models.flops import FlopModel

KEY = "salience.{layer}.{kind}"  # kind: query | key | ffn
_HOOKED = re.compile(r"layer\.(\d+)\.(?:attention\.self\.(query|key)|(intermediate))$")


def stat_key(layer: int, kind: str) -> str:
    return KEY.format(layer=layer, kind=kind)


def is_stat(name: str) -> bool:
    return name.startswith("salience.")


class ActivationStats:
    """``with ActivationStats(model) as stats: model(...)``; then ``stats.means()``.

    Forward hooks on every layer's query, key and intermediate modules add up |x| per output
    coordinate over the tokens the attention mask keeps (the mask is read from the model's
    call by a pre-hook). Works on full models and on extracted subnetworks (narrower outputs)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.sums: dict[str, torch.Tensor] = {}
        self.tokens = 0.0
        self._mask: torch.Tensor | None = None
        self._handles: list = []

    def __enter__(self) -> ActivationStats:
        self._handles.append(self.model.register_forward_pre_hook(self._read_mask, with_kwargs=True))
        for name, module in self.model.named_modules():
            m = _HOOKED.search(name)
            if m:
                kind = m.group(2) or "ffn"
                self._handles.append(module.register_forward_hook(self._adder(stat_key(int(m.group(1)), kind))))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _read_mask(self, module, args, kwargs):
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        self._mask = None if mask is None else mask.detach()
        if self._mask is not None:
            self.tokens += float(self._mask.sum())

    def _adder(self, key: str):
        def hook(module, args, output):
            x = output.detach().abs().float()  # [batch, seq, width]
            if self._mask is not None:
                x = x * self._mask[..., None].to(x.dtype)
            total = x.sum(dim=(0, 1))
            self.sums[key] = self.sums[key] + total if key in self.sums else total

        return hook

    def means(self) -> Tensors:
        # host tensors: a report that crosses the network or meets other clients' on the server
        return {k: (v / max(self.tokens, 1.0)).cpu() for k, v in self.sums.items()}


@torch.no_grad()
def measure(
    model: nn.Module, data: Encoded, device: torch.device, limit: int, flops: FlopModel | None = None
) -> tuple[Tensors, float]:
    """Statistics of ``model`` (eval mode) on the first ``limit`` examples of ``data`` — a
    client's own — and the FLOPs of that forward pass (with ``flops``, the model's eval FlopModel)."""
    index = np.arange(min(limit, len(data)))
    index = index[np.argsort(data.lengths[index], kind="stable")]  # least padding
    model.eval()
    spent = 0.0
    with ActivationStats(model) as stats:
        for start in range(0, len(index), 64):
            batch = data.collate(index[start : start + 64]).to(device)
            model(batch.input_ids, batch.attention_mask)
            if flops is not None:
                spent += flops.batch(*batch.input_ids.shape)
    return stats.means(), spent


def _kept(name: str, spec: Spec, arch: Arch) -> torch.Tensor:
    _, layer, kind = name.split(".")
    return kept("ffn" if kind == "ffn" else "qk", int(layer), spec, arch)


def expected(spec: Spec, arch: Arch) -> Tensors:
    """The statistics a client cut to ``spec`` reports: names and shapes (zeros)."""
    out = {}
    for i in range(arch.layers):
        for kind in ("query", "key", "ffn"):
            name = stat_key(i, kind)
            out[name] = torch.zeros(len(_kept(name, spec, arch)))
    return out


def combine(reports: list[tuple[Tensors, Spec, float]], arch: Arch) -> Tensors:
    """Full-width statistics from clients' (statistics, spec, weight): each coordinate the
    weighted mean over the clients that measured it, NaN where none did."""
    total: Tensors = {}
    weight: Tensors = {}
    for stats, spec, w in reports:
        for name, v in stats.items():
            idx = _kept(name, spec, arch)
            width = arch.ffn if name.endswith("ffn") else arch.heads * arch.head_dim
            if name not in total:
                total[name], weight[name] = (
                    torch.zeros(width, dtype=torch.float64),
                    torch.zeros(width, dtype=torch.float64),
                )
            total[name].index_add_(0, idx, w * v.double())
            weight[name].index_add_(0, idx, torch.full((len(idx),), float(w), dtype=torch.float64))
    return {k: torch.where(weight[k] > 0, total[k] / weight[k].clamp_min(1e-300), torch.nan) for k in total}


def activation_permutations(
    state: Tensors, stats: Tensors, arch: Arch, lora_scaling: float = 1.0, prefix: str = "encoder.encoder"
) -> dict[tuple[int, str], torch.Tensor]:
    """Per layer, the permutation (most salient on the data first) of query/key rows and FFN
    neurons, from full-width statistics (NaN where nobody measured; see the module docstring)."""
    perms = {}
    d = arch.head_dim
    offsets = torch.arange(arch.heads)[:, None] * d
    for i in range(arch.layers):
        q, k = stats[stat_key(i, "query")].double(), stats[stat_key(i, "key")].double()
        score = torch.nan_to_num(q * k, nan=-torch.inf).view(arch.heads, d)
        joint = (torch.sort(-score, dim=1, stable=True).indices + offsets).reshape(-1)
        perms[(i, "query")] = perms[(i, "key")] = joint
        w2 = effective_weight(state, f"{prefix}.layer.{i}.output.dense", lora_scaling)
        ffn = stats[stat_key(i, "ffn")].double() * w2.abs().sum(dim=0).double()
        perms[(i, "ffn")] = torch.sort(-torch.nan_to_num(ffn, nan=-torch.inf), stable=True).indices
    return perms
