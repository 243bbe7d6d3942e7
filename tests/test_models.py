import os

import pytest
import torch

from edgefm import EdgefmError, config
from edgefm.config import LoraConfig
from edgefm.models.backbones import TextClassifier, tiny_bert
from edgefm.models.flops import FlopModel, count_flops
from edgefm.models.lora import add_lora, get_trainable_state, set_trainable_state


def tiny_classifier(lora=True):
    bb = tiny_bert(seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TextClassifier(bb.encoder, bb.hidden_size, 3)
        if lora:
            model = add_lora(model, LoraConfig(r=4, alpha=8), ("query", "value"))
    return model


def test_lora_state_is_adapters_and_head_only():
    model = tiny_classifier()
    state = get_trainable_state(model)
    assert state and all("lora_" in k or k.startswith("head.") for k in state)
    assert {k for k in state if k.startswith("head.")} == {"head.weight", "head.bias"}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert sum(state[k].numel() for k in state) == sum(p.numel() for n, p in model.named_parameters() if n in trainable)
    # 2 layers x (query, value) x (A: r x h + B: h x r) with h=32, r=4; head 32x3 + 3
    assert sum(v.numel() for v in state.values()) == 2 * 2 * (4 * 32 * 2) + 32 * 3 + 3


def test_state_round_trip_changes_the_model():
    model = tiny_classifier()
    state = get_trainable_state(model)
    new = {k: torch.randn_like(v) for k, v in state.items()}
    ids = torch.randint(1000, 2000, (2, 6))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        before = model(ids, mask)
    set_trainable_state(model, new)
    back = get_trainable_state(model)
    assert all(torch.equal(back[k], new[k]) for k in new)
    params = dict(model.named_parameters())
    lora = next(k for k in new if "lora_B" in k)
    assert torch.equal(params[lora.replace(".weight", ".default.weight")], new[lora])  # in the model itself
    assert torch.equal(params["head.weight"], new["head.weight"])
    with torch.no_grad():
        assert not torch.allclose(model(ids, mask), before)


def test_bad_target_modules_are_named():
    bb = tiny_bert(seed=0)
    with pytest.raises(EdgefmError, match="not found in the model"):
        add_lora(
            TextClassifier(bb.encoder, bb.hidden_size, 2), LoraConfig(target_modules=("q_proj",)), ("query", "value")
        )


def test_flop_model_is_exact_at_unseen_lengths():
    model = tiny_classifier()
    fm = FlopModel(model, train=True)
    for length in (5, 24, 48):
        assert fm.per_example(length) == pytest.approx(count_flops(model, length, train=True), rel=1e-9)
    assert fm.batch(4, 24) == pytest.approx(count_flops(model, 24, batch=4, train=True), rel=1e-9)
    # LoRA training skips frozen weight gradients: cheaper than full fine-tuning
    assert fm.per_example(24) < FlopModel(tiny_classifier(lora=False), train=True).per_example(24)


def test_workbench_fit_is_deterministic_by_seed(tiny_scenario_factory):
    sc = tiny_scenario_factory()
    wb, data = sc.workbench, sc.clients[0].train
    init = wb.get_state()
    cfg = config.TrainConfig(lr=0.01, head_lr=0.01)

    def run(seed):
        wb.set_state(init)
        wb.model.encoder.config  # noqa: B018 - shared backbone, unchanged
        fit = wb.fit(data, cfg, torch.Generator().manual_seed(seed), seed)
        return fit, wb.get_state()

    (f1, s1), (f2, s2), (_, s3) = run(1), run(1), run(2)
    assert f1.flops == f2.flops > 0 and f1.examples == len(data)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert any(not torch.equal(s1[k], s3[k]) for k in s1)
    assert any(not torch.equal(s1[k], init[k]) for k in s1)


def test_frozen_backbone_is_not_changed_by_training(tiny_scenario_factory):
    sc = tiny_scenario_factory()
    wb = sc.workbench
    frozen = {n: p.detach().clone() for n, p in wb.model.named_parameters() if not p.requires_grad}
    wb.fit(sc.clients[0].train, config.TrainConfig(), torch.Generator().manual_seed(0), 0)
    assert all(torch.equal(p, frozen[n]) for n, p in wb.model.named_parameters() if n in frozen)


def test_workbench_full_finetune_sends_everything(tiny_scenario_factory):
    wb = tiny_scenario_factory("model.finetune=full").workbench
    counts = wb.parameter_counts()
    assert counts["trainable"] == counts["total"]
    assert sum(v.numel() for v in wb.get_state().values()) == counts["total"]


def test_bf16_precision_trains_under_autocast_with_float32_weights(tiny_scenario_factory):
    """train.precision=bf16 runs the forward pass in bfloat16: the update differs from fp32's
    (so autocast was on), yet the weights the client keeps and sends stay float32 and finite."""
    sc = tiny_scenario_factory()
    wb, data = sc.workbench, sc.clients[0].train
    init = wb.get_state()
    out = {}
    for precision in ("fp32", "bf16"):
        wb.set_state(init)
        fit = wb.fit(
            data, config.TrainConfig(lr=0.01, head_lr=0.01, precision=precision), torch.Generator().manual_seed(0), 0
        )
        out[precision] = (fit, wb.get_state())
    (f32, s32), (f16, s16) = out["fp32"], out["bf16"]
    assert f32.flops == f16.flops and f32.steps == f16.steps  # the same work, counted the same
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in s16.values())
    assert any(not torch.equal(s32[k], s16[k]) for k in s32)
    drift = max(float((s32[k] - s16[k]).abs().max()) for k in s32)
    assert drift < 0.05  # bf16 rounding, not a different training run


