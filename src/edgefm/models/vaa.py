"""View-Aligned Attention (VAA): cross-architecture feature matching for knowledge distillation.

DeepFusion (Li, Hu, Abdelmoniem, Min, Huang, Huang; arXiv 2602.14301), Phase II, Eqs. (7)-(11):
a student and a teacher of different widths and depths are each split into J stages; each student
stage's hidden states are pooled to P = Pq / J positions and projected to width d (C_j); the J
stages are concatenated into one (Pq x d) sequence and passed through multi-head self-attention
(softmax(Q K^T / sqrt(d)) V; no residual unless asked); the result is split back into J chunks and
each is projected to the teacher's width at that stage. The feature loss is the sum over stages
of the mean squared error against the teacher's stage features pooled to the same P positions.
VAA is trained with the student and discarded after distillation. The paper gives no sizes;
the defaults (J = 4, Pq = 64, d = 256, 4 heads) are the project's. ``LinearAlignment`` is the
ablation: one linear map per stage, no attention across stages.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def stage_layers(layers: int, stages: int) -> list[int]:
    """Which hidden state ends each of ``stages`` equal groups of ``layers`` layers (1-based, as
    in ``output_hidden_states``, whose entry 0 is the embeddings)."""
    if not 1 <= stages <= layers:
        raise ValueError(f"{stages} stages need 1 to {layers} layers")
    return [round((j + 1) * layers / stages) for j in range(stages)]


def pool(h: torch.Tensor, mask: torch.Tensor, positions: int) -> torch.Tensor:
    """(B, T, D) hidden states -> (B, P, D): the mean over each of P equal spans of the sequence,
    counting only real tokens (a span of padding pools to zero)."""
    b, t, d = h.shape
    edges = torch.linspace(0, t, positions + 1).round().long()
    w = mask.to(h.dtype)
    out = []
    for p in range(positions):
        lo, hi = int(edges[p]), max(int(edges[p + 1]), int(edges[p]) + 1)
        span, wt = h[:, lo:hi], w[:, lo:hi, None]
        out.append((span * wt).sum(1) / wt.sum(1).clamp_min(1.0))
    return torch.stack(out, dim=1)


class ViewAlignedAttention(nn.Module):
    """Student stage features -> teacher-width features, aligned across stages by attention."""

    def __init__(
        self,
        student_widths: list[int],
        teacher_widths: list[int],
        patches: int = 64,
        width: int = 256,
        heads: int = 4,
        residual: bool = False,
    ):
        super().__init__()
        if len(student_widths) != len(teacher_widths):
            raise ValueError("student and teacher need the same number of stages")
        self.stages = len(student_widths)
        self.positions = max(1, patches // self.stages)
        self.width, self.heads, self.residual = width, heads, residual
        self.project_in = nn.ModuleList(nn.Linear(w, width) for w in student_widths)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.project_out = nn.ModuleList(nn.Linear(width, w) for w in teacher_widths)

    def forward(self, features: list[torch.Tensor], mask: torch.Tensor) -> list[torch.Tensor]:
        """J student stage features (B, T, D_s,j) -> J tensors (B, P, D_t,j)."""
        x = torch.cat([c(pool(f, mask, self.positions)) for c, f in zip(self.project_in, features, strict=True)], dim=1)
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = nn.functional.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(d))  # the paper's sqrt(d)
        y = y.transpose(1, 2).reshape(b, n, d)
        if self.residual:
            y = y + x
        chunks = y.split(self.positions, dim=1)
        return [out(c) for out, c in zip(self.project_out, chunks, strict=True)]


class LinearAlignment(nn.Module):
    """The ablation: each student stage pooled and mapped linearly to the teacher's width."""

    def __init__(
        self,
        student_widths: list[int],
        teacher_widths: list[int],
        patches: int = 64,
        width: int = 0,
        heads: int = 0,
        residual: bool = False,
    ):
        super().__init__()  # width, heads, residual: VAA's, unused here (one signature for both)
        self.positions = max(1, patches // len(student_widths))
        self.maps = nn.ModuleList(nn.Linear(s, t) for s, t in zip(student_widths, teacher_widths, strict=True))

    def forward(self, features: list[torch.Tensor], mask: torch.Tensor) -> list[torch.Tensor]:
        return [m(pool(f, mask, self.positions)) for m, f in zip(self.maps, features, strict=True)]


def feature_loss(aligned: list[torch.Tensor], teacher: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """L_FM = sum over stages of the MSE between aligned student features and the teacher's stage
    features pooled to the same positions."""
    return sum(
        nn.functional.mse_loss(a, pool(t, mask, a.shape[1]).detach()) for a, t in zip(aligned, teacher, strict=True)
    )
