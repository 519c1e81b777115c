"""Large CPU buffers kept in malloc's heap for reuse instead of handed back to the OS after every operation.

torch's CPU allocator caches nothing: each tensor is a malloc and a free. glibc serves a buffer over its mmap
threshold (128 KB to 32 MB) from fresh pages and unmaps it when freed, so every activation of a document batch
(tens of MB each) is page-faulted in and zero-filled by the kernel anew. Measured by benchmarks.cpu_paths (2 cores,
bfloat16): the sample's 120 longest docstrings encoded 1.35x as fast with it, their page faults 3.3 million -> 68
thousand, the same vectors. glibc has no switch for this but `mallopt`, hence ctypes here.
"""

from __future__ import annotations

import ctypes
import platform

M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
M_TOP_PAD = -2
M_MMAP_MAX = -4
TOP_PAD = 64 << 20  # the heap grows by this much more than asked: without it every other large buffer faulted in
_kept = False


def keep_freed_memory() -> bool:
    """Make glibc's malloc serve large buffers from its heap and keep freed ones for the next (the process's peak
    memory stays reserved); True once set, False where the C library is not glibc. Process-wide and idempotent."""
    global _kept
    if _kept:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)  # the C library this process already runs on
    settings = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1), (M_TOP_PAD, TOP_PAD))
    _kept = all(libc.mallopt(option, value) == 1 for option, value in settings)
    return _kept
