"""`FieldScene` (kind ``"field"``): a 4D-fy field with its occupancy grid and background as a `Scene`.

Saved as ``scene.json`` (kind, field config, render settings, time range) next to ``field.safetensors``
(grid tables, MLP weights, occupancy grid, background), both written atomically.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import torch

from renderers.field import Background, Field4D, FieldConfig
from renderers.mesh import TriangleMesh, isosurface, silhouette_level
from renderers.scene import RenderOutput, read_manifest, register_scene_kind, write_manifest
from renderers.volume import OccupancyGrid, RenderSettings, render_image

WEIGHTS_FILE = "field.safetensors"
FORMAT_VERSION = 1


class FieldScene:
    """A 4D neural field as a :class:`renderers.scene.Scene`.

    ``render(cameras, t)`` renders without gradients in chunks (step centres, no jitter) and returns rgb
    premultiplied by alpha, as the protocol asks; ``background`` is kept for pipelines that composite.
    ``isosurface_threshold`` is the density of the surface :meth:`to_mesh` extracts (threestudio's 25).
    """

    kind = "field"

    def __init__(self, field: Field4D, occupancy: OccupancyGrid | None = None, background: Background | None = None,
                 *, settings: RenderSettings | None = None, time_range: tuple[float, float] = (0.0, 1.0),
                 isosurface_threshold: float = 25.0):
        self.field = field
        self.occupancy = occupancy if occupancy is not None else OccupancyGrid(32)
        c = field.config
        self.background = background if background is not None else Background(c.background, c.background_color)
        self.settings = settings or RenderSettings()
        self.time_range = (float(time_range[0]), float(time_range[1]))
        self.isosurface_threshold = float(isosurface_threshold)

    @classmethod
    def create(cls, config: FieldConfig | str = "small", *, seed: int = 0, **kwargs) -> FieldScene:
        """A fresh scene from a config or a preset name."""
        config = FieldConfig.preset(config) if isinstance(config, str) else config
        generator = torch.Generator().manual_seed(seed)
        return cls(Field4D(config, generator=generator), **kwargs)

    def _check_time(self, t: float) -> float:
        t = float(t)
        if not np.isfinite(t):
            raise ValueError(f"time must be a finite number, got {t}")
        return min(max(t, self.time_range[0]), self.time_range[1])

    @torch.no_grad()
    def render(self, cameras, t: float) -> RenderOutput:
        device = next(self.field.parameters()).device
        out = render_image(self.field, cameras.to(device), self._check_time(t), occupancy=self.occupancy,
                           settings=dataclasses.replace(self.settings, stratified=False, shading="albedo"))
        return RenderOutput(out.rgb.float(), out.alpha.float(), out.depth.float())

    @torch.no_grad()
    def density_volume(self, t: float, resolution: int = 128, chunk: int = 1 << 16) -> np.ndarray:
        """Density sampled on a ``resolution^3`` lattice over [-1, 1]^3, indexed ``[x, y, z]``."""
        device = next(self.field.parameters()).device
        axis = torch.linspace(-1, 1, resolution, device=device)
        grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
        t = self._check_time(t)
        sigma = torch.cat([self.field.density(p, t) for p in grid.split(chunk)])
        return sigma.reshape(resolution, resolution, resolution).float().cpu().numpy()

    @torch.no_grad()
    def to_mesh(self, t: float, resolution: int = 128) -> TriangleMesh:
        """Marching cubes on density at ``isosurface_threshold``; vertex colours from albedo, normals pointing
        out. An empty field gives an empty mesh.

        A field that never reaches that level but does render something (a soft field saved before 4D-fy fitted
        its level, or a snapshot during a run) gets, once, the level whose outline matches its renders
        (:func:`renderers.mesh.silhouette_level`), kept in ``isosurface_threshold``."""
        if resolution < 2:
            raise ValueError(f"mesh resolution must be at least 2, got {resolution}")
        volume = self.density_volume(t, resolution)
        mesh = isosurface(volume, self.isosurface_threshold, -1.0, 2 / (resolution - 1))
        if mesh.is_empty and 0.0 < float(volume.max()) < self.isosurface_threshold:
            level = silhouette_level(self, self.field.density, [self._check_time(t)],
                                     preferred=self.isosurface_threshold,
                                     device=next(self.field.parameters()).device)
            if level < self.isosurface_threshold:
                self.isosurface_threshold = level
                mesh = isosurface(volume, level, -1.0, 2 / (resolution - 1))
        if mesh.is_empty:
            return mesh
        device = next(self.field.parameters()).device
        points = torch.from_numpy(mesh.vertices).to(device)
        colors = torch.cat([self.field.albedo(p, self._check_time(t)) for p in points.split(1 << 16)])
        mesh.vertex_colors = colors.float().cpu().numpy()
        return mesh

    # ---------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"field.{k}": v for k, v in self.field.state_dict().items()}
        tensors |= {f"occupancy.{k}": v for k, v in self.occupancy.state_dict().items()}
        tensors |= {f"background.{k}": v for k, v in self.background.state_dict().items()}
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        tmp = directory / (WEIGHTS_FILE + ".tmp")
        save_file(tensors, str(tmp))
        os.replace(tmp, directory / WEIGHTS_FILE)
        write_manifest(directory, self.kind, format_version=FORMAT_VERSION, weights=WEIGHTS_FILE,
                       config=self.field.config.to_dict(), dynamic_mode=self.field.dynamic_mode,
                       occupancy_resolution=self.occupancy.resolution,
                       settings=dataclasses.asdict(self.settings), time_range=list(self.time_range),
                       isosurface_threshold=self.isosurface_threshold)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> FieldScene:
        from safetensors.torch import load_file

        directory = Path(directory)
        manifest = read_manifest(directory, cls.kind, "a field scene", FORMAT_VERSION)
        weights = directory / manifest.get("weights", WEIGHTS_FILE)
        if not weights.is_file():
            raise FileNotFoundError(f"'{directory}' has no {weights.name}: the field scene is incomplete.")
        config = FieldConfig.from_dict(manifest["config"])
        field = Field4D(config, dynamic_mode=manifest.get("dynamic_mode", "train"))
        occupancy = OccupancyGrid(int(manifest.get("occupancy_resolution", 32)))
        background = Background(config.background, config.background_color)
        tensors = load_file(str(weights))
        for prefix, module in (("field.", field), ("occupancy.", occupancy), ("background.", background)):
            state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            module.load_state_dict(state, strict=True)
        return cls(field, occupancy, background, settings=RenderSettings(**manifest.get("settings", {})),
                   time_range=tuple(manifest.get("time_range", (0.0, 1.0))),
                   isosurface_threshold=manifest.get("isosurface_threshold", 25.0))


register_scene_kind(FieldScene.kind, "renderers.field_scene:FieldScene")
