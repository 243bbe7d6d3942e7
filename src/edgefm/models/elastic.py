"""RaFFM's elastic BERT: salient parameter prioritization and subnetwork extraction.

Yu, Muñoz, Jannesari, "Bridging the Gap Between Foundation Models and Heterogeneous Federated
Learning" (arXiv 2310.00247).

*Salient parameter prioritization* (SPP) reorders weights so that the leading slice of every
elastic tensor holds its most salient part, without changing the function the model computes:

- attention: within each head, coordinate j of the query/key space is scored by the mean L1
  norm of its rows in W_Q and W_K; Q and K rows (and biases) get the *same* permutation, so
  every score q.k is unchanged. ``qk="independent"`` ranks Q and K separately (the ablation that
  breaks attention);
- FFN: intermediate neuron n is scored by ||W1[n, :]||_1 + ||W2[:, n]||_1; W1's rows, b1 and
  W2's columns are permuted together.

A *subnetwork* (:class:`Spec`) keeps, per layer, the leading ``ffn`` FFN neurons and the leading
``qk`` query/key coordinates of every head (value/output keep their full width, so the residual
stream and the head count are unchanged). Extraction really shrinks the tensors: FLOPs, memory and
payload bytes fall with the spec. LoRA adapters (peft) on elastic modules are sliced with them.
Tensor names are those of ``named_parameters()``, so a spec applies equally to a model and to a
state dict. The elastic space covers BERT-family encoders (MiniLM, tiny BERT).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import torch
from torch import nn
from transformers.models.bert.modeling_bert import ALL_ATTENTION_FUNCTIONS, BertSelfAttention, eager_attention_forward

Tensors = dict[str, torch.Tensor]

# (pattern, what the tensor's sliced dimension is): rows of Q/K, rows of FFN-in, columns of FFN-out.
_RULES = [
    (re.compile(r"layer\.(\d+)\.attention\.self\.(query|key)\.(?:base_layer\.)?(?:weight|bias)$"), "qk", 0),
    (re.compile(r"layer\.(\d+)\.attention\.self\.(query|key)\.lora_B\.[^.]+\.weight$"), "qk", 0),
    (re.compile(r"layer\.(\d+)\.intermediate\.dense\.(?:base_layer\.)?(?:weight|bias)$"), "ffn", 0),
    (re.compile(r"layer\.(\d+)\.intermediate\.dense\.lora_B\.[^.]+\.weight$"), "ffn", 0),
    (re.compile(r"layer\.(\d+)\.output\.dense\.(?:base_layer\.)?weight$"), "ffn", 1),
    (re.compile(r"layer\.(\d+)\.output\.dense\.lora_A\.[^.]+\.weight$"), "ffn", 1),
]


@dataclass(frozen=True)
class Arch:
    layers: int
    hidden: int
    heads: int
    head_dim: int
    ffn: int
    vocab: int
    positions: int

    @classmethod
    def of(cls, model: nn.Module) -> Arch:
        c = model.encoder.config if hasattr(model, "encoder") else model.config
        return cls(
            c.num_hidden_layers,
            c.hidden_size,
            c.num_attention_heads,
            c.hidden_size // c.num_attention_heads,
            c.intermediate_size,
            c.vocab_size,
            c.max_position_embeddings,
        )


@dataclass(frozen=True)
class Spec:
    """Per layer: FFN neurons kept, and query/key coordinates kept in every head."""

    ffn: tuple[int, ...]
    qk: tuple[int, ...]

    @classmethod
    def full(cls, arch: Arch) -> Spec:
        return cls((arch.ffn,) * arch.layers, (arch.head_dim,) * arch.layers)

    @classmethod
    def uniform(cls, arch: Arch, ffn_ratio: float, qk_ratio: float) -> Spec:
        f = max(1, round(arch.ffn * ffn_ratio))
        q = max(1, round(arch.head_dim * qk_ratio))
        return cls((f,) * arch.layers, (q,) * arch.layers)

    def to_list(self) -> list[int]:
        return [*self.ffn, *self.qk]

    @classmethod
    def from_list(cls, values: list[int]) -> Spec:
        n = len(values) // 2
        return cls(tuple(int(v) for v in values[:n]), tuple(int(v) for v in values[n:]))

    def check(self, arch: Arch) -> None:
        if len(self.ffn) != arch.layers or len(self.qk) != arch.layers:
            raise ValueError(f"spec has {len(self.ffn)} layers; expected {arch.layers}")
        if not all(1 <= f <= arch.ffn for f in self.ffn) or not all(1 <= q <= arch.head_dim for q in self.qk):
            raise ValueError(f"spec {self}: widths must lie in [1, {arch.ffn}] and [1, {arch.head_dim}]")


def rule(name: str) -> tuple[int, str, int] | None:
    """(layer, "qk"|"ffn", sliced dim) for an elastic tensor; None for a fixed one."""
    for pattern, kind, dim in _RULES:
        m = pattern.search(name)
        if m:
            return int(m.group(1)), kind, dim
    return None


def kept(kind: str, layer: int, spec: Spec, arch: Arch, device: torch.device | None = None) -> torch.Tensor:
    """Indices a spec keeps along an elastic dimension (leading slices; per head for Q/K), on
    ``device`` (the sliced tensor's: index_select wants both on one device)."""
    if kind == "ffn":
        return torch.arange(spec.ffn[layer], device=device)
    q = spec.qk[layer]
    heads = torch.arange(arch.heads, device=device)[:, None] * arch.head_dim
    return (heads + torch.arange(q, device=device)[None, :]).reshape(-1)


def slice_state(state: Tensors, spec: Spec, arch: Arch) -> Tensors:
    out = {}
    for name, t in state.items():
        r = rule(name)
        out[name] = t.clone() if r is None else t.index_select(r[2], kept(r[1], r[0], spec, arch, t.device)).clone()
    return out


def scatter(
    name: str, full: torch.Tensor, part: torch.Tensor, spec: Spec, arch: Arch
) -> tuple[torch.Tensor, torch.Tensor]:
    """``full`` with ``part`` written into the coordinates ``spec`` keeps, and the mask of them."""
    r = rule(name)
    if r is None:
        return part.clone(), torch.ones_like(full, dtype=torch.bool)
    layer, kind, dim = r
    idx = kept(kind, layer, spec, arch, full.device)
    out = full.clone().index_copy_(dim, idx, part.to(full.device, full.dtype))
    mask = torch.zeros_like(full, dtype=torch.bool).index_fill_(dim, idx, True)
    return out, mask


# ----------------------------------------------------------------------------- SPP


def _l1_rows(w: torch.Tensor) -> torch.Tensor:
    return w.abs().mean(dim=1)


def effective_weight(state: Tensors, prefix: str, lora_scaling: float) -> torch.Tensor:
    """W (+ s * B A if a LoRA adapter sits on the module): the weight the model actually uses."""
    w = state.get(f"{prefix}.weight", state.get(f"{prefix}.base_layer.weight"))
    a = [v for k, v in state.items() if k.startswith(f"{prefix}.lora_A.")]
    b = [v for k, v in state.items() if k.startswith(f"{prefix}.lora_B.")]
    if a and b:
        w = w + lora_scaling * b[0] @ a[0]
    return w.float()


def salience_permutations(
    state: Tensors, arch: Arch, qk: str = "joint", lora_scaling: float = 1.0, prefix: str = "encoder.encoder"
) -> dict[tuple[int, str], torch.Tensor]:
    """Per layer: the permutation (most salient first) of query rows, key rows and FFN neurons."""
    perms = {}
    d = arch.head_dim
    for i in range(arch.layers):
        base = f"{prefix}.layer.{i}"
        wq = effective_weight(state, f"{base}.attention.self.query", lora_scaling)
        wk = effective_weight(state, f"{base}.attention.self.key", lora_scaling)
        sq, sk = _l1_rows(wq).view(arch.heads, d), _l1_rows(wk).view(arch.heads, d)
        offsets = torch.arange(arch.heads)[:, None] * d
        # stable sort: ties keep their order, so a reordered model reorders to itself
        joint = (torch.sort(-(sq + sk) / 2, dim=1, stable=True).indices + offsets).reshape(-1)
        if qk == "joint":
            perms[(i, "query")] = perms[(i, "key")] = joint
        else:
            perms[(i, "query")] = (torch.sort(-sq, dim=1, stable=True).indices + offsets).reshape(-1)
            perms[(i, "key")] = (torch.sort(-sk, dim=1, stable=True).indices + offsets).reshape(-1)
        w1 = effective_weight(state, f"{base}.intermediate.dense", lora_scaling)
        w2 = effective_weight(state, f"{base}.output.dense", lora_scaling)
        score = w1.abs().sum(dim=1) + w2.abs().sum(dim=0)
        perms[(i, "ffn")] = torch.sort(-score, stable=True).indices
    return perms


def apply_permutations(state: Tensors, perms: dict[tuple[int, str], torch.Tensor]) -> Tensors:
    out = {}
    for name, t in state.items():
        r = rule(name)
        if r is None:
            out[name] = t
            continue
        layer, kind, dim = r
        which = kind if kind == "ffn" else ("query" if ".query." in name else "key")
        out[name] = t.index_select(dim, perms[(layer, which)].to(t.device))
    return out


def reorder(
    state: Tensors, arch: Arch, qk: str = "joint", lora_scaling: float = 1.0, prefix: str = "encoder.encoder"
) -> Tensors:
    """SPP: ``state`` with every elastic tensor reordered most-salient-first."""
    return apply_permutations(state, salience_permutations(state, arch, qk, lora_scaling, prefix))


# ----------------------------------------------------------------------------- extraction


class ElasticSelfAttention(BertSelfAttention):
    """BERT self-attention whose query/key heads are narrower than its value heads.

    Built around an existing attention module's (already sliced) projections, which it shares.
    The softmax scale stays that of the full head, so a subnetwork's scores approximate the full
    model's (the dropped coordinates are the least salient terms of q.k).
    """

    def __init__(self, original: BertSelfAttention, qk_head_size: int):
        nn.Module.__init__(self)  # the projections come from ``original``: build none of our own
        self.config = original.config
        self.num_attention_heads = original.num_attention_heads
        self.attention_head_size = original.attention_head_size
        self.all_head_size = original.all_head_size
        self.scaling = original.scaling
        self.query, self.key, self.value, self.dropout = original.query, original.key, original.value, original.dropout
        self.is_decoder, self.is_causal, self.layer_idx = original.is_decoder, original.is_causal, original.layer_idx
        self.qk_head_size = qk_head_size
        self.train(original.training)

    def forward(self, hidden_states, attention_mask=None, past_key_values=None, **kwargs):
        shape = hidden_states.shape[:-1]
        q = self.query(hidden_states).view(*shape, -1, self.qk_head_size).transpose(1, 2)
        k = self.key(hidden_states).view(*shape, -1, self.qk_head_size).transpose(1, 2)
        v = self.value(hidden_states).view(*shape, -1, self.attention_head_size).transpose(1, 2)
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        out, weights = attend(
            self,
            q,
            k,
            v,
            attention_mask,
            dropout=self.dropout.p if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        return out.reshape(*shape, -1).contiguous(), weights


def extract(model: nn.Module, spec: Spec, arch: Arch | None = None) -> nn.Module:
    """A copy of ``model`` cut to ``spec``: elastic tensors sliced, frozen fixed tensors shared.

    Frozen tensors that no spec slices (embeddings, a LoRA model's frozen value/output weights)
    are shared with ``model`` rather than copied: simulated clients never duplicate the backbone.
    """
    arch = arch or Arch.of(model)
    spec.check(arch)
    shared = {id(p): p for n, p in model.named_parameters() if not p.requires_grad and rule(n) is None}
    sub = copy.deepcopy(model, memo=dict(shared))
    for name, p in list(sub.named_parameters()):
        r = rule(name)
        if r is None:
            continue
        owner_name, attr = name.rsplit(".", 1)
        owner = sub.get_submodule(owner_name)
        data = p.detach().index_select(r[2], kept(r[1], r[0], spec, arch, p.device)).clone()
        setattr(owner, attr, nn.Parameter(data, requires_grad=p.requires_grad))
        if isinstance(owner, nn.Linear) and data.dim() == 2:
            owner.out_features, owner.in_features = data.shape
    attention = [(n, m) for n, m in sub.named_modules() if isinstance(m, BertSelfAttention) and m.layer_idx is not None]
    for name, module in attention:
        parent, _, child = name.rpartition(".")
        setattr(sub.get_submodule(parent), child, ElasticSelfAttention(module, spec.qk[module.layer_idx]))
    return sub


def widths(model: nn.Module) -> Spec:
    """The spec a model was cut to, read from its layers' weights (peft's LoRA wrappers keep the
    uncut ``out_features``; their ``weight`` is the sliced base layer's)."""
    encoder = model.encoder if hasattr(model, "encoder") else model
    heads = encoder.config.num_attention_heads
    layers = encoder.encoder.layer
    ffn = tuple(layer.intermediate.dense.weight.shape[0] for layer in layers)
    return Spec(ffn, tuple(layer.attention.self.query.weight.shape[0] // heads for layer in layers))


def padded(model: nn.Module) -> nn.Module:
    """A copy of a cut model (``extract``, LoRA merged and unloaded) in the architecture its
    config builds, computing the same function: the query/key coordinates a head dropped are
    zero rows in W_Q and W_K (the softmax scale is the full head's, so every q.k is unchanged),
    and a layer's FFN neurons beyond its width are zero in and out (GELU(0) = 0: they add
    nothing); ``intermediate_size`` is the widest layer's, so a uniform cut really shrinks the FFN."""
    encoder = model.encoder
    spec = widths(model)
    config = copy.deepcopy(encoder.config)
    config.intermediate_size = max(spec.ffn)
    with torch.random.fork_rng(devices=[]):  # its random init is overwritten: leave the caller's stream alone
        full = type(encoder)(config, add_pooling_layer=getattr(encoder, "pooler", None) is not None)
    arch, part = Arch.of(full), encoder.state_dict()
    state = {}
    for name, t in full.state_dict().items():
        p = part[name]
        state[name] = p.clone() if p.shape == t.shape else scatter(name, torch.zeros_like(t), p, spec, arch)[0]
    full.load_state_dict(state)
    return copy.deepcopy(model, memo={id(encoder): full.train(encoder.training)})


def load_tensors(model: nn.Module, state: Tensors) -> None:
    """Copy ``state`` into the model's parameters of the same names (shapes must match)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, t in state.items():
            params[name].copy_(t.to(params[name].device))


# ----------------------------------------------------------------------------- cost of a spec


@dataclass(frozen=True)
class Cost:
    params: int  # every parameter the subnetwork holds (embeddings included)
    trained: int  # parameters it trains
    flops_per_example: float  # one training step, per example, at the budget sequence length
    memory_bytes: float  # weights + gradients + AdamW state + activations of one batch


def cost(arch: Arch, spec: Spec, seq_len: int, batch: int, lora_rank: int | None = None) -> Cost:
    """Analytic size and training cost of a subnetwork (used to choose specs; the ledger counts
    the real FLOPs of the extracted model). LoRA: rank ``lora_rank`` on query and value."""
    h, heads = arch.hidden, arch.heads
    emb = (arch.vocab + arch.positions + 2) * h + 2 * h
    params, fwd, act = emb, 0.0, 0.0
    for f, q in zip(spec.ffn, spec.qk, strict=True):
        qk = heads * q
        params += 2 * (qk * h + qk) + 2 * (h * h + h) + 4 * h + (f * h + f) + (h * f + h)
        # per token: Q/K, V/O and FFN projections, then scores and the attention-weighted sum
        fwd += 2 * (2 * h * qk) + 2 * (2 * h * h) + 2 * (2 * h * f) + 2 * seq_len * qk + 2 * seq_len * h
        act += 8 * h + 2 * qk + 2 * f + 2 * heads * seq_len
    if lora_rank is None:
        trained, flops = params - emb, 3 * fwd  # forward, input and weight gradients
    else:
        trained = arch.layers * 2 * lora_rank * 2 * h
        flops = 2 * fwd  # forward and input gradients; LoRA's weight gradients are negligible
    memory = 4 * params + 12 * trained + 4 * batch * seq_len * act
    return Cost(int(params), int(trained), float(flops * seq_len), float(memory))
