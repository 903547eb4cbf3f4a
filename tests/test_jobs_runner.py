"""The job runner with real worker processes and the toy pipeline: events, cancel, hard stop,
kill -9 and resume, the queue, folder ownership, corrupt checkpoints and out-of-memory errors."""

import os
import signal
import time

import numpy as np
import pytest
import torch

from pipelines.checkpoints import CheckpointError, list_checkpoints
from pipelines.events import Log, Preview, Progress, SceneUpdate, Status
from pipelines.jobs import JobRunner, JobSpec, RunFolderError, list_runs, read_events, run_info
from pipelines.jobs.run_folder import init_run_folder, write_status
from pipelines.jobs.worker import execute_job
from renderers.scene import load_scene
from renderers.voxels import VoxelScene

TINY = {"steps": 12, "image_size": 12, "views_per_step": 1, "samples_per_ray": 12, "resolution": 10,
        "preview_every": 6, "preview_size": 16, "scene_every": 6}


def _spec(**overrides):
    return JobSpec.create("toy-fit", overrides={**TINY, **overrides})


def _until(job, predicate, timeout=120):
    for event in job.events(timeout=timeout):
        if predicate(event):
            return event
    raise AssertionError(f"the job ended ({job.status}: {job.message}) before the awaited event")


def test_cancel_is_answered_within_two_seconds_and_resume_continues_from_the_checkpoint(tmp_path):
    with JobRunner(tmp_path, checkpoint_every_steps=None, checkpoint_every_s=None, device="cpu") as runner:
        job = runner.submit(_spec(steps=10_000, step_delay_s=0.02, preview_every=10_000, scene_every=10_000))
        last = _until(job, lambda e: isinstance(e, Progress) and e.step >= 3)
        start = time.monotonic()
        job.cancel()
        _until(job, lambda e: isinstance(e, Status) and e.finished, timeout=30)
        latency = time.monotonic() - start
        assert job.wait(30) == "cancelled"
        assert latency < 2.0, f"cancel took {latency:.2f} s"
        [ckpt] = list_checkpoints(job.run_dir / "checkpoints")
        saved_step = int(ckpt.stem.split("-")[1])
        assert saved_step >= last.step
        assert run_info(job.run_dir).status == "cancelled"

        again = runner.resume(job.run_dir)
        first = _until(again, lambda e: isinstance(e, Progress))
        assert first.step == saved_step + 1
        again.cancel()
        assert again.wait(60) == "cancelled"


def test_a_job_that_ignores_cancel_is_stopped_after_the_grace_period(tmp_path):
    with JobRunner(tmp_path, warm_workers=0, cancel_grace_s=0.5, device="cpu") as runner:
        job = runner.submit(_spec(step_delay_s=120.0))  # one step takes two minutes
        _until(job, lambda e: isinstance(e, Status) and e.status == "running")
        start = time.monotonic()
        job.cancel()
        assert job.wait(60) == "cancelled"
        assert time.monotonic() - start < 30
        assert "grace period" in job.message


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    with JobRunner(tmp_path, max_parallel=2, warm_workers=0, checkpoint_every_steps=3, device="cpu") as runner:
        reference = runner.submit(_spec())
        victim = runner.submit(_spec(step_delay_s=0.15))  # the delay changes timing only, not the maths
        _until(victim, lambda e: isinstance(e, Progress) and e.step >= 7)
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(60) == "failed-resumable"
        assert "SIGKILL" in victim.message
        assert run_info(victim.run_dir).status == "failed-resumable"
        assert any(getattr(e, "level", "") == "error" for e in read_events(victim.run_dir))
        resumed = runner.resume(victim.run_dir)
        assert resumed.wait(180) == "done", resumed.message
        assert reference.wait(180) == "done", reference.message
    a, b = load_scene(reference.result_dir), load_scene(resumed.result_dir)
    assert torch.allclose(a.grid, b.grid, atol=1e-6, rtol=0), (a.grid - b.grid).abs().max()


