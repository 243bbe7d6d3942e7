"""A trained model as a folder that plain transformers (and peft) load: ``edgefm export --out DIR``.

The runtime wraps Hugging Face models (a text, image or audio classifier: an encoder, masked
mean pooling and a linear head; a causal LM) and trains LoRA injected in place by peft
(``models/lora.py``). Exporting undoes the wrapping:

- by default the LoRA deltas are merged into the weights they adapt (``W + (alpha/r) B A``,
  peft's ``merge``) and the LoRA layers replaced by their base layers, so the folder is an
  ordinary ``save_pretrained`` folder: ``AutoModelForCausalLM.from_pretrained`` for a language
  model, ``AutoModel.from_pretrained`` for a classifier's encoder;
- ``adapter=True`` keeps them apart, as peft does: ``base/`` (the frozen model) and ``adapter/``
  (``adapter_config.json`` + ``adapter_model.safetensors``), loaded with
  ``PeftModel.from_pretrained(AutoModel.from_pretrained(DIR/base), DIR/adapter)``; the tiny
  models built here have no hub name, so the base travels with the adapter.

A classifier's head is not a transformers module (the encoder is pooled by masked mean, the way
all-MiniLM-L6-v2 embeds sentences): it is written as ``classifier.safetensors`` (``weight``,
``bias``), and ``edgefm.json`` says how to apply it. The tokenizer is saved beside the model.
Models no single transformers class describes (a FedMS mixture with its gate, a RaFFM
subnetwork whose layers have different widths, split halves) are refused with the reason.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import save_file
from torch import nn
from transformers import PreTrainedModel

from edgefm import EdgefmError
from edgefm.models.backbones import TextClassifier
from edgefm.models.causal import CausalLM
from edgefm.models.lora import has_lora


def _parts(module: nn.Module) -> tuple[PreTrainedModel, nn.Linear | None, str]:
    """(the transformers model inside, the classifier head or None, its attribute prefix)."""
    if isinstance(module, CausalLM) and isinstance(module.lm, PreTrainedModel):
        return module.lm, None, "lm."
    if isinstance(module, TextClassifier) and isinstance(module.encoder, PreTrainedModel):
        return module.encoder, module.head, "encoder."
    raise EdgefmError(
        f"this run's model is a {type(module).__name__}, not one transformers model (e.g. a mixture of "
        "experts with its gate); expected a method whose clients train one model (fedavg, fedprox, local, "
        "centralized, raffm at --budget full, deepfusion)"
    )


def _unload_lora(model: nn.Module, merge: bool) -> None:
    """Replace every LoRA layer by its base layer, with the LoRA delta merged in (``merge``) or
    dropped."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, layer in layers:
        if merge:
            layer.merge()
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, layer.get_base_layer())


def _check_shapes(model: PreTrainedModel) -> None:
    """Refuse a model its own config does not describe (a subnetwork with per-layer widths)."""
    with torch.device("meta"):
        fresh = type(model)(model.config)
    want = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    for k, v in model.state_dict().items():
        if k in want and tuple(v.shape) != want[k]:
            raise EdgefmError(
                f"{k} is {tuple(v.shape)} but the model's config says {want[k]}: a subnetwork cut to a device "
                "budget, with widths no transformers config describes; expected --budget full"
            )


def save(
    module: nn.Module, tokenizer, folder: Path, adapter: bool = False, facts: dict | None = None
) -> dict[str, Any]:
    """Write ``module`` (as the run ended with it) into ``folder``; returns what was written."""
    module = copy.deepcopy(module).cpu().float().eval()
    inner, head, prefix = _parts(module)
    if adapter and not has_lora(module):
        raise EdgefmError("--adapter: this run trained every weight (model.finetune=full); it has no adapter")
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Any] = {"folder": str(folder)}
    if adapter:
        lora = {k[len(prefix) :]: v for k, v in get_peft_model_state_dict(module).items() if k.startswith(prefix)}
        peft_cfg = copy.deepcopy(module.peft_config["default"])
        peft_cfg.base_model_name_or_path = None  # the base travels beside the adapter
        peft_cfg.inference_mode = True
        _unload_lora(inner, merge=False)
        _check_shapes(inner)
        inner.save_pretrained(folder / "base")
        tokenizer.save_pretrained(str(folder / "base"))
        peft_model = get_peft_model(inner, peft_cfg)
        loaded = set_peft_model_state_dict(peft_model, {f"base_model.model.{k}": v for k, v in lora.items()})
        stray = [k for k in loaded.unexpected_keys if "lora_" in k]
        if stray:
            raise EdgefmError(f"the adapter's weights do not fit its model: {stray[:3]}")
        peft_model.save_pretrained(str(folder / "adapter"))
        written.update(base=str(folder / "base"), adapter=str(folder / "adapter"), adapter_tensors=len(lora))
    else:
        _unload_lora(inner, merge=True)
        _check_shapes(inner)
        inner.save_pretrained(folder)
        tokenizer.save_pretrained(str(folder))
    meta = {**(facts or {}), "kind": "causal_lm" if head is None else "classifier"}
    if head is not None:
        save_file(
            {"weight": head.weight.detach().contiguous(), "bias": head.bias.detach().contiguous()},
            str(folder / "classifier.safetensors"),
        )
        meta["classifier"] = {
            "file": "classifier.safetensors",
            "how": "logits = hidden_states mean-pooled over attention_mask @ weight.T + bias",
            "labels": int(head.out_features),
        }
    (folder / "edgefm.json").write_text(json.dumps(meta, indent=2))
    return written
