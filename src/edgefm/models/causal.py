"""Flat builders for tiny causal LMs from transformers configs (offline, milliseconds), and the
module every method trains: :class:`CausalLM`, mapping (input_ids, attention_mask) to next-token
logits, as ``TextClassifier`` maps them to class scores.

The architectures and their sizes are in ``families.py``; here they become models. In
transformers 5 a MoE's experts are fused 3-D parameters (``mlp.experts.gate_up_proj``), so LoRA
reaches them through peft's ``target_parameters``. ``from_folder`` loads any local causal-LM
folder (``model.name=path``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PhiConfig,
    PhiForCausalLM,
    PreTrainedModel,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

from edgefm import EdgefmError
from edgefm.models.families import ArchSpec

# LoRA's default targets per family: the attention's query and value projections (for a MoE,
# also its fused expert weights, through peft's target_parameters)
LORA_TARGETS = {
    "gpt2": ("c_attn",),
    "llama": ("q_proj", "v_proj"),
    "qwen3": ("q_proj", "v_proj"),
    "phi": ("q_proj", "v_proj"),
    "qwen3_moe": ("q_proj", "v_proj"),
    "path": ("q_proj", "v_proj"),
}
LORA_PARAMETERS = {"qwen3_moe": ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")}


class CausalLM(nn.Module):
    """A causal LM as the runtime sees it: ``forward(input_ids, attention_mask) -> logits``."""

    def __init__(self, lm: PreTrainedModel, arch: str):
        super().__init__()
        self.lm = lm
        self.arch = arch

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def _config(a: ArchSpec, pad_id: int, eos_id: int):
    common = dict(vocab_size=a.vocab, pad_token_id=pad_id, bos_token_id=eos_id, eos_token_id=eos_id)
    if a.family == "gpt2":
        return GPT2Config(
            n_embd=a.hidden, n_layer=a.layers, n_head=a.heads, n_inner=a.ffn, n_positions=a.positions, **common
        )
    rope = dict(
        hidden_size=a.hidden,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        num_key_value_heads=a.kv_heads,
        max_position_embeddings=a.positions,
        tie_word_embeddings=False,
        **common,
    )
    if a.family == "llama":
        return LlamaConfig(intermediate_size=a.ffn, **rope)
    if a.family == "qwen3":
        return Qwen3Config(intermediate_size=a.ffn, head_dim=a.head_dim, **rope)
    if a.family == "phi":
        rope.pop("num_key_value_heads")
        return PhiConfig(intermediate_size=a.ffn, **rope)
    if a.family == "qwen3_moe":
        return Qwen3MoeConfig(
            intermediate_size=a.ffn * a.experts,
            moe_intermediate_size=a.ffn,
            num_experts=a.experts,
            num_experts_per_tok=a.active_experts,
            norm_topk_prob=True,  # routing weights renormalised over the chosen experts
            decoder_sparse_step=1,
            mlp_only_layers=[],
            head_dim=a.head_dim,
            **rope,
        )
    raise EdgefmError(f"model family {a.family!r} has no builder")


_CLASSES = {
    "gpt2": GPT2LMHeadModel,
    "llama": LlamaForCausalLM,
    "qwen3": Qwen3ForCausalLM,
    "phi": PhiForCausalLM,
    "qwen3_moe": Qwen3MoeForCausalLM,
}


def build(a: ArchSpec, pad_id: int, eos_id: int, seed: int) -> CausalLM:
    """A randomly initialised (seeded) causal LM of architecture ``a``."""
    cfg = _config(a, pad_id, eos_id)
    cfg._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lm = _CLASSES[a.family](cfg)
    return CausalLM(lm.eval(), a.name)


def folder_tokenizer(path: str | Path):
    """A local causal-LM folder's own tokenizer (with an end-of-text and a padding token)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise EdgefmError(f"model.path: {str(path)!r} has no usable tokenizer ({str(exc).splitlines()[0]})") from None
    if tok.eos_token_id is None:
        raise EdgefmError(f"model.path: {str(path)!r}: its tokenizer has no end-of-text token; expected one")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token  # padding is masked out, so any token id will do
    return tok


def from_folder(path: str | Path) -> CausalLM:
    """Any local transformers causal-LM folder (``AutoModelForCausalLM``)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise EdgefmError(f"model.path: {str(path)!r} is not a transformers model folder; expected a config.json in it")
    try:
        lm = AutoModelForCausalLM.from_pretrained(str(path))
    except (ValueError, OSError) as exc:
        raise EdgefmError(f"model.path: {str(path)!r} is not a causal LM ({str(exc).splitlines()[0]})") from None
    return CausalLM(lm.eval(), "path")
