"""The studio's state without Qt: create form, jobs, timeline, current scene, export requests.

The Qt window and the browser mode only display this state and forward user actions to it; every
action they offer is a method here, so tests drive the studio with no window. Jobs go through the
jobs API (`pipelines.jobs.JobRunner`, `pipelines.registry`); the viewer is any object with
``show(scene, t)`` and ``set_time(t)`` (:class:`studio.viewer.Viewer`).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.events import Artifact, Event, Log, Preview, Progress, SceneUpdate

FINISHED = ("done", "failed", "failed-resumable", "cancelled")
#: How much lower the CPU priority of the studio's job workers is than the studio's own.
WORKER_NICE = 10
RESUMABLE = ("failed-resumable", "cancelled")


class StudioError(Exception):
    """A problem the user caused or can fix, told in one sentence (shown in a dialog, never a traceback)."""


class Signal:
    """A list of callbacks; the Qt layer connects widgets' refresh methods to these."""

    def __init__(self) -> None:
        self._slots: list[Callable[..., None]] = []

    def connect(self, slot: Callable[..., None]) -> None:
        self._slots.append(slot)

    def emit(self, *args) -> None:
        for slot in list(self._slots):
            slot(*args)


class Background:
    """Work the studio's loop must not wait for (decoding preview files, scanning run folders), done on one
    thread in submission order. Each result's callback runs on the loop's own thread, at the next
    :meth:`deliver` (the window's poll timer and the browser loop call it through ``poll_jobs``), so state
    the widgets read only ever changes there."""

    def __init__(self) -> None:
        self._executor = None
        self._submitted: list[tuple[Any, Callable[[Any], None]]] = []

    def submit(self, work: Callable[[], Any], on_done: Callable[[Any], None]) -> None:
        """Run ``work()`` in the background; ``on_done(result)`` at the first :meth:`deliver` after it ends.
        Problems a user can cause belong in the result (``None`` for an unreadable file)."""
        from concurrent.futures import ThreadPoolExecutor

        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="studio-background")
        self._submitted.append((self._executor.submit(work), on_done))

    @property
    def busy(self) -> bool:
        return bool(self._submitted)

    def deliver(self) -> bool:
        """Run the callbacks of work that has finished, in submission order; True when any ran."""
        delivered = False
        while self._submitted and self._submitted[0][0].done():
            future, on_done = self._submitted.pop(0)
            delivered = True
            on_done(future.result())  # a bug in ``work`` surfaces here, on the loop's thread
        return delivered

    def wait(self, timeout: float = 30.0) -> bool:
        """Block until everything submitted has finished, then deliver it; False on timeout (tests, scripts)."""
        from concurrent.futures import wait

        wait([future for future, _ in self._submitted], timeout)
        self.deliver()
        return not self._submitted

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


# ------------------------------------------------------------------------------------------- timeline
@dataclass
class Timeline:
    """Frames over a scene's time range: which frame shows, playback, looping and rate."""

    frames: int = 48
    fps: float = 24.0
    loop: bool = True
    playing: bool = False
    frame: int = 0
    time_range: tuple[float, float] = (0.0, 1.0)

    @property
    def t(self) -> float:
        start, end = self.time_range
        return start + (end - start) * self.frame / max(1, self.frames - 1)

    def set_frame(self, frame: int) -> bool:
        """Go to ``frame`` (clamped); True when the frame changed."""
        frame = int(min(max(frame, 0), self.frames - 1))
        changed = frame != self.frame
        self.frame = frame
        return changed

    def set_time(self, t: float) -> bool:
        """Go to the frame nearest time ``t``."""
        start, end = self.time_range
        span = end - start
        return self.set_frame(round((t - start) / span * (self.frames - 1)) if span else 0)

    def tick(self) -> bool:
        """Advance one frame of playback; at the end wrap when looping, else stop. True when the frame changed."""
        if not self.playing:
            return False
        if self.frame + 1 < self.frames:
            return self.set_frame(self.frame + 1)
        if self.loop:
            return self.set_frame(0)
        self.playing = False
        return False

    def readout(self) -> str:
        return f"t = {self.t:.3f}   frame {self.frame + 1}/{self.frames}"


