"""The job runner: a queue of jobs, each run in its own worker process, with live events.

    runner = JobRunner()
    job = runner.submit(JobSpec.create("toy-fit", "preview"))
    for event in job.events():       # Progress, Preview, SceneUpdate, Artifact, Log, Status
        ...
    job.status, job.result_dir       # "done", <run>/result

Workers are fresh Python processes (``python -m pipelines.jobs.worker``), not forks: a pipeline's
memory, CUDA context and crashes stay out of the caller (the studio, the CLI, a test). One worker is
kept started and idle ("warm") so a job starts without waiting for torch to import. A job runs at
most ``max_parallel`` at a time (1: one GPU job at a time). ``cancel`` asks the pipeline to stop at
its next step (it checkpoints first); a worker that has not stopped after ``cancel_grace_s`` is
killed. A worker that dies on its own (a crash, ``kill -9``, the kernel's out-of-memory killer)
leaves its run ``failed-resumable``.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from pipelines.checkpoints import verify_latest_checkpoint
from pipelines.events import FINISHED_STATUSES, Event, Log, Status
from pipelines.jobs.channel import read_frame
from pipelines.jobs.run_folder import (
    SPEC_FILE,
    RunFolderError,
    RunLock,
    init_run_folder,
    log_event,
    new_run_dir,
    read_spec,
    read_status,
    record_status,
)
from pipelines.jobs.spec import JobSpec

_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])


class PreflightError(ValueError):
    """A pipeline's preflight check refused the job (a model is missing, an input is unusable)."""


class Job:
    """One submitted run. Events arrive on a background thread; read them with :meth:`poll`
    (non-blocking, for a GUI timer) or :meth:`events` (blocking, until the job ends)."""

    def __init__(self, runner: JobRunner, run_dir: Path, spec: JobSpec) -> None:
        self.run_dir = run_dir
        self.spec = spec
        self.status = "queued"
        self.message: str | None = None
        self.result_dir: Path | None = None
        self.pid: int | None = None
        self._runner = runner
        self._queue: queue.Queue[Event] = queue.Queue()
        self._finished = threading.Event()
        self._cancel_requested = False
        self._lock = RunLock(run_dir)

    def __repr__(self) -> str:
        return f"Job({self.run_dir.name!r}, {self.status!r})"

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def poll(self) -> list[Event]:
        """Events received since the last call (never blocks)."""
        out = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Yield events as they arrive until the job has ended (the last one is its Status).
        Raises TimeoutError when ``timeout`` seconds pass first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._finished.is_set() and self._queue.empty():
                return
            wait = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if wait <= 0:
                raise TimeoutError(f"job {self.run_dir.name} did not end within {timeout} s")
            try:
                yield self._queue.get(timeout=wait)
            except queue.Empty:
                continue

    def cancel(self, force: bool = False) -> None:
        """Stop the job: a queued job never starts; a running one checkpoints and stops (``force``:
        is killed at once, keeping its last periodic checkpoint)."""
        self._runner._cancel(self, force)

    def wait(self, timeout: float | None = None) -> str:
        """Block until the job has ended (its worker has exited) or ``timeout``; returns the status."""
        self._finished.wait(timeout)
        return self.status

    # ---------------------------------------------------------------- runner side
    def _receive(self, event: Event) -> None:
        if isinstance(event, Status):
            if event.status == "running":
                self.status = "running"
            elif event.finished:
                self.status = event.status
                self.message = event.message
                self.result_dir = Path(event.result_dir) if event.result_dir else None
        self._queue.put(event)

    def _end(self, status: str, message: str | None = None, write: bool = True) -> None:
        """Record a final status decided by the runner (the worker could not)."""
        event = record_status(self.run_dir, status, message) if write else Status(status, message)
        self._receive(event)
        self._finished.set()


class _Worker:
    """One worker process and the thread that reads its events."""

    def __init__(self, runner: JobRunner) -> None:
        self.runner = runner
        self.job: Job | None = None
        self.ready = threading.Event()
        read_fd, write_fd = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PROJECT_ROOT, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.jobs.worker", str(write_fd)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, pass_fds=(write_fd,), env=env,
            start_new_session=True,  # Ctrl-C in a terminal reaches the runner, which cancels cleanly
        )
        os.close(write_fd)
        lower_priority(self.proc.pid, runner.nice)
        self._events = os.fdopen(read_fd, "rb")
        self._thread = threading.Thread(target=self._read, name=f"fourd-worker-{self.proc.pid}", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, command: dict) -> bool:
        try:
            self.proc.stdin.write((json.dumps(command) + "\n").encode())
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    def _read(self) -> None:
        while (frame := read_frame(self._events)) is not None:
            kind, payload = frame
            if kind == "ready":
                self.ready.set()
            elif kind == "claim" and self.job is not None:
                self.job._lock.release()
            elif kind == "event" and self.job is not None:
                self.job._receive(payload)
        self._events.close()
        self.proc.wait()
        self.runner._worker_exited(self)


