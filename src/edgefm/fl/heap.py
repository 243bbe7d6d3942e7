"""Hand the heap that finished clients freed back to the operating system.

Simulating many clients in one process trains them one after another on one shared model. Each
client's activations, gradients and optimizer state are freed when it finishes, but glibc's
allocator keeps the pages, and as batch shapes vary from client to client the kept heap
fragments and grows: measured on MiniLM + LoRA, about 4-7 MB per client, so a process that
simulates 1,000 clients peaked at 1.8x the memory of one (``benchmarks/results/client_memory.md``).
``malloc_trim(0)`` returns every free page of every arena; the next client faults its pages in
again, which costs time (reported beside the memory in that benchmark). Where the C library is
not glibc there is nothing to call and :func:`trim` does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # musl, macOS, Windows: no malloc_trim
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def available() -> bool:
    """Whether this process's C library can return freed heap (glibc)."""
    return _malloc_trim() is not None


def trim() -> bool:
    """Return the allocator's free pages to the OS; True if any were released."""
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False
