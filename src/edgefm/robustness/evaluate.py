"""Judge a model on robustness suites: accuracy, attack success rate, macro-F1, confusion.

Models it can judge, all behind one ``predict(texts) -> label names`` interface:
(a) a run folder from ``edgefm train`` (the global model; per-client models for personalized
    methods, averaged), (b) any local transformers sequence-classification folder, (c) a
    zero-shot embedding classifier on MiniLM that needs no task training.

Label mapping is explicit: a model's predicted label *name* counts as correct when it equals the
suite's gold name (case-insensitive). A model whose label set shares no name with a suite's is
not applicable to it (e.g. a sentiment model on NLI) and is skipped with that reason; a binary
sentiment model on 3-class Flipkart can never say "neutral", which the report states.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from edgefm import EdgefmError
from edgefm.robustness.suites import DIAGNOSIS, NLI2, NLI3, PARAPHRASE, SENTIMENT, Suite

# ----------------------------------------------------------------------------- metrics


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_true == y_pred)) if len(y_true) else float("nan")


def confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """k x k counts, rows = gold, columns = predicted; a prediction outside 0..k-1 (a label the
    suite does not have) falls in no column."""
    m = np.zeros((k, k), dtype=int)
    ok = (y_pred >= 0) & (y_pred < k)
    np.add.at(m, (y_true[ok], y_pred[ok]), 1)
    return m


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> float:
    """Mean F1 over the suite's classes that occur in the gold labels or the predictions. A
    prediction of a label the suite does not have is a miss of its gold class (a false negative),
    as scikit-learn's ``f1_score(..., labels=those classes, average="macro")`` counts it."""
    m = confusion(y_true, y_pred, k)
    tp = np.diag(m).astype(float)
    fp = m.sum(0) - tp
    fn = np.bincount(y_true, minlength=k)[:k] - tp  # every gold example not labelled right
    present = (m.sum(0) + np.bincount(y_true, minlength=k)[:k]) > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    return float(f1[present].mean()) if present.any() else float("nan")


# ----------------------------------------------------------------------------- models


class Judged(Protocol):
    name: str
    label_names: list[str] | None  # None: zero-shot, reads each suite's own labels

    def applicable(self, suite: Suite) -> str | None: ...  # None, or why not
    def predict(self, suite: Suite, texts: list[tuple[str, ...]]) -> list[str]: ...


@dataclass
class ClassifierModel:
    """A trained single-text classifier: a workbench (run folder) or a transformers folder."""

    name: str
    label_names: list[str]
    predict_fn: Any  # list[str] -> np.ndarray of label indices (one array per model for ensembles)
    notes: list[str] = field(default_factory=list)

    def applicable(self, suite: Suite) -> str | None:
        if len(suite.fields) != 1:
            return f"{self.name} reads one text; {suite.name} is a sentence-pair task"
        if not {n.lower() for n in self.label_names} & {n.lower() for n in suite.label_names}:
            return f"labels {self.label_names} share no name with {suite.name}'s {suite.label_names[:5]}"
        return None

    def predict(self, suite: Suite, texts: list[tuple[str, ...]]) -> list[str]:
        idx = self.predict_fn([t[0] for t in texts])
        return [self.label_names[i] for i in idx]


def from_run(run_dir: Path) -> list[ClassifierModel]:
    """The models an ``edgefm train`` run ended with, as its Strategy defines them: the global
    model, or each client's own where the run keeps per-client state (results are then averaged
    over clients)."""
    from edgefm.data.encode import encode
    from edgefm.fl.trained import open_run
    from edgefm.models.workbench import predict

    run = open_run(Path(run_dir), "--run")
    sc, labels = run.scenario, run.scenario.bundle.label_names
    max_length = run.cfg.data.max_length

    if run.cfg.task != "classify":
        raise EdgefmError(f"--run {str(run_dir)!r}: a {run.cfg.task} run; robust judges classifiers (task classify)")

    def make(private, client):
        def predict_fn(texts: list[str]) -> np.ndarray:
            model = sc.strategy.model_for(sc.workbench, run.ckpt.state, private, client)
            enc = encode(texts, [0] * len(texts), sc.workbench.tokenizer, max_length)
            return predict(model, enc, sc.workbench.device)[0].numpy()

        return predict_fn

    return [ClassifierModel(f"run:{run.run_dir.name}:{name}", labels, make(p, c)) for name, p, c in run.models()]


