"""A plain triangle mesh in world coordinates (+Z up), the currency between scenes and exporters."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TriangleMesh:
    """``vertices`` ``[V, 3]`` float32, ``faces`` ``[F, 3]`` int32 (counter-clockwise seen from outside),
    optional ``vertex_colors`` ``[V, 3]`` float32 in [0, 1] and ``normals`` ``[V, 3]``."""

    vertices: np.ndarray
    faces: np.ndarray
    vertex_colors: np.ndarray | None = None
    normals: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float32).reshape(-1, 3)
        self.faces = np.ascontiguousarray(self.faces, dtype=np.int32).reshape(-1, 3)
        if self.faces.size and (self.faces.min() < 0 or self.faces.max() >= len(self.vertices)):
            raise ValueError("mesh faces index vertices that do not exist")
        for name in ("vertex_colors", "normals"):
            value = getattr(self, name)
            if value is not None:
                value = np.ascontiguousarray(value, dtype=np.float32).reshape(-1, 3)
                if len(value) != len(self.vertices):
                    raise ValueError(f"mesh has {len(self.vertices)} vertices but {len(value)} {name}")
                setattr(self, name, value)

    @property
    def is_empty(self) -> bool:
        return len(self.faces) == 0

    def bounds(self) -> np.ndarray:
        """``[2, 3]`` min and max corner (zeros for an empty mesh)."""
        if len(self.vertices) == 0:
            return np.zeros((2, 3), np.float32)
        return np.stack([self.vertices.min(0), self.vertices.max(0)])

    def to_trimesh(self):
        import trimesh

        colors = None
        if self.vertex_colors is not None:
            colors = (np.clip(self.vertex_colors, 0, 1) * 255).round().astype(np.uint8)
        return trimesh.Trimesh(self.vertices, self.faces, vertex_colors=colors,
                               vertex_normals=self.normals, process=False)


def empty_mesh() -> TriangleMesh:
    return TriangleMesh(np.zeros((0, 3)), np.zeros((0, 3)))


def isosurface(volume: np.ndarray, level: float, origin: float | np.ndarray, spacing: float, *,
               inside: str = "above", order: str = "xyz") -> TriangleMesh:
    """Marching cubes (scikit-image) of a sampled scalar field at ``level``, the one way scenes make meshes.

    ``volume`` is indexed ``[x, y, z]`` (``order="xyz"``) or ``[z, y, x]`` (``order="zyx"``); sample ``i`` lies at
    ``origin + i * spacing`` in world units. ``inside``: "above" when the object is where the field exceeds
    ``level`` (densities, opacities), "below" for signed distances. Faces come out counter-clockwise seen from
    outside and normals point out; no colours (the caller samples its own). Empty when ``level`` is not crossed.
    """
    from skimage.measure import marching_cubes

    if inside not in ("above", "below") or order not in ("xyz", "zyx"):
        raise ValueError(f"isosurface: inside must be 'above' or 'below' and order 'xyz' or 'zyx', got "
                         f"{inside!r}, {order!r}")
    if not (float(volume.min()) < level < float(volume.max())):
        return empty_mesh()
    verts, faces, normals, _ = marching_cubes(volume, level=level, spacing=(spacing,) * 3)
    # scikit-image winds triangles clockwise seen from the low side and its normals follow the gradient
    # descent (they point to the low side); reading the volume in mirrored (z, y, x) order flips both.
    if order == "zyx":
        verts, normals = verts[:, ::-1], normals[:, ::-1]
    if (inside == "above") != (order == "zyx"):
        faces = faces[:, ::-1]
    if inside == "below":
        normals = -normals
    return TriangleMesh(verts + np.asarray(origin, dtype=np.float64), faces, normals=normals)


def silhouette_level(scene, density, times, *, preferred: float, size: int = 48, samples: int = 128,
                     tolerance: float = 0.02, device=None) -> float:
    """The density iso-level whose surface has the outline of the scene's own render.

    A field distilled on a CPU is soft: its densities may never reach the level a sharp field's surface sits
    at (threestudio's 25), and its mesh is then empty or a sliver of the object the renders show. This marches
    rays of five views (four around, one from above) through [-1, 1]^3 at each of ``times``, and picks the level
    at which the rays whose largest density exceeds it are the pixels the render covers (alpha > 0.5), by
    intersection over union. Of the levels within ``tolerance`` of the best, the one nearest ``preferred`` (in
    ratio) wins, so a sharp field keeps its usual level. ``preferred`` when the renders are empty.

    ``scene.render(cameras, t)`` gives the outline; ``density(points [N, 3], t) -> sigma [N]`` the field, given
    its points on ``device`` (the CPU when None).
    """
    import torch

    from renderers.cameras import orbit_cameras

    distance = 3.5  # the whole cube in view at 40 degrees
    cameras = orbit_cameras(distance, torch.tensor([20.0, 20.0, 20.0, 20.0, 80.0]),
                            torch.tensor([0.0, 90.0, 180.0, 270.0, 45.0]), 40.0, size, size)
    origins, directions = cameras.rays()
    steps = torch.linspace(distance - 3**0.5, distance + 3**0.5, samples)
    points = origins[..., None, :] + directions[..., None, :] * steps[:, None]
    inside = (points.abs() <= 1).all(-1)
    levels = preferred * torch.logspace(-3, 1, 81)
    hits = torch.zeros(len(levels))
    union = torch.zeros(len(levels))
    covered_any = False
    with torch.no_grad():
        for t in times:
            covered = scene.render(cameras, float(t)).alpha[..., 0].float().cpu() > 0.5
            covered_any = covered_any or bool(covered.any())
            sigma = torch.cat([density(p.to(device or "cpu"), float(t)).float().cpu().reshape(-1)
                               for p in points[inside].split(1 << 16)])
            peak = torch.zeros(inside.shape).masked_scatter_(inside, sigma).amax(-1)
            above = peak[None] > levels[:, None, None, None]
            hits += (above & covered).flatten(1).sum(1)
            union += (above | covered).flatten(1).sum(1)
    if not covered_any:
        return float(preferred)
    iou = hits / union.clamp_min(1)
    good = torch.nonzero(iou >= iou.max() - tolerance).flatten()
    best = good[(levels[good] / preferred).log().abs().argmin()]
    return float(levels[best])
