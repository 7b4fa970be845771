"""The C allocator's settings for a command that runs a long tensor workload (``onnxdual train``).

glibc's ``malloc`` serves blocks above a dynamic threshold with fresh ``mmap`` calls and gives freed memory
back to the system. A training step allocates and frees the same few megabyte-sized tensors every step, so
each step page-faults (and zeroes) all of that memory again; on the CPU this cost 10-20 % of an r = 10
step of the paper's small network (one thread, batch 50; benchmarks/scaling). Keeping freed blocks in the
process, as PyTorch's performance guide gets by preloading jemalloc or tcmalloc, removes it: the price is a
resident size that stays at its peak until the process ends.

Only a process on Linux with glibc is changed, and only when the user has set no ``MALLOC_*`` variable of
their own (glibc's tunables, which then stay as given)."""

from __future__ import annotations

import ctypes
import os
import sys

#: mallopt's parameter numbers (glibc malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
#: glibc's largest mmap threshold on a 64-bit system (HEAP_MAX_SIZE / 2); blocks above it are rare here
MMAP_THRESHOLD = 32 * 2 ** 20
#: freed memory kept at the top of the heap before any is returned (an int: mallopt takes one)
TRIM_THRESHOLD = 2 ** 30
#: extra heap requested with each growth, so a growing step does not ask the system for every block
TOP_PAD = 256 * 2 ** 20


def keep_freed_blocks() -> bool:
    """Make ``malloc`` keep freed blocks for reuse (see the module docstring); whether it was changed."""
    if not sys.platform.startswith("linux") or any(name.startswith("MALLOC_") for name in os.environ):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD))
    return all(mallopt(param, value) == 1 for param, value in settings)