# ----------------------------------------------------------------------------------------------- jobs
@dataclass
class JobView:
    """What the jobs panel shows for one job, updated from its events."""

    job: Any  # pipelines.jobs.Job
    title: str
    stage: str = "queued"
    fraction: float = 0.0
    eta_s: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    loss_history: list[float] = field(default_factory=list)
    preview: np.ndarray | None = None
    preview_grid: tuple[int, int] | None = None
    scene_path: str | None = None
    messages: list[str] = field(default_factory=list)
    _previews_arrived: int = field(default=0, repr=False)
    _preview_shown: int = field(default=0, repr=False)

    @property
    def status(self) -> str:
        return self.job.status

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def resumable(self) -> bool:
        return self.status in RESUMABLE

    def eta_text(self) -> str:
        if self.finished or self.eta_s is None:
            return ""
        minutes, seconds = divmod(int(round(self.eta_s)), 60)
        return f"{minutes}:{seconds:02d} left"

    def apply(self, event: Event) -> bool:
        """Fold one event in; True when it brought a new scene to show."""
        if isinstance(event, Progress):
            self.stage, self.fraction, self.eta_s = event.stage, event.fraction, event.eta_s
            self.metrics = dict(event.metrics)
            loss = next((v for k, v in event.metrics.items() if "loss" in k), None)
            if loss is not None:
                self.loss_history = (self.loss_history + [float(loss)])[-200:]
        elif isinstance(event, Preview):
            if event.image is not None:  # a preview that is only a file is decoded off the loop (poll_jobs)
                self.show_preview(np.asarray(event.image), event.grid, self.next_preview())
        elif (isinstance(event, SceneUpdate) and event.path) or (isinstance(event, Artifact) and event.kind == "scene"):
            self.scene_path = event.path
            return True
        elif isinstance(event, Log):
            self.messages = (self.messages + [event.message])[-50:]
        return False

    def next_preview(self) -> int:
        """A number for a preview event as it arrives (previews show in arrival order, decoded or not)."""
        self._previews_arrived += 1
        return self._previews_arrived

    def show_preview(self, image: np.ndarray, grid: tuple[int, int] | None, number: int) -> None:
        """Show preview ``number`` unless one that arrived later is already shown."""
        if number > self._preview_shown:
            self.preview, self.preview_grid, self._preview_shown = image, grid, number


def _read_image(path: str | None) -> np.ndarray | None:
    if not path:
        return None
    import imageio.v3 as iio

    try:
        return np.asarray(iio.imread(path))[..., :3].astype(np.uint8)
    except (OSError, ValueError):
        return None


INPUT_SUFFIXES: dict[str, tuple[str, ...]] = {
    "image": (".png", ".jpg", ".jpeg", ".webp", ".bmp"),
    "video": (".mp4", ".gif", ".webm", ".mov", ".avi"),
}


def example_inputs(kind: str) -> list[Path]:
    """The bundled example files for an input kind (``image`` or ``video``), sorted by name."""
    from assets import asset_path

    try:
        folder = asset_path("examples")
    except FileNotFoundError:
        return []
    suffixes = INPUT_SUFFIXES.get(kind, ())
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes)


def check_input(kind: str, path: str | Path) -> np.ndarray:
    """Check an input file can be used; a thumbnail ``[H, W, 3]`` uint8 (a video's first frame)."""
    return check_video(path) if kind == "video" else check_image(path)


def check_video(path: str | Path) -> np.ndarray:
    """The first frame ``[H, W, 3]`` of an input video, or StudioError saying why it cannot be used."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise StudioError(f"The video '{path}' does not exist.")
    plugin = "pillow" if path.suffix.lower() == ".gif" else "pyav"  # no probing of every imageio plugin
    try:
        frame = next(iter(iio.imiter(path, plugin=plugin)))
    except Exception:
        raise StudioError(f"'{path.name}' is not a video the studio can read; use an MP4 or GIF file.") from None
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, -1)
    return frame[..., :3].astype(np.uint8)


def check_image(path: str | Path) -> np.ndarray:
    """Read an input image ``[H, W, 3]`` uint8, or raise StudioError saying why it cannot be used."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise StudioError(f"The image '{path}' does not exist.")
    try:
        image = np.asarray(iio.imread(path))
    except Exception:
        raise StudioError(f"'{path.name}' is not an image the studio can read; use a PNG or JPEG file.") from None
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, -1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4) or min(image.shape[:2]) < 8:
        raise StudioError(f"'{path.name}' is not a usable picture (shape {list(image.shape)}).")
    return image[..., :3]


# ------------------------------------------------------------------------------------------- create
@dataclass
class CreateForm:
    """The create panel's fields. ``inputs`` maps an input name (``image``, ``video``) to a file path."""

    pipeline: str = ""
    prompt: str = ""
    preset: str = "preview"
    seed: int = 0
    inputs: dict[str, str] = field(default_factory=dict)
    #: Advanced config overrides as typed, ``{"render.resolution": "64"}``; empty text means the preset's value.
    overrides: dict[str, str] = field(default_factory=dict)