def lower_priority(pid: int, nice: int) -> None:
    """Lower process ``pid``'s CPU priority by ``nice`` (best effort: where the OS refuses, it keeps its own)."""
    if nice <= 0:
        return
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: no setpriority (Windows)
        os.setpriority(os.PRIO_PROCESS, pid, os.getpriority(os.PRIO_PROCESS, pid) + nice)
    # A worker has its own session. Where Linux shares CPU time between sessions first (autogroup),
    # only its session's nice value weighs against the window's process, so that one is lowered too.
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))


class JobRunner:
    """Runs jobs in worker processes, ``max_parallel`` at a time, in submission order.

    Args:
        runs_root: where new run folders are created (default: the user's runs folder).
        max_parallel: jobs running at once (1 keeps one GPU job at a time).
        warm_workers: idle workers kept started so that a job starts at once (0 or 1).
        cancel_grace_s: how long a cancelled job may take to checkpoint before it is killed.
        checkpoint_every_steps, checkpoint_every_s: when pipelines checkpoint (whichever first).
        device: "cpu" / "cuda" for the pipelines; default: CUDA when present.
        nice: how much lower than the caller's the workers' CPU priority is (0: the same). A window
            that runs jobs passes 10, so a fit takes the CPU its event loop leaves and never the reverse.
    """

    def __init__(self, runs_root: Path | None = None, max_parallel: int = 1, *, warm_workers: int = 1,
                 cancel_grace_s: float = 30.0, checkpoint_every_steps: int | None = 100,
                 checkpoint_every_s: float | None = 60.0, device: str | None = None, nice: int = 0) -> None:
        from pipelines.paths import runs_dir

        self.nice = max(0, int(nice))
        self.runs_root = Path(runs_root) if runs_root is not None else runs_dir()
        self.max_parallel = max(1, max_parallel)
        self.warm_workers = max(0, min(1, warm_workers))
        self.cancel_grace_s = cancel_grace_s
        self.options = {"checkpoint_every_steps": checkpoint_every_steps,
                        "checkpoint_every_s": checkpoint_every_s, "device": device}
        self._lock = threading.RLock()
        self._queued: list[Job] = []
        self._running: dict[Job, _Worker] = {}
        self._idle: list[_Worker] = []
        self._closed = False
        self.jobs: list[Job] = []
        if self.warm_workers:
            self._idle.append(_Worker(self))

    # ---------------------------------------------------------------- public API
    def submit(self, spec: JobSpec, run_dir: Path | None = None) -> Job:
        """Queue a new run of ``spec`` in ``run_dir`` (default: a new folder under ``runs_root``).

        Runs the pipeline's preflight check first: a missing model or input raises here, before
        anything is queued. Raises :class:`RunFolderError` when ``run_dir`` already holds a run.
        """
        from pipelines.registry import get_pipeline, resolve

        info = get_pipeline(spec.pipeline)
        if info.preflight:
            try:
                resolve(info.preflight)(spec.inputs, spec.config, spec.priors)
            except Exception as err:  # whatever the check raises, the caller gets its one sentence
                raise PreflightError(str(err)) from err
        if run_dir is None:
            run_dir = new_run_dir(self.runs_root, spec)
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        if (run_dir / SPEC_FILE).exists():
            raise RunFolderError(f"'{run_dir}' already holds a run: resume it or choose another folder.")
        job = Job(self, run_dir, spec)
        job._lock.acquire()  # before writing, so a concurrent submit to the same folder fails here
        try:
            job.spec = init_run_folder(run_dir, spec)
        except BaseException:
            job._lock.release()
            raise
        return self._enqueue(job, "queued")

    def resume(self, run_dir: Path) -> Job:
        """Queue an interrupted, cancelled or failed run again; it continues from its last checkpoint."""
        run_dir = Path(run_dir)
        spec = read_spec(run_dir)
        if read_status(run_dir)["status"] == "done":
            raise RunFolderError(f"run '{run_dir}' has already finished; start a new run to generate again.")
        verify_latest_checkpoint(run_dir / "checkpoints")
        job = Job(self, run_dir, spec)
        job._lock.acquire()  # raises when the run is running elsewhere
        return self._enqueue(job, "queued for resume")

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the warm worker has finished importing (True), e.g. before timing a job."""
        with self._lock:
            idle = list(self._idle)
        return all(worker.ready.wait(timeout) for worker in idle)

    def shutdown(self, cancel_running: bool = True) -> None:
        """Cancel queued jobs, cancel (or, with ``cancel_running=False``, wait for) running ones,
        and stop the idle workers."""
        with self._lock:
            self._closed = True
            queued, self._queued = self._queued, []
            running = list(self._running)
            idle, self._idle = self._idle, []
        for job in queued:
            job._lock.release()
            job._end("cancelled", "cancelled before it started.")
        for job in running:
            if cancel_running:
                job.cancel()
        for job in running:
            job.wait()
        for worker in idle:  # idle workers hold nothing worth saving
            self._hard_stop(worker)

    def __enter__(self) -> JobRunner:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # ---------------------------------------------------------------- scheduling
    def _enqueue(self, job: Job, note: str) -> Job:
        record_status(job.run_dir, "queued")
        log_event(job.run_dir, Log(note))
        with self._lock:
            if self._closed:
                job._lock.release()
                raise RuntimeError("the job runner has been shut down")
            self._queued.append(job)
            self.jobs.append(job)
            self._schedule()
        return job

    def _schedule(self) -> None:
        from pipelines.registry import get_pipeline

        with self._lock:
            while self._queued and len(self._running) < self.max_parallel and not self._closed:
                job = self._queued.pop(0)
                worker = self._idle.pop(0) if self._idle and self._idle[0].alive else _Worker(self)
                info = get_pipeline(job.spec.pipeline)
                modules = sorted({info.entry.partition(":")[0], type(job.spec.config).__module__})
                command = {"cmd": "run", "run_dir": str(job.run_dir), "options": self.options,
                           "sys_path": [p for p in sys.path if p], "modules": modules}
                worker.job = job
                job.pid = worker.proc.pid
                self._running[job] = worker  # the runner keeps the run's lock until the worker claims it
                if not worker.send(command):
                    worker.proc.kill()  # _worker_exited reports the failure
                if self._queued and self.warm_workers and not self._idle:
                    self._idle.append(_Worker(self))

    def _cancel(self, job: Job, force: bool = False) -> None:
        with self._lock:
            if job in self._queued:
                self._queued.remove(job)
                job._lock.release()
                job._end("cancelled", "cancelled before it started.")
                return
            worker = self._running.get(job)
            if worker is None:
                return
            if force:
                job._cancel_requested = True
                self._hard_stop(worker)
                return
            if job._cancel_requested:
                return
            job._cancel_requested = True
        worker.send({"cmd": "cancel"})
        timer = threading.Timer(self.cancel_grace_s, self._hard_stop, args=(worker,))
        timer.daemon = True
        timer.start()

    def _hard_stop(self, worker: _Worker) -> None:
        if worker.alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.proc.pid, signal.SIGKILL)

    def _worker_exited(self, worker: _Worker) -> None:
        job = worker.job
        with self._lock:
            if worker in self._idle:
                self._idle.remove(worker)
            if job is not None:
                self._running.pop(job, None)
        if job is not None:
            job._lock.release()  # in case the worker died before claiming it
            if job.status not in FINISHED_STATUSES:
                code = worker.proc.returncode
                if job._cancel_requested:
                    job._end("cancelled", "stopped after the cancel grace period; resume the run to continue "
                                          "from its last checkpoint.")
                else:
                    how = (f"was killed by signal {signal.Signals(-code).name}" if code and code < 0
                           else f"exited with code {code}")
                    message = (f"the worker process {how}; resume the run to continue from its last "
                               f"checkpoint (details in {job.run_dir / 'worker.log'}).")
                    log_event(job.run_dir, Log(message, level="error"))  # before _end: a waiter may read it at once
                    job._end("failed-resumable", message)
            else:
                job._finished.set()
        with self._lock:
            if not self._closed and self.warm_workers and not self._idle and not self._queued:
                self._idle.append(_Worker(self))
            self._schedule()