def test_queued_jobs_run_one_at_a_time_to_done_with_previews_scenes_log_and_result(tmp_path):
    with JobRunner(tmp_path, device="cpu") as runner:
        first = runner.submit(_spec())
        second = runner.submit(_spec(steps=2))
        third = runner.submit(_spec())
        assert second.status == third.status == "queued"
        with pytest.raises(RunFolderError, match="already holds a run"):
            runner.submit(_spec(), run_dir=first.run_dir)
        events = [_until(first, lambda e: isinstance(e, Progress))]
        with pytest.raises(RunFolderError, match="in use"):
            runner.resume(first.run_dir)
        third.cancel()
        assert third.wait(5) == "cancelled"
        events += list(first.events(timeout=180))
        assert first.wait(30) == "done" and second.wait(180) == "done"
    assert len({first.run_dir, second.run_dir, third.run_dir}) == 3

    # everything the first job sent, and its run folder
    assert [e.step for e in events if isinstance(e, Progress)] == list(range(1, 13))
    assert all(np.isfinite(e.metrics["loss"]) for e in events if isinstance(e, Progress))
    assert [e.status for e in events if isinstance(e, Status)] == ["done"]
    previews = [e for e in events if isinstance(e, Preview)]
    assert [p.step for p in previews] == [6, 12]
    assert previews[0].image.dtype == np.uint8 and previews[0].image.shape == (32, 48, 3)
    assert os.path.isfile(previews[0].path)
    updates = [e for e in events if isinstance(e, SceneUpdate)]
    assert len(updates) == 1 and isinstance(load_scene(updates[0].path), VoxelScene)
    result = load_scene(first.result_dir)
    assert isinstance(result, VoxelScene) and result.resolution == (10, 10, 10) and result.frames == 3
    pipeline_events = lambda evs: [e.to_record() for e in evs if not isinstance(e, (Status, Log))]  # noqa: E731
    assert pipeline_events(read_events(first.run_dir)) == pipeline_events(events)
    listed = {info.run_dir: info for info in list_runs(tmp_path)}
    assert [listed[j.run_dir].status for j in (first, second, third)] == ["done", "done", "cancelled"]
    assert listed[first.run_dir].spec == first.spec
    assert listed[first.run_dir].thumbnail.name.endswith("000012.png")

    # the queue: the second job started only after the first had finished; the third never ran
    first_done = next(e.time for e in read_events(first.run_dir) if isinstance(e, Status) and e.status == "done")
    second_running = next(e.time for e in read_events(second.run_dir)
                          if isinstance(e, Status) and e.status == "running")
    assert second_running >= first_done
    assert not any(isinstance(e, Status) and e.status == "running" for e in read_events(third.run_dir))


def test_resuming_from_a_corrupt_checkpoint_is_a_clear_error(tmp_path):
    run = tmp_path / "run"
    init_run_folder(run, _spec())
    write_status(run, "failed-resumable")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "step-00000006.safetensors").write_bytes(b"\x00" * 100)
    with JobRunner(tmp_path, warm_workers=0) as runner, \
            pytest.raises(CheckpointError, match="step-00000006.safetensors' is corrupt"):
        runner.resume(run)
    write_status(run, "done")
    with JobRunner(tmp_path, warm_workers=0) as runner, pytest.raises(RunFolderError, match="already finished"):
        runner.resume(run)


def test_running_out_of_memory_names_the_setting_to_lower(tmp_path):
    run = tmp_path / "run"
    # 10^6 x 10^6 pixels: no machine can allocate that, so the first allocation fails at once
    init_run_folder(run, _spec(image_size=1_000_000))
    seen = []
    assert execute_job(run, emit=seen.append, device="cpu") == "failed"
    message = seen[-1].message
    assert "ran out of memory" in message and "'image_size'" in message and "--set image_size=500000" in message


_PARENT = """
import sys, time
from pipelines.jobs import JobRunner, JobSpec
runner = JobRunner(sys.argv[1], warm_workers=0, device="cpu", checkpoint_every_steps=None, checkpoint_every_s=None)
job = runner.submit(JobSpec.create("toy-fit", overrides={"steps": 100000, "step_delay_s": 0.02, "image_size": 12,
                                                         "samples_per_ray": 12, "resolution": 10}))
for event in job.events():
    if getattr(event, "step", 0) >= 2:
        print(job.run_dir, flush=True)
        time.sleep(600)
"""


@pytest.mark.slow
def test_when_the_runner_process_dies_its_worker_checkpoints_and_stops(tmp_path):
    import subprocess
    import sys

    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    run_dir = parent.stdout.readline().strip()
    parent.kill()  # like a crashed studio: the worker sees its stdin close
    parent.wait()
    deadline = time.monotonic() + 30
    while run_info(run_dir).status != "cancelled" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert run_info(run_dir).status == "cancelled"
    assert list_checkpoints(f"{run_dir}/checkpoints")


def test_workers_can_run_at_a_lower_cpu_priority_than_the_caller(tmp_path):
    """A window's runner lowers its workers' priority so that a fit never starves the event loop."""
    with JobRunner(tmp_path, device="cpu", nice=5) as runner:
        (worker,) = runner._idle
        assert os.getpriority(os.PRIO_PROCESS, worker.proc.pid) == os.getpriority(os.PRIO_PROCESS, 0) + 5
    with JobRunner(tmp_path / "plain", device="cpu") as runner:
        (worker,) = runner._idle
        assert os.getpriority(os.PRIO_PROCESS, worker.proc.pid) == os.getpriority(os.PRIO_PROCESS, 0)