def parse_override(text: str) -> Any:
    """A typed value from what the user typed, read as a TOML value (``64``, ``0.5``, ``true``, ``[1, 2]``);
    anything else is kept as a string."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return text.strip()


# ------------------------------------------------------------------------------------ motion picking
#: How fast galleries play candidate clips: slow enough to read a short clip's motion.
CLIP_FPS = 8.0


@dataclass
class MotionCandidate:
    """One candidate motion: the seed a full run takes as ``motion_seed`` and the clip it starts from."""

    seed: int
    clip: np.ndarray  # [F, H, W, 3] uint8, the reference view over time


class MotionSearch:
    """Candidate motions drawn on a background thread (the Qt loop and the browser loop never wait on it).

    ``draw(seed) -> Iterator[(seed, clip) | Event]`` is the pipeline's ``motion_candidates`` bound to the
    form's inputs and config. Read :attr:`candidates` after :meth:`poll`; :meth:`cancel` stops between clips.
    """

    def __init__(self, draw: Callable, seeds: list[int], spec) -> None:
        import threading

        self.seeds = list(seeds)
        self.spec = spec  # the JobSpec the pick will submit (with motion_seed replaced)
        self.candidates: list[MotionCandidate] = []
        self.messages: list[str] = []
        self.status = "running"  # running | done | failed | cancelled
        self.error: str | None = None
        self._lock = threading.Lock()
        self._pending: list[MotionCandidate] = []
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(draw,), name="motion-candidates", daemon=True)
        self._thread.start()

    @property
    def finished(self) -> bool:
        return self.status != "running"

    def _work(self, draw: Callable) -> None:
        from pipelines.context import Cancelled

        try:
            for item in draw(self._cancel):
                if isinstance(item, Log):
                    with self._lock:
                        self.messages.append(item.message)
                    continue
                if isinstance(item, tuple):
                    seed, clip = item
                    clip = (np.clip(np.asarray(clip, dtype=np.float32), 0, 1) * 255).round().astype(np.uint8)
                    with self._lock:
                        self._pending.append(MotionCandidate(int(seed), clip))
            self.status = "done"
        except Cancelled:
            self.status = "cancelled"
        except Exception as err:  # a missing prior, a bad input: one sentence for the gallery
            self.error = str(err).strip("'\"") or type(err).__name__
            self.status = "failed"

    def poll(self) -> bool:
        """Move candidates drawn since the last call into :attr:`candidates`; True when any arrived."""
        with self._lock:
            new, self._pending = self._pending, []
        self.candidates.extend(new)
        return bool(new)

    def cancel(self) -> None:
        self._cancel.set()

    def status_text(self) -> str:
        """The gallery's status line (the desktop dialog and the browser panel show the same sentence)."""
        total, ready = len(self.seeds), len(self.candidates)
        if self.status == "running":
            return f"Drawing candidate motions from {total} seeds… {ready}/{total} ready."
        if self.status == "failed":
            return f"The candidate motions could not be drawn: {self.error}"
        return f"{ready} candidate motions: pick one to run the full job with it."

    def wait(self, timeout: float | None = None) -> str:
        self._thread.join(timeout)
        self.poll()
        return self.status


@dataclass(frozen=True)
class CloseQuestions:
    """What closing the studio must ask first: running jobs (cancel with a checkpoint, or keep them running
    in the background) and unsaved project changes (save, discard)."""

    running: int = 0
    unsaved: bool = False

    @property
    def any(self) -> bool:
        return bool(self.running) or self.unsaved


@dataclass
class ExportRequest:
    """What the export dialog asks for; passed to ``renderers.export.export``."""

    path: Path
    format: str = "glb"
    t: float = 0.0
    frames: int = 24
    resolution: int = 128
    time_range: tuple[float, float] = (0.0, 1.0)
    overwrite: bool = False


# Which of the dialog's settings each export format takes (the others do not apply to it).
EXPORT_OPTIONS: dict[str, tuple[str, ...]] = {
    "glb": ("t", "resolution"), "obj": ("t", "resolution"), "ply": ("t", "resolution"),
    "gltf-anim": ("frames", "resolution", "time_range"), "3dgs-ply": ("t",), "3dgs-seq": ("frames", "time_range"),
    "mp4": ("t", "frames", "resolution"), "gif": ("t", "frames", "resolution"),
    "contact-sheet": ("t", "frames", "resolution"), "scene": (),
}
# The file name ending each format needs (folders for the others).
EXPORT_SUFFIX: dict[str, str] = {"glb": ".glb", "obj": ".obj", "ply": ".ply", "gltf-anim": ".glb", "3dgs-ply": ".ply",
                                 "mp4": ".mp4", "gif": ".gif", "contact-sheet": ".png"}


def scene_title(scene, source: str | None) -> str:
    """A short name for what the viewer shows: the scene folder's run name, the source text, or the kind."""
    if scene is None:
        return "no scene"
    if source and _is_folder(source):
        path = Path(source)
        if path.parent.name == "scenes":  # a run's intermediate scene: <run>/scenes/step-00000070
            return f"{path.parent.parent.name} · {path.name}"
        return path.parent.name if path.name in ("result", "scene") else path.name
    return source or scene.kind


