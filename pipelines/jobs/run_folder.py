"""A run folder: everything one job reads and writes, self-contained.

    <run>/spec.toml        the job (pipeline, inputs, config, seed, priors, package version)
    <run>/status.json      current status, written atomically
    <run>/events.jsonl     append-only event log (one JSON record per line)
    <run>/inputs/          copies of the input files
    <run>/checkpoints/     step-XXXXXXXX.safetensors, written atomically, the newest few kept
    <run>/previews/        preview PNGs
    <run>/scenes/          scene updates for the viewer (the newest few kept)
    <run>/result/          the final scene (load with renderers.scene.load_scene)
    <run>/exports/         exported files
    <run>/worker.log       the worker process's stdout and stderr

A run is owned by one process at a time through an advisory lock on ``<run>/.lock``: the runner
holds it while the job is queued, the worker while it runs. A run whose status says running but
whose lock is free was interrupted (its process died) and can be resumed.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.atomic_files import append_line, write_atomic
from pipelines.events import Event, Status, event_from_record
from pipelines.jobs.spec import FILE_INPUTS, JobSpec, SpecError

SPEC_FILE = "spec.toml"
STATUS_FILE = "status.json"
EVENTS_FILE = "events.jsonl"
LOCK_FILE = ".lock"
STATUSES = ("queued", "running", "done", "failed", "failed-resumable", "cancelled")


class RunFolderError(ValueError):
    """A run folder cannot be used as asked (in use, already holds a run, not a run)."""


# -------------------------------------------------------------------- creating
def new_run_dir(root: str | Path, spec: JobSpec) -> Path:
    """Create a fresh, uniquely named folder under ``root`` (atomic ``mkdir``, so two runs started
    at the same moment never share one)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(spec.pipeline)}-s{spec.seed}"
    for n in range(1, 10_000):
        path = root / (stem if n == 1 else f"{stem}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RunFolderError(f"could not create a new run folder in '{root}'.")


def init_run_folder(run_dir: str | Path, spec: JobSpec) -> JobSpec:
    """Write ``spec`` into a new or empty ``run_dir`` and copy its file inputs into ``inputs/``.

    Returns the stored spec (file inputs as paths relative to the run folder). Refuses a folder that
    already holds a run, so two runs never clobber each other.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / SPEC_FILE).exists() or (run_dir / EVENTS_FILE).exists():
        raise RunFolderError(f"'{run_dir}' already holds a run: resume it or choose another folder.")
    inputs = dict(spec.inputs)
    for name, value in spec.inputs.items():
        if name in FILE_INPUTS:
            source = Path(value).expanduser()
            if not source.is_file():
                raise SpecError(f"input '{name}': the file '{value}' does not exist.")
            target = run_dir / "inputs" / f"{name}{''.join(source.suffixes)}"
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(source, target)
            inputs[name] = str(target.relative_to(run_dir))
    stored = JobSpec(spec.pipeline, inputs, spec.config, spec.seed, spec.preset, dict(spec.priors))
    # the spec is written last among the files that mark a folder as a run, and atomically
    write_atomic(run_dir / SPEC_FILE, stored.to_toml())
    return stored


def resolve_inputs(run_dir: Path, spec: JobSpec) -> dict[str, str]:
    """Inputs with file paths made absolute (they are stored relative to the run folder)."""
    return {name: str(run_dir / value) if name in FILE_INPUTS and not Path(value).is_absolute() else value
            for name, value in spec.inputs.items()}


def read_spec(run_dir: str | Path) -> JobSpec:
    run_dir = Path(run_dir)
    if not (run_dir / SPEC_FILE).is_file():
        raise RunFolderError(not_a_run(run_dir))
    return JobSpec.load(run_dir / SPEC_FILE)


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` is a run's folder (it has the job's spec or a status), not, say, a folder of runs."""
    return (path / SPEC_FILE).exists() or (path / STATUS_FILE).exists()


def not_a_run(path: Path) -> str:
    """One sentence for a folder that is not a run; for a folder of runs (an ``--out`` folder) it names the newest."""
    runs = list_runs(path) if path.is_dir() else []
    if runs:
        return (f"'{path}' is a folder of {len(runs)} run(s), not a run; name one, e.g. '{path / runs[0].name}' "
                "(the newest).")
    return f"'{path}' is not a run folder (it has no {SPEC_FILE})."


# -------------------------------------------------------------------- status and events
def write_status(run_dir: str | Path, status: str, **info) -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    write_atomic(Path(run_dir) / STATUS_FILE, json.dumps({"status": status, "updated": time.time(), **info}))


def read_status(run_dir: str | Path) -> dict:
    try:
        data = json.loads((Path(run_dir) / STATUS_FILE).read_text())
        return data if isinstance(data, dict) and data.get("status") in STATUSES else {"status": "failed"}
    except FileNotFoundError:
        return {"status": "queued"}
    except (OSError, ValueError):
        return {"status": "failed", "message": f"'{run_dir}/{STATUS_FILE}' is unreadable."}


def log_event(run_dir: str | Path, event: Event) -> None:
    append_line(Path(run_dir) / EVENTS_FILE, json.dumps(event.to_record()))


def read_events(run_dir: str | Path) -> list[Event]:
    """The run's event log; a last line cut short by a crash is skipped."""
    path = Path(run_dir) / EVENTS_FILE
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(event_from_record(json.loads(line)))
        except (ValueError, TypeError):
            continue
    return events


def record_status(run_dir: Path, status: str, message: str | None = None, result_dir: str | None = None,
                  **info) -> Status:
    """Write the status file and log the change; returns the event to forward."""
    event = Status(status, message, result_dir)
    write_status(run_dir, status, message=message, result_dir=result_dir, **info)
    log_event(run_dir, event)
    return event


# -------------------------------------------------------------------- ownership
class RunLock:
    """An exclusive advisory lock on a run folder, held by the process that owns the run."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self._fd: int | None = None

    def acquire(self, wait_s: float = 0.0) -> RunLock:
        """Take the lock, retrying for up to ``wait_s`` seconds (a hand-over from the runner to its
        worker); raises :class:`RunFolderError` when another process keeps it."""
        fd = os.open(self.run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise RunFolderError(f"run '{self.run_dir}' is in use by another job or process.") from None
                time.sleep(0.01)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def is_locked(run_dir: str | Path) -> bool:
    """True when some process (including this one) owns the run."""
    if not (Path(run_dir) / LOCK_FILE).exists():
        return False
    try:
        RunLock(run_dir).acquire().release()
        return False
    except RunFolderError:
        return True


# -------------------------------------------------------------------- listing
@dataclass
class RunInfo:
    """One run folder as the run list shows it. ``spec`` is None when the spec is unreadable
    (``message`` says why); ``thumbnail`` is the newest preview PNG."""

    run_dir: Path
    spec: JobSpec | None
    status: str
    created: float
    thumbnail: Path | None = None
    message: str | None = None
    result_dir: Path | None = None

    @property
    def name(self) -> str:
        return self.run_dir.name


def run_info(run_dir: str | Path) -> RunInfo:
    run_dir = Path(run_dir)
    status = read_status(run_dir)
    state = status["status"]
    if state in ("queued", "running") and not is_locked(run_dir):
        state = "failed-resumable"  # its process died without saying so
    spec, message = None, status.get("message")
    try:
        spec = read_spec(run_dir)
    except (SpecError, RunFolderError) as err:
        message = str(err)
    previews = sorted((run_dir / "previews").glob("*.png"), key=lambda p: p.stat().st_mtime)
    result = status.get("result_dir")
    return RunInfo(run_dir, spec, state, (run_dir / SPEC_FILE).stat().st_mtime if spec else run_dir.stat().st_mtime,
                   previews[-1] if previews else None, message, Path(result) if result else None)


def list_runs(root: str | Path | None = None) -> list[RunInfo]:
    """Every run folder directly under ``root`` (default: the user's runs folder), newest first."""
    from pipelines.paths import runs_dir

    root = Path(root) if root is not None else runs_dir()
    if not root.is_dir():
        return []
    runs = [run_info(p) for p in root.iterdir() if is_run_folder(p)]
    return sorted(runs, key=lambda r: r.created, reverse=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:40] or "run"
