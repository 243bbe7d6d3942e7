"""Robustness suites: adversarial (AdvGLUE) and out-of-distribution (Flipkart, DDXPlus) sets.

Seed: Wang et al., "On the Robustness of ChatGPT: An Adversarial and Out-of-distribution
Perspective" (arXiv 2302.12095), which evaluates on exactly these files (see
``../shared/data/README.md``). A suite knows its input fields, its label set, its metric and,
for adversarial sets, its clean counterpart (AdvGLUE-SST-2 -> SST-2 test). Labels follow GLUE:
SST-2 0 negative / 1 positive; QQP 0 not duplicate / 1 duplicate; MNLI 0 entailment /
1 neutral / 2 contradiction; QNLI and RTE 0 entailment / 1 not entailment.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefm import EdgefmError
from edgefm.data.sources import data_dir, read_table

# task kinds decide which models apply and how a zero-shot model reads the labels
SENTIMENT, PARAPHRASE, NLI3, NLI2, DIAGNOSIS = "sentiment", "paraphrase", "nli3", "nli2", "diagnosis"

ADVGLUE = {
    "advglue-sst2": ("sst2", ("sentence",), ["negative", "positive"], SENTIMENT),
    "advglue-qqp": ("qqp", ("question1", "question2"), ["not_duplicate", "duplicate"], PARAPHRASE),
    "advglue-mnli": ("mnli", ("premise", "hypothesis"), ["entailment", "neutral", "contradiction"], NLI3),
    "advglue-mnli-mm": ("mnli-mm", ("premise", "hypothesis"), ["entailment", "neutral", "contradiction"], NLI3),
    "advglue-qnli": ("qnli", ("question", "sentence"), ["entailment", "not_entailment"], NLI2),
    "advglue-rte": ("rte", ("sentence1", "sentence2"), ["entailment", "not_entailment"], NLI2),
}
# DDXPlus's 49 conditions (Tchango et al. 2022): the 47 named in this file's differentials, plus
# the two the 100-patient subset never mentions.
DDXPLUS_EXTRA = ["Bronchiolitis", "Ebola"]
SIZES = {
    "advglue-sst2": 148,
    "advglue-qqp": 78,
    "advglue-mnli": 121,
    "advglue-mnli-mm": 162,
    "advglue-qnli": 148,
    "advglue-rte": 81,
    "sst2": 872,
    "flipkart": 331,
    "ddxplus": 100,
}


@dataclass
class Suite:
    name: str
    task: str
    fields: tuple[str, ...]  # one text field, or two for pair tasks
    label_names: list[str]
    metric: str  # "accuracy" or "macro_f1"
    texts: list[tuple[str, ...]]
    labels: np.ndarray
    clean: str | None = None  # the clean counterpart of an adversarial suite
    adversarial: bool = False
    ids: tuple[str, ...] = ()  # each example's id (AdvGLUE: its idx); empty: its row number

    def example_ids(self) -> list[str]:
        return list(self.ids) if self.ids else [str(k) for k in range(len(self))]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int | None) -> Suite:
        if n is None or n >= len(self):
            return self
        return Suite(
            self.name,
            self.task,
            self.fields,
            self.label_names,
            self.metric,
            self.texts[:n],
            self.labels[:n],
            self.clean,
            self.adversarial,
            self.ids[:n],
        )


def _advglue(name: str) -> Suite:
    key, fields, labels, task = ADVGLUE[name]
    raw = json.loads((data_dir() / "advglue" / "dev.json").read_text())[key]
    texts = [tuple(str(item[f]) for f in fields) for item in raw]
    y = np.array([int(item["label"]) for item in raw])
    clean = "sst2" if name == "advglue-sst2" else None
    ids = tuple(str(item["idx"]) for item in raw)
    return Suite(name, task, fields, labels, "accuracy", texts, y, clean, adversarial=True, ids=ids)


def _sst2() -> Suite:
    frame = read_table(data_dir() / "sst2" / "test.tsv")
    return Suite(
        "sst2",
        SENTIMENT,
        ("sentence",),
        ["negative", "positive"],
        "accuracy",
        [(s,) for s in frame["sentence"].astype(str)],
        frame["label"].to_numpy(dtype=int),
    )


def _flipkart() -> Suite:
    frame = read_table(data_dir() / "flipkart" / "flipkart_review.csv")
    labels = ["negative", "neutral", "positive"]
    y = np.array([labels.index(s) for s in frame["Sentiment"]])
    return Suite(
        "flipkart", SENTIMENT, ("Summary",), labels, "macro_f1", [(s,) for s in frame["Summary"].astype(str)], y
    )


def _ddxplus() -> Suite:
    frame = read_table(data_dir() / "ddxplus" / "ddxplus.csv")
    canon = {d.lower(): d for d in frame["Diagnosis"]}
    names = {d.lower() for s in frame["Diag_Set"] for d in ast.literal_eval(s)} | set(canon)
    names |= {d.lower() for d in DDXPLUS_EXTRA}
    labels = sorted((canon.get(n) or next((d for d in DDXPLUS_EXTRA if d.lower() == n), n)) for n in names)
    index = {n.lower(): i for i, n in enumerate(labels)}
    y = np.array([index[d.lower()] for d in frame["Diagnosis"]])
    return Suite(
        "ddxplus", DIAGNOSIS, ("Information",), labels, "macro_f1", [(s,) for s in frame["Information"].astype(str)], y
    )


def load_anli(path: str | Path, name: str | None = None) -> Suite:
    """ANLI-format jsonl (``context``, ``hypothesis``, ``label`` in e/n/c), for users who have it."""
    path = Path(path)
    if not path.is_file():
        raise EdgefmError(f"anli file {str(path)!r} does not exist; expected a jsonl with context, hypothesis, label")
    mapping = {"e": 0, "n": 1, "c": 2}
    texts, y = [], []
    for k, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        item = json.loads(line)
        missing = [f for f in ("context", "hypothesis", "label") if f not in item]
        if missing or item["label"] not in mapping:
            raise EdgefmError(f"{path.name} line {k + 1}: expected context, hypothesis and label in e/n/c")
        texts.append((str(item["context"]), str(item["hypothesis"])))
        y.append(mapping[item["label"]])
    return Suite(
        name or path.stem,
        NLI3,
        ("context", "hypothesis"),
        ["entailment", "neutral", "contradiction"],
        "accuracy",
        texts,
        np.array(y),
        adversarial=True,
    )


def names() -> list[str]:
    return [*ADVGLUE, "sst2", "flipkart", "ddxplus"]


def load(name: str) -> Suite:
    """A named suite, or ``anli:PATH`` for an ANLI-format file."""
    if name.startswith("anli:"):
        return load_anli(name[len("anli:") :])
    if name in ADVGLUE:
        return _advglue(name)
    table = {"sst2": _sst2, "flipkart": _flipkart, "ddxplus": _ddxplus}
    if name not in table:
        raise EdgefmError(f"--suite {name!r}: unknown; expected one of {', '.join(names())} or anli:PATH")
    return table[name]()
