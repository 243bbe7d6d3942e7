"""Robustness: metric known answers, suites, perturbations, models and the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest

from edgefm import EdgefmError
from edgefm.robustness import evaluate as ev
from edgefm.robustness import perturb as pt
from edgefm.robustness import suites as S


def test_metric_known_answers():
    y = np.array([0, 0, 1, 1, 2])
    p = np.array([0, 1, 1, 1, 0])
    assert ev.accuracy(y, p) == pytest.approx(0.6)
    assert ev.confusion(y, p, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    # F1: class0 2*1/(2+1+1)=0.5, class1 2*2/(4+1+0)=0.8, class2 0 -> mean 0.4333
    assert ev.macro_f1(y, p, 3) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert ev.macro_f1(np.array([1, 1]), np.array([1, 1]), 3) == 1.0  # absent classes are not averaged
    # a label the suite does not have (-1: "neutral" on a binary suite) is a miss, not dropped
    gold, pred = np.array([0, 0, 1, 1]), np.array([0, -1, 1, 1])
    assert ev.macro_f1(gold, pred, 2) == pytest.approx((2 / 3 + 1.0) / 2)
    assert ev.confusion(gold, pred, 2).tolist() == [[1, 0], [0, 2]]


def test_macro_f1_matches_scikit_learn_with_foreign_labels():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for _ in range(1000):
        k, n = int(rng.integers(2, 6)), int(rng.integers(1, 30))
        gold = rng.integers(0, k, n)
        pred = rng.integers(-1, k + 1, n)  # -1 and k are labels the suite does not have
        present = sorted({int(x) for x in gold} | {int(x) for x in pred if 0 <= x < k})
        want = f1_score(gold, pred, labels=present, average="macro", zero_division=0)
        assert ev.macro_f1(gold, pred, k) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("name", S.names())
def test_every_suite_loads_with_documented_size(name):
    suite = S.load(name)
    assert len(suite) == S.SIZES[name]
    assert len(suite.texts) == len(suite.labels) and all(len(t) == len(suite.fields) for t in suite.texts)
    assert suite.labels.min() >= 0 and suite.labels.max() < len(suite.label_names)
    expected = {"ddxplus": 49, "flipkart": 3, "advglue-mnli": 3, "advglue-mnli-mm": 3}.get(name, 2)
    assert len(suite.label_names) == expected


def test_advglue_sst2_has_a_clean_counterpart_and_metrics_follow_the_paper():
    assert S.load("advglue-sst2").clean == "sst2"
    assert S.load("flipkart").metric == "macro_f1" and S.load("ddxplus").metric == "macro_f1"


def test_anli_loader(tmp_path):
    path = tmp_path / "dev.jsonl"
    path.write_text(
        '{"context": "A cat sat.", "hypothesis": "An animal sat.", "label": "e"}\n'
        '{"context": "A cat sat.", "hypothesis": "A dog ran.", "label": "c"}\n'
    )
    suite = S.load(f"anli:{path}")
    assert suite.labels.tolist() == [0, 2] and suite.task == S.NLI3
    path.write_text('{"context": "x", "label": "q"}\n')
    with pytest.raises(EdgefmError, match="line 1"):
        S.load(f"anli:{path}")
    with pytest.raises(EdgefmError, match="unknown"):
        S.load("imdb")


def test_perturbations_are_deterministic_and_change_text():
    texts = [("the movie was surprisingly wonderful and moving",), ("a dull , tedious mess",)]
    a = pt.perturb_texts(texts, "typo", seed=1)
    assert a == pt.perturb_texts(texts, "typo", seed=1)
    assert a != pt.perturb_texts(texts, "typo", seed=2)  # another seed, other typos
    assert any(x != y for x, y in zip(a, texts, strict=True))
    # per-example randomness: appending an example changes none of the others
    assert pt.perturb_texts([*texts, ("one more example sentence",)], "typo", seed=1)[:2] == a
    changed = [
        w for t, o in zip(a, texts, strict=True) for w, v in zip(t[0].split(), o[0].split(), strict=False) if w != v
    ]
    assert changed and all(
        w[0] == v[0] for t, o in zip(a, texts, strict=True) for w, v in zip(t[0].split(), o[0].split(), strict=False)
    )
    d = pt.perturb_texts(texts, "distract", seed=0)
    assert all(x[0].startswith(y[0]) and len(x[0]) > len(y[0]) for x, y in zip(d, texts, strict=True))
    pair = pt.perturb_texts([("premise stays", "hypothesis changes here")], "distract", seed=0)
    assert pair[0][0] == "premise stays"
    with pytest.raises(EdgefmError):
        pt.perturb_texts(texts, "leet", seed=0)


def test_embedding_synonyms_use_nearest_neighbours():
    vocab = {"good": 0, "great": 1, "bad": 2, "car": 3, "##ing": 4}
    emb = np.array([[1, 0.0], [0.95, 0.05], [0.0, 1], [-1, 0], [1, 0]])
    table = pt.EmbeddingSynonyms(emb, vocab, k=1)
    assert table.candidates("good") == ["great"]
    assert table.candidates("car") == ["bad"] and table.candidates("ing") == []  # "##ing" is no word
    rng = np.random.default_rng(0)
    assert pt.synonym("Good car", rng, table, rate=1.0) == "Great bad"  # every word swapped, case kept
    assert pt.synonym("Good car", rng, table, rate=0.0) == "Good car"
    out = pt.perturb_texts([("good car",)] * 500, "synonym", seed=0, table=table)
    swapped = sum(a != b for o in out for a, b in zip(o[0].split(), ("good", "car"), strict=True))
    assert swapped / 1000 == pytest.approx(0.2, abs=0.05)  # the default rate: 1 word in 5


class Fixed:
    """A stand-in model predicting a fixed label name."""

    name = "fixed"
    label_names = ["negative", "positive"]

    def applicable(self, suite):
        return None if len(suite.fields) == 1 else "pairs"

    def predict(self, suite, texts):
        return ["positive"] * len(texts)


def test_evaluate_scores_asr_drop_and_skips():
    suite = S.load("advglue-sst2")
    r = ev.evaluate(Fixed(), suite)
    pos = float(np.mean(suite.labels == 1))
    assert r["accuracy"] == pytest.approx(pos) and r["attack_success_rate"] == pytest.approx(100 * (1 - pos))
    clean = float(np.mean(S.load("sst2").labels == 1))
    assert r["drop_from_clean"] == pytest.approx(100 * (clean - pos))
    assert ev.evaluate(Fixed(), S.load("advglue-rte"))["skipped"] == "pairs"
    fk = ev.evaluate(Fixed(), S.load("flipkart"))
    assert fk["never_predicted"] == ["negative", "neutral"]


def test_classifier_model_label_mapping_rules():
    m = ev.ClassifierModel("m", ["negative", "positive"], lambda texts: np.zeros(len(texts), dtype=int))
    assert m.applicable(S.load("flipkart")) is None
    assert "sentence-pair" in m.applicable(S.load("advglue-qqp"))
    assert "share no name" in m.applicable(S.load("ddxplus"))


@pytest.mark.slow
def test_zero_shot_minilm_on_every_suite_beats_nothing():
    model = ev.ZeroShotModel()
    for name in S.names():
        r = ev.evaluate(model, S.load(name).subset(60))
        assert "skipped" not in r and 0 <= r["accuracy"] <= 1
    sst = ev.evaluate(model, S.load("sst2").subset(200))
    assert sst["accuracy"] > 0.6  # sentiment from label descriptions alone


def test_cli_on_a_tiny_run(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from edgefm.cli import app

    runner = CliRunner()
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", "configs/tiny.yaml", "--out", str(run), "--set", "rounds=1"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app,
        [
            "robust",
            "--run",
            str(run),
            "--suite",
            "advglue-sst2,flipkart,advglue-rte",
            "--perturb",
            "typo",
            "--limit",
            "40",
        ],
    )
    assert r.exit_code == 0, r.output
    data = json.loads((run / "robustness.json").read_text())
    names = [x["suite"] for x in data["results"]]
    assert names == [
        "advglue-sst2",
        "advglue-sst2+typo",
        "flipkart",
        "flipkart+typo",
        "advglue-rte",
        "advglue-rte+typo",
    ]
    assert "skipped" in data["results"][4]
    r0, typo = data["results"][0], data["results"][1]
    assert r0["n"] == 40 and r0["attack_success_rate"] == pytest.approx(100 * (1 - r0["accuracy"]))
    assert typo["clean_accuracy"] == r0["accuracy"]
    assert typo["drop_from_clean"] == pytest.approx(100 * (r0["accuracy"] - typo["accuracy"]))
    assert data["chatgpt_reference"]["advglue-sst2"]["attack_success_rate"] == 39.9
    assert "Robustness" in (run / "report.html").read_text()
    bad = runner.invoke(app, ["robust", "--run", str(run), "--suite", "imdb"])
    assert bad.exit_code == 2 and "unknown" in bad.output
    both = runner.invoke(app, ["robust", "--run", str(run), "--zero-shot"])
    assert both.exit_code == 2
    # without --run or --out the result gets a folder of its own under runs/, not the current folder
    from edgefm.data import sources

    monkeypatch.setenv("EDGEFM_DATA_DIR", str(sources.data_dir()))  # found from the repo, before we leave it
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    alone = runner.invoke(app, ["robust", "--zero-shot", "--suite", "advglue-sst2", "--limit", "8"])
    assert alone.exit_code == 0, alone.output
    assert [p.name for p in Path(".").iterdir()] == ["runs"]
    (written,) = Path("runs").glob("robust-zero-shot-*/robustness.json")
    assert json.loads(written.read_text())["results"][0]["n"] == 8
