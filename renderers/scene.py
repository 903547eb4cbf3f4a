"""The `Scene` protocol: what every generation result is, and all the viewer and exporters rely on.

4D-fy yields a hash-grid field scene, Diffusion² a deformable-Gaussian scene, the autodecoder a
voxel scene. The viewer and the exporters call only what is declared here; they never branch on a
concrete class. A scene saved with :meth:`Scene.save` writes ``scene.json`` naming its ``kind``,
and :func:`load_scene` finds the class registered for that kind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from torch import Tensor

if TYPE_CHECKING:
    from renderers.cameras import Cameras
    from renderers.mesh import TriangleMesh
    from renderers.splats import GaussianSet

SCENE_MANIFEST = "scene.json"


@dataclass
class RenderOutput:
    """What a scene renders for C cameras at one time: ``rgb`` ``[C, H, W, 3]`` in [0, 1],
    ``alpha`` ``[C, H, W, 1]``, ``depth`` ``[C, H, W, 1]`` (camera z; 0 where alpha is 0)."""

    rgb: Tensor
    alpha: Tensor
    depth: Tensor

    def composite(self, background: Tensor | float) -> Tensor:
        """RGB over a background colour ``[3]`` or image ``[C, H, W, 3]``."""
        return self.rgb + (1 - self.alpha) * background


@runtime_checkable
class Scene(Protocol):
    """A 3D object that may move over ``time_range`` (t in [0, 1] by convention).

    ``rgb`` returned by ``render`` is premultiplied by alpha (composited over black); use
    :meth:`RenderOutput.composite` for another background.
    """

    kind: ClassVar[str]
    time_range: tuple[float, float]

    def render(self, cameras: Cameras, t: float) -> RenderOutput: ...

    def to_mesh(self, t: float, resolution: int = 128) -> TriangleMesh: ...

    def save(self, directory: str | Path) -> Path: ...

    @classmethod
    def load(cls, directory: str | Path) -> Scene: ...


@runtime_checkable
class DeformableScene(Scene, Protocol):
    """A scene whose motion is a deformation of one canonical shape (deformable Gaussians).

    Exporters use it to write one mesh with morph targets instead of a mesh per frame.
    """

    def deform_points(self, points: Tensor, t: float) -> Tensor:
        """Move canonical-space points ``[N, 3]`` to where they are at time ``t`` ``[N, 3]``."""
        ...


@runtime_checkable
class SplatScene(Scene, Protocol):
    """A scene that can be shown and exported as 3D Gaussians at any time (viewer splats, 3DGS PLY)."""

    def gaussians_at(self, t: float) -> GaussianSet: ...


_SCENE_KINDS: dict[str, str] = {
    # kind -> "module:Class"; modules are imported only when a scene of that kind is loaded.
    "voxels": "renderers.voxels:VoxelScene",
    "world": "pipelines.world.scene:WorldScene",
    "gaussians": "renderers.gaussian_scene:DeformableGaussianScene",
    "field": "renderers.field_scene:FieldScene",
}


def register_scene_kind(kind: str, target: str) -> None:
    """Register ``"module:Class"`` as the loader for scenes whose manifest says ``kind``."""
    _SCENE_KINDS[kind] = target


def write_manifest(directory: str | Path, kind: str, **extra) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SCENE_MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"kind": kind, **extra}, indent=2))
    tmp.replace(path)
    return path


def read_manifest(directory: str | Path, kind: str | None = None, title: str | None = None,
                  format_version: int | None = None) -> dict:
    """The scene manifest of ``directory``; with ``kind``, one sentence when it holds another kind of scene
    (``title`` names the expected kind for people, e.g. "a Gaussian scene"); with ``format_version``, one
    sentence when a newer version of the program wrote it."""
    path = Path(directory) / SCENE_MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"'{directory}' is not a saved scene: it has no {SCENE_MANIFEST}.")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"'{path}' is corrupt ({err.msg} at line {err.lineno}).") from None
    if not isinstance(manifest, dict) or "kind" not in manifest:
        raise ValueError(f"'{path}' does not name the scene's kind.")
    if kind is not None and manifest["kind"] != kind:
        raise ValueError(f"'{directory}' holds a '{manifest['kind']}' scene, not {title or f'a {kind} scene'}.")
    saved = manifest.get("format_version", 0)
    if format_version is not None and (not isinstance(saved, int) or saved > format_version):
        raise ValueError(f"'{directory}' was saved by a newer version ({manifest['kind']} format {saved}); "
                         f"update fourd-studio to open it.")
    return manifest


def load_scene(directory: str | Path) -> Scene:
    """Load any saved scene by the kind its manifest names."""
    import importlib

    kind = read_manifest(directory)["kind"]
    if kind not in _SCENE_KINDS:
        raise ValueError(f"'{directory}' holds a scene of kind '{kind}', which this version cannot load "
                         f"(known: {', '.join(sorted(_SCENE_KINDS)) or 'none'}).")
    module, _, name = _SCENE_KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), name).load(directory)
