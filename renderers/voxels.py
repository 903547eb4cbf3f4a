"""A voxel radiance volume: dense grids of density and colour over [-1, 1]^3, optionally over time.

The autodecoder's result (a 3D voxel radiance volume) and the toy pipeline's fitted model. A scene
holds ``T`` grids at evenly spaced times in its ``time_range`` and interpolates linearly between
them; ``T = 1`` is a static object. It is rendered by ray marching with trilinear sampling
(``torch.nn.functional.grid_sample``) and alpha compositing, differentiably, in pure torch.

    scene = VoxelScene.empty(resolution=32, frames=4)
    out = scene.render(orbit_cameras(3.0, 20.0, 45.0, 40.0, 64, 64), t=0.5)   # RenderOutput

Grids are stored raw (pre-activation), so they can be optimised directly: density
``sigma = density_scale * softplus(raw)`` per world unit, colour ``sigmoid(raw)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from renderers.cameras import Cameras
from renderers.mesh import TriangleMesh, isosurface
from renderers.scene import RenderOutput, read_manifest, register_scene_kind, write_manifest

GRID_FILE = "grid.safetensors"


@dataclass
class VoxelScene:
    """``grid`` ``[T, 4, R, R, R]``: channel 0 raw density, 1-3 raw colour; spatial axes ordered
    (z, y, x) as ``grid_sample`` expects, the grid's corners at the corners of [-1, 1]^3.

    Attributes:
        time_range: the times of the first and last grid.
        density_scale: sigma = density_scale * softplus(raw density), in 1 / world unit.
        samples_per_ray: ray-marching samples between the ray's entry and exit of the cube.
        mesh_threshold: the density iso-level that :meth:`to_mesh` extracts.
    """

    kind: ClassVar[str] = "voxels"

    grid: Tensor
    time_range: tuple[float, float] = (0.0, 1.0)
    density_scale: float = 10.0
    samples_per_ray: int = 64
    mesh_threshold: float = 5.0

    def __post_init__(self) -> None:
        if self.grid.ndim == 4:
            self.grid = self.grid[None]
        if self.grid.ndim != 5 or self.grid.shape[1] != 4:
            raise ValueError(f"voxel grid must be [T, 4, D, H, W], got {tuple(self.grid.shape)}")
        self.time_range = (float(self.time_range[0]), float(self.time_range[1]))

    # ---------------------------------------------------------------- construction
    @classmethod
    def empty(cls, resolution: int, frames: int = 1, *, density: float = -6.0, device=None, **kwargs) -> VoxelScene:
        """A nearly transparent grey volume (raw density ``density``, colour 0.5) to optimise from."""
        grid = torch.zeros(frames, 4, resolution, resolution, resolution, device=device)
        grid[:, 0] = density
        return cls(grid, **kwargs)

    @classmethod
    def from_values(cls, sigma: Tensor, rgb: Tensor, density_scale: float = 10.0, **kwargs) -> VoxelScene:
        """From activated values: ``sigma`` ``[T, R, R, R]`` (>= 0, per world unit) and ``rgb``
        ``[T, 3, R, R, R]`` in [0, 1] (spatial axes z, y, x)."""
        s = (sigma / density_scale).clamp_min(1e-6)
        raw_density = s + torch.log(-torch.expm1(-s))  # inverse softplus
        raw_rgb = torch.logit(rgb.clamp(1e-4, 1 - 1e-4))
        return cls(torch.cat([raw_density[:, None], raw_rgb], 1), density_scale=density_scale, **kwargs)

    # ---------------------------------------------------------------- properties
    @property
    def frames(self) -> int:
        return self.grid.shape[0]

    @property
    def resolution(self) -> tuple[int, int, int]:
        """(D, H, W) = (z, y, x) sample counts."""
        return tuple(self.grid.shape[2:])

    def detach(self) -> VoxelScene:
        return VoxelScene(self.grid.detach().clone(), self.time_range, self.density_scale, self.samples_per_ray,
                          self.mesh_threshold)

    def grid_at(self, t: float) -> Tensor:
        """The raw grid ``[4, R, R, R]`` at time ``t`` (linear between the stored frames, clamped)."""
        t0, t1 = self.time_range
        if self.frames == 1 or t1 <= t0:
            return self.grid[0]
        u = min(max((t - t0) / (t1 - t0), 0.0), 1.0) * (self.frames - 1)
        i = min(int(math.floor(u)), self.frames - 2)
        w = u - i
        if w == 0.0:
            return self.grid[i]
        return torch.lerp(self.grid[i], self.grid[i + 1], w)

    def sample(self, points: Tensor, t: float) -> tuple[Tensor, Tensor]:
        """Density ``[N]`` and colour ``[N, 3]`` at world points ``[N, 3]`` (zero density outside)."""
        return _sample(self.grid_at(t), points, self.density_scale)

    # ---------------------------------------------------------------- Scene protocol
    def render(self, cameras: Cameras, t: float, *, chunk: int = 1 << 15,
               generator: torch.Generator | None = None) -> RenderOutput:
        """Render C cameras at time ``t``: rgb (premultiplied), alpha and depth ``[C, H, W, *]``.

        ``generator`` jitters the samples along each ray (stratified sampling, for training).
        ``chunk`` bounds the rays marched at once (memory ~ chunk x samples_per_ray x 4 floats).
        """
        cameras = cameras.to(self.grid.device, self.grid.dtype)
        origins, dirs = cameras.rays()
        C, H, W, _ = origins.shape
        forward = cameras.c2w[:, None, None, :3, 2].expand(C, H, W, 3)
        grid = self.grid_at(t)
        flat = [x.reshape(-1, 3) for x in (origins, dirs, forward)]
        outs = [_march(grid, o, d, f, self.samples_per_ray, self.density_scale, generator)
                for o, d, f in zip(*(x.split(chunk) for x in flat))]
        rgb, alpha, depth = (torch.cat(parts).reshape(C, H, W, -1) for parts in zip(*outs))
        return RenderOutput(rgb, alpha, depth)

    @torch.no_grad()
    def to_mesh(self, t: float, resolution: int = 128, threshold: float | None = None) -> TriangleMesh:
        """Marching cubes of density at ``threshold`` (default ``mesh_threshold``), resampled to
        ``resolution``^3, with vertex colours from the colour grid. Empty when nothing crosses it."""
        level = self.mesh_threshold if threshold is None else threshold
        axis = torch.linspace(-1, 1, resolution, device=self.grid.device)
        z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
        points = torch.stack([x, y, z], -1).reshape(-1, 3)
        grid = self.grid_at(t).float()
        sigma, _ = _sample(grid, points, self.density_scale)
        volume = sigma.reshape(resolution, resolution, resolution).cpu().numpy()
        mesh = isosurface(volume, level, -1.0, 2 / (resolution - 1), order="zyx")
        if mesh.is_empty:
            return mesh
        _, colours = _sample(grid, torch.as_tensor(mesh.vertices, dtype=grid.dtype, device=grid.device),
                             self.density_scale)
        mesh.vertex_colors = colours.float().cpu().numpy()
        return mesh

    def save(self, directory: str | Path) -> Path:
        """Write ``scene.json`` and ``grid.safetensors`` into ``directory`` (each file atomically)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / (GRID_FILE + ".tmp")
        save_file({"grid": self.grid.detach().float().contiguous().cpu()}, str(tmp))
        tmp.replace(directory / GRID_FILE)
        write_manifest(directory, self.kind, time_range=list(self.time_range), density_scale=self.density_scale,
                       samples_per_ray=self.samples_per_ray, mesh_threshold=self.mesh_threshold,
                       frames=self.frames, resolution=list(self.resolution))
        return directory

    @classmethod
    def load(cls, directory: str | Path, device=None) -> VoxelScene:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        manifest = read_manifest(directory, cls.kind, "a voxel scene")
        try:
            grid = load_file(str(Path(directory) / GRID_FILE), device=str(device or "cpu"))["grid"]
        except (OSError, SafetensorError, KeyError) as err:
            raise ValueError(f"voxel scene '{directory}' has an unreadable {GRID_FILE} ({err}).") from None
        return cls(grid, tuple(manifest.get("time_range", (0.0, 1.0))), manifest.get("density_scale", 10.0),
                   manifest.get("samples_per_ray", 64), manifest.get("mesh_threshold", 5.0))


