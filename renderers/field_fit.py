"""Fit a :class:`FieldScene` to rays by a photometric loss: the smallest loop in which field,
renderer, occupancy grid and optimiser work together (the fitting test, the example and the benchmark use
it; 4D-fy's pipeline swaps the loss for score distillation).

Example (fits the analytic moving scene, saves the scene and a picture of held-out views)::

    python -m renderers.field_fit /tmp/field-example --steps 300
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from renderers.cameras import Cameras
from renderers.field_scene import FieldScene
from renderers.metrics import pooled_psnr
from renderers.volume import render_rays


@dataclass(frozen=True)
class FitSettings:
    """``steps`` optimiser steps, one ray batch each; hash tables at ``lr_grid``, MLPs at ``lr_mlp``;
    the occupancy grid is refreshed every ``occupancy_every`` steps after ``occupancy_warmup``."""

    steps: int = 300
    lr_grid: float = 0.02
    lr_mlp: float = 0.005
    occupancy_every: int = 16
    occupancy_warmup: int = 32
    seed: int = 0


@dataclass
class RayBatch:
    """Rays ``origins``, ``directions`` ``[N, 3]`` seen at time ``t`` with target ``rgb`` ``[N, 3]`` (premultiplied)
    and ``alpha`` ``[N, 1]``."""

    origins: Tensor
    directions: Tensor
    t: float
    rgb: Tensor
    alpha: Tensor


def image_batches(cameras: Sequence[Cameras], times: Sequence[float], images: Sequence[Tensor],
                  alphas: Sequence[Tensor], rays: int) -> Callable[[torch.Generator], RayBatch]:
    """Random rays from posed images: ``images[k]`` ``[V, H, W, 3]`` and ``alphas[k]`` seen by ``cameras[k]`` at
    ``times[k]``; one time per batch."""
    flat = []
    for cam, img, alpha in zip(cameras, images, alphas):
        o, d = cam.rays()
        flat.append((o.reshape(-1, 3), d.reshape(-1, 3), img.reshape(-1, 3), alpha.reshape(-1, 1)))

    def sample(generator: torch.Generator) -> RayBatch:
        k = int(torch.randint(len(flat), (), generator=generator))
        o, d, img, alpha = flat[k]
        pick = torch.randint(o.shape[0], (rays,), generator=generator)
        return RayBatch(o[pick], d[pick], float(times[k]), img[pick], alpha[pick])

    return sample


def fit(scene: FieldScene, batches: Callable[[torch.Generator], RayBatch], occupancy_times: Sequence[float],
        settings: FitSettings | None = None, callback: Callable[[int, float], None] | None = None) -> list[float]:
    """Fit ``scene`` to the ray batches ``batches(generator)`` yields, one per step. Prediction and target are
    composited over one random background colour per step, so colour and coverage are both learned from a
    photometric loss. The occupancy grid is refreshed over ``occupancy_times``. Returns the loss per step."""
    settings = settings or FitSettings()
    field, occupancy = scene.field, scene.occupancy
    generator = torch.Generator().manual_seed(settings.seed)
    groups = field.param_groups(settings.lr_grid, settings.lr_grid, settings.lr_mlp)
    optimizer = torch.optim.Adam(groups, betas=(0.9, 0.99), eps=1e-15, fused=True)
    render = replace(scene.settings, stratified=True, shading="albedo", normals=False)
    losses = []
    field.train()
    for step in range(settings.steps):
        if step >= settings.occupancy_warmup and step % settings.occupancy_every == 0:
            occupancy.update(field.density, list(occupancy_times), render.step, generator=generator)
        batch = batches(generator)
        out = render_rays(field, batch.origins, batch.directions, batch.t, occupancy=occupancy, settings=render,
                          generator=generator)
        background = torch.rand(3, generator=generator)
        target = batch.rgb + (1 - batch.alpha) * background
        loss = ((out.rgb + (1 - out.alpha) * background - target) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if callback is not None:
            callback(step, losses[-1])
    field.eval()
    occupancy.update(field.density, list(occupancy_times), render.step, generator=generator)
    return losses


def main() -> None:
    import argparse
    from pathlib import Path

    import numpy as np

    from renderers.allocator import tune_cpu_allocator
    from renderers.analytic_scene import analytic_batches, render_analytic
    from renderers.cameras import orbit_cameras

    parser = argparse.ArgumentParser(description="Fit a field to the analytic moving scene.")
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--preset", default="small")
    args = parser.parse_args()
    tune_cpu_allocator()
    scene = FieldScene.create(args.preset)
    fit(scene, analytic_batches(1024, args.size), [0.0, 0.25, 0.5, 0.75, 1.0], FitSettings(steps=args.steps),
        callback=lambda step, loss: print(f"step {step} loss {loss:.5f}") if step % 50 == 0 else None)
    rows = []
    for t in (0.0, 0.5, 1.0):
        cams = orbit_cameras(3.0, 25.0, torch.tensor([0.0, 120.0, 240.0]), 40.0, args.size, args.size)
        truth, out = render_analytic(cams, t), scene.render(cams, t)
        print(f"t={t}: PSNR {pooled_psnr(out.rgb, truth.rgb):.2f} dB")
        rows.append(torch.cat([torch.cat(list(truth.rgb), 1), torch.cat(list(out.rgb), 1)], 0))
    import imageio.v3 as iio

    scene.save(args.out / "scene")
    iio.imwrite(args.out / "views.png", (torch.cat(rows).clamp(0, 1).numpy() * 255).round().astype(np.uint8))
    print(f"saved {args.out / 'scene'} and {args.out / 'views.png'}")


if __name__ == "__main__":
    main()
