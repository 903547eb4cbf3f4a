"""Stand-ins for the studio tests: an in-process jobs API (``pipelines.jobs`` / ``pipelines.registry``), a
viewer that records what it is asked to show, and the poll loop the window's timer runs.

The jobs stand-in follows the contract in HELPERS.md (submit / resume / poll / cancel / status / result_dir) with
threads instead of worker processes, and runs a tiny real pipeline that yields progress, previews
and a saved scene. The studio code itself imports only the real names; the tests inject these.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from pipelines.config import Config
from pipelines.context import Cancelled, RunContext
from pipelines.events import Preview, Progress, SceneUpdate


@dataclass(frozen=True)
class BallConfig(Config):
    steps: int = 6
    step_s: float = 0.02
    presets: ClassVar[dict] = {"preview": {"steps": 6}, "standard": {"steps": 40, "step_s": 0.05}}


@dataclass(frozen=True)
class Info:
    name: str
    title: str
    config_cls: type
    entry: str
    inputs: tuple[str, ...] = ()


def ball_pipeline(inputs, config: BallConfig, context: RunContext):
    """Grows a bouncing ball step by step; checkpoints are the step counter in the run folder."""
    import time

    from studio.demo_scene import BouncingBall

    checkpoint = context.run_dir / "checkpoint.txt"
    start = int(checkpoint.read_text()) if checkpoint.exists() else 0
    for step in range(start, config.steps):
        context.check_cancelled()
        time.sleep(config.step_s)
        checkpoint.write_text(str(step + 1))
        eta = config.step_s * (config.steps - step)
        yield Progress("fit", step + 1, config.steps, {"loss": 1.0 / (step + 1)}, eta_s=eta)
        yield Preview("views", image=np.full((16, 32, 3), 40 * step % 255, np.uint8), grid=(1, 2), step=step)
    scene_dir = context.run_dir / "scene"
    BouncingBall(count=200, radius=0.2 + 0.02 * len(inputs.get("prompt", ""))).save(scene_dir)
    yield SceneUpdate(path=str(scene_dir), step=config.steps)


class Registry:
    def __init__(self, infos) -> None:
        self.infos = {info.name: info for info in infos}

    def list_pipelines(self):
        return list(self.infos.values())

    def get_pipeline(self, name):
        if name not in self.infos:
            raise KeyError(f"unknown pipeline '{name}'")
        return self.infos[name]


REGISTRY = Registry([
    Info("ball", "Bouncing ball (test)", BallConfig, "tests.studio_jobs_standin:ball_pipeline", ("prompt",)),
    Info("ball-image", "Ball from an image (test)", BallConfig, "tests.studio_jobs_standin:ball_pipeline", ("image",)),
    Info("ball-video", "Ball from a video (test)", BallConfig, "tests.studio_jobs_standin:ball_pipeline", ("video",)),
])


@dataclass
class Job:
    run_dir: Path
    spec: object
    status: str = "queued"
    result_dir: Path | None = None
    _events: queue.Queue = field(default_factory=queue.Queue)
    _cancel: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def poll(self):
        out = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    def cancel(self) -> None:
        self._cancel.set()

    def wait(self, timeout=None) -> str:
        self._thread.join(timeout)
        return self.status


class JobRunner:
    def __init__(self, runs_root: Path, registry: Registry = REGISTRY) -> None:
        self.runs_root = Path(runs_root)
        self.registry = registry
        self.specs: dict[Path, object] = {}

    def submit(self, spec, run_dir: Path | None = None) -> Job:
        run_dir = run_dir or self.runs_root / f"run-{len(self.specs):03d}"
        run_dir.mkdir(parents=True, exist_ok=True)
        self.specs[run_dir] = spec
        job = Job(run_dir, spec)
        job._thread = threading.Thread(target=self._run, args=(job,), daemon=True)
        job._thread.start()
        return job

    def resume(self, run_dir: Path) -> Job:
        return self.submit(self.specs[Path(run_dir)], Path(run_dir))

    def shutdown(self, cancel_running: bool = True) -> None:
        pass

    def _run(self, job: Job) -> None:
        info = self.registry.get_pipeline(job.spec.pipeline)
        context = RunContext(job.run_dir, seed=job.spec.seed, cancel=job._cancel)
        job.status = "running"
        try:
            for event in ball_pipeline(job.spec.inputs, job.spec.config, context):
                job._events.put(event)
                if isinstance(event, SceneUpdate):
                    job.result_dir = Path(event.path)
        except Cancelled:
            job.status = "cancelled"
            return
        del info
        job.status = "done"


@dataclass
class JobSpec:
    """The contract's JobSpec fields (the real one adds TOML round-trips)."""

    pipeline: str
    inputs: dict
    config: object
    seed: int = 0
    preset: str = "preview"
    priors: dict = field(default_factory=dict)


def ensure_jobs_module(monkeypatch) -> None:
    """Make ``from pipelines.jobs import JobSpec`` work before the jobs layer is merged (the real one wins)."""
    import importlib
    import sys
    import types

    try:
        importlib.import_module("pipelines.jobs")
    except ImportError:
        module = types.ModuleType("pipelines.jobs")
        module.JobSpec = JobSpec
        monkeypatch.setitem(sys.modules, "pipelines.jobs", module)


class RecordingRunner:
    """Takes submitted specs without running them (for tests about what the studio submits)."""

    def __init__(self) -> None:
        self.specs = []

    def submit(self, spec, run_dir=None):
        self.specs.append(spec)

        class Job:
            status = "queued"
            run_dir = None

            def poll(self):
                return []

        return Job()

    def shutdown(self, cancel_running=True) -> None:
        pass


class RecordingViewer:
    """Records what the model asks a viewer to show (the real Viewer is tested in test_studio_viewer)."""

    def __init__(self) -> None:
        self.shown, self.times, self.cameras, self.labels = [], [], [], []

    def show(self, scene, t):
        self.shown.append((scene, t))

    def set_time(self, t):
        self.times.append(t)

    def set_camera(self, preset):
        if preset not in ("front", "side", "top", "turntable", "reset"):
            raise ValueError(f"Unknown camera preset '{preset}'.")
        self.cameras.append(preset)

    def set_label(self, text):
        self.labels.append(text)


def poll_until(model, predicate, timeout: float = 20.0) -> bool:
    """Poll the model's jobs (as the window's timer does) until ``predicate()``; False on timeout."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model.poll_jobs()
        if predicate():
            return True
        time.sleep(0.02)
    return False


def finish(model, view, timeout: float = 20.0) -> None:
    """Poll until the job of ``view`` is done, and once more for what it sent last."""
    poll_until(model, lambda: view.status == "done", timeout)
    model.poll_jobs()
    assert view.status == "done"
