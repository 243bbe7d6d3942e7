"""Tiny causal-LM families, their exact sizes, and which one a device can train (torch-free).

Each family is a transformers architecture built small from its config (``models/causal.py``
builds them): ``gpt2`` (learned positions, GELU MLP, tied embeddings), ``llama`` (RoPE,
SwiGLU, RMSNorm), ``qwen3`` (Llama plus grouped-query attention and Q/K norms), ``phi``
(parallel attention and MLP, partial rotary, biases) and ``qwen3_moe`` (Qwen3 with a sparse
mixture of experts in every layer, top-2 of 4). Sizes ``s``, ``m``, ``l`` hold about 0.5M, 2M
and 6-8M parameters without embeddings: stand-ins, trainable on a CPU, for the 0.5B-7B models a
real edge device would run.

A device picks the largest size that fits its memory for training (:func:`fit`): weights,
gradients and AdamW's two moments of what it trains, and the activations one batch keeps for
the backward pass (:func:`training_memory`). Everything here is arithmetic on an
:class:`ArchSpec`; ``tests/test_lm.py`` checks the parameter counts against the built models.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

BYTES = 4  # float32 everywhere (weights, gradients, optimizer moments, activations)
SIZES = ("s", "m", "l")
# (layers, hidden, heads, ffn) per size; the head size is hidden / heads
_DIMS = {"s": (2, 128, 4, 512), "m": (4, 192, 6, 768), "l": (6, 256, 8, 1024)}
FAMILIES = ("gpt2", "llama", "qwen3", "phi", "qwen3_moe")
MOE_EXPERTS, MOE_ACTIVE = 4, 2


@dataclass(frozen=True)
class ArchSpec:
    family: str
    size: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn: int  # MLP width (per expert for a MoE)
    vocab: int
    positions: int
    experts: int = 0  # 0: a dense MLP
    active_experts: int = 0

    @property
    def name(self) -> str:
        if self.family == "qwen3_moe" and self.ffn == _DIMS[self.size][3]:  # full-width experts
            return f"{self.family}-{self.size}-e{self.experts}"
        return f"{self.family}-{self.size}"

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def spec(family: str, size: str, vocab: int, positions: int) -> ArchSpec:
    """The architecture of ``family`` at ``size`` for a tokenizer of ``vocab`` tokens."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    if size not in _DIMS:
        raise ValueError(f"unknown size {size!r}; expected one of {', '.join(SIZES)}")
    layers, hidden, heads, ffn = _DIMS[size]
    kv = heads // 2 if family in ("qwen3", "qwen3_moe") else heads  # grouped-query attention
    if family == "qwen3_moe":
        return ArchSpec(
            family, size, layers, hidden, heads, kv, ffn // MOE_EXPERTS, vocab, positions, MOE_EXPERTS, MOE_ACTIVE
        )
    return ArchSpec(family, size, layers, hidden, heads, kv, ffn, vocab, positions)


def parse(name: str, vocab: int, positions: int) -> ArchSpec:
    """``"llama-m"`` -> its ArchSpec; ``"qwen3_moe-s-e8"``: a MoE of 8 experts, each as wide as
    the whole MLP of a dense ``qwen3-s`` (the MoE that dense models are assembled into), top-2."""
    parts = name.split("-")
    if len(parts) == 3 and parts[0] == "qwen3_moe" and parts[2].startswith("e") and parts[2][1:].isdigit():
        dense = spec("qwen3", parts[1], vocab, positions)
        experts = int(parts[2][1:])
        return replace(dense, family="qwen3_moe", experts=experts, active_experts=min(MOE_ACTIVE, experts))
    family, _, size = name.rpartition("-")
    return spec(family, size, vocab, positions)


def moe_name(size: str, experts: int) -> str:
    """The name :func:`parse` reads as a MoE of ``experts`` full-width experts of ``qwen3-size``."""
    return f"qwen3_moe-{size}-e{experts}"


def param_counts(a: ArchSpec) -> tuple[int, int]:
    """(all parameters, of which embeddings and the output layer) of the built model, exactly."""
    h, f, hd, kv = a.hidden, a.ffn, a.head_dim, a.kv_heads
    if a.family == "gpt2":
        emb = a.vocab * h + a.positions * h  # the output layer is tied to the token embeddings
        layer = 2 * h + (3 * h * h + 3 * h) + (h * h + h) + 2 * h + (h * f + f) + (f * h + h)
        return emb + a.layers * layer + 2 * h, emb
    if a.family == "phi":
        emb = a.vocab * h + (h * a.vocab + a.vocab)  # untied output layer, with a bias
        layer = 4 * (h * h + h) + (h * f + f) + (f * h + h) + 2 * h
        return emb + a.layers * layer + 2 * h, emb
    emb = 2 * a.vocab * h  # llama, qwen3, qwen3_moe: untied embeddings and output layer
    attn = h * h + 2 * h * kv * hd + h * h + (2 * hd if a.family != "llama" else 0)
    mlp = a.experts * 3 * h * f + a.experts * h if a.experts else 3 * h * f
    return emb + a.layers * (attn + mlp + 2 * h) + h, emb


