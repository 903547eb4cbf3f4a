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
