"""The pipelines the studio and the `fourd` command line can run, by name.

A pipeline module registers itself when imported:

    register_pipeline(PipelineInfo("toy-fit", "Fit a voxel volume to a moving shape", ToyFitConfig,
                                   entry="pipelines.toy:run", inputs=()))

and is listed in ``_BUILTIN`` below (name -> module) so that it is found without being imported
first; modules are imported only when a pipeline is asked for, so ``fourd --help`` stays fast. The
entry is ``run(inputs: dict[str, str], config, context: RunContext) -> Iterator[Event]``.
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass

from pipelines.config import Config

_BUILTIN: dict[str, str] = {
    # pipeline name -> module that registers it (one line per pipeline)
    "toy-fit": "pipelines.toy",
    "image-to-4d": "pipelines.diffusion2.pipeline",
    "video-to-4d": "pipelines.diffusion2.pipeline",
    "text-to-4d-d2": "pipelines.diffusion2.pipeline",
    "text-to-4d": "pipelines.fourdfy.pipeline",
    "text-to-3d": "pipelines.autodecoder.pipeline",
}

_REGISTRY: dict[str, PipelineInfo] = {}


class UnknownPipelineError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class PipelineInfo:
    """A runnable pipeline.

    Attributes:
        name: the command-line name (``fourd generate NAME``).
        title: one line for menus and ``--help``.
        config_cls: its :class:`Config` subclass (presets preview / standard / paper).
        entry: ``"module:function"`` of ``run(inputs, config, context) -> Iterator[Event]``.
        inputs: input names in order: ``"prompt"`` (text) or ``"image"`` / ``"video"`` (files,
            copied into the run folder).
        preflight: optional ``"module:function"`` of ``check(inputs, config, priors) -> None`` run
            before a job is queued; it raises with one clear sentence when something the job needs
            is missing (a model not downloaded), so nothing starts that cannot finish.
        oom_hint: the config key to lower when the job runs out of memory (``"render.resolution"``).
    """

    name: str
    title: str
    config_cls: type[Config]
    entry: str
    inputs: tuple[str, ...] = ()
    preflight: str | None = None
    oom_hint: str | None = None


def register_pipeline(info: PipelineInfo) -> None:
    if ":" not in info.entry:
        raise ValueError(f"pipeline entry must be 'module:function', got {info.entry!r}")
    _REGISTRY[info.name] = info


def pipeline_names() -> list[str]:
    """Names of all known pipelines, without importing any pipeline module."""
    return sorted(set(_BUILTIN) | set(_REGISTRY))


def get_pipeline(name: str) -> PipelineInfo:
    if name not in _REGISTRY and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name not in _REGISTRY:
        raise UnknownPipelineError(f"unknown pipeline '{name}' (known: {', '.join(pipeline_names()) or 'none'}).")
    return _REGISTRY[name]


def list_pipelines() -> list[PipelineInfo]:
    """Every pipeline whose module imports; a module that fails to import is skipped with a warning
    (one broken optional dependency must not hide the other pipelines)."""
    for name, module in _BUILTIN.items():
        if name not in _REGISTRY:
            try:
                importlib.import_module(module)
            except ImportError as err:
                warnings.warn(f"pipeline '{name}' is unavailable: {err}", stacklevel=2)
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def resolve(target: str):
    """The object named by ``"module:attribute"``."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