def _is_folder(path: str | None) -> bool:
    return bool(path) and Path(path).is_dir()


def _registry():
    """``pipelines.registry`` when the jobs layer is installed, else None."""
    try:
        return importlib.import_module("pipelines.registry")
    except ImportError:
        return None


def _exporter():
    try:
        return importlib.import_module("renderers.export")
    except ImportError:
        return None


# -------------------------------------------------------------------------------------------- model
class StudioModel:
    """Everything the studio shows and does.

    Args:
        viewer: where scenes are shown (``show(scene, t)``, ``set_time(t)``); None for no display.
        runner: a ``pipelines.jobs.JobRunner``; created on the first submit when None.
        runs_root: folder for new runs (the runner's default when None).
        registry: where pipelines are listed (``list_pipelines()``, ``get_pipeline(name)``);
            ``pipelines.registry`` when None.
    """

    def __init__(self, viewer=None, runner=None, runs_root: Path | None = None, registry=None) -> None:
        self.viewer = viewer
        self._runner = runner
        self._registry = registry
        self.runs_root = runs_root
        self.timeline = Timeline()
        self.form = CreateForm()
        self.jobs: list[JobView] = []
        self.scene = None
        self.scene_source: str | None = None
        #: What the viewer's bar calls the scene shown, and the longer line the window shows under it.
        self.scene_label = self.scene_caption = "no scene"
        #: The job whose scene updates go to the viewer (the last one started).
        self.followed: JobView | None = None
        #: The camera preset chosen last (front, side, top, turntable, reset).
        self.camera = "reset"
        #: The open project's folder (None for an unsaved project) and the runs it holds beyond this session's.
        self.project_folder: Path | None = None
        self.project_runs: list[Path] = []
        #: The latest candidate motions (:meth:`find_motions`), shown in the gallery.
        self.motion_search: MotionSearch | None = None
        #: What running jobs do when the studio exits: cancelled (checkpointed) unless the user chose to keep them.
        self.keep_jobs_on_exit = False
        self.project_changed = Signal()  # ()
        self.time_changed = Signal()  # (t)
        self.scene_changed = Signal()  # (scene)
        self.jobs_changed = Signal()  # ()
        self.library_changed = Signal()  # (), after refresh_library
        #: The library as last scanned by :meth:`refresh_library` (``RunInfo``s) and their thumbnails
        #: (``[H, W, 3]`` uint8 by run folder; runs without a preview have none).
        self.library_runs: list = []
        self.library_thumbnails: dict[Path, np.ndarray] = {}
        self.background = Background()
        pipelines = self.pipelines()
        if pipelines:
            self.form.pipeline = pipelines[0].name
        self._saved_key = self._project_key()

    # ------------------------------------------------------------ methods and create form
    def registry(self):
        return self._registry if self._registry is not None else _registry()

    def pipelines(self) -> list:
        """The registered pipelines (``PipelineInfo``), empty when the jobs layer is not installed."""
        registry = self.registry()
        return list(registry.list_pipelines()) if registry else []

    def pipeline_info(self, name: str | None = None):
        name = name or self.form.pipeline
        registry = self.registry()
        if registry is None:
            raise StudioError("No generation methods are installed in this build of the studio.")
        try:
            return registry.get_pipeline(name)
        except (KeyError, ValueError):
            known = ", ".join(p.name for p in self.pipelines()) or "none"
            raise StudioError(f"Unknown method '{name}' (known: {known}).") from None

    def presets(self, name: str | None = None) -> list[str]:
        try:
            info = self.pipeline_info(name)
        except StudioError:
            return []
        return list(info.config_cls.presets) or ["default"]

    def advanced_fields(self, name: str | None = None, preset: str | None = None) -> list[tuple[str, Any, str]]:
        """``(dotted key, value in the preset, help)`` for every config field of a pipeline (the advanced panel)."""
        from pipelines.config import config_fields, config_to_dict

        try:
            info = self.pipeline_info(name)
            cls = info.config_cls
            config = cls.preset(preset or self.form.preset) if cls.presets else cls()
        except (StudioError, ValueError):
            return []
        values = config_to_dict(config)
        out = []
        for key, _tp, default, help_text in config_fields(cls):
            node = values
            for part in key.split("."):
                node = node.get(part, default) if isinstance(node, dict) else default
            out.append((key, node, help_text))
        return out

    def prompt_warning(self, prompt: str, name: str | None = None, preset: str | None = None) -> str | None:
        """What to tell the user about ``prompt`` before running pipeline ``name`` at ``preset``: words the bundled
        models ignore, and, where that preset samples the bundled field prior (a prior named ``inhouse-*``), a
        motion its evaluation found it draws badly. None when the preset's priors are public models only (they
        read any English)."""
        from pipelines.models.vocabulary import prompt_warning
        from pipelines.priors.registry import list_models

        values = {value for _key, value, _help in self.advanced_fields(name, preset) if isinstance(value, str)}
        field_prior = any(value.startswith("inhouse-") for value in values)
        public = values & {spec.name for spec in list_models() if not spec.name.startswith("inhouse-")}
        if public and not field_prior:
            return None
        return prompt_warning(prompt, None if field_prior else {})

    def build_spec(self, form: CreateForm | None = None):
        """The ``JobSpec`` the form describes, or StudioError naming the field that is wrong."""
        form = form or self.form
        info = self.pipeline_info(form.pipeline)
        inputs: dict[str, str] = {}
        for name in info.inputs:
            if name == "prompt":
                if not form.prompt.strip():
                    raise StudioError(f"{info.title} needs a prompt: describe the object and its motion.")
                inputs["prompt"] = form.prompt.strip()
            elif name in INPUT_SUFFIXES:
                path = form.inputs.get(name)
                if not path:
                    raise StudioError(f"{info.title} needs an input {name}.")
                check_input(name, path)
                inputs[name] = str(path)
            else:
                path = form.inputs.get(name)
                if not path or not Path(path).exists():
                    raise StudioError(f"{info.title} needs an input {name} file.")
                inputs[name] = str(path)
        overrides = {key: parse_override(text) for key, text in form.overrides.items() if text.strip()}
        try:
            config = info.config_cls.preset(form.preset) if info.config_cls.presets else info.config_cls()
            if overrides:
                config = config.override(overrides)
        except ValueError as err:  # ConfigError names the preset or the key
            raise StudioError(str(err)) from None
        if not 0 <= int(form.seed) < 2**31:
            raise StudioError(f"The seed must be between 0 and {2**31 - 1}, not {form.seed}.")
        from pipelines.jobs import JobSpec

        return JobSpec(pipeline=info.name, inputs=inputs, config=config, seed=int(form.seed), preset=form.preset)

    # ------------------------------------------------------------ jobs
    @property
    def runner(self):
        if self._runner is None:
            try:
                from pipelines.jobs import JobRunner
            except ImportError:
                raise StudioError("The job runner is not installed in this build of the studio.") from None
            # Workers at a lower CPU priority: on a small machine a fit would otherwise take the time slices
            # the window's event loop (and the viewer) need, and the studio would stall while a job runs.
            self._runner = JobRunner(self.runs_root, nice=WORKER_NICE)
        return self._runner

    def generate(self, form: CreateForm | None = None) -> JobView:
        """Validate the form and start a job; its scene updates go to the viewer."""
        return self.submit(self.build_spec(form))

    def submit(self, spec) -> JobView:
        """Start the job ``spec`` describes (a ``JobSpec``); its scene updates go to the viewer."""
        try:
            job = self.runner.submit(spec)
        except (ValueError, KeyError, OSError, RuntimeError) as err:  # preflight: a missing model, a full disk
            raise StudioError(str(err).strip("'\"")) from None
        subject = spec.inputs.get("prompt") or next((Path(v).name for v in spec.inputs.values()), "")
        view = JobView(job=job, title=f"{spec.pipeline}: {subject}" if subject else spec.pipeline)
        self.jobs.append(view)
        self.followed = view
        self.jobs_changed.emit()
        return view

    def poll_jobs(self) -> bool:
        """Fold in every job's new events and the background work that has finished (non-blocking); True
        when anything changed."""
        changed = self.background.deliver()
        for view in self.jobs:
            before = view.status
            for event in view.job.poll():
                changed = True
                if isinstance(event, Preview) and event.image is None:
                    self._decode_preview(view, event)
                elif view.apply(event) and view is self.followed:
                    self._open_quietly(view.scene_path, view.title)
            if view.status != before:
                changed = True
                result = getattr(view.job, "result_dir", None)
                if view.status == "done" and result is not None:
                    view.scene_path = str(result)
                    view.fraction = 1.0
                    if view is self.followed:
                        self._open_quietly(view.scene_path, view.title)
        if changed:
            self.jobs_changed.emit()
        return changed

    def _decode_preview(self, view: JobView, event: Preview) -> None:
        """A preview that crossed from the worker as a PNG file: decoding a V×F matrix takes tens of
        milliseconds, so it happens in the background and shows at a later poll."""
        number = view.next_preview()

        def show(image) -> None:
            if image is not None:
                view.show_preview(image, event.grid, number)
                self.jobs_changed.emit()

        self.background.submit(functools.partial(_read_image, event.path), show)

    def cancel(self, view: JobView) -> None:
        view.job.cancel()
        self.jobs_changed.emit()

    def resume(self, view: JobView) -> JobView:
        """Continue a cancelled or crashed job from its last checkpoint."""
        if not view.resumable:
            raise StudioError(f"'{view.title}' is {view.status}; only cancelled or interrupted jobs can resume.")
        view.job = self.runner.resume(view.job.run_dir)
        view.stage = "resuming"
        self.followed = view
        self.jobs_changed.emit()
        return view

    # ------------------------------------------------------------ motion picking
    def motion_kind(self, name: str | None = None) -> str | None:
        """``"image"`` or ``"prompt"`` when the method lets the user pick a motion before the full run
        (its module offers ``motion_candidates`` and its config a ``motion_seed``), else None."""
        try:
            info = self.pipeline_info(name)
        except StudioError:
            return None
        module = importlib.import_module(info.entry.partition(":")[0])
        if not hasattr(module, "motion_candidates") or not hasattr(info.config_cls, "motion_seed"):
            return None
        return next((kind for kind in ("image", "prompt") if kind in info.inputs), None)

    def find_motions(self, count: int = 4, seeds: list[int] | None = None,
                     form: CreateForm | None = None) -> MotionSearch:
        """Start drawing ``count`` candidate motions for the form's job on a background thread. The seeds
        follow the run seed, the first being the motion the job would take unpicked."""
        form = form or self.form
        kind = self.motion_kind(form.pipeline)
        if kind is None:
            raise StudioError(f"{self.pipeline_info(form.pipeline).title} has no motions to pick from.")
        spec = self.build_spec(form)
        if seeds is None:
            base = spec.config.motion_seed if spec.config.motion_seed >= 0 else spec.seed * 7 + 2
            seeds = [base + 1000 * i for i in range(count)]
        info = self.pipeline_info(form.pipeline)
        candidates = importlib.import_module(info.entry.partition(":")[0]).motion_candidates

        def draw(cancel):
            import tempfile

            from pipelines.context import RunContext, default_device

            with tempfile.TemporaryDirectory(prefix="fourd-motions-") as run_dir:
                context = RunContext(run_dir, spec.seed, default_device(), cancel, priors=dict(spec.priors))
                yield from candidates(kind, spec.inputs, spec.config, seeds, context)

        self.motion_search = MotionSearch(draw, seeds, spec)
        return self.motion_search

    def pick_motion(self, seed: int, search: MotionSearch | None = None) -> JobView:
        """Start the full job the candidates were drawn for, with the chosen motion
        (``config.replace(motion_seed=seed)``); the form keeps the choice."""
        import dataclasses

        search = search or self.motion_search
        if search is None:
            raise StudioError("There are no candidate motions to pick from yet.")
        spec = dataclasses.replace(search.spec, config=search.spec.config.replace(motion_seed=int(seed)))
        self.form.overrides = {**self.form.overrides, "motion_seed": str(int(seed))}
        return self.submit(spec)

    # ------------------------------------------------------------ library of past runs
    def library(self) -> list:
        """Past runs, newest first (``RunInfo``: run_dir, spec, status, created, thumbnail); empty
        without the jobs layer."""
        try:
            from pipelines.jobs import list_runs
        except ImportError:
            return []
        root = self.runs_root if self.runs_root is not None else getattr(self._runner, "runs_root", None)
        runs = list(list_runs(root))
        listed = {Path(run.run_dir).resolve() for run in runs}
        extra = [p for p in self.project_runs if p.resolve() not in listed and p.is_dir()]
        if extra:
            from pipelines.jobs import run_info

            for run_dir in extra:
                try:
                    runs.append(run_info(run_dir))
                except (OSError, ValueError):
                    continue  # a run folder the project lists but that is gone or damaged
        return runs

    def refresh_library(self) -> None:
        """Scan the runs folders and read the runs' thumbnails in the background (hundreds of run folders take
        a good part of a second); :attr:`library_runs` and :attr:`library_thumbnails` change and
        ``library_changed`` fires at a later :meth:`poll_jobs`."""
        def scan():
            runs = self.library()
            thumbnails = {run.run_dir: _read_image(str(run.thumbnail)) for run in runs if run.thumbnail is not None}
            return runs, {key: image for key, image in thumbnails.items() if image is not None}

        def show(result) -> None:
            self.library_runs, self.library_thumbnails = result
            self.library_changed.emit()

        self.background.submit(scan, show)

    def open_run(self, run) -> None:
        """Show a past run's final scene (or, while it has none, its newest scene update)."""
        run_dir = Path(run.run_dir)
        candidates = [getattr(run, "result_dir", None), run_dir / "result"]
        candidates += sorted((run_dir / "scenes").glob("*"), reverse=True) if (run_dir / "scenes").is_dir() else []
        for candidate in candidates:
            if candidate is not None and (Path(candidate) / "scene.json").is_file():
                self.open_scene(candidate)
                return
        raise StudioError(f"The run '{run_dir.name}' has no scene yet ({run.status}).")

    def resume_run(self, run_dir: str | Path) -> JobView:
        """Resume a past run from its folder (a cancelled or interrupted job from the library)."""
        try:
            job = self.runner.resume(Path(run_dir))
        except (ValueError, KeyError, OSError, RuntimeError) as err:
            raise StudioError(str(err).strip("'\"")) from None
        view = JobView(job=job, title=f"{job.spec.pipeline}: {Path(run_dir).name}", stage="resuming")
        self.jobs.append(view)
        self.followed = view
        self.jobs_changed.emit()
        return view

    def shutdown(self, cancel_running: bool | None = None) -> None:
        """Stop the job runner; running jobs are cancelled (checkpointed) unless ``cancel_running`` is False,
        and when it is None, unless the user chose to keep them (``keep_jobs_on_exit``), in which case this
        waits until they finish."""
        if cancel_running is None:
            cancel_running = not self.keep_jobs_on_exit
        self.background.shutdown()
        if self._runner is not None:
            self._runner.shutdown(cancel_running=cancel_running)

    def running_jobs(self) -> list[JobView]:
        return [v for v in self.jobs if not v.finished]

    # ------------------------------------------------------------ scene and time
    def set_scene(self, scene, source: str | None = None, title: str | None = None,
                  caption: str | None = None) -> None:
        """Show ``scene``; the timeline spans its time range and keeps its frame. ``title`` names it in the
        viewer's bar (default: from the source, see :func:`scene_title`); ``caption`` says more about it
        (what it is and how it was made; default: the title)."""
        self.scene = scene
        self.scene_source = source
        self.scene_label = title or scene_title(scene, source)
        self.scene_caption = caption or self.scene_label
        if scene is not None:
            self.timeline.time_range = tuple(float(v) for v in scene.time_range)
        if self.viewer is not None:
            self.viewer.show(scene, self.timeline.t)
            if hasattr(self.viewer, "set_label"):  # viser's panel bar names the scene instead of "Connected"
                self.viewer.set_label(self.scene_label)
        self.scene_changed.emit(scene)

    def open_scene(self, directory: str | Path, title: str | None = None, caption: str | None = None) -> None:
        """Load a saved scene folder (a run's result) into the viewer."""
        from renderers.scene import load_scene

        try:
            scene = load_scene(directory)
        except (FileNotFoundError, ValueError) as err:
            raise StudioError(str(err)) from None
        except Exception as err:
            raise StudioError(f"The scene in '{directory}' could not be loaded: {err}") from None
        self.set_scene(scene, str(directory), title, caption)

    def _open_quietly(self, directory: str | None, title: str) -> None:
        if not directory:
            return
        try:
            self.open_scene(directory)
        except StudioError as err:
            for view in self.jobs:
                if view.title == title:
                    view.messages.append(str(err))

    def set_frame(self, frame: int) -> None:
        if self.timeline.set_frame(frame):
            self._time_moved()

    def set_time(self, t: float) -> None:
        if self.timeline.set_time(t):
            self._time_moved()

    def tick(self) -> None:
        """One playback step (the Qt timer or the browser loop calls this at ``timeline.fps``)."""
        if self.timeline.tick():
            self._time_moved()

    def set_playing(self, playing: bool) -> None:
        self.timeline.playing = bool(playing) and self.scene is not None

    def _time_moved(self) -> None:
        if self.viewer is not None and self.scene is not None:
            self.viewer.set_time(self.timeline.t)
        self.time_changed.emit(self.timeline.t)

    def set_camera(self, preset: str) -> None:
        """Move the viewer's camera to a preset; ``turntable`` orbits until another preset is chosen."""
        if self.viewer is not None:
            try:
                self.viewer.set_camera(preset)
            except ValueError as err:
                raise StudioError(str(err)) from None
        self.camera = preset

    # ------------------------------------------------------------ closing
    def close_questions(self) -> CloseQuestions:
        """What to ask before the studio closes (the window shows the questions, the model decides them)."""
        return CloseQuestions(running=len(self.running_jobs()), unsaved=self.has_unsaved_changes())

    def decide_running_jobs(self, keep: bool) -> None:
        """The answer for running jobs on close: keep them running in the background (the studio exits once
        they finish; the library shows their results next time) or cancel them with a checkpoint (they can
        resume later)."""
        self.keep_jobs_on_exit = bool(keep)

    # ------------------------------------------------------------ projects
    def _project_key(self) -> tuple:
        """What makes a project differ from its saved copy: runs, create form, scene, camera and playback
        settings; not the scrubbed time (looking around is not an edit)."""
        form = self.form
        return (tuple(str(p) for p in self.project_runs_all()), form.pipeline, form.prompt, form.preset,
                int(form.seed), tuple(sorted(form.inputs.items())), tuple(sorted(form.overrides.items())),
                self.scene_source if _is_folder(self.scene_source) else None, self.camera,
                float(self.timeline.fps), bool(self.timeline.loop))

    def mark_saved(self) -> None:
        """Take the current state as the saved one (after save, open, new project or the first-start example)."""
        self._saved_key = self._project_key()

    def has_unsaved_changes(self) -> bool:
        """True when the project changed since it was last saved, opened or started."""
        return self._project_key() != self._saved_key

    def project_runs_all(self) -> list[Path]:
        """The run folders the project holds: those it was opened with and every job of this session."""
        runs = list(self.project_runs)
        for view in self.jobs:
            run_dir = getattr(view.job, "run_dir", None)
            if run_dir is not None and Path(run_dir) not in runs:
                runs.append(Path(run_dir))
        return runs

    def project(self):
        """The current state as a :class:`studio.project.Project`."""
        from studio.project import Project, ViewSettings

        timeline = self.timeline
        view = ViewSettings(t=timeline.t, frames=timeline.frames, fps=timeline.fps, loop=timeline.loop,
                            camera=self.camera, scene=self.scene_source if _is_folder(self.scene_source) else None)
        form = CreateForm(pipeline=self.form.pipeline, prompt=self.form.prompt, preset=self.form.preset,
                          seed=self.form.seed, inputs=dict(self.form.inputs), overrides=dict(self.form.overrides))
        return Project(runs=self.project_runs_all(), form=form, view=view)

    def save_project(self, folder: str | Path | None = None) -> Path:
        """Save the project into ``folder`` (the open project's folder when None); the project folder."""
        from studio.project import remember_project, save_project

        folder = Path(folder) if folder is not None else self.project_folder
        if folder is None:
            raise StudioError("This project has no folder yet; use Save As to choose one.")
        project = self.project()
        written = save_project(project, folder)
        self.form.inputs = dict(project.form.inputs)  # now the copies inside the project
        self.project_folder = written.parent
        self.project_runs = list(project.runs)
        remember_project(self.project_folder)
        self.mark_saved()
        self.project_changed.emit()
        return self.project_folder

    def open_project(self, folder: str | Path) -> list[str]:
        """Open the project in ``folder``: its form, runs and view settings; sentences about parts that
        could not be restored (a scene folder that was moved), empty when everything came back."""
        from studio.project import read_project, remember_project

        project = read_project(folder)  # StudioError in one sentence for a corrupt or foreign folder
        notes = []
        self.form = project.form
        self.project_runs = list(project.runs)
        self.project_folder = Path(folder).expanduser().resolve()
        timeline = self.timeline
        timeline.fps, timeline.loop, timeline.playing = project.view.fps, project.view.loop, False
        timeline.frames = max(2, project.view.frames)
        if project.view.scene:
            try:
                self.open_scene(project.view.scene)
            except StudioError as err:
                notes.append(str(err))
        try:
            self.set_camera(project.view.camera)
        except StudioError as err:
            notes.append(str(err))
        timeline.set_time(project.view.t)
        self._time_moved()
        remember_project(self.project_folder)
        self.mark_saved()
        self.project_changed.emit()
        return notes

    def new_project(self) -> None:
        """Start an empty, unsaved project (running jobs keep running and stay listed)."""
        self.form = CreateForm(pipeline=self.form.pipeline)
        self.project_folder = None
        self.project_runs = []
        self.set_scene(None)
        self.set_camera("reset")
        self.mark_saved()
        self.project_changed.emit()

    @staticmethod
    def recent_projects() -> list[Path]:
        from studio.project import recent_projects

        return recent_projects()

    # ------------------------------------------------------------ export
    @staticmethod
    def export_available() -> bool:
        module = _exporter()
        return module is not None and hasattr(module, "export")

    @staticmethod
    def export_formats() -> list[str]:
        module = _exporter()
        return list(getattr(module, "FORMATS", {})) if module is not None else []

    def export(self, request: ExportRequest) -> Path:
        """Write the current scene as ``request`` asks (``renderers.export.export``); the written path."""
        if self.scene is None:
            raise StudioError("There is no scene to export yet: generate or open one first.")
        module = _exporter()
        if module is None or not hasattr(module, "export"):
            raise StudioError("Exporting is not available in this build of the studio.")
        wanted = {"t": request.t, "frames": request.frames, "resolution": request.resolution,
                  "time_range": request.time_range}
        options = {k: wanted[k] for k in EXPORT_OPTIONS.get(request.format, ())}
        try:
            written = module.export(self.scene, Path(request.path), request.format, overwrite=request.overwrite,
                                    **options)
        except (OSError, ValueError) as err:  # ExportError is a ValueError with one sentence
            raise StudioError(str(err)) from None
        return Path(written) if written is not None else Path(request.path)
