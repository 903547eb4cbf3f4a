"""Fit a :class:`FieldScene` to posed images by a photometric loss: the smallest loop in which field,
renderer, occupancy grid and optimiser work together (the fitting test, the example and the benchmark use
it; 4D-fy's pipeline swaps the loss for score distillation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from renderers.cameras import Cameras
from renderers.field_scene import FieldScene
from renderers.volume import render_rays


@dataclass(frozen=True)
class FitSettings:
    """``steps`` of ``rays`` random rays each (one time per step); hash tables at ``lr_grid``, MLPs at ``lr_mlp``;
    the occupancy grid is refreshed every ``occupancy_every`` steps after ``occupancy_warmup``."""

    steps: int = 300
    rays: int = 2048
    lr_grid: float = 0.02
    lr_mlp: float = 0.005
    occupancy_every: int = 16
    occupancy_warmup: int = 32
    seed: int = 0


def psnr(a: Tensor, b: Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def fit_views(scene: FieldScene, cameras: Sequence[Cameras], times: Sequence[float], images: Sequence[Tensor],
              alphas: Sequence[Tensor], settings: FitSettings | None = None,
              callback: Callable[[int, float], None] | None = None) -> list[float]:
    """Fit ``scene`` to ``images[k]`` ``[V, H, W, 3]`` (premultiplied) and ``alphas[k]`` ``[V, H, W, 1]`` seen by
    ``cameras[k]`` at ``times[k]``. Each step composites prediction and target over one random background
    colour, so colour and coverage are both learned from a photometric loss. Returns the loss per step."""
    settings = settings or FitSettings()
    field, occupancy = scene.field, scene.occupancy
    generator = torch.Generator().manual_seed(settings.seed)
    rays = [cam.rays() for cam in cameras]
    rays = [(o.reshape(-1, 3), d.reshape(-1, 3)) for o, d in rays]
    targets = [(img.reshape(-1, 3), a.reshape(-1, 1)) for img, a in zip(images, alphas)]
    groups = field.param_groups(settings.lr_grid, settings.lr_grid, settings.lr_mlp)
    optimizer = torch.optim.Adam(groups, betas=(0.9, 0.99), eps=1e-15, fused=True)
    render = replace(scene.settings, stratified=True, shading="albedo", normals=False)
    losses = []
    for step in range(settings.steps):
        if step >= settings.occupancy_warmup and step % settings.occupancy_every == 0:
            field.eval()
            occupancy.update(field.density, list(times), render.step, generator=generator)
            field.train()
        k = int(torch.randint(len(times), (), generator=generator))
        origins, directions = rays[k]
        pick = torch.randint(origins.shape[0], (settings.rays,), generator=generator)
        out = render_rays(field, origins[pick], directions[pick], times[k], occupancy=occupancy, settings=render,
                          generator=generator)
        background = torch.rand(3, generator=generator)
        rgb, alpha = targets[k][0][pick], targets[k][1][pick]
        loss = ((out.rgb + (1 - out.alpha) * background - (rgb + (1 - alpha) * background)) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if callback is not None:
            callback(step, losses[-1])
    field.eval()
    occupancy.update(field.density, list(times), render.step, generator=generator)
    return losses
