"""Judging a model by its answers (edgefm robust --predictions): answers map to labels by name or
GLUE's yes/no conventions, anything else is unparseable and wrong, and bad files are one line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgefm.cli import app
from edgefm.robustness import suites as S
from edgefm.robustness.predictions import to_label

runner = CliRunner()


def test_answers_map_to_labels_by_name_or_glue_yes_no():
    sst2, qqp, rte, mnli = (S.load(n) for n in ("advglue-sst2", "advglue-qqp", "advglue-rte", "advglue-mnli"))
    assert to_label(" Positive.", sst2) == "positive" and to_label("NEGATIVE", sst2) == "negative"
    assert to_label("neutral", sst2) is None and to_label("I cannot answer that.", sst2) is None
    assert to_label("yes", sst2) is None  # yes/no reads only on the pair tasks
    assert to_label("Yes.", qqp) == "duplicate" and to_label("no", qqp) == "not_duplicate"
    assert to_label("not entailment", rte) == "not_entailment" and to_label("YES", rte) == "entailment"
    assert to_label("maybe", mnli) == "neutral" and to_label("No", mnli) == "contradiction"


def test_cli_scores_answers_like_a_model(tmp_path):
    suite = S.load("advglue-sst2")
    ids, gold = suite.example_ids(), [suite.label_names[y] for y in suite.labels]
    answers = list(gold)
    for k in (0, 1, 2):  # three wrong answers
        answers[k] = "positive" if gold[k] == "negative" else "Negative!"
    answers[3], answers[4] = "As an AI model I cannot judge.", "neutral"  # two unparseable
    path = tmp_path / "answers.csv"
    path.write_text("idx,answer\n" + "".join(f'{i},"{a}"\n' for i, a in zip(ids, answers, strict=True)))
    out = tmp_path / "r.json"
    res = runner.invoke(app, ["robust", "--predictions", str(path), "--suite", "advglue-sst2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    (r,) = json.loads(out.read_text())["results"]
    n = len(suite)
    assert r["n"] == n and r["unmapped_predictions"] == 2
    assert r["accuracy"] == pytest.approx((n - 5) / n) and r["attack_success_rate"] == pytest.approx(100 * 5 / n)
    # JSONL, GLUE's yes/no on a pair task, and --limit judging the first examples only
    rte = S.load("advglue-rte")
    rows = [{"idx": i, "answer": "yes" if y == 0 else "no"} for i, y in zip(rte.example_ids(), rte.labels, strict=True)]
    jl = tmp_path / "rte.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in rows[:10]))
    res = runner.invoke(
        app, ["robust", "--predictions", str(jl), "--suite", "advglue-rte", "--limit", "10", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["results"][0]["accuracy"] == 1.0


@pytest.mark.parametrize(
    ("body", "extra", "fragment"),
    [
        ("idx,answer\n{a},positive\n{a},negative\n", [], "appears twice"),
        ("idx,answer\n{a},positive\n", [], "no answer for"),
        ("idx,answer\nnot-an-id,positive\n", [], "'not-an-id' is not an example"),
        ("id,text\n{a},positive\n", [], "expected columns idx"),
        ("idx,answer\n{a},positive\n", ["--suite", "advglue-sst2,sst2"], "expected one --suite"),
        ("idx,answer\n{a},positive\n", ["--perturb", "typo"], "no --perturb"),
    ],
)
def test_bad_answer_files_are_one_line_errors(tmp_path, body, extra, fragment):
    first = S.load("advglue-sst2").example_ids()[0]
    path = tmp_path / "a.csv"
    path.write_text(body.format(a=first))
    out = tmp_path / "r.json"
    args = ["robust", "--predictions", str(path), "--out", str(out)]
    args += extra if "--suite" in extra else ["--suite", "advglue-sst2", *extra]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and fragment in res.output, res.output
    assert not out.exists()