def flops_per_token(a: ArchSpec, length: int) -> float:
    """Forward FLOPs per token at ``length`` tokens (2 per multiply-add): the matmuls of every
    layer (a MoE counts its active experts), full attention scores and mixing, the output layer."""
    h, f, hd, kv = a.hidden, a.ffn, a.head_dim, a.kv_heads
    proj = 2 * (h * h + 2 * h * kv * hd + h * h)
    mlp = 2 * (2 if a.family in ("gpt2", "phi") else 3) * h * f * (a.active_experts or 1)
    router = 2 * h * a.experts
    attention = 2 * 2 * length * a.heads * hd  # q.k for every key, then the weighted sum of values
    return a.layers * (proj + mlp + router + attention) + 2 * h * a.vocab


@dataclass(frozen=True)
class Memory:
    weights: float
    gradients: float
    optimizer: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations


# Floats autograd saves per token and layer for the backward pass, as a h + b kv + c ffn + d
# heads x length (kv: the key/value width; ffn: an expert's width for a MoE). Fitted to the
# tensors PyTorch 2.13 / transformers 5 actually save in float32 (``saved_tensors_hooks``, six
# shapes per family; tests/test_lm.py checks every family and size against them). GPT-2's
# attention keeps its probabilities (the d term); the others use fused attention.
ACTIVATIONS = {
    "gpt2": (5.0, 5.0, 5.0, 3.0),
    "llama": (5.0, 5.0, 4.0, 0.0),
    "qwen3": (9.64, 4.82, 4.0, 0.0),
    "phi": (3.5, 3.5, 5.0, 0.0),
    "qwen3_moe": (12.9, 6.44, 8.13, 0.0),
}


def training_memory(a: ArchSpec, batch: int, length: int, trained: int | None = None) -> Memory:
    """Bytes to train ``a`` on ``batch`` x ``length`` tokens: every weight, the gradient and the
    two AdamW moments of the ``trained`` parameters (default: all), and the activations autograd
    keeps for the backward pass: per token and layer :data:`ACTIVATIONS`, and per token the
    log-softmax of the logits (vocab) and the embedding and final norm (3 x hidden). The
    allocator's own overhead and transient buffers of the backward pass are not counted."""
    total, _ = param_counts(a)
    trained = total if trained is None else trained
    ch, ckv, cffn, catt = ACTIVATIONS[a.family]
    per_layer = ch * a.hidden + ckv * a.kv_heads * a.head_dim + cffn * a.ffn + catt * a.heads * length
    per_token = a.layers * per_layer + a.vocab + 3 * a.hidden
    return Memory(
        weights=BYTES * total,
        gradients=BYTES * trained,
        optimizer=2 * BYTES * trained,
        activations=BYTES * batch * length * per_token,
    )


@dataclass(frozen=True)
class Fit:
    arch: str  # "" when nothing fits
    memory: float  # estimated training bytes of the chosen size (of the smallest, when none fits)
    reason: str = ""  # why the device declines


def fit(
    family: str,
    sizes: tuple[str, ...],
    memory_bytes: float,
    batch: int,
    length: int,
    vocab: int,
    positions: int,
    trained: dict[str, int] | None = None,
    experts: int = 0,
) -> Fit:
    """The largest of ``sizes`` of ``family`` whose training memory fits ``memory_bytes``.
    ``trained``: parameters trained per architecture name, when not all of them (LoRA);
    ``experts``: a qwen3_moe of that many full-width experts (:func:`moe_name`)."""
    ordered = sorted(sizes, key=SIZES.index, reverse=True)

    def spec_of(size: str) -> ArchSpec:
        if family == "qwen3_moe" and experts:
            return parse(moe_name(size, experts), vocab, positions)
        return spec(family, size, vocab, positions)

    estimates = {}
    for size in ordered:
        a = spec_of(size)
        need = training_memory(a, batch, length, (trained or {}).get(a.name)).total
        estimates[a.name] = need
        if need <= memory_bytes:
            return Fit(a.name, need)
    smallest = spec_of(ordered[-1]).name
    return Fit(
        "",
        estimates[smallest],
        f"no {family} size fits: {smallest} needs {estimates[smallest] / 2**20:.1f} MiB to train "
        f"(batch {batch} x {length} tokens), the device has {memory_bytes / 2**20:.1f} MiB",
    )


def lora_parameters(a: ArchSpec, r: int, experts: bool = False) -> int:
    """Parameters LoRA of rank ``r`` trains on the family's default targets: the query and value
    projections (GPT-2: the fused q/k/v projection), and with ``experts`` a MoE's fused expert
    weights (peft's target_parameters: rank r per expert)."""
    h, kv_width = a.hidden, a.kv_heads * a.head_dim
    per_layer = r * (h + 3 * h) if a.family == "gpt2" else r * (h + h) + r * (h + kv_width)
    if experts and a.experts:
        per_layer += r * a.experts * (h + 2 * a.ffn) + r * a.experts * (a.ffn + h)
    return a.layers * per_layer
