"""Studio projects: a folder holding ``project.toml`` (schema-versioned) and a copy of its input files.

    my-project/
        project.toml      # runs, create form, view settings (time, fps, loop, camera, current scene)
        inputs/           # the input images / videos the form used, copied in so the folder travels

Runs are referenced by path (relative to the project folder when they live inside it), not copied:
a run folder holds checkpoints and can be large. ``project.toml`` is written atomically, so a crash
while saving leaves the previous version. A folder that is not a project, or a ``project.toml`` that
does not parse, raises :class:`~studio.model.StudioError` with one sentence.

The list of recently opened projects lives in ``<data_dir>/recent_projects.toml``.
"""

from __future__ import annotations

import contextlib
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from studio.model import CreateForm, StudioError

PROJECT_FILE = "project.toml"
PROJECT_KIND = "fourd-studio-project"
SCHEMA_VERSION = 1
RECENT_FILE = "recent_projects.toml"
RECENT_LIMIT = 10


@dataclass
class ViewSettings:
    """What the viewer and timeline showed: time, playback rate, looping, camera preset, scene folder."""

    t: float = 0.0
    frames: int = 48
    fps: float = 24.0
    loop: bool = True
    camera: str = "reset"
    scene: str | None = None


@dataclass
class Project:
    """A project's content, with every path absolute (relative only inside ``project.toml``)."""

    runs: list[Path] = field(default_factory=list)
    form: CreateForm = field(default_factory=CreateForm)
    view: ViewSettings = field(default_factory=ViewSettings)


# ------------------------------------------------------------------------------------------ save
def save_project(project: Project, folder: str | Path) -> Path:
    """Write ``project`` into ``folder`` (created when missing); input files outside the folder are copied
    into ``folder/inputs``. The written ``project.toml``; ``project.form.inputs`` then points at the copies."""
    import tomli_w

    from pipelines.atomic_files import DiskWriteError, write_atomic

    folder = Path(folder).expanduser().resolve()
    existing = folder / PROJECT_FILE
    try:
        folder.mkdir(parents=True, exist_ok=True)
        inputs = {name: str(_copy_input(Path(path), folder)) for name, path in project.form.inputs.items() if path}
        project.form.inputs = inputs
        form = project.form
        document = {
            "kind": PROJECT_KIND,
            "schema_version": SCHEMA_VERSION,
            "runs": [_relative(run, folder) for run in project.runs],
            "form": {"pipeline": form.pipeline, "prompt": form.prompt, "preset": form.preset, "seed": int(form.seed),
                     "inputs": {k: _relative(Path(v), folder) for k, v in inputs.items()},
                     "overrides": dict(form.overrides)},
            "view": {"t": float(project.view.t), "frames": int(project.view.frames), "fps": float(project.view.fps),
                     "loop": bool(project.view.loop), "camera": project.view.camera},
        }
        if project.view.scene:
            document["view"]["scene"] = _relative(Path(project.view.scene), folder)
        return write_atomic(existing, tomli_w.dumps(document))
    except DiskWriteError as err:
        raise StudioError(f"The project could not be saved: {err.strerror}") from None
    except OSError as err:
        raise StudioError(f"The project could not be saved into '{folder}': {err.strerror or err}.") from None


def _copy_input(path: Path, folder: Path) -> Path:
    path = path.expanduser().resolve()
    if path.is_relative_to(folder) or not path.is_file():
        return path
    target = folder / "inputs" / path.name
    if not (target.exists() and target.stat().st_size == path.stat().st_size):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return target


def _relative(path: Path, folder: Path) -> str:
    path = Path(path).expanduser().resolve()
    return path.relative_to(folder).as_posix() if path.is_relative_to(folder) else str(path)


# ------------------------------------------------------------------------------------------ open
def read_project(folder: str | Path) -> Project:
    """The project saved in ``folder``, or StudioError in one sentence when the folder is not a readable project."""
    folder = Path(folder).expanduser().resolve()
    path = folder / PROJECT_FILE
    if not path.is_file():
        raise StudioError(f"'{folder.name}' is not a fourd studio project: it has no {PROJECT_FILE}.")
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        raise StudioError(f"The project file in '{folder.name}' is damaged and cannot be read.") from None
    except OSError as err:
        raise StudioError(f"The project in '{folder.name}' cannot be read: {err.strerror or err}.") from None
    if document.get("kind") != PROJECT_KIND:
        raise StudioError(f"'{folder.name}' holds a {PROJECT_FILE} that is not a fourd studio project.")
    version = document.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise StudioError(f"The project '{folder.name}' was saved by a newer fourd studio "
                          f"(schema {version}); update the studio to open it.")
    try:
        form_doc, view_doc = document.get("form", {}), document.get("view", {})
        form = CreateForm(pipeline=str(form_doc.get("pipeline", "")), prompt=str(form_doc.get("prompt", "")),
                          preset=str(form_doc.get("preset", "preview")), seed=int(form_doc.get("seed", 0)),
                          inputs={str(k): str(_absolute(v, folder)) for k, v in form_doc.get("inputs", {}).items()},
                          overrides={str(k): str(v) for k, v in form_doc.get("overrides", {}).items()})
        scene = view_doc.get("scene")
        view = ViewSettings(t=float(view_doc.get("t", 0.0)), frames=int(view_doc.get("frames", 48)),
                            fps=float(view_doc.get("fps", 24.0)), loop=bool(view_doc.get("loop", True)),
                            camera=str(view_doc.get("camera", "reset")),
                            scene=str(_absolute(scene, folder)) if scene else None)
        runs = [_absolute(run, folder) for run in document.get("runs", [])]
    except (TypeError, ValueError, AttributeError):
        raise StudioError(f"The project file in '{folder.name}' is damaged: a setting has the wrong type.") from None
    return Project(runs=runs, form=form, view=view)


def _absolute(text: str, folder: Path) -> Path:
    path = Path(str(text)).expanduser()
    return path if path.is_absolute() else (folder / path).resolve()


# ---------------------------------------------------------------------------------------- recent
def _recent_file() -> Path:
    from pipelines.paths import data_dir

    return data_dir() / RECENT_FILE


def recent_projects() -> list[Path]:
    """Recently opened or saved project folders that still hold a project, most recent first."""
    try:
        document = tomllib.loads(_recent_file().read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return []  # a lost recent list is not worth an error
    paths = [Path(p) for p in document.get("projects", []) if isinstance(p, str)]
    return [p for p in paths if (p / PROJECT_FILE).is_file()]


def remember_project(folder: str | Path) -> list[Path]:
    """Put ``folder`` first in the recent list (at most RECENT_LIMIT); the new list."""
    import tomli_w

    from pipelines.atomic_files import write_atomic

    folder = Path(folder).expanduser().resolve()
    paths = [folder] + [p for p in recent_projects() if p != folder]
    paths = paths[:RECENT_LIMIT]
    # A read-only data folder: the project itself was saved, only the menu forgets it.
    with contextlib.suppress(OSError):
        write_atomic(_recent_file(), tomli_w.dumps({"schema_version": 1, "projects": [str(p) for p in paths]}))
    return paths
