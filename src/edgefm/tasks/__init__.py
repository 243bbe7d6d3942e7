"""Tasks: what a run learns. A task owns its data (documents or labelled texts, their encoding),
its models (built for the run's tokenizer), its loss and its metrics, so the methods and the
runtime stay the same for classification and for language modelling."""

from __future__ import annotations

from edgefm.tasks.base import Task
from edgefm.tasks.classify import Classify
from edgefm.tasks.lm import LanguageModelling

TASKS: dict[str, type[Task]] = {"classify": Classify, "lm": LanguageModelling}


def make(name: str) -> Task:
    """A fresh task object for one run (``cfg.task``)."""
    return TASKS[name]()


__all__ = ["TASKS", "Task", "make"]
