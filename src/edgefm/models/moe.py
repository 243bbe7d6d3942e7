"""A mixture-of-experts assembled from dense models (DeepFusion's Phase III).

DeepFusion (arXiv 2602.14301): given K dense models M_1..M_K of one architecture (a Qwen3
decoder whose MLP has the width of one expert), build a Qwen3-MoE with K experts in which, in
layer l, expert i is the MLP of layer l of M_i, and every other weight (embeddings, attention,
norms, the output layer) is the element-wise mean of the M_i. The router is new (seeded) and
learns in the fine-tuning that follows; routing weights are renormalised over the top-k, so when
every M_i is the same model the MoE computes exactly that model whatever the router does.
"""

from __future__ import annotations

import dataclasses

import torch

from edgefm.models import causal
from edgefm.models.families import ArchSpec

EXPERTS = "mlp.experts."


def moe_spec(base: ArchSpec, experts: int, active: int = 2) -> ArchSpec:
    """The MoE whose experts are ``base``'s MLPs (``base`` a dense qwen3 architecture)."""
    if base.family != "qwen3":
        raise ValueError(f"a MoE is assembled from qwen3 models; got {base.family}")
    if not 1 <= active <= experts:
        raise ValueError(f"top-{active} routing needs at least {active} experts; got {experts}")
    return dataclasses.replace(base, family="qwen3_moe", experts=experts, active_experts=active)


def assemble(dense: list[causal.CausalLM], spec: ArchSpec, pad_id: int, eos_id: int, seed: int) -> causal.CausalLM:
    """The MoE of ``spec`` (``len(dense)`` experts) built from the dense models' weights."""
    if spec.experts != len(dense):
        raise ValueError(f"{spec.experts} experts need as many dense models; got {len(dense)}")
    moe = causal.build(spec, pad_id, eos_id, seed)
    states = [m.state_dict() for m in dense]
    target = moe.state_dict()
    merged = {}
    with torch.no_grad():
        for name, value in target.items():
            if EXPERTS in name:
                layer = name[: name.index(EXPERTS)]
                if name.endswith("gate_up_proj"):  # (experts, 2 x width, hidden): gate rows, then up rows
                    merged[name] = torch.stack(
                        [
                            torch.cat([s[layer + "mlp.gate_proj.weight"], s[layer + "mlp.up_proj.weight"]])
                            for s in states
                        ]
                    )
                else:  # down_proj: (experts, hidden, width)
                    merged[name] = torch.stack([s[layer + "mlp.down_proj.weight"] for s in states])
            elif name in states[0]:
                merged[name] = torch.stack([s[name].double() for s in states]).mean(0).to(value.dtype)
            else:
                merged[name] = value  # the router: new
        moe.load_state_dict(merged)
    return moe


def router_parameters(model: causal.CausalLM) -> list[str]:
    return [n for n, _ in model.named_parameters() if n.endswith("mlp.gate.weight")]


def expert_parameters(model: causal.CausalLM) -> list[str]:
    return [n for n, _ in model.named_parameters() if EXPERTS in n]
