"""The job worker: runs one pipeline in its own process and streams its events to the runner.

Started by :class:`pipelines.jobs.runner.JobRunner` as ``python -m pipelines.jobs.worker FD``: it
imports torch and the pipeline layer, says ``ready`` on the event pipe ``FD``, then waits on stdin
for one ``run`` command (so a warm worker starts a job without paying for imports). During the run,
``{"cmd": "cancel"}`` on stdin asks the pipeline to stop at its next step; stdin closing (the
runner's process died) does the same. Events travel as length-prefixed pickles of event objects
between two processes of this program (never from files).

:func:`execute_job` is the part that does the work; it also runs in-process (benchmarks, tests).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.jobs.channel import write_frame

KEEP_SCENE_UPDATES = 3


# -------------------------------------------------------------------- running one job
def out_of_memory_message(err: BaseException, info, config, on_gpu: bool) -> str | None:
    """One sentence naming the setting to lower when ``err`` is an out-of-memory error, else None."""
    import torch

    text = str(err)
    is_oom = (isinstance(err, (torch.OutOfMemoryError, MemoryError))
              or (isinstance(err, RuntimeError) and ("out of memory" in text.lower()
                                                    or "can't allocate memory" in text)))
    if not is_oom:
        return None
    where = "the GPU" if on_gpu or isinstance(err, torch.OutOfMemoryError) else "the computer"
    hint = getattr(info, "oom_hint", None)
    if hint:
        value = config
        for part in hint.split("."):
            value = getattr(value, part, None)
        example = f" (now {value}; e.g. --set {hint}={value // 2})" if isinstance(value, int) else ""
        return f"{where} ran out of memory: lower '{hint}'{example} or choose a smaller preset."
    return f"{where} ran out of memory: choose a smaller preset."


def execute_job(run_dir: str | Path, *, cancel=None, emit: Callable[[Any], None] = lambda event: None,
                device: str | None = None, checkpoint_every_steps: int | None = 100,
                checkpoint_every_s: float | None = 60.0, keep_checkpoints: int = 2, lock_wait_s: float = 0.0) -> str:
    """Run the job stored in ``run_dir`` to its end; returns the final status.

    Takes the run's lock for the duration. Saves preview images and scene updates into the run
    folder, appends every event to the log, passes each event (with paths filled in) to ``emit``,
    and saves the scene the pipeline returns as ``result/``. The pipeline resumes from the last
    checkpoint by itself (:meth:`RunContext.last_checkpoint`).
    """
    from pipelines.atomic_files import DiskWriteError
    from pipelines.checkpoints import CheckpointError
    from pipelines.config import ConfigError
    from pipelines.context import Cancelled, RunContext, default_device
    from pipelines.events import Artifact, Log, Preview, SceneUpdate
    from pipelines.jobs.run_folder import RunLock, log_event, read_spec, record_status, resolve_inputs
    from pipelines.registry import get_pipeline, resolve

    run_dir = Path(run_dir)
    cpu_start = time.process_time()
    lock = RunLock(run_dir).acquire(lock_wait_s)
    info = config = None
    context = None
    try:
        try:
            spec = read_spec(run_dir)
            info = get_pipeline(spec.pipeline)
            config = spec.config
            entry = resolve(info.entry)
        except (ConfigError, ValueError, ImportError, AttributeError) as err:
            emit(record_status(run_dir, "failed", f"the run cannot start: {err}"))
            return "failed"
        context = RunContext(run_dir, spec.seed, device or default_device(), cancel or threading.Event(),
                             dict(spec.priors), checkpoint_every_steps, checkpoint_every_s, keep_checkpoints)
        emit(record_status(run_dir, "running", pid=os.getpid()))
        state = {"scene_dir": None, "result": None}

        def forward(event) -> None:
            if isinstance(event, Preview) and event.image is not None and event.path is None:
                event.path = str(_save_preview(run_dir, event))
            elif isinstance(event, SceneUpdate) and event.scene is not None:
                if event.path is None:
                    event.path = str(_save_scene_update(run_dir, event.scene, event.step))
                event.scene = None  # scenes cross processes as folders, never pickled
                state["scene_dir"] = event.path
            elif isinstance(event, Artifact) and event.kind == "scene":
                state["result"] = event.path
            log_event(run_dir, event)
            emit(event)

        try:
            iterator = entry(resolve_inputs(run_dir, spec), config, context)
            while True:
                try:
                    event = next(iterator)
                except StopIteration as stop:
                    final = stop.value
                    break
                forward(event)
            result_dir = state["result"]
            if final is not None and hasattr(final, "save"):
                result_dir = str(_save_scene_atomically(final, context.result_dir))
                forward(Artifact("scene", result_dir))
            elif result_dir is None and state["scene_dir"] is not None:
                result_dir = str(_publish_copy(Path(state["scene_dir"]), context.result_dir))
                forward(Artifact("scene", result_dir))
            emit(record_status(run_dir, "done", result_dir=result_dir, cpu_s=time.process_time() - cpu_start))
            return "done"
        except Cancelled:
            emit(record_status(run_dir, "cancelled", "cancelled; resume the run to continue from its checkpoint."))
            return "cancelled"
    except (DiskWriteError, CheckpointError) as err:
        status = "failed-resumable" if isinstance(err, DiskWriteError) else "failed"
        return _fail(run_dir, status, str(err), emit)
    except BaseException as err:  # the worker reports every failure, then exits
        on_gpu = context is not None and context.device.type == "cuda"
        message = out_of_memory_message(err, info, config, on_gpu)
        if message is None:
            message = f"the pipeline failed: {type(err).__name__}: {err}"
        log_event(run_dir, Log(traceback.format_exc(), level="debug"))
        return _fail(run_dir, "failed", message, emit)
    finally:
        lock.release()


def _fail(run_dir: Path, status: str, message: str, emit) -> str:
    from pipelines.events import Log
    from pipelines.jobs.run_folder import log_event, record_status

    log_event(run_dir, Log(message, level="error"))
    try:
        emit(record_status(run_dir, status, message))
    except OSError:  # the disk may still be full: the runner reports the status it was sent
        from pipelines.events import Status

        emit(Status(status, message))
    return status


def _save_preview(run_dir: Path, event) -> Path:
    import io
    import re

    from PIL import Image

    from pipelines.atomic_files import write_atomic

    name = re.sub(r"[^A-Za-z0-9_-]+", "-", event.name).strip("-") or "preview"
    buffer = io.BytesIO()
    Image.fromarray(event.image).save(buffer, format="PNG", compress_level=1)
    suffix = f"-{event.step:06d}" if event.step is not None else ""
    return write_atomic(run_dir / "previews" / f"{name}{suffix}.png", buffer.getvalue())


def _save_scene_update(run_dir: Path, scene, step: int | None) -> Path:
    root = run_dir / "scenes"
    target = root / f"step-{step or 0:08d}"
    _save_scene_atomically(scene, target)
    for old in sorted(p for p in root.iterdir() if p.is_dir() and ".tmp" not in p.name)[:-KEEP_SCENE_UPDATES]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _save_scene_atomically(scene, target: Path) -> Path:
    """Save into a temporary folder, then swap it in, so readers never see half a scene."""
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    scene.save(tmp)
    if target.exists():
        old = target.with_name(f"{target.name}.old-{os.getpid()}")
        target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(target)
    return target


def _publish_copy(source: Path, target: Path) -> Path:
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


# -------------------------------------------------------------------- process entry
class _CancelFlag:
    """Set by a cancel command, or when stdin closes because the runner is gone."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        self._event.set()


