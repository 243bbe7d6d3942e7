"""Freed heap handed back to the OS between simulated clients (fl/heap.py, ``trim_memory``)."""

import os

import pytest

from edgefm import config
from edgefm.fl import heap
from edgefm.fl.scenario import build
from edgefm.fl.simulation import Engine


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not heap.available(), reason="the C library has no malloc_trim (not glibc)")
def test_trim_returns_freed_fragmented_heap():
    # 1 KB blocks go to malloc (above pymalloc's 512 bytes); keeping one in 64 alive leaves free
    # whole pages between them that glibc keeps until it is asked to trim
    blocks = [bytes(1000) for _ in range(150_000)]
    kept = blocks[::64]
    del blocks
    before = rss_mb()
    assert heap.trim()
    assert rss_mb() < before - 50, "about 140 MB of free pages should go back"
    assert len(kept) > 0


def test_the_engine_trims_after_each_client_only_when_asked(tiny_overrides, monkeypatch):
    calls = []
    monkeypatch.setattr(heap, "trim", lambda: calls.append(1) or True)
    for on in (False, True):
        calls.clear()
        cfg = config.load(None, [*tiny_overrides, "algorithm.name=local", f"trim_memory={on}"])
        Engine(build(cfg)).run()
        clients, rounds = cfg.clients, cfg.rounds
        # once after each client's training and once after each client's evaluation
        assert len(calls) == (2 * clients * rounds if on else 0)
