"""Speed and memory targets, one script per target area.

Convention: ``benchmarks/NAME.py`` takes ``--quick`` (seconds on a CPU) and ``--json PATH``, prints a
table, and writes ``{"name", "device", "figures", "targets", "met"}`` through :func:`report`.
``python -m benchmarks`` (``make bench``) runs them all and prints target against measured.

Absolute figures mean something only on an idle machine. Where the kernel groups processes by session
(``/proc/sys/kernel/sched_autogroup_enabled`` = 1, as on the 2-core development machines), ``nice`` does not
keep a job started from another terminal off a benchmark's cores: each session gets an equal share. Compare
two versions by alternating runs of both in one sitting and report the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from renderers.allocator import set_openmp_wait_policy

# the compute benchmarks measure what `fourd` runs (set before any of them loads torch); the studio benchmark
# measures the studio, which keeps libgomp's default for its window and its job workers
if "benchmarks.studio" not in getattr(sys, "orig_argv", ()):
    set_openmp_wait_policy()

OPS = {"<": lambda a, b: a < b, ">": lambda a, b: a > b}


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a reduced run that takes seconds on a CPU")
    parser.add_argument("--json", type=Path, help="write the result as JSON to this path")
    return parser.parse_args()


def device_name() -> str:
    import platform

    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in seconds (these machines are noisy: never trust one timing)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report(name: str, figures: dict[str, float], targets: dict[str, tuple[str, float]],
           json_path: Path | None = None) -> dict:
    """Print a table of figures against targets and optionally write the JSON record."""
    met = {k: OPS[op](figures[k], v) for k, (op, v) in targets.items() if k in figures}
    record = {
        "name": name,
        "device": device_name(),
        "figures": figures,
        "targets": {k: {"op": op, "value": v} for k, (op, v) in targets.items()},
        "met": met,
    }
    print(f"\n{name} ({record['device']})")
    print(f"{'metric':<40} {'measured':>12} {'target':>12}  met")
    for key, value in figures.items():
        target = targets.get(key)
        target_s = f"{target[0]} {target[1]:g}" if target else ""
        met_s = {True: "yes", False: "NO"}.get(met.get(key), "")
        print(f"{key:<40} {value:>12.4g} {target_s:>12}  {met_s}")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(record, indent=2))
    return record
