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