register_scene_kind(VoxelScene.kind, "renderers.voxels:VoxelScene")


# -------------------------------------------------------------------- ray marching
def _sample(grid: Tensor, points: Tensor, density_scale: float) -> tuple[Tensor, Tensor]:
    """Trilinear density ``[N]`` and colour ``[N, 3]`` of a raw grid ``[4, D, H, W]`` at points ``[N, 3]``."""
    raw = F.grid_sample(grid[None], points.reshape(1, 1, 1, -1, 3), mode="bilinear", padding_mode="zeros",
                        align_corners=True)[0, :, 0, 0].T  # [N, 4]
    inside = (points.abs() <= 1).all(-1)
    sigma = density_scale * F.softplus(raw[:, 0]) * inside
    return sigma, torch.sigmoid(raw[:, 1:])


def ray_box(origins: Tensor, dirs: Tensor, bound: float = 1.0) -> tuple[Tensor, Tensor]:
    """Entry and exit distances ``[N]`` of rays ``[N, 3]`` through the cube [-bound, bound]^3
    (``near >= far`` where a ray misses)."""
    safe = torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    a = (-bound - origins) / safe
    b = (bound - origins) / safe
    near = torch.minimum(a, b).amax(-1).clamp_min(0.0)
    far = torch.maximum(a, b).amin(-1)
    return near, far


def _march(grid: Tensor, origins: Tensor, dirs: Tensor, forward: Tensor, samples: int, density_scale: float,
           generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
    """Composite ``samples`` points along each of N rays: rgb ``[N, 3]``, alpha ``[N, 1]``, depth ``[N, 1]``."""
    near, far = ray_box(origins, dirs)
    hit = far > near
    far = torch.where(hit, far, near)
    steps = torch.arange(samples, device=grid.device, dtype=grid.dtype)
    if generator is None:
        u = (steps + 0.5).expand(len(origins), samples)
    else:
        u = steps + torch.rand(len(origins), samples, generator=generator, device="cpu").to(grid)
    delta = ((far - near) / samples)[:, None]
    ts = near[:, None] + u * delta  # [N, S]
    points = origins[:, None] + ts[..., None] * dirs[:, None]
    sigma, rgb = _sample(grid, points.reshape(-1, 3), density_scale)
    sigma = sigma.reshape(-1, samples)
    alpha = 1 - torch.exp(-sigma * delta)
    # transmittance before each sample: exclusive cumulative product of (1 - alpha)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1] + 1e-10], 1), 1)
    weights = alpha * trans  # [N, S]
    acc = weights.sum(1, keepdim=True)
    colour = (weights[..., None] * rgb.reshape(-1, samples, 3)).sum(1)
    z = ts * (dirs * forward).sum(-1, keepdim=True)  # distance along the ray -> camera z
    depth = (weights * z).sum(1, keepdim=True) / acc.clamp_min(1e-6)
    depth = torch.where(acc > 1e-4, depth, torch.zeros_like(depth))
    return colour, acc, depth

