"""The ``edgefm robust`` job: pick the model(s), load the suites, perturb, score, collect JSON."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edgefm import EdgefmError
from edgefm.robustness import evaluate as ev
from edgefm.robustness import perturb as pt
from edgefm.robustness import suites as S

# The published ChatGPT figures measured on these same files (Wang et al. 2023; see
# ../shared/data/README.md): attack success rate on AdvGLUE, macro-F1 out of distribution.
CHATGPT = {
    "advglue-sst2": {"attack_success_rate": 39.9},
    "advglue-qqp": {"attack_success_rate": 18.0},
    "advglue-mnli": {"attack_success_rate": 32.2},
    "advglue-qnli": {"attack_success_rate": 34.5},
    "advglue-rte": {"attack_success_rate": 24.7},
    "flipkart": {"macro_f1": 60.6},
    "ddxplus": {"macro_f1": 20.2},
}


def _answers(path: Path, suites, perturbations, loaded, seed: int, limit: int | None, start: float) -> dict[str, Any]:
    """A model judged by its answers to one suite (``robustness/predictions.py``)."""
    from edgefm.robustness.predictions import PredictionsModel

    if len(loaded) != 1 or perturbations:
        raise EdgefmError("--predictions: answers belong to one suite; expected one --suite and no --perturb")
    model, suite = PredictionsModel.load(path), loaded[0]
    model.check(S.load(suites[0]), suite)
    result = ev.score(suite, model.predict(suite, suite.texts))
    return {
        "model": model.name,
        "suites": suites,
        "perturbations": [],
        "seed": seed,
        "limit": limit,
        "results": [result],
        "chatgpt_reference": {k: v for k, v in CHATGPT.items() if k in suites},
        "notes": [f"{result['unmapped_predictions']} answers named no label and count as wrong"],
        "seconds": time.perf_counter() - start,
    }


def _mean_results(per_model: list[dict[str, Any]]) -> dict[str, Any]:
    """Average the numeric metrics of the same suite judged by several (per-client) models."""
    first = dict(per_model[0])
    if len(per_model) == 1 or "skipped" in first:
        return first
    for key in ("accuracy", "macro_f1", "attack_success_rate", "clean_accuracy", "drop_from_clean"):
        if key in first:
            first[key] = float(np.mean([r[key] for r in per_model]))
    first.pop("confusion", None)
    first["models_averaged"] = len(per_model)
    first["per_model_accuracy"] = [r["accuracy"] for r in per_model]
    return first


def run(
    run: Path | None = None,
    model: Path | None = None,
    zero_shot: bool = False,
    suites: list[str] = (),
    perturbations: list[str] = (),
    seed: int = 0,
    limit: int | None = None,
    predictions: Path | None = None,
) -> dict[str, Any]:
    if not suites:
        raise EdgefmError(f"--suite: empty; expected some of {', '.join(S.names())}")
    for kind in perturbations:
        if kind not in pt.KINDS:
            raise EdgefmError(f"--perturb {kind!r}: unknown; expected one of {', '.join(pt.KINDS)}")
    if limit is not None and limit < 1:
        raise EdgefmError(f"--limit: {limit}; expected at least 1 example per suite")
    loaded = [S.load(name).subset(limit) for name in suites]  # fail fast on a bad suite name
    start = time.perf_counter()
    if predictions is not None:
        return _answers(predictions, suites, perturbations, loaded, seed, limit, start)
    if run is not None:
        models: list = ev.from_run(run)
        name = f"run:{Path(run).name}"
    elif model is not None:
        models = [ev.from_hf_folder(model)]
        name = models[0].name
    else:
        models = [ev.ZeroShotModel()]
        name = models[0].name
    table = None
    if "synonym" in perturbations:
        from edgefm.models.backbones import minilm

        bb = minilm()  # the embedding space of the backbone every edgefm model starts from
        table = pt.EmbeddingSynonyms.from_tokenizer_and_model(bb.tokenizer, bb.encoder)
    results = []
    for suite in loaded:
        results.append(_mean_results([ev.evaluate(m, suite) for m in models]))
        for kind in perturbations:
            noisy = S.Suite(
                f"{suite.name}+{kind}",
                suite.task,
                suite.fields,
                suite.label_names,
                suite.metric,
                pt.perturb_texts(suite.texts, kind, seed, table),
                suite.labels,
                adversarial=True,
            )
            r = _mean_results([ev.evaluate(m, noisy) for m in models])
            if "accuracy" in r and "accuracy" in results[-1]:
                r["clean_accuracy"] = results[-1]["accuracy"]
                r["drop_from_clean"] = 100.0 * (results[-1]["accuracy"] - r["accuracy"])
            results.append(r)
    notes = []
    if any(s.name == "flipkart" for s in loaded) and run is not None:
        notes.append("binary sentiment models map to Flipkart by label name and never predict 'neutral'")
    return {
        "model": name,
        "suites": suites,
        "perturbations": list(perturbations),
        "seed": seed,
        "limit": limit,
        "results": results,
        "chatgpt_reference": {k: v for k, v in CHATGPT.items() if k in suites},
        "notes": notes,
        "seconds": time.perf_counter() - start,
    }
