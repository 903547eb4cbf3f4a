"""Process-level settings for pure-torch work on a CPU: the allocator, and how OpenMP threads wait.

With glibc's defaults every large tensor comes from a fresh mmap and page faults cost ~1 us per
4 KB page (shared/notes/cpu-performance.md). Keeping freed memory in the heap avoids that (1.3-2.3x).
Call :func:`tune_cpu_allocator` once, before heavy work, in processes that render or train.

OpenMP threads spin for a long while before they sleep (libgomp: 300,000 spins), and that collapses as
soon as another program wants a core: a 4D-fy paper render step with 2 torch threads took 3.9 s next to
one busy single-thread process. :func:`set_openmp_wait_policy` cuts the spin to 3,000 (``GOMP_SPINCOUNT``):
0.42 s there (sleeping at once, ``OMP_WAIT_POLICY=PASSIVE``: 0.36 s). On an idle machine the step is
faster too, 0.21 s against 0.27 s (5 alternating runs): the spinning OpenMP worker had taken a core from
the hash grid's own gather/scatter threads. Small-op work loses a little (the Gaussian fitting test 35.8 s
against 34.0 s), where PASSIVE lost 30 % (44.5 s). It must run before torch is imported (its OpenMP
runtime reads the variables once): ``fourd``, the benchmarks and the test run call it first thing, and the
job workers they start inherit it. The studio does not set it, for its window
nor for its job workers: with short spins in the worker the window's longest event-loop gap was 31-55 ms,
with libgomp's default 20-29 ms (4 alternating runs of ``benchmarks.studio``; the studio already lowers its
workers' priority, so they do not starve the window the way an unrelated program starves a job).
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


def set_openmp_wait_policy(spin_count: int = 3000) -> None:
    """Let OpenMP's idle threads spin only briefly before they sleep (``GOMP_SPINCOUNT``), unless the user
    chose a wait policy or a spin count."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", str(spin_count))
