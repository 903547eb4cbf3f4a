"""`WorldScene`: a procedural-world sample as a `Scene` (kind "world"), the ground truth pipelines are measured
against and the viewer can show beside a result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import torch

from pipelines.world.grammar import WorldSpec, sample_spec
from pipelines.world.render import (
    VoxelGrid,
    WorldRender,
    albedo_at,
    normals,
    one_thread,
    render_world,
    sdf_grid,
    shade,
    voxelize,
)
from pipelines.world.sdf import pose_at
from renderers.cameras import Cameras
from renderers.mesh import TriangleMesh, isosurface
from renderers.scene import RenderOutput, read_manifest, register_scene_kind, write_manifest


class WorldScene:
    """The exact scene of a :class:`WorldSpec`; ``WorldScene.from_seed(7)`` is the world's sample 7."""

    kind: ClassVar[str] = "world"

    def __init__(self, spec: WorldSpec) -> None:
        self.spec = spec
        self.time_range = (0.0, 1.0)

    @classmethod
    def from_seed(cls, seed: int) -> WorldScene:
        return cls(sample_spec(seed))

    def __repr__(self) -> str:
        return f"WorldScene({self.spec.caption()!r}, seed={self.spec.seed})"

    def render(self, cameras: Cameras, t: float) -> RenderOutput:
        out = render_world(self.spec, cameras, t)
        return RenderOutput(out.rgb.to(cameras.device), out.alpha.to(cameras.device), out.depth.to(cameras.device))

    def render_full(self, cameras: Cameras, t: float | torch.Tensor) -> WorldRender:
        """RGB, alpha, depth and world normals; ``t`` may be ``[C]`` (one time per camera)."""
        return render_world(self.spec, cameras, t)

    def voxels(self, t: float, resolution: int = 32) -> VoxelGrid:
        return voxelize(self.spec, t, resolution)

    def to_mesh(self, t: float, resolution: int = 128) -> TriangleMesh:
        """Marching cubes on the exact SDF over [-1, 1]^3, coloured with the diffuse-lit surface colour."""
        with one_thread(), torch.no_grad():
            mesh = isosurface(sdf_grid(self.spec, t, resolution).numpy(), 0.0, -1.0, 2.0 / (resolution - 1),
                              inside="below")
            if mesh.is_empty:
                return mesh
            pose = pose_at(self.spec, torch.tensor([float(t)]))
            points = torch.from_numpy(mesh.vertices)
            nrm = normals(self.spec.shape, pose, points, None)
            colours = shade(self.spec, albedo_at(self.spec, pose, points, None), nrm, None)
        return TriangleMesh(mesh.vertices, mesh.faces, colours.numpy(), nrm.numpy())

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        write_manifest(directory, self.kind, spec=self.spec.to_dict(), caption=self.spec.caption())
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> WorldScene:
        manifest = read_manifest(directory, cls.kind, "a world scene")
        if "spec" not in manifest:
            raise ValueError(f"'{directory}' does not hold a world scene (its manifest has no spec).")
        try:
            return cls(WorldSpec.from_dict(manifest["spec"]))
        except (TypeError, ValueError) as err:
            raise ValueError(f"'{directory}' holds a world scene this version cannot read: {err}") from None

    def to_json(self) -> str:
        return json.dumps(self.spec.to_dict())


register_scene_kind(WorldScene.kind, "pipelines.world.scene:WorldScene")
