"""Judge any model by its answers: a file of example ids and answer texts, scored like a model
edgefm trained (the robustness paper, Wang et al. 2023, judges ChatGPT this way).

The file is a CSV (columns ``idx`` or ``id``, and ``answer`` or ``prediction``) or JSONL (one
object a line with the same keys); ids are the suite's own (AdvGLUE's ``idx``; elsewhere the
example's row number in the suite, from 0). An answer maps to a label when, lower-cased with
punctuation and the words around it stripped to letters, digits and single spaces, it is a
label's name (``not_entailment`` and ``not entailment`` alike), or, on the pair tasks, a GLUE
yes/no answer: QQP yes = duplicate; QNLI and RTE yes = entailment; MNLI yes = entailment, maybe
= neutral, no = contradiction. Anything else (a refusal, ``neutral`` on a binary task) is
unparseable, counts as wrong, and is counted (``unmapped_predictions``).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from edgefm import EdgefmError
from edgefm.robustness.suites import Suite

YES_NO = {  # the GLUE reading of a yes/no answer, by the suite's label names
    ("not_duplicate", "duplicate"): {"yes": "duplicate", "no": "not_duplicate"},
    ("entailment", "not_entailment"): {"yes": "entailment", "no": "not_entailment"},
    ("entailment", "neutral", "contradiction"): {"yes": "entailment", "maybe": "neutral", "no": "contradiction"},
}


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower().replace("_", " ")).split())


def to_label(answer: str, suite: Suite) -> str | None:
    """The suite's label an answer names, or None (unparseable)."""
    said = _norm(answer)
    for name in suite.label_names:
        if said == _norm(name):
            return name
    if len(suite.fields) == 2:
        return YES_NO.get(tuple(suite.label_names), {}).get(said)
    return None


def read_answers(path: str | Path) -> dict[str, str]:
    """id -> answer text from a CSV or JSONL file; one-line errors for what cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise EdgefmError(f"--predictions {str(path)!r} does not exist; expected a CSV or JSONL of idx, answer")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise EdgefmError(f"--predictions {str(path)!r} is not text; expected a CSV or JSONL of idx, answer") from None
    if path.suffix.lower() == ".jsonl":
        rows = []
        for k, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    raise EdgefmError(f"--predictions {path.name} line {k}: not JSON") from None
    elif path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
    else:
        raise EdgefmError(f"--predictions {str(path)!r}: expected a .csv or .jsonl file")
    out: dict[str, str] = {}
    for k, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise EdgefmError(f"--predictions {path.name} row {k}: expected an object with idx and answer")
        key = next((c for c in ("idx", "id") if c in row), None)
        said = next((c for c in ("answer", "prediction") if c in row), None)
        if key is None or said is None:
            raise EdgefmError(
                f"--predictions {path.name} row {k}: expected columns idx (or id) and answer (or prediction)"
            )
        ident = str(row[key]).strip()
        if ident in out:
            raise EdgefmError(f"--predictions {path.name}: id {ident!r} appears twice; expected one answer per example")
        out[ident] = "" if row[said] is None else str(row[said])
    return out


@dataclass
class PredictionsModel:
    """A model known only by its answers to one suite's examples."""

    path: Path
    answers: dict[str, str]
    name: str = ""
    label_names: list[str] | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path) -> PredictionsModel:
        return cls(Path(path), read_answers(path), f"predictions:{Path(path).name}")

    def check(self, full: Suite, judged: Suite) -> None:
        """No answer to an example ``full`` (the whole suite) lacks, and every example of
        ``judged`` (it, or its first ``--limit``) answered."""
        known = set(full.example_ids())
        stray = [i for i in self.answers if i not in known]
        if stray:
            raise EdgefmError(f"--predictions: id {stray[0]!r} is not an example of {full.name}")
        missing = [i for i in judged.example_ids() if i not in self.answers]
        if missing:
            raise EdgefmError(
                f"--predictions: no answer for {len(missing)} of {judged.name}'s {len(judged)} examples "
                f"(first id {missing[0]!r})"
            )

    def applicable(self, suite: Suite) -> str | None:
        return None

    def predict(self, suite: Suite, texts: list[tuple[str, ...]]) -> list[str]:
        return [to_label(self.answers[i], suite) or "" for i in suite.example_ids()]