def from_hf_folder(path: Path, max_length: int = 128) -> ClassifierModel:
    """Any local transformers sequence-classification folder (labels from its id2label)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise EdgefmError(f"--model {str(path)!r}: no config.json; expected a transformers model folder")
    model = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    tok = AutoTokenizer.from_pretrained(str(path))
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]

    @torch.no_grad()
    def predict_fn(texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), 64):
            batch = tok(
                texts[start : start + 64], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
            )
            out.append(model(**batch).logits.argmax(-1).numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=int)

    return ClassifierModel(f"model:{path.name}", labels, predict_fn)


# Zero-shot label descriptions and pair thresholds, fixed a priori (never tuned on a suite).
TEMPLATES = {SENTIMENT: "This review is {}.", DIAGNOSIS: "The patient has {}."}
PAIR_THRESHOLDS = {PARAPHRASE: (0.8,), NLI2: (0.6,), NLI3: (0.7, 0.4)}


class ZeroShotModel:
    """Cosine similarity of MiniLM sentence embeddings: to label descriptions (single-text
    tasks) or between the two sentences (pair tasks, thresholds fixed in ``PAIR_THRESHOLDS``)."""

    label_names = None

    def __init__(self, max_length: int = 256):
        from edgefm.models.backbones import minilm

        self.backbone = minilm()
        self.backbone.encoder.eval()
        self.max_length = max_length
        self.name = "zero-shot:minilm"

    def embed(self, texts: list[str]) -> torch.Tensor:
        from edgefm.models.backbones import sentence_embeddings

        return sentence_embeddings(self.backbone, texts, self.max_length)

    def applicable(self, suite: Suite) -> str | None:
        return (
            None if suite.task in TEMPLATES or suite.task in PAIR_THRESHOLDS else f"no zero-shot rule for {suite.task}"
        )

    def predict(self, suite: Suite, texts: list[tuple[str, ...]]) -> list[str]:
        if suite.task in TEMPLATES:
            labels = self.embed([TEMPLATES[suite.task].format(n.replace("_", " ")) for n in suite.label_names])
            sims = self.embed([t[0] for t in texts]) @ labels.T
            return [suite.label_names[i] for i in sims.argmax(-1).tolist()]
        a, b = self.embed([t[0] for t in texts]), self.embed([t[1] for t in texts])
        sim = (a * b).sum(-1).numpy()
        cuts = PAIR_THRESHOLDS[suite.task]
        if suite.task == PARAPHRASE:
            return ["duplicate" if s >= cuts[0] else "not_duplicate" for s in sim]
        if suite.task == NLI2:
            return ["entailment" if s >= cuts[0] else "not_entailment" for s in sim]
        return ["entailment" if s >= cuts[0] else "neutral" if s >= cuts[1] else "contradiction" for s in sim]


# ----------------------------------------------------------------------------- evaluation


def score(suite: Suite, predicted: list[str]) -> dict[str, Any]:
    index = {n.lower(): i for i, n in enumerate(suite.label_names)}
    y_pred = np.array([index.get(p.lower(), -1) for p in predicted])
    k = len(suite.label_names)
    acc = accuracy(suite.labels, y_pred)
    out = {
        "suite": suite.name,
        "n": len(suite),
        "metric": suite.metric,
        "accuracy": acc,
        "macro_f1": macro_f1(suite.labels, y_pred, k),
        "unmapped_predictions": int((y_pred < 0).sum()),
        "never_predicted": [suite.label_names[i] for i in range(k) if i not in set(y_pred.tolist())],
    }
    if k <= 10:
        out["confusion"] = confusion(suite.labels, y_pred, k).tolist()
        out["labels"] = suite.label_names
    if suite.adversarial:
        out["attack_success_rate"] = 100.0 * (1.0 - acc)
    return out


def evaluate(model: Judged, suite: Suite, cache: dict[str, dict] | None = None) -> dict[str, Any]:
    """Score ``model`` on ``suite``; for an adversarial suite with a clean counterpart, also the
    drop in accuracy from clean to adversarial (``cache`` holds suites already scored)."""
    why = model.applicable(suite)
    if why is not None:
        return {"suite": suite.name, "skipped": why}
    result = score(suite, model.predict(suite, suite.texts))
    if suite.clean is not None:
        from edgefm.robustness.suites import load

        clean = (cache or {}).get(suite.clean) or score(c := load(suite.clean), model.predict(c, c.texts))
        result["clean_accuracy"] = clean["accuracy"]
        result["drop_from_clean"] = 100.0 * (clean["accuracy"] - result["accuracy"])
    return result
