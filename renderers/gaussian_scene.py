"""A deformable 3D Gaussian scene (Diffusion², Sec. 3.4): canonical Gaussians plus a deformation field.

Implements :class:`~renderers.scene.Scene`, :class:`~renderers.scene.DeformableScene` and
:class:`~renderers.scene.SplatScene` as kind ``"gaussians"``. Saved as ``scene.json`` (manifest with
the deformation field's config), ``gaussians.safetensors`` (the 3DGS parameters, exactly as PLY
stores them) and ``deformation.safetensors`` (the field's weights).

    scene = DeformableGaussianScene(gaussians, make_deformation(DeformationConfig(kind="mlp")))
    out = scene.render(cameras, t=0.5)          # RenderOutput, rgb premultiplied
    splats = scene.gaussians_at(0.5)            # GaussianSet for the viewer / PLY export
    mesh = scene.to_mesh(0.5, resolution=128)   # marching cubes on the opacity field
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from renderers.deformation import DeformationConfig, DeformationField, deform_gaussians, make_deformation
from renderers.mesh import TriangleMesh, empty_mesh, isosurface
from renderers.rasterize import render_gaussians
from renderers.scene import RenderOutput, read_manifest, register_scene_kind, write_manifest
from renderers.splats import GaussianSet

FORMAT_VERSION = 1
GAUSSIANS_FILE = "gaussians.safetensors"
DEFORMATION_FILE = "deformation.safetensors"
_FIELDS = ("means", "quats", "log_scales", "opacity_logits", "sh")


class DeformableGaussianScene:
    """Canonical Gaussians ``gaussians`` moved by ``deformation`` (None: a static scene).

    ``tile_size`` is passed to the rasterizer (None: its default for the device).
    """

    kind: ClassVar[str] = "gaussians"

    def __init__(self, gaussians: GaussianSet, deformation: DeformationField | None = None,
                 time_range: tuple[float, float] = (0.0, 1.0), tile_size: int | None = None) -> None:
        self.gaussians = gaussians
        self.deformation = deformation
        self.time_range = (float(time_range[0]), float(time_range[1]))
        self.tile_size = tile_size

    # ---------------------------------------------------------------- views of the scene
    def gaussians_at(self, t: float) -> GaussianSet:
        """The Gaussians at time ``t`` (detached), for the viewer and for 3DGS PLY export."""
        with torch.no_grad():
            return deform_gaussians(self.gaussians, self.deformation, self._clamp_time(t)).detach()

    def deform_points(self, points: Tensor, t: float) -> Tensor:
        """Canonical points ``[N, 3]`` moved by the deformation field to time ``t``: ``[N, 3]``."""
        if self.deformation is None:
            return points
        field_param = next(self.deformation.parameters())
        with torch.no_grad():
            d_means = self.deformation(points.to(field_param), self._clamp_time(t))[0]
        return points + d_means.to(points)

    def placed(self, scale: float, offset) -> DeformableGaussianScene:
        """A copy moved to ``scale * x + offset`` (a uniform scale about the origin, then a shift ``[3]``), its
        motion with it: rendered from any camera, it is this scene seen from the camera moved the same way."""
        offset = torch.as_tensor(offset, dtype=torch.float32).reshape(3)
        g = self.gaussians
        gaussians = GaussianSet(g.means * scale + offset.to(g.means), g.quats.clone(),
                                g.log_scales + math.log(scale), g.opacity_logits.clone(), g.sh.clone())
        deformation = None
        if self.deformation is not None:
            deformation = copy.deepcopy(self.deformation)
            c = deformation.config
            old = torch.tensor(c.placement_offset, dtype=torch.float32)
            deformation.config = dataclasses.replace(
                c, placement_scale=c.placement_scale * scale,
                placement_offset=tuple(float(v) for v in old * scale + offset))
        return DeformableGaussianScene(gaussians, deformation, self.time_range, self.tile_size)

    def render(self, cameras, t: float, background: Tensor | None = None) -> RenderOutput:
        """RGB (premultiplied unless ``background`` ``[3]`` is given), alpha and depth ``[C, H, W, *]``.
        Differentiable in the Gaussians and the deformation field."""
        moved = deform_gaussians(self.gaussians, self.deformation, self._clamp_time(t))
        out = render_gaussians(moved, cameras, background=background, tile_size=self.tile_size)
        return RenderOutput(rgb=out.rgb, alpha=out.alpha, depth=out.depth)

    def _clamp_time(self, t: float) -> float:
        lo, hi = self.time_range
        return min(max(float(t), lo), hi)

    # ---------------------------------------------------------------- mesh
    def to_mesh(self, t: float, resolution: int = 128, level: float = 0.5) -> TriangleMesh:
        """Marching cubes (scikit-image) on the opacity field sum_i o_i exp(-d^T Sigma_i^-1 d / 2) of the
        Gaussians at ``t``, sampled on a grid of ``resolution`` cells along the longest side of their
        bounding box; vertex colours are the opacity-weighted DC colours there. Empty when nothing
        reaches ``level``."""
        g = self.gaussians_at(t).to("cpu")
        if len(g) == 0:
            return empty_mesh()
        density, colors, origin, voxel = opacity_grid(g, resolution)
        d = np.pad(density.numpy(), 1)  # closed surfaces where the object touches the box
        mesh = isosurface(d, level, origin.numpy() - voxel, voxel)
        if mesh.is_empty:
            return mesh
        idx = np.round((mesh.vertices - origin.numpy()) / voxel).astype(np.int64)
        idx = np.clip(idx, 0, np.array(density.shape) - 1)
        mesh.vertex_colors = np.clip(colors.numpy()[idx[:, 0], idx[:, 1], idx[:, 2]], 0, 1)
        return mesh

    # ---------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {name: getattr(self.gaussians, name).detach().cpu().contiguous() for name in _FIELDS}
        _atomic(lambda p: save_file(tensors, str(p)), directory / GAUSSIANS_FILE)
        deformation = None
        if self.deformation is not None:
            state = {k: v.detach().cpu().contiguous() for k, v in self.deformation.state_dict().items()}
            _atomic(lambda p: save_file(state, str(p)), directory / DEFORMATION_FILE)
            deformation = self.deformation.config.to_dict()
        write_manifest(directory, self.kind, format_version=FORMAT_VERSION, time_range=list(self.time_range),
                       count=len(self.gaussians), sh_degree=self.gaussians.sh_degree, deformation=deformation,
                       tile_size=self.tile_size)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> DeformableGaussianScene:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory)
        manifest = read_manifest(directory, cls.kind, "a Gaussian scene", FORMAT_VERSION)
        try:
            tensors = load_file(str(directory / GAUSSIANS_FILE))
            gaussians = GaussianSet(*(tensors[name] for name in _FIELDS))
            deformation = None
            if manifest.get("deformation") is not None:
                deformation = make_deformation(DeformationConfig.from_dict(manifest["deformation"]))
                deformation.load_state_dict(load_file(str(directory / DEFORMATION_FILE)))
        except (FileNotFoundError, KeyError, SafetensorError, RuntimeError, ValueError) as err:
            raise ValueError(f"'{directory}' is not a complete Gaussian scene ({err}).") from None
        return cls(gaussians, deformation, tuple(manifest.get("time_range", (0.0, 1.0))),
                   tile_size=manifest.get("tile_size"))


def opacity_grid(gaussians: GaussianSet, resolution: int, max_entries: int = 1 << 22):
    """Splat the Gaussians' opacity into a voxel grid over their 3-sigma bounding box.

    Returns density ``[X, Y, Z]``, opacity-weighted colour ``[X, Y, Z, 3]``, the grid origin ``[3]``
    (centre of voxel 0) and the voxel size. Each Gaussian touches only the voxels of its 3-sigma box
    (capped at a quarter of the grid), so memory scales with voxels x overlaps.
    """
    means = gaussians.means.float()
    cov = gaussians.covariances().float()
    sigma = cov.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt()  # [N, 3]
    lo = (means - 3 * sigma).amin(0)
    hi = (means + 3 * sigma).amax(0)
    voxel = float((hi - lo).max()) / max(resolution - 1, 1) or 1e-3
    dims = (((hi - lo) / voxel).ceil().long() + 1).clamp(1, resolution)
    density = torch.zeros(int(dims.prod()))
    color = torch.zeros(int(dims.prod()), 3)
    inv = torch.linalg.inv(cov + 1e-10 * torch.eye(3))
    inv_terms = torch.stack([inv[:, 0, 0], inv[:, 1, 1], inv[:, 2, 2], inv[:, 0, 1], inv[:, 0, 2], inv[:, 1, 2]], -1)
    opac = gaussians.opacities.float()
    rgb = gaussians.base_colors.float()
    half = (3 * sigma / voxel).ceil().long().clamp(0, max(resolution // 4, 1))
    center = torch.round((means - lo) / voxel).long()
    lo_i = (center - half).clamp_min(0)
    hi_i = torch.minimum(center + half, dims - 1)
    sizes = (hi_i - lo_i + 1).clamp_min(0)
    per = sizes.prod(-1)
    start = 0
    n = means.shape[0]
    while start < n:
        # As many Gaussians as fit in max_entries voxel visits.
        end = start + max(1, int(torch.searchsorted(torch.cumsum(per[start:], 0), max_entries)))
        end = min(end, n)
        idx = torch.arange(start, end)
        src = torch.repeat_interleave(idx, per[idx])
        offset = torch.arange(src.shape[0]) - (torch.cumsum(per[idx], 0) - per[idx]).repeat_interleave(per[idx])
        sz = sizes[src]
        ix = offset % sz[:, 0]
        iy = (offset // sz[:, 0]) % sz[:, 1]
        iz = offset // (sz[:, 0] * sz[:, 1])
        cell = lo_i[src] + torch.stack([ix, iy, iz], -1)
        dx, dy, dz = (lo + cell.float() * voxel - means[src]).unbind(-1)
        a = inv_terms[src]
        quad = (a[:, 0] * dx * dx + a[:, 1] * dy * dy + a[:, 2] * dz * dz
                + 2 * (a[:, 3] * dx * dy + a[:, 4] * dx * dz + a[:, 5] * dy * dz))
        w = opac[src] * torch.exp(-0.5 * quad)
        flat = (cell[:, 0] * dims[1] + cell[:, 1]) * dims[2] + cell[:, 2]
        density.index_add_(0, flat, w)
        color.index_add_(0, flat, w[:, None] * rgb[src])
        start = end
    color = color / density[:, None].clamp_min(1e-8)
    shape = tuple(int(s) for s in dims)
    return density.view(shape), color.view(*shape, 3), lo, voxel


def _atomic(write, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    tmp.replace(path)


register_scene_kind(DeformableGaussianScene.kind, "renderers.gaussian_scene:DeformableGaussianScene")
