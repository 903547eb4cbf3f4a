"""Procedural-world render throughput and dataset build time.

Wall-clock figures need an otherwise idle machine; ``frames_per_cpu_s`` (frames per CPU-second of one
single-threaded process) stays meaningful on a shared one, and ``speedup_vs_reference`` compares the renderer
with the frozen reference tracer (``pipelines.world.render_reference``) on the same seeds in one process.

Targets (world issue): on 2 CPU cores, >= 100 frames/s at 64^2, and a 10k-sample multi-view x multi-frame
training set at 64^2 (4 views x 4 frames) built in under 30 minutes. Frames are rendered in batches of one
sample's V x F matrix (16 cameras, one call), as the dataset builder does, over a mix of seeds (all shapes).
The build figures run the builder's own shard function (render, stack, compress, write) in one spawned
process per core, as ``WorldDataset.build`` does: ``frames_per_s_64px_parallel`` is their steady rate once
the processes are up (timed inside the workers, from the first start to the last end), ``startup_s`` the
one-off cost of starting them (interpreter, imports, a warm-up sample), and the 10k estimate is
``startup_s`` plus 10k samples at the steady rate. On a shared machine the wall-clock figures fall with the
load; ``build_frames_per_cpu_s_64px`` and ``dataset_10k_minutes_on_free_cores`` (worker CPU time, start-up
excluded) say what the same build gives on free cores.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

from benchmarks import parse_args, report


def _render_samples(seeds: list[int], resolution: int, reference: bool = False) -> float:
    """CPU seconds to render the 4 x 4 matrices of ``seeds`` at ``resolution`` (one thread)."""
    import numpy as np
    import torch

    from pipelines.world import render_reference
    from pipelines.world.datasets import sample_times, sample_views
    from pipelines.world.grammar import sample_spec
    from renderers.cameras import Cameras

    render = render_reference.render_world if reference else None
    if render is None:
        from pipelines.world.render import render_world as render
    jobs = []
    for seed in seeds:  # cameras and times as render_sample makes them, outside the timing
        cams = sample_views(seed, 4, resolution)
        times = torch.from_numpy(np.tile(sample_times(seed, "matrix", 4), 4))
        jobs.append((sample_spec(seed), Cameras(cams.c2w.repeat_interleave(4, 0), cams.K.repeat_interleave(4, 0),
                                                resolution, resolution), times))
    torch.set_num_threads(1)
    render(*jobs[0])  # warm-up
    cpu = time.process_time()
    for job in jobs:
        render(*job)
    return time.process_time() - cpu


def _warm_worker() -> None:
    """Pool initializer: the builder's own worker set-up, then one sample, so that the timed shards see a
    running worker."""
    from pipelines.world.datasets import _build_worker, render_sample

    _build_worker()
    render_sample(0, "matrix", 64, 4, 4)


def _build_shard(args: tuple) -> tuple[float, float, float]:
    """One shard through the dataset builder's own code; returns its start and end (system-wide clock) and the
    CPU seconds it took."""
    from pipelines.world.datasets import _render_shard

    start, cpu = time.perf_counter(), time.process_time()
    _render_shard(args)
    return start, time.perf_counter(), time.process_time() - cpu


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    samples = 8 if args.quick else 32
    figures = {}
    for resolution in (64, 128):
        n = samples if resolution == 64 else samples // 2
        seeds = list(range(100, 100 + n))
        new, old = [], []
        for _ in range(2 if args.quick else 3):  # interleaved, so both see the same machine load
            new.append(_render_samples(seeds, resolution))
            old.append(_render_samples(seeds, resolution, reference=True))
        figures[f"frames_per_cpu_s_{resolution}px"] = 16 * n / statistics.median(new)
        figures[f"reference_frames_per_cpu_s_{resolution}px"] = 16 * n / statistics.median(old)
        figures[f"speedup_vs_reference_{resolution}px"] = statistics.median(o / f for o, f in zip(old, new))
    workers = os.cpu_count() or 1
    shard_size = 4 if args.quick else 16
    shards = 2 * workers if args.quick else 4 * workers
    seeds = list(range(1000, 1000 + shard_size * shards))
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(os.path.join(tmp, f"shard-{i:05d}.npz"), seeds[i * shard_size:(i + 1) * shard_size], "matrix", 64,
                 4, 4, 32, {}) for i in range(shards)]
        created = time.perf_counter()
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_warm_worker) as pool:
            spans = list(pool.map(_build_shard, jobs))
    first, last = min(s for s, _, _ in spans), max(e for _, e, _ in spans)
    figures["workers"] = workers
    figures["startup_s"] = first - created
    figures["frames_per_s_64px_parallel"] = 16 * len(seeds) / (last - first)
    figures["dataset_10k_4x4_64px_minutes"] = (first - created + 10_000 * (last - first) / len(seeds)) / 60
    # The same build per CPU-second of the workers (render, stack, compress, write): on a shared machine, what
    # ``workers`` free cores would give.
    build_cpu = sum(c for _, _, c in spans)
    figures["build_frames_per_cpu_s_64px"] = 16 * len(seeds) / build_cpu
    figures["dataset_10k_minutes_on_free_cores"] = 10_000 * build_cpu / len(seeds) / workers / 60
    report("world", figures, {"frames_per_s_64px_parallel": (">", 100.0),
                              "dataset_10k_4x4_64px_minutes": ("<", 30.0)}, args.json)


if __name__ == "__main__":
    main()
