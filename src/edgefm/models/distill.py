"""Knowledge-distillation pieces for causal LMs that share a tokenizer (shapes: logits (B, T, V),
masks (B, T); every loss is over next-token positions whose input and target are real tokens).

- :func:`kl_loss`: KL(teacher || student) per token, at a temperature (DeepFusion's L_KL);
- :func:`target_loss`: cross-entropy of the student against a given target distribution, e.g.
  FedMKT's per-example best teacher with its top-k logits kept (FATE-LLM's ``fedmkt``);
- :func:`ofa_loss`: OFA-KD's loss (Hao et al., NeurIPS 2023): the teacher distribution plus the
  one-hot target, raised to a power epsilon, against the student's log-probabilities;
- :func:`stage_features`: the hidden states that end each of J stages of a model.
"""

from __future__ import annotations

import torch
from torch import nn

from edgefm.models.vaa import stage_layers


def positions(mask: torch.Tensor) -> torch.Tensor:
    """(B, T-1) bool: next-token positions whose input and target are both real tokens."""
    return (mask[:, 1:] > 0) & (mask[:, :-1] > 0)


def next_token_ce(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    valid = positions(mask)
    return nn.functional.cross_entropy(logits[:, :-1][valid], ids[:, 1:][valid])


def kl_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean over tokens of KL(softmax(teacher / T) || softmax(student / T)) x T^2."""
    valid = positions(mask)
    s = nn.functional.log_softmax(student[:, :-1][valid] / temperature, -1)
    t = nn.functional.log_softmax(teacher[:, :-1][valid] / temperature, -1)
    return nn.functional.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


def topk_target(teacher: torch.Tensor, k: int) -> torch.Tensor:
    """The teacher's distribution with only its top-k logits kept (renormalised)."""
    values, index = teacher.topk(min(k, teacher.shape[-1]), dim=-1)
    return torch.zeros_like(teacher).scatter_(-1, index, torch.softmax(values, -1))


def target_loss(student: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of the cross-entropy H(target, softmax(student))."""
    valid = positions(mask)
    return -(target[:, :-1][valid] * nn.functional.log_softmax(student[:, :-1][valid], -1)).sum(-1).mean()


def ofa_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    ids: torch.Tensor,
    mask: torch.Tensor,
    eps: float = 1.0,
    temperature: float = 1.0,
) -> torch.Tensor:
    """OFA-KD: mean over tokens of -sum_v ((p_t + y)^eps - y) log p_s, y the one-hot next token."""
    valid = positions(mask)
    s = nn.functional.log_softmax(student[:, :-1][valid] / temperature, -1)
    p_t = torch.softmax(teacher[:, :-1][valid] / temperature, -1)
    y = nn.functional.one_hot(ids[:, 1:][valid], p_t.shape[-1]).to(p_t.dtype)
    return -(((p_t + y) ** eps - y) * s).sum(-1).mean()


def forward_with_stages(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, stages: int):
    """(logits, the hidden states ending each of ``stages`` equal groups of layers) of a CausalLM."""
    out = model.lm(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
    layers = len(out.hidden_states) - 1
    return out.logits, [out.hidden_states[k] for k in stage_layers(layers, stages)]