def _listen(stdin, flag: _CancelFlag) -> None:
    for line in stdin:
        try:
            if json.loads(line).get("cmd") == "cancel":
                flag.set()
        except ValueError:
            continue
    flag.set()


def _warm_up() -> None:
    """The imports every job needs, done before a job arrives so that a warm worker starts at once.
    Creating the first torch optimiser imports torch._dynamo (seconds on a small CPU). A worker
    renders and trains, so it also gets the faster CPU allocator settings."""
    import torch

    import pipelines.context  # noqa: F401
    import pipelines.jobs.run_folder  # noqa: F401
    from renderers.allocator import tune_cpu_allocator

    tune_cpu_allocator()

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    channel = os.fdopen(int(argv[0]), "wb", buffering=0)
    lock = threading.Lock()

    def send(kind: str, payload: Any = None) -> None:
        with lock:
            write_frame(channel, (kind, payload))

    _warm_up()

    send("ready", os.getpid())
    line = sys.stdin.readline()
    if not line:
        return 0
    command = json.loads(line)
    for entry in command.get("sys_path", []):
        if entry not in sys.path:
            sys.path.append(entry)
    for module in command.get("modules", []):
        __import__(module)
    run_dir = Path(command["run_dir"])
    # from here on stray prints of the pipeline go to the run's log file, not the runner's terminal
    log_fd = os.open(run_dir / "worker.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    flag = _CancelFlag()
    threading.Thread(target=_listen, args=(sys.stdin, flag), daemon=True).start()

    def emit(event) -> None:
        try:
            send("event", event)
        except (BrokenPipeError, OSError):
            flag.set()  # nobody is listening any more: stop at the next step, with a checkpoint

    send("claim")  # the runner now lets go of the run's lock, which execute_job takes over
    status = execute_job(run_dir, cancel=flag, emit=emit, lock_wait_s=30.0, **command.get("options", {}))
    return {"done": 0, "cancelled": 0}.get(status, 1)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown: the runner is waiting for this process to end
