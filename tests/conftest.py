"""Shared fixtures: offline hub, the shared data folder, tiny configs and scenarios."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model.name=tiny_bert",
    "data.max_train=240",
    "data.max_test=80",
    "data.max_length=24",
    "rounds=2",
    "clients=4",
    "train.lr=0.01",
    "train.head_lr=0.01",
]


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    import torch

    torch.set_num_threads(2)


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


@pytest.fixture(scope="session")
def tiny_scenario_factory():
    """Build a tiny-BERT scenario from extra overrides (each call builds a fresh one)."""
    from edgefm import config
    from edgefm.fl.scenario import build

    def make(*extra: str):
        return build(config.load(None, [*TINY, *extra]))

    return make
