"""Keeps the host memory a training step frees inside the process, for the next step to reuse.

glibc's malloc serves each large allocation (from 128 KB up, rising with use to 32 MB; always
above 32 MB) with a fresh `mmap` and gives it back to the kernel on free. A training step on the
CPU allocates the same large tensors every step: at the pretrain benchmark's shape (batch 8 x
256 tokens, vocabulary 8192) the logits and their gradient are 64 MB each. So every step touches
fresh pages, and the kernel zero-fills each one on first touch: 77,000 page faults a step there,
12 % of an eager step and 7 % of a compiled one (bench/RESULTS.md). With mmap and heap trimming
off, freed blocks stay in malloc's heap and the next step takes them again, as PyTorch's caching
allocator does for GPU memory. The cost is the same as there: the process holds its peak host
memory until it exits.
"""

from __future__ import annotations

import ctypes
import os

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (mallopt's parameters are glibc's), else None."""
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION")  # "glibc 2.36"; None or an error elsewhere
    except (ValueError, OSError, AttributeError):
        return None
    return ctypes.CDLL("libc.so.6") if version and version.startswith("glibc") else None


def cache_host_memory() -> bool:
    """From now on in this process, no large allocation is handed back to the kernel: mmap off
    (every block comes from the heap) and trimming off (the heap never shrinks). Whether it
    applied: False off glibc, where the C library's own policy stays."""
    libc = glibc()
    if libc is None:
        return False
    # mallopt returns 1 on success; -1 for M_TRIM_THRESHOLD disables trimming (man mallopt)
    return libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, -1) == 1
