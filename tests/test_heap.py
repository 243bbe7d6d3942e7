"""Freed heap handed back to the OS between simulated clients (fl/heap.py, ``trim_memory``,
``mmap_threshold_kb``)."""

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


MAPPED = """
import ctypes, ctypes.util, json, sys
from edgefm.fl import heap
fixed = sys.argv[1] == "fixed" and heap.map_large(256)
libc = ctypes.CDLL(ctypes.util.find_library("c"))
names = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in names]
libc.mallinfo2.restype = Info
def maps_of(size):  # memory maps glibc holds while a block of `size` bytes is alive
    before = libc.mallinfo2().hblks
    block = bytearray(size)
    held = libc.mallinfo2().hblks - before
    del block
    return held
big = bytearray(8 << 20)
del big  # freeing a mapped 8 MB block raises glibc's adaptive threshold to 8 MB, unless fixed
print(json.dumps({"fixed": fixed, "1MB": maps_of(1 << 20), "64KB": maps_of(64 << 10)}))
"""


@pytest.mark.skipif(not heap.available(), reason="not glibc")
def test_map_large_keeps_big_blocks_out_of_the_heap():
    # in a fresh process: the setting holds for the rest of the process that makes it
    import json
    import subprocess
    import sys

    def run(mode: str) -> dict:
        out = subprocess.run([sys.executable, "-c", MAPPED, mode], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    adaptive, fixed = run("adaptive"), run("fixed")
    assert adaptive["1MB"] == 0, "by default a 1 MB block comes from the heap once the threshold has adapted"
    assert fixed["fixed"] is True
    assert fixed["1MB"] == 1, "with the threshold fixed at 256 KiB a 1 MB block gets a map of its own"
    assert fixed["64KB"] == 0, "and a 64 KiB block still comes from the heap"
    with pytest.raises(ValueError, match="threshold_kb"):
        heap.map_large(0)


def test_build_fixes_the_threshold_only_when_configured(tiny_overrides, monkeypatch):
    calls = []
    monkeypatch.setattr(heap, "map_large", lambda kb: calls.append(kb) or True)
    for kb in (0, 128):
        build(config.load(None, [*tiny_overrides, f"mmap_threshold_kb={kb}"]))
    assert calls == [128]
    with pytest.raises(config.ConfigError, match="mmap_threshold_kb"):
        config.load(None, ["mmap_threshold_kb=40000"])
