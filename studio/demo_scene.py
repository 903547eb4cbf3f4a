"""An analytic bouncing, spinning ball as a :class:`~renderers.scene.SplatScene`.

A stand-in so the studio has something to show before the pipelines' bundled default result lands;
it goes through the same `Scene` protocol as every generated result. The ball is a shell of
Gaussians coloured by longitude (so its spin is visible), dropping and bouncing once per loop.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from renderers.mesh import TriangleMesh
from renderers.scene import RenderOutput, register_scene_kind, write_manifest
from renderers.splats import GaussianSet, rgb_to_sh_dc

KIND = "demo-ball"


def _fibonacci_sphere(n: int) -> Tensor:
    """``[n, 3]`` nearly uniform unit vectors."""
    i = torch.arange(n, dtype=torch.float32) + 0.5
    z = 1 - 2 * i / n
    r = (1 - z * z).clamp_min(0).sqrt()
    phi = i * math.pi * (3 - math.sqrt(5))
    return torch.stack([r * phi.cos(), r * phi.sin(), z], -1)


def _hue_colors(directions: Tensor) -> Tensor:
    """Colour ``[N, 3]`` from canonical directions ``[N, 3]``: hue by longitude (so the spin shows),
    darker towards the bottom (splats are unlit; this keeps the ball reading as round)."""
    longitude = torch.atan2(directions[:, 1], directions[:, 0])
    hue = (longitude / (2 * math.pi)) % 1.0
    k = (hue[:, None] * 6 + torch.tensor([5.0, 3.0, 1.0])) % 6
    rgb = 1 - torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    shade = 0.55 + 0.45 * (0.5 + 0.5 * directions[:, 2:3])
    return (0.15 + 0.8 * rgb) * shade


class BouncingBall:
    """A ball of radius ``radius`` falling from ``height`` and bouncing on z = -floor, spinning about Z."""

    kind: ClassVar[str] = KIND

    def __init__(self, count: int = 4000, radius: float = 0.35, height: float = 0.9, floor: float = 1.0,
                 turns: float = 1.0) -> None:
        self.count = count
        self.radius = radius
        self.height = height
        self.floor = floor
        self.turns = turns
        self.time_range = (0.0, 1.0)
        self._directions = _fibonacci_sphere(count)
        self._colors = _hue_colors(self._directions)

    def centre(self, t: float) -> Tensor:
        """Ball centre ``[3]`` at time t: a parabolic drop and bounce that loops (same height at 0 and 1)."""
        bounce = abs(math.cos(math.pi * t))  # 1 at t=0 and t=1, 0 at the floor contact t=0.5
        z = -self.floor + self.radius + self.height * bounce * bounce
        return torch.tensor([0.0, 0.0, z])

    def _rotation(self, t: float) -> Tensor:
        angle = 2 * math.pi * self.turns * t
        c, s = math.cos(angle), math.sin(angle)
        return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    def gaussians_at(self, t: float) -> GaussianSet:
        means = self._directions @ self._rotation(t).T * self.radius + self.centre(t)
        n = self.count
        scale = self.radius * 2.2 / math.sqrt(n)
        return GaussianSet(
            means=means,
            quats=torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1),
            log_scales=torch.full((n, 3), math.log(scale)),
            opacity_logits=torch.full((n,), 4.0),
            sh=rgb_to_sh_dc(self._colors)[:, None, :],
        )

    def to_mesh(self, t: float, resolution: int = 128) -> TriangleMesh:
        import trimesh

        subdivisions = max(1, min(5, int(math.log2(max(resolution, 4))) - 3))
        sphere = trimesh.creation.icosphere(subdivisions=subdivisions, radius=1.0)
        directions = torch.as_tensor(np.asarray(sphere.vertices), dtype=torch.float32)
        colors = _hue_colors(directions)
        vertices = directions @ self._rotation(t).T * self.radius + self.centre(t)
        return TriangleMesh(vertices.numpy(), np.asarray(sphere.faces), colors.numpy(), directions.numpy())

    def render(self, cameras, t: float) -> RenderOutput:
        """Exact ray-sphere intersection, shaded by the surface colour and a headlight."""
        origins, dirs = cameras.rays()
        centre = self.centre(t).to(origins)
        oc = origins - centre
        b = (oc * dirs).sum(-1)
        c = (oc * oc).sum(-1) - self.radius**2
        disc = b * b - c
        hit = disc > 0
        dist = (-b - disc.clamp_min(0).sqrt()).clamp_min(0)
        points = origins + dist[..., None] * dirs
        normals = (points - centre) / self.radius
        canonical = normals @ self._rotation(t).to(origins)  # inverse rotation: R^T applied on the right
        shade = (-(normals * dirs).sum(-1, keepdim=True)).clamp(0.2, 1.0)
        alpha = hit[..., None].to(origins)
        rgb = _hue_colors(canonical.reshape(-1, 3)).reshape(points.shape) * shade * alpha
        z = (points - cameras.c2w[:, None, None, :3, 3]) @ cameras.c2w[:, :3, 2][:, None, :, None]
        return RenderOutput(rgb=rgb, alpha=alpha, depth=z * alpha)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        params = {"count": self.count, "radius": self.radius, "height": self.height, "floor": self.floor,
                  "turns": self.turns}
        write_manifest(directory, KIND, params=params)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> BouncingBall:
        manifest = json.loads((Path(directory) / "scene.json").read_text())
        return cls(**manifest.get("params", {}))


register_scene_kind(KIND, "studio.demo_scene:BouncingBall")
