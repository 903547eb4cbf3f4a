"""Exporter speed and file size on a CPU (issue: exporters).

Targets: a 256³ marching-cubes mesh to GLB under 5 s, a 24-frame animated GLB under 30 s, a 24-frame
3DGS PLY sequence of 100k splats under 10 s. The scene is analytic (a deforming, coloured ellipsoid
with 100k Gaussians) so the figures measure the exporters, not a model; marching cubes is its
``to_mesh`` (scikit-image), as in the field scenes.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import median_time, parse_args, report


class BenchBlob:
    """Ellipsoid of radius 0.5 stretched along z by 1 + 0.5 t and moved along x; 100k Gaussians on it."""

    kind = "bench-blob"
    time_range = (0.0, 1.0)

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        d = torch.randn(n, 3, generator=g)
        self.canonical = 0.5 * d / d.norm(dim=1, keepdim=True)
        self.sh = 0.1 * torch.randn(n, 16, 3, generator=g)

    def deform_points(self, points: torch.Tensor, t: float) -> torch.Tensor:
        return points * torch.tensor([1.0, 1.0, 1.0 + 0.5 * t]) + torch.tensor([0.4 * t - 0.2, 0.0, 0.0])

    def gaussians_at(self, t: float):
        from renderers.splats import GaussianSet

        n = len(self.canonical)
        return GaussianSet(self.deform_points(self.canonical, t), torch.tensor([1.0, 0, 0, 0]).repeat(n, 1),
                           torch.full((n, 3), math.log(0.01)), torch.full((n,), 2.0), self.sh)

    def to_mesh(self, t: float, resolution: int = 128):
        from skimage.measure import marching_cubes

        from renderers.mesh import TriangleMesh

        axis = np.linspace(-1, 1, resolution, dtype=np.float32)
        x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
        sdf = np.sqrt(((x - (0.4 * t - 0.2))) ** 2 + y**2 + (z / (1 + 0.5 * t)) ** 2) - 0.5
        verts, faces, _, _ = marching_cubes(-sdf, 0.0, spacing=(2 / (resolution - 1),) * 3)
        verts -= 1
        return TriangleMesh(verts, faces, 0.5 + 0.5 * np.tanh(verts * 3))

    def render(self, cameras, t):  # not used: the meshes carry their colours
        raise NotImplementedError

    def save(self, directory):
        raise NotImplementedError

    @classmethod
    def load(cls, directory):
        raise NotImplementedError


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    from renderers.allocator import tune_cpu_allocator
    from renderers.export import export

    tune_cpu_allocator()  # as the CLI and the studio do before heavy work

    quick = args.quick
    splats, frames, mesh_res, anim_res = (10_000, 6, 96, 64) if quick else (100_000, 24, 256, 128)
    repeats = 1 if quick else 3
    scene = BenchBlob(splats)
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)

        def timed(name: str, path: Path, **options) -> None:
            figures[f"{name}_s"] = median_time(lambda: export(scene, path, overwrite=True, **options), repeats,
                                               warmup=0)
            files = [path] if path.is_file() else list(path.iterdir())
            figures[f"{name}_MB"] = sum(f.stat().st_size for f in files) / 1e6

        timed(f"mesh_glb_{mesh_res}", out / "mesh.glb", resolution=mesh_res)
        timed(f"anim_glb_morph_{frames}f", out / "morph.glb", format="gltf-anim", frames=frames,
              resolution=anim_res)
        timed(f"anim_glb_flipbook_{frames}f", out / "flip.glb", format="gltf-anim", frames=frames,
              resolution=anim_res, mode="flipbook")
        timed(f"ply_seq_{frames}f_{splats // 1000}k", out / "seq", format="3dgs-seq", frames=frames)
        start = time.perf_counter()
        scene.to_mesh(0.0, mesh_res)
        figures[f"marching_cubes_{mesh_res}_only_s"] = time.perf_counter() - start
    targets = {} if quick else {"mesh_glb_256_s": ("<", 5.0), "anim_glb_morph_24f_s": ("<", 30.0),
                                "anim_glb_flipbook_24f_s": ("<", 30.0), "ply_seq_24f_100k_s": ("<", 10.0)}
    report("export", figures, targets, args.json)


if __name__ == "__main__":
    main()
