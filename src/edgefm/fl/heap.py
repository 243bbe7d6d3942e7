"""Hand the heap that finished clients freed back to the operating system.

Simulating many clients in one process trains them one after another on one shared model. Each
client's activations, gradients and optimizer state are freed when it finishes, but glibc's
allocator keeps the pages, and as batch shapes vary from client to client the kept heap
fragments and grows: measured on MiniLM + LoRA, about 4-7 MB per client, so a process that
simulates 1,000 clients peaked at 1.8x the memory of one (``benchmarks/results/client_memory.md``).
``malloc_trim(0)`` returns every free page of every arena; the next client faults its pages in
again, which costs time (reported beside the memory in that benchmark). Where the C library is
not glibc there is nothing to call and :func:`trim` does nothing.

:func:`map_large` attacks the same growth at its source. glibc serves a block of at least
``M_MMAP_THRESHOLD`` bytes from a memory map of its own, unmapped (so returned) when freed; but
by default the threshold adapts, rising to the size of every mapped block freed (up to 32 MB), so
after the first few batches the activations of a transformer come from the heap and fragment it.
Fixing the threshold (``mallopt``, which also stops the adapting, and so keeps the heap's top
trimmed at glibc's 128 KiB default) keeps blocks above it out of the heap for the whole process,
except where a free chunk of the heap already fits one; the price is the same, a page fault per
page of every such block (measured side by side in ``benchmarks/results/client_memory.md``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _libc(name: str, argtypes: tuple, restype=ctypes.c_int):
    """The C library's function ``name``, or None where there is none (musl, macOS, Windows)."""
    lib = ctypes.util.find_library("c")
    if lib is None:
        return None
    try:
        fn = getattr(ctypes.CDLL(lib), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = list(argtypes), restype
    return fn


def _malloc_trim():
    return _libc("malloc_trim", (ctypes.c_size_t,))


def _mallopt():
    return _libc("mallopt", (ctypes.c_int, ctypes.c_int))


M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MAX_THRESHOLD_KB = 32 * 1024  # glibc's ceiling on 64-bit systems (HEAP_MAX_SIZE / 2)


def map_large(threshold_kb: int) -> bool:
    """Serve every allocation of at least ``threshold_kb`` KiB from its own memory map, for the rest
    of this process (glibc; elsewhere nothing happens and False is returned)."""
    if not 0 < threshold_kb <= MAX_THRESHOLD_KB:
        raise ValueError(f"threshold_kb: {threshold_kb}; expected 1..{MAX_THRESHOLD_KB}")
    fn = _mallopt()
    return bool(fn(M_MMAP_THRESHOLD, threshold_kb * 1024)) if fn is not None else False


def available() -> bool:
    """Whether this process's C library can return freed heap (glibc)."""
    return _malloc_trim() is not None


def trim() -> bool:
    """Return the allocator's free pages to the OS; True if any were released."""
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False
