"""Every registered method, end to end through the CLI as a user types it, on each task it trains:
a classifier 2 rounds on the tiny config, then ``robust --run`` and ``export`` on the run folder;
a language model, then ``export`` and ``generate``. ``export --out DIR`` writes each run's model
as a folder plain transformers loads, and the loaded model gives the run's outputs (methods whose
model is no single transformers model are refused with the reason). The final figures are pinned
(torchtune-style golden numbers), so a silent change in any method's numerics fails here, and a
method registered later is covered the day it is registered: it fails until its figures are
pinned below."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefm import registry
from edgefm.cli import app

ROOT = Path(__file__).resolve().parents[1]
EXTRA = {
    "fedms": ["algorithm.stage1_rounds=1"],  # reach stage 2 (private experts) within 2 rounds
    "fedprox": ["algorithm.mu=0.1"],  # a proximal term large enough to tell FedProx from FedAvg
    # a step budget that low-end phones miss (forced onto the smallest subnetwork) and flagships
    # meet only in part, so subnetwork sizing, slicing and aggregation all run
    "raffm": ["algorithm.step_budget_s=0.001", "algorithm.unfit=force"],
}

# configs/tiny.yaml (tiny BERT, 4 clients, SST-2 slice, seed 0), 2 rounds, on this 2-core CPU.
# accuracy / client_acc_mean: the last round's; train_loss: the mean over round-2 clients;
# bytes and FLOPs: totals over both rounds; robust_*: accuracy on the first 40 examples of the
# suite (averaged over the clients' own models where the run ends with per-client models).
GOLDEN = {
    "centralized": dict(
        accuracy=0.435,
        client_acc_mean=0.5375,
        train_loss=0.6862735271453857,
        bytes_up=17882,
        bytes_down=0,
        flops=2014203904.0,
        robust_sst2=0.475,
        robust_advglue=0.55,
    ),
    "fedavg": dict(
        accuracy=0.48,
        client_acc_mean=0.4566544566544567,
        train_loss=0.6569659761077311,
        bytes_up=67648,
        bytes_down=67648,
        flops=1981361536.0,
        robust_sst2=0.45,
        robust_advglue=0.475,
    ),
    # split training computes FedAvg's gradients (the same numbers); what differs is the traffic
    "splitfed": dict(
        accuracy=0.48,
        client_acc_mean=0.4566544566544567,
        train_loss=0.6569659761077311,
        bytes_up=2623435,
        bytes_down=2598272,
        flops=918723776.0,
        robust_sst2=0.45,
        robust_advglue=0.475,
    ),
    "fedms": dict(
        accuracy=0.49,
        client_acc_mean=0.5963064713064713,
        train_loss=1.0275719514336152,
        bytes_up=46880,
        bytes_down=80704,
        flops=2695188992.0,
        robust_sst2=0.51875,
        robust_advglue=0.4375,
    ),
    "fedprox": dict(
        accuracy=0.48,
        client_acc_mean=0.4566544566544567,
        train_loss=0.6554466355755153,
        bytes_up=67648,
        bytes_down=67648,
        flops=1981361536.0,
        robust_sst2=0.45,
        robust_advglue=0.475,
    ),
    "local": dict(
        accuracy=0.51,
        client_acc_mean=0.7219169719169719,
        train_loss=0.5825528256159513,
        bytes_up=0,
        bytes_down=0,
        flops=1981361536.0,
        robust_sst2=0.525,
        robust_advglue=0.5125,
    ),
    "raffm": dict(
        accuracy=0.48,
        client_acc_mean=0.4566544566544567,
        train_loss=0.6575712345936433,
        bytes_up=61504,
        bytes_down=320704,
        flops=1600865696.0,
        robust_sst2=0.45,
        robust_advglue=0.475,
    ),
}


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def pooled(hidden, mask):
    w = mask.unsqueeze(-1).float()
    return (hidden * w).sum(1) / w.sum(1)


def mixture_from_folder(folder: Path, ids, mask):
    """A FedMS client's log mixture probabilities, rebuilt from its exported folder with plain
    transformers and peft, following ``edgefm.json``: each expert an adapter on one base."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModel

    meta = json.loads((folder / "edgefm.json").read_text())
    names = list(meta["experts"])
    model = PeftModel.from_pretrained(
        AutoModel.from_pretrained(folder / meta["base"]), folder / names[0], adapter_name=names[0]
    )
    for name in names[1:]:
        model.load_adapter(folder / name, adapter_name=name)
    heads, probs = load_file(str(folder / "heads.safetensors")), {}
    for name in names:
        model.set_adapter(name)
        feature = pooled(model(input_ids=ids, attention_mask=mask).last_hidden_state, mask)
        probs[name] = torch.softmax(feature @ heads[f"{name}.weight"].T + heads[f"{name}.bias"], -1)
    with model.disable_adapter():
        feature = pooled(model(input_ids=ids, attention_mask=mask).last_hidden_state, mask)
    g = load_file(str(folder / "gate.safetensors"))
    inner = torch.nn.functional.gelu(feature @ g["adapter.0.weight"].T + g["adapter.0.bias"])
    w = torch.softmax(
        (feature + inner @ g["adapter.2.weight"].T + g["adapter.2.bias"]) @ g["out.weight"].T + g["out.bias"], -1
    )
    return torch.log(w[:, :1] * probs["global"] + w[:, 1:] * probs["local"])