def test_precision_is_checked():
    with pytest.raises(config.ConfigError, match="train.precision"):
        config.load(None, ["train.precision=fp16"])


def test_auto_precision_is_bf16_only_where_the_hardware_has_it(monkeypatch):
    from edgefm.models import workbench as W

    cpu = torch.device("cpu")
    for avx512_bf16, amx, want in ((True, False, "bf16"), (False, True, "bf16"), (False, False, "fp32")):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        assert W.resolve_precision(cpu, "auto") == want
        ctx = W.autocast(cpu, "auto")
        with ctx:
            assert torch.is_autocast_enabled("cpu") == (want == "bf16")
    assert W.resolve_precision(cpu, "fp32") == "fp32" and W.resolve_precision(cpu, "bf16") == "bf16"
    assert config.load(None, ["train.precision=auto"]).train.precision == "auto"


def test_backbone_dropout_sets_every_dropout_in_the_backbone(tiny_overrides):
    from edgefm.fl.scenario import build

    def ps(extra):
        enc = build(config.load(None, [*tiny_overrides, *extra])).workbench.model.encoder
        return {m.p for m in enc.modules() if isinstance(m, torch.nn.Dropout)}, enc.config.hidden_dropout_prob

    assert ps([]) == ({0.1}, 0.1)  # the pretrained config's own
    assert ps(["model.backbone_dropout=0.0"]) == ({0.0}, 0.0)
    with pytest.raises(config.ConfigError, match="model.backbone_dropout"):
        config.load(None, ["model.backbone_dropout=1.0"])


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc")
def test_minilm_weights_are_a_shared_memory_map_of_the_safetensors_file():
    """Flower's actors each build the model; they share the frozen weights' pages only because
    transformers maps model.safetensors and the weights stay views of that mapping (never
    copied, never written). A loader that copies them would give every actor its own 90 MB."""
    from edgefm.models.backbones import minilm, minilm_path

    backbone = minilm()
    file = os.path.realpath(minilm_path() / "model.safetensors")
    maps = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5] == file:
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                maps.append((lo, hi))
    params = list(backbone.encoder.parameters())
    mapped = [p for p in params if any(lo <= p.data_ptr() < hi for lo, hi in maps)]
    assert maps and len(mapped) == len(params)
