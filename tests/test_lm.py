"""Language models at the edge: corpora and packing, tiny causal-LM families and their exact
sizes, device fit, metrics (known answers), exact FLOPs, heterogeneous architectures in one run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from edgefm import EdgefmError, config
from edgefm.data.corpus import build_tokenizer, load_corpus, pack
from edgefm.data.encode import Encoded
from edgefm.edge.devices import TIERS
from edgefm.fl.scenario import build
from edgefm.fl.simulation import Engine
from edgefm.models import causal
from edgefm.models import families as F
from edgefm.models.flops import count_flops
from edgefm.tasks.lm import LanguageModelling, summarize

TINY = [
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


# ----------------------------------------------------------------------------- families


@pytest.mark.parametrize("family", F.FAMILIES)
def test_parameter_counts_are_exact(family):
    for size in F.SIZES:
        a = F.spec(family, size, 500, 64)
        model = causal.build(a, 0, 1, seed=0)
        total, emb = F.param_counts(a)
        assert sum(p.numel() for p in model.parameters()) == total
        assert 0 < emb < total


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen3_moe"])
def test_lora_parameter_counts_are_exact(family):
    a = F.spec(family, "s", 500, 64)
    lm = LanguageModelling()
    lm.vocab = 500
    cfg = config.load(None, [*TINY, f"model.name={family}", "model.finetune=lora", "model.lora.r=4"])
    model = lm.build(cfg, a.name, build_tokenizer("bpe:500", ["a b c"] * 3), None)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trained == F.lora_parameters(a, 4, experts=a.experts > 0) > 0
    if a.experts:  # the fused 3-D expert weights carry LoRA too (peft target_parameters)
        assert any("experts" in n and "lora_" in n for n, p in model.named_parameters() if p.requires_grad)


def test_sizes_span_half_a_million_to_ten_million_non_embedding_parameters():
    for family in F.FAMILIES:
        counts = [F.param_counts(F.spec(family, s, 8000, 512)) for s in F.SIZES]
        body = [total - emb for total, emb in counts]
        assert body == sorted(body) and body[0] > 3.5e5 and body[-1] < 1e7


def test_training_memory_known_answer():
    a = F.spec("llama", "s", 1000, 64)  # 2 layers, hidden 128, 4 heads of 32, ffn 512
    total, _ = F.param_counts(a)
    assert total == 2 * 1000 * 128 + 2 * (4 * 128 * 128 + 3 * 128 * 512 + 2 * 128) + 128
    m = F.training_memory(a, batch=2, length=10)
    assert m.weights == 4 * total and m.gradients == 4 * total and m.optimizer == 8 * total
    # per token and layer, Llama saves 5 hidden + 5 key/value + 4 MLP widths of floats; per token
    # the log-softmax of the logits (vocab) and 3 hidden (embedding, final norm)
    per_token = 2 * (5 * 128 + 5 * 128 + 4 * 512) + 1000 + 3 * 128
    assert m.activations == 4 * 2 * 10 * per_token
    lora = F.training_memory(a, batch=2, length=10, trained=100)
    assert lora.gradients == 400 and lora.optimizer == 800 and lora.weights == m.weights


def test_a_device_picks_the_largest_size_that_fits_or_declines():
    sizes = ("s", "m", "l")
    need = {s: F.training_memory(F.spec("llama", s, 4000, 512), 16, 64).total for s in sizes}
    assert need["s"] < need["m"] < need["l"]
    pick = lambda mem: F.fit("llama", sizes, mem, 16, 64, 4000, 512)  # noqa: E731
    assert pick(need["l"]).arch == "llama-l" and pick(need["l"]).memory == need["l"]
    assert pick(need["l"] - 1).arch == "llama-m"
    assert pick(need["m"]).arch == "llama-m"
    assert pick(need["s"]).arch == "llama-s"
    none = pick(need["s"] - 1)
    assert none.arch == "" and "no llama size fits" in none.reason and "llama-s needs" in none.reason
    # real tiers, memory scaled by 0.02 (s needs 67 MiB, m 155, l 302): a low-end phone (31 MiB)
    # fits nothing, a high-end phone (82) s, a laptop (246) m, an edge server (307) l
    scaled = {t: F.fit("llama", sizes, TIERS[t].memory_bytes * 0.02, 16, 64, 4000, 512).arch for t in TIERS}
    assert scaled["low_end_phone"] == "" and scaled["high_end_phone"] == "llama-s"
    assert scaled["laptop"] == "llama-m" and scaled["edge_server"] == "llama-l"


@pytest.mark.parametrize("family", F.FAMILIES)
def test_activation_estimate_matches_what_autograd_saves(family):
    """The estimate against the bytes of every tensor autograd keeps for backward (not weights)."""
    for size, batch, length in (("s", 4, 48), ("m", 2, 96)):
        a = F.spec(family, size, 900, 512)
        model = causal.build(a, 0, 1, seed=0).train()
        weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
        kept: dict[int, int] = {}

        def pack(t, weights=weights, kept=kept):
            ptr = t.untyped_storage().data_ptr()
            if ptr not in weights:
                kept[ptr] = max(kept.get(ptr, 0), t.untyped_storage().nbytes())
            return t

        ids = torch.randint(2, 900, (batch, length))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            logits = model(ids, torch.ones_like(ids))
            nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 900), ids[:, 1:].reshape(-1))
        estimate = F.training_memory(a, batch, length).activations
        assert estimate == pytest.approx(sum(kept.values()), rel=0.03), (family, size)


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen3", "phi"])
def test_flops_are_exact_against_an_analytic_count_at_two_lengths(family):
    a = F.spec(family, "s", 700, 128)
    model = causal.build(a, 0, 1, seed=0)
    for length in (16, 48):
        counted = count_flops(model, length, batch=1, train=False)
        assert counted == F.flops_per_token(a, length) * length


# ----------------------------------------------------------------------------- metrics


class Fixed(nn.Module):
    """A 'model' whose next-token distribution is the same at every position."""

    def __init__(self, probs):
        super().__init__()
        self.logp = nn.Parameter(torch.log(torch.tensor(probs)))

    def forward(self, input_ids, attention_mask):
        return self.logp.expand(*input_ids.shape, -1)


def test_perplexity_is_exp_of_the_mean_nll_over_real_tokens_only():
    probs = [0.1, 0.2, 0.3, 0.4]
    # two blocks of domain 0 and 1; the second is 2 tokens long and padded to 4 (pad id 0)
    data = Encoded([np.array([1, 2, 3, 3]), np.array([2, 1])], np.array([0, 1]), pad_id=0)
    task = LanguageModelling()
    task.domains = ["a", "b"]
    got = task.evaluate(Fixed(probs), data, torch.device("cpu"))
    targets = [2, 3, 3, 1]  # after the first token of each block; padding never a target
    nll = [-math.log(probs[t]) for t in targets]
    # per-token losses are float32 (the model's logits), their sums float64
    assert got["log_ppl"] == pytest.approx(sum(nll) / 4, abs=1e-6)
    assert got["ppl"] == pytest.approx(math.exp(got["log_ppl"]), rel=1e-12)
    assert got["token_acc"] == 2 / 4  # argmax is token 3
    assert got["log_ppl/a"] == pytest.approx(sum(nll[:3]) / 3, abs=1e-6)
    assert got["log_ppl/b"] == pytest.approx(nll[3], abs=1e-6) and got["token_acc/b"] == 0.0
    assert summarize(0.0, 0, 0) == {}


def test_packing_keeps_domains_apart_and_ends_documents():
    tok = build_tokenizer("bpe:300", ["alpha beta gamma delta"] * 20)
    eos = tok.eos_token_id
    enc = pack(tok, ["alpha beta", "gamma delta", "alpha"], [0, 1, 0], block_length=3)
    assert set(enc.labels.tolist()) == {0, 1}
    stream0 = np.concatenate([b for b, d in zip(enc.ids, enc.labels, strict=True) if d == 0])
    a_ids = tok("alpha beta", add_special_tokens=False)["input_ids"]
    b_ids = tok("alpha", add_special_tokens=False)["input_ids"]
    assert stream0.tolist() == [*a_ids, eos, *b_ids, eos]
    assert all(len(b) <= 3 for b in enc.ids)


def test_bpe_tokenizer_is_deterministic():
    texts = [f"document {i} about markets and football" for i in range(50)]
    a, b = build_tokenizer("bpe:400", texts), build_tokenizer("bpe:400", texts)
    assert a.get_vocab() == b.get_vocab() and len(a) <= 400


@pytest.mark.parametrize("name", ["bbcnews", "agnews", "pubmedqa", "sst2", "bbcnews+pubmedqa"])
def test_corpora_load_with_domains(name):
    bundle = load_corpus(
        config.load(None, ["task=lm", "model.name=llama", f"data.name={name}", "data.max_train=50"]).data, 0
    )
    expected = {"bbcnews": 5, "agnews": 4, "pubmedqa": 1, "sst2": 2, "bbcnews+pubmedqa": 6}[name]
    assert len(bundle.label_names) == expected and len(bundle.train) == 50 and len(bundle.test) > 0
    assert all(isinstance(t, str) and t for t in bundle.train["text"])


# ----------------------------------------------------------------------------- training


def test_a_tiny_lm_beats_the_unigram_perplexity_of_its_training_text():
    sc = build(config.load(None, [*TINY, "clients=1", "rounds=2", "train.max_steps=60", "partition.name=iid"]))
    out = Engine(sc).run()
    train = sc.clients[0].train
    # the unigram model of the training text, judged on the same targets the LM predicts
    counts = np.bincount(np.concatenate(train.ids), minlength=len(sc.workbench.tokenizer)).astype(float)
    p = counts / counts.sum()
    targets = np.concatenate([b[1:] for b in train.ids])
    unigram = float(-np.mean(np.log(p[targets])))
    model = sc.strategy.model_for(sc.workbench, out["state"])
    trained = sc.task.evaluate(model, train, sc.workbench.device)["log_ppl"]
    untrained = sc.task.evaluate(
        sc.task.build(sc.cfg, sc.workbench.arch, sc.workbench.tokenizer, sc.bundle), train, sc.workbench.device
    )
    assert trained < unigram < untrained["log_ppl"]  # from chance (log 600 = 6.4) to below unigram


def test_heterogeneous_architectures_share_one_model_each():
    # devices spread over two families (sizes picked by memory are tested above)
    sc = build(config.load(None, [*TINY, "clients=4", "model.families=[llama, gpt2]", "algorithm.name=local"]))
    out = Engine(sc).run()
    archs = {r["client"]: r.get("arch") for r in out["ledger"].clients if r["round"] == 1}
    assert len({a.split("-")[0] for a in archs.values()}) == 2
    assert set(sc.workbench.models) == set(archs.values())  # one instance per architecture, none per client
    backbone = {a: sum(p.numel() for p in m.parameters()) for a, m in sc.workbench.models.items()}
    for cid, private in out["private"].items():
        assert sum(v.numel() for v in private.values()) == backbone[archs[cid]]  # full fine-tuning: its own copy
    assert all(r["memory_mb"] > 0 for r in out["ledger"].clients)


def test_fedavg_keeps_one_global_model_per_architecture():
    sc = build(config.load(None, [*TINY, "clients=4", "model.families=[llama, gpt2]", "model.finetune=lora"]))
    out = Engine(sc).run()
    archs = set(sc.strategy.archs)
    assert len(archs) == 2 and {k.split("::")[0] for k in out["state"]} == archs
    last = out["ledger"].rounds[-1]
    per = {a: last[f"log_ppl@{a}"] for a in archs}
    n = sc.strategy.clients_per_arch
    assert last["log_ppl"] == pytest.approx(sum(per[a] * n[a] for a in archs) / sum(n.values()))
    for r in out["ledger"].clients:  # each client sends its architecture's LoRA tensors, float32
        assert r["bytes_up"] == r["bytes_down"] == 4 * F.lora_parameters(sc.task.spec(r["arch"]), 8)


def test_bad_language_model_input_is_one_line(tmp_path):
    numbers = tmp_path / "numbers.csv"
    numbers.write_text("body\n1\n2\n3\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    cases = [
        (["data.name=null", f"data.path={numbers}", "data.text_column=body"], "not text"),
        (["data.name=null", f"data.path={empty}"], "no documents"),
        (["data.block_length=0"], "data.block_length: 0"),
        (["data.tokenizer=bpe:x"], "data.tokenizer: 'bpe:x' cannot be built"),
        (["model.name=bert"], "not a causal-LM family"),
        (["algorithm.name=fedms"], "does not train 'lm'"),
        (["model.sizes=[l]", "edge.memory_scale=0.0001"], "no device can train"),
    ]
    for extra, fragment in cases:
        with pytest.raises(EdgefmError, match=fragment):
            build(config.load(None, [*TINY, *extra]))


def test_own_text_and_own_model_folder_through_the_cli(tmp_path):
    from typer.testing import CliRunner

    from edgefm.cli import app
    from edgefm.models.families import spec

    notes = tmp_path / "notes.jsonl"
    rows = [
        {"body": f"note {i} about the {'markets' if i % 2 else 'football'} today", "topic": "ab"[i % 2]}
        for i in range(40)
    ]
    notes.write_text("\n".join(__import__("json").dumps(r) for r in rows))
    # a local causal-LM folder (as a user would have one) with its own tokenizer
    tok = build_tokenizer("bpe:300", [r["body"] for r in rows])
    folder = tmp_path / "mylm"
    causal.build(spec("llama", "s", len(tok), 64), tok.pad_token_id, tok.eos_token_id, seed=0).lm.save_pretrained(
        folder
    )
    tok.save_pretrained(folder)
    runner = CliRunner()
    out = tmp_path / "run"
    sets = [
        a
        for o in [
            *TINY,
            "data.name=null",
            f"data.path={notes}",
            "data.text_column=body",
            "data.domain_column=topic",
            "model.name=path",
            f"model.path={folder}",
            "data.tokenizer=model",
        ]
        for a in ("--set", o)
    ]
    result = runner.invoke(app, ["train", "--out", str(out), *sets])
    assert result.exit_code == 0, result.output
    summary = __import__("json").loads((out / "summary.json").read_text())
    assert summary["architectures"] == {"path": 3} and set(k for k in summary if k.startswith("final_log_ppl/")) == {
        "final_log_ppl/a",
        "final_log_ppl/b",
    }
    bad = runner.invoke(app, ["train", "--out", str(tmp_path / "bad"), *sets[:-2], "--set", "data.tokenizer=bpe:400"])
    assert bad.exit_code == 2 and "vocabulary has 300 tokens" in bad.output and not (tmp_path / "bad").exists()


def test_public_split_is_disjoint_from_every_device_and_from_the_test_text():
    sc = build(config.load(None, [*TINY, "data.public_fraction=0.25"]))
    assert sc.public is not None and len(sc.public) > 0
    rows = [set(c.train_index) | set(c.test_index) for c in sc.clients]
    held = set(range(len(sc.bundle.train))) - set().union(*rows)
    assert len(held) == round(0.25 * len(sc.bundle.train))  # the server's documents, no device's
    public_text = {sc.bundle.train["text"][i] for i in held}
    assert not public_text & set(sc.bundle.test["text"])
    assert build(config.load(None, TINY)).public is None


def test_bad_input_through_the_cli_is_one_line_exit_2_nothing_written(tmp_path):
    from typer.testing import CliRunner

    from edgefm.cli import app

    numbers = tmp_path / "numbers.csv"
    numbers.write_text("body\n1\n2\n3\n")
    for extra, fragment in (
        (["data.name=null", f"data.path={numbers}", "data.text_column=body"], "not text"),
        (["data.block_length=0"], "data.block_length"),
        (["data.tokenizer=wordpiece"], "data.tokenizer"),
    ):
        out = tmp_path / "run"
        sets = [a for o in [*TINY, *extra] for a in ("--set", o)]
        result = CliRunner().invoke(app, ["train", "--out", str(out), *sets])
        lines = [x for x in result.output.strip().splitlines() if x.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and fragment in lines[0], result.output
        assert not out.exists()
