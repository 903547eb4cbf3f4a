"""Sharing the matrix sampling of Diffusion² across processes (``sampling.processes``).

The paper's code samples its 21 x 25 matrix on 8 GPUs with a hard-coded layout. Here the job's own
worker is rank 0 of a ``torch.distributed`` group and starts ``processes - 1`` followers itself (spawned
children, so the job runner, the CLI and the studio need nothing special). Every rank runs the same
deterministic sampler (:func:`pipelines.diffusion2.sampler.iterate_matrix`); in each denoising pass rank
``r`` of ``W`` denoises rows / columns ``r, r + W, ...`` and one all-reduce gives everyone the whole
pass, so 1 and N processes give the same matrix. Only rank 0 reports progress, writes checkpoints and
goes on to the reconstruction; followers stop after the last sampling step.

The matrix lives on the CPU between passes, so the group exchanges it over gloo; each rank's prior runs
on its own device (``cuda:r`` when there are enough GPUs, else the job's device). When the job stops
early (cancel, error) rank 0 ends its followers, and a follower that dies makes rank 0's next exchange
fail within ``TIMEOUT`` with one sentence, instead of waiting forever.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
from torch import Tensor

TIMEOUT = timedelta(minutes=10)


@dataclass
class MatrixTask:
    """What a follower needs to rebuild rank 0's sampler exactly (all of it picklable)."""

    config: object                 # Diffusion2Config
    video_prior: str
    multiview_prior: str
    device: str
    orbit_images: Tensor           # [V, S, S, 3], the decoded reference orbit
    video_images: Tensor           # [F, S, S, 3], the decoded reference video
    prompt: str
    known: Tensor                  # [V, F, C, h, w]
    seed: int
    x: Tensor | None               # the state to resume from (None: start from noise)
    start_step: int


def _follower_device(job_device: str, rank: int) -> str:
    if job_device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.device_count() > rank:
        return f"cuda:{rank}"
    return job_device


def _follow(rank: int, world: int, init_file: str, threads: int, task: MatrixTask) -> None:
    """A follower: join the group, sample alongside rank 0, leave after the last step."""
    import torch.distributed as dist

    from pipelines.diffusion2.pipeline import matrix_sampler
    from pipelines.priors.registry import load_prior

    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=TIMEOUT)
    try:
        device = _follower_device(task.device, rank)
        video = load_prior(task.video_prior, device=device)
        multiview = video if task.multiview_prior == task.video_prior else load_prior(task.multiview_prior,
                                                                                        device=device)
        for _ in matrix_sampler(task.config, video, multiview, task.orbit_images, task.video_images, task.prompt,
                                task.known, task.seed, task.x, task.start_step):
            pass
    finally:
        dist.destroy_process_group()


@contextmanager
def sampling_group(processes: int, task: MatrixTask):
    """Within the block this process is rank 0 of a ``processes``-rank group whose followers run ``task``.

    With ``processes`` 1, or inside a group that already exists (e.g. a launch by ``torchrun``), it does
    nothing. Yields a sentence for the run's log, or None.
    """
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if processes <= 1 or (dist.is_available() and dist.is_initialized()):
        yield None
        return
    threads = max(1, torch.get_num_threads() // processes)
    own_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="fourd-d2-group-") as tmp:
        init_file = str(Path(tmp) / "rendezvous")
        ctx = mp.get_context("spawn")
        followers = [ctx.Process(target=_follow, args=(rank, processes, init_file, threads, task), daemon=True,
                                 name=f"diffusion2-rank{rank}") for rank in range(1, processes)]
        for p in followers:
            p.start()
        torch.set_num_threads(threads)
        finished = False
        try:
            dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=0, world_size=processes,
                                    timeout=TIMEOUT)
            try:
                yield (f"sampling the matrix in {processes} processes (rank 0 and {processes - 1} followers, "
                       f"{threads} thread{'s' if threads > 1 else ''} each)")
                finished = True
            except RuntimeError as error:
                dead = [p.name for p in followers if not p.is_alive() and p.exitcode not in (0, None)]
                if dead:
                    raise RuntimeError(f"a sampling process ({dead[0]}) stopped during the matrix; "
                                       f"see the run's worker.log, or set sampling.processes=1") from error
                raise
            finally:
                dist.destroy_process_group()
        finally:
            torch.set_num_threads(own_threads)
            for p in followers:
                if finished:  # followers leave after the last step; give them a moment to do so
                    p.join(timeout=30)
                if p.is_alive():  # rank 0 stopped early (cancel or error): its followers go with it
                    p.terminate()
                    p.join(timeout=5)
