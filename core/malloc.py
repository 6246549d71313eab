"""Keep freed memory in the process instead of handing it back to the kernel after every step.

A training step (or an encoder batch) allocates its activations, frees them all at the end and
allocates the same sizes again in the next step. With glibc's default thresholds the heap is
trimmed once the freed top exceeds twice the largest chunk ever freed from ``mmap``, so each step
returns tens of megabytes with ``brk`` and page-faults them back in (zeroed) in the next one
(bench/README.md has what that costs the CLIP trainer).

``retain_freed_memory()`` fixes the thresholds instead of leaving them to chance: blocks up to
32 MiB come from the heap, and the heap is trimmed only when 256 MiB lie free at its top. The
price is that a process keeps up to that much freed memory. Only glibc has ``mallopt``; under
another C library, with a preloaded allocator (jemalloc, tcmalloc, mimalloc) or when the user set
glibc's thresholds (``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TOP_PAD_``,
``MALLOC_MMAP_MAX_`` or ``glibc.malloc.*`` in ``GLIBC_TUNABLES``), nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD = 256 << 20
MMAP_THRESHOLD = 32 << 20  # glibc's own upper bound for the dynamic threshold (64-bit)

_USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


def retain_freed_memory() -> bool:
    """Set glibc's trim and mmap thresholds (see the module's docstring); True if they were set."""
    if not sys.platform.startswith("linux") or "malloc" in os.environ.get("LD_PRELOAD", "").lower():
        return False  # jemalloc, tcmalloc, mimalloc: another allocator, its own policy
    if any(name in os.environ for name in _USER_SETTINGS) or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False  # the user chose glibc's thresholds
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
