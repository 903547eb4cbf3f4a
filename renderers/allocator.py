"""Process-level settings for pure-torch work on a CPU: the allocator, and how OpenMP threads wait.

With glibc's defaults every large tensor comes from a fresh mmap and page faults cost ~1 us per
4 KB page (shared/notes/cpu-performance.md). Keeping freed memory in the heap avoids that (1.3-2.3x).
Call :func:`tune_cpu_allocator` once, before heavy work, in processes that render or train.

OpenMP threads that spin while they wait (libgomp's default) collapse as soon as another program wants
a core: a 4D-fy paper render step with 2 torch threads took 3.9 s next to one busy single-thread
process and 0.36 s with sleeping waits, which cost nothing measurable on an idle machine (0.23 s
both). :func:`set_openmp_wait_policy` must run before torch is imported (its OpenMP runtime reads the
variable once); the entry points call it first thing, and workers they spawn inherit it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_done = False


def tune_cpu_allocator(trim_threshold: int = 1 << 30) -> bool:
    """Stop glibc from serving large blocks with mmap and from trimming the heap below 1 GB.

    Returns True when applied (Linux with glibc); a no-op elsewhere and when ``FOURD_NO_MALLOPT`` is
    set. Idempotent.
    """
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("FOURD_NO_MALLOPT"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1
    except (OSError, AttributeError):
        return False
    _done = ok
    return ok


def set_openmp_wait_policy(policy: str = "PASSIVE") -> None:
    """Make OpenMP's idle threads sleep instead of spin (``OMP_WAIT_POLICY``), unless the user set it."""
    os.environ.setdefault("OMP_WAIT_POLICY", policy)