def export_loads_in_transformers(runner: CliRunner, run: Path, out: Path, name: str) -> None:
    """``export --out DIR``; the first model's folder, loaded with plain transformers (the
    classifier's head from ``classifier.safetensors``), gives the run's model's outputs."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoModelForCausalLM

    from edgefm.fl import trained

    result = runner.invoke(app, ["export", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = json.loads((out / "models.json").read_text())["models"]
    folder = Path(table[0]["folder"])
    tr = trained.open_run(run)
    sc = tr.scenario
    label, private, client = tr.models()[0]
    assert folder.name == f"{label}-full"
    module, _ = sc.strategy.export(sc.workbench, tr.ckpt.state, private, "full", False, client)
    ids = [torch.as_tensor(x[:12]) for x in sc.test.ids[:4]]
    mask = torch.nn.utils.rnn.pad_sequence([torch.ones(len(x), dtype=torch.long) for x in ids], batch_first=True)
    ids = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=sc.test.pad_id)
    with torch.no_grad():
        want = module.eval().float()(ids, mask)
        meta = json.loads((folder / "edgefm.json").read_text())
        if meta["kind"] == "mixture":  # FedMS: two LoRA experts on one base and a learned gate
            assert set(meta["experts"]) == {"global", "local"} and (folder / "gate.safetensors").is_file()
            local = json.loads((folder / "local" / "adapter_config.json").read_text())
            assert local["layers_to_transform"] == meta["experts"]["local"]["blocks"]
            got = mixture_from_folder(folder, ids, mask)
        elif meta["kind"] == "causal_lm":
            got = AutoModelForCausalLM.from_pretrained(folder)(input_ids=ids, attention_mask=mask).logits
        else:
            hidden = AutoModel.from_pretrained(folder)(input_ids=ids, attention_mask=mask).last_hidden_state
            w = mask.unsqueeze(-1).float()
            head = load_file(str(folder / "classifier.safetensors"))
            got = ((hidden * w).sum(1) / w.sum(1)) @ head["weight"].T + head["bias"]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


CLASSIFY_METHODS = [n for n in registry.names("algorithm") if "classify" in registry.get("algorithm", n).tasks]


def test_every_registered_method_is_covered_by_a_task():
    lm = [n for n in registry.names("algorithm") if "lm" in registry.get("algorithm", n).tasks]
    assert set(CLASSIFY_METHODS) | set(lm) == set(registry.names("algorithm"))


@pytest.mark.parametrize("name", CLASSIFY_METHODS)
def test_train_then_robust_and_export(tmp_path, name):
    assert name in GOLDEN, f"algorithm {name!r} is registered: pin its tiny-config figures in GOLDEN"
    runner, run = CliRunner(), tmp_path / "run"
    sets = ["--set", f"algorithm.name={name}", *EXTRA.get(name, [])]
    result = runner.invoke(app, ["train", str(ROOT / "configs/tiny.yaml"), "--out", str(run), *sets])
    assert result.exit_code == 0, result.output

    rounds, clients = lines(run / "metrics.jsonl"), lines(run / "clients.jsonl")
    last = rounds[-1]
    losses = [c["client_train_loss"] for c in clients if c["round"] == 2 and c["status"] == "ok"]
    got = {
        "accuracy": last["accuracy"],
        "client_acc_mean": last["client_acc_mean"],
        "train_loss": sum(losses) / len(losses),
        "bytes_up": sum(r["bytes_up"] for r in rounds),
        "bytes_down": sum(r["bytes_down"] for r in rounds),
        "flops": sum(r["flops"] for r in rounds),
    }
    want = GOLDEN[name]
    assert got["accuracy"] == pytest.approx(want["accuracy"], abs=1e-9)
    assert got["client_acc_mean"] == pytest.approx(want["client_acc_mean"], abs=1e-9)
    assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-4)
    assert (got["bytes_up"], got["bytes_down"]) == (want["bytes_up"], want["bytes_down"])
    assert got["flops"] == pytest.approx(want["flops"], rel=1e-9)

    # export: the models the run ended with, through the Strategy
    result = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "export.json")])
    assert result.exit_code == 0, result.output
    exported = json.loads((tmp_path / "export.json").read_text())
    models = exported["models"]
    assert exported["algorithm"] == name and exported["round"] == 2
    assert all(m["budget"] == "full" and m["params"] > 0 and m["flops_per_example"] > 0 for m in models)
    if [m["model"] for m in models] == ["global"]:  # one global model: the engine's last evaluation of it
        assert models[0]["accuracy"] == pytest.approx(last["accuracy"], abs=1e-12)
    else:  # per-client models, one per client
        assert [m["model"] for m in models] == [f"client{k}" for k in range(4)]

    export_loads_in_transformers(runner, run, tmp_path / "hf", name)

    # robust --run judges those same models
    result = runner.invoke(app, ["robust", "--run", str(run), "--suite", "sst2,advglue-sst2", "--limit", "40"])
    assert result.exit_code == 0, result.output
    judged = json.loads((run / "robustness.json").read_text())["results"]
    assert [r["suite"] for r in judged] == ["sst2", "advglue-sst2"]
    for r, key in zip(judged, ("robust_sst2", "robust_advglue"), strict=True):
        assert r["n"] == 40 and r["accuracy"] == pytest.approx(want[key], abs=1e-9) and math.isfinite(r["macro_f1"])
        assert r.get("models_averaged", 1) == len(models)


# The tiny language-modelling setting of tests/test_lm.py (Llama s, BBC News, 3 clients), through
# the CLI; final test log-perplexity and token accuracy, and bytes, pinned the same way.
LM = [
    "task=lm",
    "model.name=llama",
    "model.sizes=[s]",
    "model.finetune=full",
    "data.name=bbcnews",
    "data.max_train=60",
    "data.max_test=6",
    "data.tokenizer=bpe:600",
    "data.block_length=24",
    "clients=3",
    "rounds=2",
    "train.batch_size=8",
    "train.max_steps=4",
    "train.lr=0.003",
]
# one-shot methods need their own shape of run: one round, public text on the server
EXTRA_LM = {
    "deepfusion": [
        "rounds=1",
        "data.public_fraction=0.25",
        "algorithm.experts=2",
        "algorithm.local_steps=4",
        "algorithm.distill_steps=3",
        "algorithm.merge_steps=2",
    ],
    # one global MoE of two experts; each device trains both
    "fedjets": ["model.name=qwen3_moe", "model.experts=2"],
}
LM_METHODS = [n for n in registry.names("algorithm") if "lm" in registry.get("algorithm", n).tasks]
GOLDEN_LM = {
    "fedjets": dict(
        log_ppl=5.649253385592664, token_acc=0.02605329760309662, bytes_up=24950832, clients=3, arch="qwen3_moe-s-e2"
    ),
    "splitfed": dict(log_ppl=5.657883287274768, token_acc=0.02605329760309662, bytes_up=10523136, clients=3),
    "deepfusion": dict(log_ppl=6.099171285102529, token_acc=0.02203364597290457, bytes_up=8146944, clients=3),
    "centralized": dict(log_ppl=5.715481024653106, token_acc=0.022778025904421618, bytes_up=96774, clients=1),
    "fedavg": dict(log_ppl=5.657886297517861, token_acc=0.02605329760309662, bytes_up=16284672, clients=3),
    "fedprox": dict(log_ppl=5.65861960040932, token_acc=0.02605329760309662, bytes_up=16284672, clients=3),
    "local": dict(log_ppl=5.740739527331246, token_acc=0.022529899260582603, bytes_up=0, clients=3),
}


@pytest.mark.parametrize("name", LM_METHODS)
def test_language_model_train_then_export_and_generate(tmp_path, name):
    assert name in GOLDEN_LM, f"algorithm {name!r} trains language models: pin its figures in GOLDEN_LM"
    runner, run = CliRunner(), tmp_path / "run"
    sets = [a for o in [*LM, f"algorithm.name={name}", *EXTRA_LM.get(name, [])] for a in ("--set", o)]
    result = runner.invoke(app, ["train", "--out", str(run), *sets])
    assert result.exit_code == 0, result.output
    rounds = lines(run / "metrics.jsonl")
    last, want = rounds[-1], GOLDEN_LM[name]
    assert last["log_ppl"] == pytest.approx(want["log_ppl"], rel=1e-5)
    assert last["token_acc"] == pytest.approx(want["token_acc"], abs=1e-9)
    # one model: ppl = exp(log-ppl); a mean over clients' models: at least that (Jensen)
    assert last["ppl"] >= math.exp(last["log_ppl"]) * (1 - 1e-12)
    assert sum(r["bytes_up"] for r in rounds) == want["bytes_up"]
    summary = json.loads((run / "summary.json").read_text())
    arch = want.get("arch", "llama-s")  # the architecture the devices train
    assert summary["final_log_ppl"] == last["log_ppl"] and summary["architectures"] == {arch: want["clients"]}
    assert (run / "tokenizer" / "tokenizer.json").is_file()
    result = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "e.json")])
    assert result.exit_code == 0, result.output
    assert all(m["params"] > 0 for m in json.loads((tmp_path / "e.json").read_text())["models"])
    export_loads_in_transformers(runner, run, tmp_path / "hf", name)
    texts = [
        runner.invoke(app, ["generate", str(run), "--prompt", "the markets", "--max-new-tokens", "8", "--seed", s])
        for s in ("1", "1", "2")
    ]
    assert all(t.exit_code == 0 for t in texts), texts[0].output
    assert texts[0].output == texts[1].output != texts[2].output  # seeded sampling
    refused = runner.invoke(app, ["robust", "--run", str(run)])
    assert refused.exit_code == 2 and "judges classifiers" in refused.output
