"""LoRA through peft, and the state a client sends: adapters (via peft's state-dict
functions) plus the classifier head — never the frozen backbone.

Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models" (ICLR 2022). We use peft's
low-level ``inject_adapter_in_model`` so the classifier keeps its own forward, and
``get_peft_model_state_dict``/``set_peft_model_state_dict`` to read and write adapters, as
peft's federated examples do.
"""

from __future__ import annotations

import re

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from edgefm import EdgefmError
from edgefm.config import LoraConfig

Tensors = dict[str, torch.Tensor]
HEAD_PREFIX = "head."


def add_lora(
    model: nn.Module, cfg: LoraConfig, default_targets: tuple[str, ...], default_parameters: tuple[str, ...] = ()
) -> nn.Module:
    """Inject LoRA into ``model``'s target modules (``cfg.target_modules``, or the model's
    ``default_targets``) and, through peft's ``target_parameters``, into fused parameters such
    as a MoE's experts; freeze everything but LoRA and a classifier head."""
    targets = cfg.target_modules or default_targets
    parameters = default_parameters if cfg.target_parameters is None else cfg.target_parameters
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise EdgefmError(
            f"model.lora.target_modules: {missing} not found in the model; "
            f"expected module names such as {sorted(n for n in names if n)[:8]}"
        )
    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(targets),
        target_parameters=list(parameters) or None,
    )
    model = inject_adapter_in_model(peft_cfg, model)
    for name, param in model.named_parameters():
        param.requires_grad = "lora_" in name or name.startswith(HEAD_PREFIX)
    return model


def has_lora(model: nn.Module) -> bool:
    return hasattr(model, "peft_config")


def get_trainable_state(model: nn.Module) -> Tensors:
    """What a client sends: LoRA adapters + head (LoRA mode), or every weight (full mode).

    Tensors are detached copies, so later training never changes a sent payload.
    """
    if has_lora(model):
        state = dict(get_peft_model_state_dict(model))
        state.update({k: v for k, v in model.state_dict().items() if k.startswith(HEAD_PREFIX)})
    else:
        state = {k: v for k, v in model.state_dict().items() if k not in tied(model)}
    return {k: v.detach().clone() for k, v in state.items()}


def tied(model: nn.Module) -> set[str]:
    """State keys that share their tensor with an earlier key (a tied output layer): sent once."""
    seen, out = set(), set()
    for key, value in model.state_dict(keep_vars=True).items():
        ptr = value.data_ptr()
        if ptr in seen and value.numel():
            out.add(key)
        seen.add(ptr)
    return out


def set_trainable_state(model: nn.Module, state: Tensors) -> None:
    """Load a payload produced by :func:`get_trainable_state` (exact keys required)."""
    if has_lora(model):
        head = {k[len(HEAD_PREFIX) :]: v for k, v in state.items() if k.startswith(HEAD_PREFIX)}
        adapters = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)}
        result = set_peft_model_state_dict(model, adapters)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise KeyError(f"unexpected adapter keys: {unexpected[:3]}")
        if head or hasattr(model, "head"):  # a classifier's head travels with its adapters
            model.head.load_state_dict(head)
    else:
        result = model.load_state_dict(state, strict=False)
        missing = set(result.missing_keys) - tied(model)
        if missing or result.unexpected_keys:
            raise KeyError(f"state keys: missing {sorted(missing)[:3]}, unexpected {result.unexpected_keys[:3]}")


# ----------------------------------------------------------------------------- several adapters, block masks

_BLOCK = re.compile(r"\.layer\.(\d+)\.")


def block_of(name: str) -> int | None:
    """The index of the transformer block a parameter or module name sits in (None: outside)."""
    m = _BLOCK.search(name)
    return int(m.group(1)) if m else None


def lora_layers(model: nn.Module) -> list[tuple[int, BaseTunerLayer]]:
    """Every LoRA-carrying layer with the index of the transformer block it sits in."""
    out = []
    for name, module in model.named_modules():
        if isinstance(module, BaseTunerLayer):
            k = block_of(name)
            out.append((-1 if k is None else k, module))
    return out


def num_blocks(model: nn.Module) -> int:
    return 1 + max(k for k, _ in lora_layers(model))


def add_adapter(model: nn.Module, cfg: LoraConfig, name: str, default_targets: tuple[str, ...]) -> nn.Module:
    """A second LoRA set (e.g. a local expert) on the same modules, initially a copy of nothing:
    peft's own init (B = 0), so it starts as the identity."""
    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules or default_targets),
    )
    return inject_adapter_in_model(peft_cfg, model, adapter_name=name)


def route_adapters(model: nn.Module, adapter: str | None, blocks: set[int] | None = None, train: bool = False) -> None:
    """Use LoRA set ``adapter`` in ``blocks`` (None: every block) and no LoRA elsewhere;
    ``adapter=None`` runs the bare frozen backbone. With ``train``, exactly that adapter's weights
    in those blocks require grad — the blocks below the lowest active one then get no backward
    pass at all (Sparsely Activated LoRA)."""
    for k, layer in lora_layers(model):
        on = adapter is not None and (blocks is None or k in blocks)
        if on:
            layer.set_adapter(adapter)
            layer.enable_adapters(True)
        else:
            layer.enable_adapters(False)
        for pname, p in layer.named_parameters():
            if "lora_" in pname:
                p.requires_grad = bool(on and train and f".{adapter}." in f".{pname}.")


def get_adapter_state(model: nn.Module, name: str, blocks: set[int] | None = None) -> Tensors:
    """LoRA set ``name`` (keys without the adapter name, as peft writes them), optionally only
    the tensors of ``blocks``."""
    state = get_peft_model_state_dict(model, adapter_name=name)
    if blocks is not None:
        state = {k: v for k, v in state.items() if block_of(k) in blocks}
    return {k: v.detach().clone() for k, v in state.items()}


def set_adapter_state(model: nn.Module, name: str, state: Tensors) -> None:
    """Load (part of) LoRA set ``name``; tensors not given keep their values."""
    result = set_peft_model_state_dict(model, state, adapter_name=name)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise KeyError(f"unexpected adapter keys: {unexpected[:3]}")
