"""Analytic scenes for the exporter tests, and runners for the independent JS readers in tests/js.

- :class:`StripedBlobScene`: a striped sphere of Gaussians that moves and stretches (Deformable + Splat).
- :class:`PulsingPairScene`: a pulsing sphere joined by a second one half way through (topology changes;
  plain Scene, its meshes carry their own vertex colours).
- :class:`EmptyScene`: nothing at any time.
Renders are exact ray casts, so colours baked from them can be checked against the analytic albedo.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from renderers.mesh import TriangleMesh
from renderers.scene import RenderOutput
from renderers.splats import GaussianSet, rgb_to_sh_dc

JS_DIR = Path(__file__).parent / "js"


# ---------------------------------------------------------------------- shared geometry
def marching_cubes(sdf, resolution: int, colour=None) -> TriangleMesh:
    """Surface {sdf = 0} of a function of points ``[N, 3]`` on a grid over [-1, 1]^3 (skimage)."""
    from skimage.measure import marching_cubes as mc

    axis = np.linspace(-1, 1, resolution)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    values = sdf(grid).reshape(resolution, resolution, resolution)
    if values.min() >= 0:
        return TriangleMesh(np.zeros((0, 3)), np.zeros((0, 3)))
    spacing = 2 / (resolution - 1)
    verts, faces, _, _ = mc(-values, level=0.0, spacing=(spacing,) * 3)  # density = -sdf: normals point out
    verts = verts - 1
    return TriangleMesh(verts, faces, None if colour is None else colour(verts))


def ray_cast(cameras, hit_fn) -> RenderOutput:
    """Render with ``hit_fn(origins [R, 3], dirs [R, 3]) -> (s [R] (inf = miss), rgb [R, 3])``."""
    origins, dirs = cameras.rays()
    shape = origins.shape[:-1]
    s, rgb = hit_fn(origins.reshape(-1, 3), dirs.reshape(-1, 3))
    hit = torch.isfinite(s)
    alpha = hit.float()
    points = origins.reshape(-1, 3) + torch.where(hit, s, 0)[:, None] * dirs.reshape(-1, 3).double()
    cam_z = ((points - origins.reshape(-1, 3)) * cameras.c2w[:, None, None, :3, 2].expand(*shape, 3)
             .reshape(-1, 3)).sum(1)
    rgb = torch.where(hit[:, None], rgb, 0).float()
    return RenderOutput(rgb.reshape(*shape, 3), alpha.reshape(*shape, 1), (cam_z * hit).float().reshape(*shape, 1))


def sphere_hit(o, d, centre, radius):
    oc = o - centre
    b = (oc * d).sum(1)
    c = (oc * oc).sum(1) - radius**2
    disc = b * b - c
    s = -b - torch.sqrt(disc.clamp_min(0))
    return torch.where((disc > 0) & (s > 0), s, torch.full_like(s, math.inf))


# ---------------------------------------------------------------------- a deforming Gaussian blob
class StripedBlobScene:
    """Canonical sphere of radius 0.45; at time t it is stretched along z by 1 + 0.6 t and moved along
    x from -0.25 to +0.25 (so the deformation is not the identity even at t = 0)."""

    kind = "test-blob"
    time_range = (0.0, 1.0)
    radius = 0.45

    def __init__(self, n: int = 800, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        d = torch.randn(n, 3, generator=g, dtype=torch.float64)
        self.canonical = (d / d.norm(dim=1, keepdim=True) * self.radius).float()
        self.n = n
        self.sh_rest = 0.05 * torch.randn(n, 15, 3, generator=g)  # degree 3, to exercise f_rest order

    @staticmethod
    def scale(t: float) -> torch.Tensor:
        return torch.tensor([1.0, 1.0, 1.0 + 0.6 * t])

    @staticmethod
    def offset(t: float) -> torch.Tensor:
        return torch.tensor([0.5 * t - 0.25, 0.0, 0.0])

    def deform_points(self, points: torch.Tensor, t: float) -> torch.Tensor:
        return points * self.scale(t).to(points) + self.offset(t).to(points)

    def albedo(self, canonical: torch.Tensor) -> torch.Tensor:
        """Red/yellow stripes along canonical z, bluish on the +x side."""
        stripe = (torch.sin(canonical[:, 2] / self.radius * 9) > 0).to(canonical.dtype)
        bluish = (canonical[:, 0] > 0).to(canonical.dtype)
        return torch.stack([0.9 - 0.5 * bluish, 0.2 + 0.6 * stripe, 0.15 + 0.7 * bluish], 1)

    def gaussians_at(self, t: float) -> GaussianSet:
        colours = self.albedo(self.canonical)
        sh = torch.cat([rgb_to_sh_dc(colours)[:, None], self.sh_rest], 1)
        quats = torch.tensor([1.0, 0.1, -0.2, 0.05]).repeat(self.n, 1) * torch.linspace(0.5, 2, self.n)[:, None]
        return GaussianSet(self.deform_points(self.canonical, t), quats,
                           torch.full((self.n, 3), math.log(0.05)) + torch.log(self.scale(t)),
                           torch.linspace(-1, 4, self.n), sh)

    def render(self, cameras, t: float) -> RenderOutput:
        a = self.scale(t)
        b = self.offset(t)

        def hit(o, d):
            oc, dc = (o - b) / a, d / a  # ray in canonical space, same parameter s
            dn = dc.norm(dim=1)
            s = sphere_hit(oc, dc / dn[:, None], torch.zeros(3, dtype=o.dtype), self.radius) / dn
            return s, self.albedo(oc + torch.where(torch.isfinite(s), s, 0)[:, None] * dc)

        return ray_cast(cameras, hit)

    def to_mesh(self, t: float, resolution: int = 128) -> TriangleMesh:
        a, b = self.scale(t).numpy(), self.offset(t).numpy()
        return marching_cubes(lambda p: np.linalg.norm((p - b) / a, axis=1) - self.radius, resolution)

    def save(self, directory):
        from renderers.scene import write_manifest

        write_manifest(directory, self.kind, n=self.n)
        return Path(directory)

    @classmethod
    def load(cls, directory):
        from renderers.scene import read_manifest

        return cls(read_manifest(directory)["n"])


# ---------------------------------------------------------------------- a field-like scene that changes topology
class PulsingPairScene:
    """A sphere at the origin whose radius pulses 0.35..0.5; from t = 0.5 a second sphere of radius 0.2
    sits at (0, 0, 0.75) (a new connected component: no deformation can express it)."""

    kind = "test-pair"
    time_range = (0.0, 1.0)

    @staticmethod
    def spheres(t: float) -> list[tuple[np.ndarray, float]]:
        out = [(np.zeros(3), 0.35 + 0.15 * math.sin(math.pi * t))]
        if t >= 0.5:
            out.append((np.array([0.0, 0.0, 0.75]), 0.2))
        return out

    @staticmethod
    def colour(points) -> np.ndarray:
        """Green below z = 0, orange above."""
        up = (np.asarray(points)[:, 2:3] > 0).astype(np.float32)
        return up * np.array([1.0, 0.55, 0.1], np.float32) + (1 - up) * np.array([0.1, 0.7, 0.3], np.float32)

    def render(self, cameras, t: float) -> RenderOutput:
        def hit(o, d):
            s = torch.full((len(o),), math.inf, dtype=o.dtype)
            for centre, radius in self.spheres(t):
                s = torch.minimum(s, sphere_hit(o, d, torch.as_tensor(centre, dtype=o.dtype), radius))
            p = o + torch.where(torch.isfinite(s), s, 0)[:, None] * d
            return s, torch.as_tensor(self.colour(p.numpy()), dtype=o.dtype)

        return ray_cast(cameras, hit)

    def to_mesh(self, t: float, resolution: int = 128) -> TriangleMesh:
        def sdf(p):
            return np.min([np.linalg.norm(p - c, axis=1) - r for c, r in self.spheres(t)], axis=0)

        return marching_cubes(sdf, resolution, self.colour)

    def save(self, directory):
        from renderers.scene import write_manifest

        write_manifest(directory, self.kind)
        return Path(directory)

    @classmethod
    def load(cls, directory):
        return cls()


class EmptyScene(PulsingPairScene):
    kind = "test-empty"

    @staticmethod
    def spheres(t: float):
        return [(np.zeros(3), -1.0)]


# ---------------------------------------------------------------------- a reference splat renderer
def splat_render(g: GaussianSet, cameras, background: float = 0.0) -> torch.Tensor:
    """Plain EWA splatting of DC colours (no SH), sorted front to back: ``[C, H, W, 3]``. Small N only."""
    images = []
    cov3 = g.covariances().double()
    colours = g.base_colors.double()
    opac = g.opacities.double()
    for c in range(len(cameras)):
        cam = cameras[c]
        w2c = cam.viewmats[0].double()
        p = g.means.double() @ w2c[:3, :3].T + w2c[:3, 3]
        z = p[:, 2].clamp_min(1e-6)
        fx, fy, cx, cy = (float(cam.K[0, i, j]) for i, j in ((0, 0), (1, 1), (0, 2), (1, 2)))
        J = torch.zeros(len(p), 2, 3, dtype=torch.float64)
        J[:, 0, 0], J[:, 0, 2] = fx / z, -fx * p[:, 0] / z**2
        J[:, 1, 1], J[:, 1, 2] = fy / z, -fy * p[:, 1] / z**2
        T = J @ w2c[:3, :3]
        cov2 = T @ cov3 @ T.transpose(1, 2) + 0.3 * torch.eye(2, dtype=torch.float64)
        inv = torch.linalg.inv(cov2)
        uv = torch.stack([fx * p[:, 0] / z + cx, fy * p[:, 1] / z + cy], 1)
        order = torch.argsort(z)
        v, u = torch.meshgrid(torch.arange(cam.height) + 0.5, torch.arange(cam.width) + 0.5, indexing="ij")
        pix = torch.stack([u, v], -1).reshape(-1, 2).double()
        d = pix[None] - uv[order][:, None]  # [N, P, 2]
        power = -0.5 * torch.einsum("npi,nij,npj->np", d, inv[order], d)
        alpha = (opac[order][:, None] * power.exp()).clamp(max=0.99) * (p[order, 2:3] > 0.01)
        trans = torch.cumprod(torch.cat([torch.ones(1, alpha.shape[1], dtype=alpha.dtype), 1 - alpha[:-1]]), 0)
        rgb = ((alpha * trans)[..., None] * colours[order][:, None]).sum(0) + trans[-1, :, None] * (
            1 - alpha[-1])[:, None] * background
        images.append(rgb.reshape(cam.height, cam.width, 3).float())
    return torch.stack(images)


# ---------------------------------------------------------------------- the JS readers
def js_readers() -> Path:
    """tests/js with its pinned npm packages installed (once; later runs need no network); skips the
    calling test with the reason when Node/npm are missing or the install cannot run here."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js and npm are needed for the independent glTF/splat readers and are not both installed")
    wanted = ["gltf-validator", "three", "@playcanvas/splat-transform"]
    if not all((JS_DIR / "node_modules" / name / "package.json").is_file() for name in wanted):
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=JS_DIR,
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.skip(f"could not install the JS readers with npm (offline?): {done.stderr.strip()[-300:]}")
    return JS_DIR


def run_node(script: str, *args) -> dict:
    out = subprocess.run(["node", str(js_readers() / script), *map(str, args)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, f"{script} failed: {out.stderr[-2000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def validate_gltf(path) -> dict:
    """The Khronos validator's report; assert on ``report["issues"]["numErrors"]``."""
    return run_node("validate_gltf.mjs", path)


def inspect_three(path, *times: float) -> dict:
    return run_node("inspect_three.mjs", path, *times)


def splat_stats(path) -> dict:
    """PlayCanvas splat-transform's ``--stats json`` of a splat file (it exits 0 even on bad input)."""
    tool = js_readers() / "node_modules" / "@playcanvas" / "splat-transform" / "package.json"
    package = json.loads(tool.read_text())
    script = tool.parent / (package["bin"]["splat-transform"] if isinstance(package["bin"], dict) else package["bin"])
    out = subprocess.run(["node", str(script), "-q", str(path), "--stats", "json", "null"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout[out.stdout.index("{"):])
