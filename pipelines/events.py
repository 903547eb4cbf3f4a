"""Events a pipeline yields: progress, previews, scene updates, artifacts and log lines.

A pipeline is ``run(inputs, config, context) -> Iterator[Event]``. The job runner forwards the
events to the CLI, the studio or a test and appends them to the run's event log as JSON lines
(:meth:`Event.to_record` / :func:`event_from_record`). Images travel as uint8 arrays in-process and
as file paths in the log.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np


@dataclass
class Event:
    type: ClassVar[str] = "event"
    time: float = field(default_factory=time.time, kw_only=True)

    def to_record(self) -> dict[str, Any]:
        """JSON-serialisable dict. Arrays and live objects are left out (the runner saves images
        to files and records their paths)."""
        record = {"type": self.type}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray) or f.metadata.get("transient"):
                continue
            if isinstance(value, Path):
                value = str(value)
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            record[f.name] = value
        return record


@dataclass
class Progress(Event):
    """One step of a stage. ``metrics`` holds losses and the like; ``eta_s`` the time left."""

    type: ClassVar[str] = "progress"
    stage: str
    step: int
    total: int
    metrics: dict[str, float] = field(default_factory=dict)
    eta_s: float | None = None

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total) if self.total else 0.0


@dataclass
class Preview(Event):
    """A preview image ``[H, W, 3]`` uint8. ``grid`` is (rows, cols) when the image is a tiled matrix
    (views x frames for Diffusion², a strip of views / frames for 4D-fy)."""

    type: ClassVar[str] = "preview"
    name: str
    image: np.ndarray | None = field(default=None, metadata={"transient": True})
    path: str | None = None
    grid: tuple[int, int] | None = None
    step: int | None = None


def preview_pixels(image) -> np.ndarray:
    """A float image tensor in [0, 1] (``[..., H, W, 3]``) -> the uint8 array a :class:`Preview` carries."""
    return image.detach().clamp(0, 1).mul(255).round().byte().cpu().numpy()


@dataclass
class SceneUpdate(Event):
    """The current scene, for the viewer. ``scene`` is the live object (in-process only);
    ``path`` a saved copy (in the log and across processes)."""

    type: ClassVar[str] = "scene"
    scene: Any = field(default=None, metadata={"transient": True})
    path: str | None = None
    step: int | None = None


@dataclass
class Artifact(Event):
    """A file the run produced (final scene, export, checkpoint)."""

    type: ClassVar[str] = "artifact"
    kind: str
    path: str


@dataclass
class Log(Event):
    type: ClassVar[str] = "log"
    message: str
    level: str = "info"


@dataclass
class Status(Event):
    """A job's state changed (sent by the job runner, never by a pipeline): ``status`` is one of
    queued, running, done, failed, failed-resumable, cancelled; ``message`` says why it failed;
    ``result_dir`` is the saved final scene when done."""

    type: ClassVar[str] = "status"
    status: str
    message: str | None = None
    result_dir: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES


FINISHED_STATUSES = ("done", "failed", "failed-resumable", "cancelled")

EVENT_TYPES: dict[str, type[Event]] = {cls.type: cls for cls in (Progress, Preview, SceneUpdate, Artifact, Log,
                                                                   Status)}


def event_from_record(record: dict[str, Any]) -> Event:
    """Inverse of :meth:`Event.to_record` (unknown keys from newer versions are ignored)."""
    kind = record.get("type")
    if kind not in EVENT_TYPES:
        raise ValueError(f"unknown event type {kind!r}")
    cls = EVENT_TYPES[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in record.items() if k in names}
    if kwargs.get("grid") is not None:
        kwargs["grid"] = tuple(kwargs["grid"])
    return cls(**kwargs)


class EtaEstimator:
    """Seconds left from recent step times (an exponential moving average, robust to a slow start)."""

    def __init__(self, total: int, smoothing: float = 0.1) -> None:
        self.total = total
        self.smoothing = smoothing
        self._last: float | None = None
        self._rate: float | None = None

    def update(self, step: int) -> float | None:
        now = time.perf_counter()
        if self._last is not None:
            dt = now - self._last
            self._rate = dt if self._rate is None else (1 - self.smoothing) * self._rate + self.smoothing * dt
        self._last = now
        if self._rate is None:
            return None
        return max(0.0, (self.total - step) * self._rate)
