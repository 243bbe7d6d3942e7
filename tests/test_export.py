"""``models/hf_export.py``: a LoRA classifier written as a merged ``save_pretrained`` folder and as
base + peft adapter; each, loaded with plain transformers (and peft), gives the module's outputs."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModel

from edgefm import EdgefmError
from edgefm.config import LoraConfig
from edgefm.models import hf_export
from edgefm.models.backbones import TextClassifier, tiny_bert
from edgefm.models.lora import add_adapter, add_lora, lora_layers, route_adapters


def lora_classifier() -> tuple[TextClassifier, object]:
    backbone = tiny_bert(seed=0)
    torch.manual_seed(0)
    model = add_lora(TextClassifier(backbone.encoder, backbone.hidden_size, 3), LoraConfig(), backbone.lora_targets)
    with torch.no_grad():  # a trained adapter: B is zero at initialisation, which would hide a lost delta
        for _, layer in lora_layers(model):
            for b in layer.lora_B.values():
                b.weight.normal_(0, 0.5)
    return model.eval(), backbone.tokenizer


def batch():
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102], [101, 7592, 102, 0, 0, 0]])
    return ids, (ids != 0).long()


def classify(encoder, folder, ids, mask):
    hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    w = mask.unsqueeze(-1).float()
    head = load_file(str(folder / "classifier.safetensors"))
    return ((hidden * w).sum(1) / w.sum(1)) @ head["weight"].T + head["bias"]


def test_merged_and_adapter_folders_load_in_transformers_and_peft_and_agree(tmp_path):
    model, tokenizer = lora_classifier()
    ids, mask = batch()
    with torch.no_grad():
        want = model(ids, mask)
        without_lora = TextClassifier(tiny_bert(seed=0).encoder, 32, 3)
        without_lora.head.load_state_dict(model.head.state_dict())
        assert not torch.allclose(without_lora.eval()(ids, mask), want, atol=1e-3)  # the adapter matters

    merged = tmp_path / "merged"
    hf_export.save(model, tokenizer, merged, facts={"run": "x"})
    assert not any("lora" in k for k in load_file(str(merged / "model.safetensors")))
    meta = json.loads((merged / "edgefm.json").read_text())
    assert meta["kind"] == "classifier" and meta["run"] == "x" and meta["classifier"]["labels"] == 3
    with torch.no_grad():
        torch.testing.assert_close(classify(AutoModel.from_pretrained(merged), merged, ids, mask), want)

    apart = tmp_path / "apart"
    info = hf_export.save(model, tokenizer, apart, adapter=True)
    assert info["adapter_tensors"] == 2 * 2 * 2  # A and B of query and value in 2 layers
    config = json.loads((apart / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == LoraConfig().r and sorted(config["target_modules"]) == sorted(["query", "value"])
    peft = PeftModel.from_pretrained(AutoModel.from_pretrained(apart / "base"), apart / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(classify(peft, apart, ids, mask), want)
        base_only = classify(AutoModel.from_pretrained(apart / "base"), apart, ids, mask)
        assert not torch.allclose(base_only, want, atol=1e-3)  # the base alone lacks the adapter
    # the module itself is untouched (export works on a copy)
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask), want)


def test_experts_on_one_base_load_as_named_peft_adapters_each_in_its_own_blocks(tmp_path):
    model, tokenizer = lora_classifier()
    add_adapter(model, LoraConfig(), "local", ("query", "value"))
    model.local_head = torch.nn.Linear(32, 3)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B["local"].weight.normal_(0, 0.5)
    ids, mask = batch()
    want = {}
    with torch.no_grad():
        route_adapters(model, "default", None)
        want["global"] = model(ids, mask)
        route_adapters(model, "local", {1})  # active in the top block only, as FedMS's local expert
        want["local"] = model.local_head(model.pooled(ids, mask))
        route_adapters(model, None)
        bare = model.pooled(ids, mask)
    experts = {"global": hf_export.Expert("default", "head"), "local": hf_export.Expert("local", "local_head", [1])}
    gate = {"w": torch.ones(2, 32)}
    info = hf_export.save_experts(model, tokenizer, tmp_path, experts, {"gate": gate}, {"combine": "x"}, {"run": "r"})
    assert info["adapter_tensors"] == 2 * 2 * 2 + 2 * 2  # global in both blocks, local in one
    meta = json.loads((tmp_path / "edgefm.json").read_text())
    assert meta["kind"] == "mixture" and meta["combine"] == "x" and meta["experts"]["local"]["blocks"] == [1]
    assert torch.equal(load_file(str(tmp_path / "gate.safetensors"))["w"], gate["w"])
    assert json.loads((tmp_path / "local" / "adapter_config.json").read_text())["layers_to_transform"] == [1]
    heads = load_file(str(tmp_path / "heads.safetensors"))
    peft = PeftModel.from_pretrained(AutoModel.from_pretrained(tmp_path / "base"), tmp_path / "global", "global")
    peft.load_adapter(tmp_path / "local", adapter_name="local")
    with torch.no_grad():
        for name in ("global", "local"):
            peft.set_adapter(name)
            hidden = peft(input_ids=ids, attention_mask=mask).last_hidden_state
            w = mask.unsqueeze(-1).float()
            got = ((hidden * w).sum(1) / w.sum(1)) @ heads[f"{name}.weight"].T + heads[f"{name}.bias"]
            torch.testing.assert_close(got, want[name])
        with peft.disable_adapter():
            hidden = peft(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close((hidden * w).sum(1) / w.sum(1), bare)


def test_what_no_transformers_class_describes_is_refused(tmp_path):
    backbone = tiny_bert(seed=0)
    full = TextClassifier(backbone.encoder, backbone.hidden_size, 2)
    with pytest.raises(EdgefmError, match="--adapter: this run trained every weight"):
        hf_export.save(full, backbone.tokenizer, tmp_path / "a", adapter=True)
    with pytest.raises(EdgefmError, match="not one transformers model"):
        hf_export.save(torch.nn.Linear(2, 2), backbone.tokenizer, tmp_path / "b")
    narrow = TextClassifier(tiny_bert(seed=0).encoder, 32, 2)
    layer = narrow.encoder.encoder.layer[0].intermediate.dense  # one layer cut narrower, as RaFFM does
    narrow.encoder.encoder.layer[0].intermediate.dense = torch.nn.Linear(layer.in_features, 16)
    narrow.encoder.encoder.layer[0].output.dense = torch.nn.Linear(16, 32)
    with pytest.raises(EdgefmError, match="expected --budget full"):
        hf_export.save(narrow, backbone.tokenizer, tmp_path / "c")
