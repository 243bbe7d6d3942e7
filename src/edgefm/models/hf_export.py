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
A mixture of experts on one backbone (FedMS: a global and a local LoRA expert, each with its
head, and a gate; :func:`save_experts`) is written the way peft keeps several adapters on one
model: ``base/`` and one adapter folder per expert, ``heads.safetensors`` and the gate's tensors,
with ``edgefm.json`` saying how the experts' probabilities combine. A RaFFM subnetwork cut
below ``full`` keeps fewer query/key coordinates per head than value ones, which no transformers
config describes: it is written padded back with zeros (``models/elastic.padded``), the same
function in the architecture its config builds. Models no single transformers class describes
are refused with the reason.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass
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
from edgefm.models.lora import block_of, has_lora


def _parts(module: nn.Module) -> tuple[PreTrainedModel, nn.Linear | None, str]:
    """(the transformers model inside, the classifier head or None, its attribute prefix)."""
    if isinstance(module, CausalLM) and isinstance(module.lm, PreTrainedModel):
        return module.lm, None, "lm."
    if isinstance(module, TextClassifier) and isinstance(module.encoder, PreTrainedModel):
        return module.encoder, module.head, "encoder."
    raise EdgefmError(
        f"this run's model is a {type(module).__name__}, not one transformers model; expected a text "
        "classifier or a causal language model on a transformers backbone"
    )


def unload_lora(model: nn.Module, merge: bool) -> None:
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
        lora = _base_and_adapters(module, inner, prefix, tokenizer, folder, {"adapter": ("default", None)})
        written.update(base=str(folder / "base"), adapter=str(folder / "adapter"), adapter_tensors=lora["adapter"])
    else:
        unload_lora(inner, merge=True)
        _check_shapes(inner)
        inner.save_pretrained(folder)
        tokenizer.save_pretrained(str(folder))
    meta = {**(facts or {}), "kind": "causal_lm" if head is None else "classifier"}
    if head is not None:
        save_file(_tensors(head.state_dict()), str(folder / "classifier.safetensors"))
        meta["classifier"] = {"file": "classifier.safetensors", "how": POOLED_HEAD, "labels": int(head.out_features)}
    (folder / "edgefm.json").write_text(json.dumps(meta, indent=2))
    return written


POOLED_HEAD = "logits = hidden_states mean-pooled over attention_mask @ weight.T + bias"


@dataclass
class Expert:
    """One expert of a mixture on a shared backbone: peft adapter ``adapter`` (active in
    ``blocks`` only; None: every block) under the classifier head named ``head``."""

    adapter: str
    head: str
    blocks: list[int] | None = None


def save_experts(
    module: nn.Module,
    tokenizer,
    folder: Path,
    experts: dict[str, Expert],
    extra: dict[str, dict[str, torch.Tensor]],
    how: dict[str, Any],
    facts: dict | None = None,
) -> dict[str, Any]:
    """Write a mixture of LoRA experts on one frozen backbone: ``base/`` (the bare backbone and
    the tokenizer), ``NAME/`` (a peft adapter folder per expert, loaded onto the base under that
    name; an expert active in some blocks only has ``layers_to_transform`` set to them),
    ``heads.safetensors`` (``NAME.weight``, ``NAME.bias``: each expert's head, read as in
    ``POOLED_HEAD``), ``NAME.safetensors`` per ``extra`` entry (e.g. a gate), and ``edgefm.json``
    with ``how`` (what combines them). Nothing is merged: the experts share one base."""
    module = copy.deepcopy(module).cpu().float().eval()
    inner, _, prefix = _parts(module)
    folder.mkdir(parents=True, exist_ok=True)
    adapters = {name: (e.adapter, e.blocks) for name, e in experts.items()}
    counts = _base_and_adapters(module, inner, prefix, tokenizer, folder, adapters)
    heads = {f"{name}.{k}": v for name, e in experts.items() for k, v in getattr(module, e.head).state_dict().items()}
    save_file(_tensors(heads), str(folder / "heads.safetensors"))
    for name, tensors in extra.items():
        save_file(_tensors(tensors), str(folder / f"{name}.safetensors"))
    meta = {
        **(facts or {}),
        "kind": "mixture",
        "base": "base",
        "experts": {
            name: {"adapter": name, "blocks": e.blocks, "head": f"heads.safetensors:{name}"}
            for name, e in experts.items()
        },
        "head": POOLED_HEAD,
        **how,
    }
    (folder / "edgefm.json").write_text(json.dumps(meta, indent=2))
    return {"folder": str(folder), "base": str(folder / "base"), "adapter_tensors": sum(counts.values())}


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().contiguous() for k, v in state.items()}


def _base_and_adapters(
    module: nn.Module,
    inner: PreTrainedModel,
    prefix: str,
    tokenizer,
    folder: Path,
    adapters: dict[str, tuple[str, list[int] | None]],
) -> dict[str, int]:
    """``folder/base`` (``inner`` without its LoRA layers) and, per entry ``NAME: (adapter,
    blocks)``, peft adapter ``adapter`` of ``module`` as the adapter folder ``folder/NAME`` (its
    tensors in ``blocks`` only; None: all). Returns each adapter's tensor count."""
    states, configs = {}, {}
    for name, (source, blocks) in adapters.items():
        lora = get_peft_model_state_dict(module, adapter_name=source)
        lora = {k[len(prefix) :]: v for k, v in lora.items() if k.startswith(prefix)}
        cfg = copy.deepcopy(module.peft_config[source])
        cfg.base_model_name_or_path = None  # the base travels beside the adapter
        cfg.inference_mode = True
        if blocks is not None:  # active in these blocks only, as trained (e.g. Sparsely Activated LoRA)
            lora = {k: v for k, v in lora.items() if block_of(k) in blocks}
            cfg.layers_to_transform = sorted(blocks)
        states[name], configs[name] = lora, cfg
    unload_lora(inner, merge=False)
    _check_shapes(inner)
    inner.save_pretrained(folder / "base")
    tokenizer.save_pretrained(str(folder / "base"))
    peft_model = None
    for name in adapters:
        if peft_model is None:
            peft_model = get_peft_model(inner, configs[name], adapter_name=name)
        else:
            peft_model.add_adapter(name, configs[name])
        state = {f"base_model.model.{k}": v for k, v in states[name].items()}
        loaded = set_peft_model_state_dict(peft_model, state, adapter_name=name)
        stray = [k for k in loaded.unexpected_keys if "lora_" in k]
        # and every LoRA layer the adapter has got its weights (else peft's B = 0 start would
        # silently make it the identity)
        stray += [k for k in loaded.missing_keys if "lora_" in k and f".{name}." in k]
        if stray:
            raise EdgefmError(f"the adapter's weights do not fit its model: {stray[:3]}")
    # peft writes adapter NAME into folder/NAME (only one named "default" goes to folder itself)
    with warnings.catch_warnings():  # transformers' FutureWarning on an attribute peft reads while saving
        warnings.simplefilter("ignore", FutureWarning)
        peft_model.save_pretrained(str(folder))
    return {name: len(states[name]) for name in adapters}
