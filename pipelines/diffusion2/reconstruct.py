"""Stage 2 of Diffusion² (Sec. 3.4): deformable 3D Gaussians fitted to the sampled V x F image matrix.

The matrix's cameras are known (V orbit views, Sec. 4.1) and so are its times: a reference video's frames span
[0, 1] (frame f at t = f / (F - 1)); a clip the video prior drew is at the prior's own frame times.
Canonical Gaussians start carved from the reference frame's masks (points inside every view's silhouette,
coloured from the images), then:

1. warm-up: only the static Gaussians, on the views of the reference frame (column 0), photometric loss;
2. deformation stage: the whole matrix; an MLP deformation field (Yang et al. 2024) moves the Gaussians
   over time while the canonical Gaussians are fine-tuned at a reduced learning rate, and entries away
   from the reference view and frame count with a reduced loss scale.

Loss: (1 - lambda) L1 + lambda D-SSIM over the background the priors used, plus an alpha-mask term;
3DGS densification (``renderers.densify``) during the first part of the fit.

The loop itself is :class:`renderers.gaussian_fit.GaussianFit` (frame epochs, position / deformation LR decay,
time frequencies capped at the frames' Nyquist limit, temporal smoothness); this module holds only what is
Diffusion²'s: the carved start, the loss, the per-entry loss scales and the config's settings
(:func:`matrix_fit`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pipelines.diffusion2.config import ReconstructionConfig
from pipelines.world.metrics import ssim
from renderers.cameras import Cameras, orbit_cameras
from renderers.deformation import DeformationConfig
from renderers.densify import DensifyConfig
from renderers.gaussian_fit import GaussianFit, GaussianFitSettings
from renderers.rasterize import Rasterization
from renderers.splats import GaussianSet, rgb_to_sh_dc

# 3DGS's rates (positions and the deformation: the config's)
LR = {"lr_quats": 1e-3, "lr_log_scales": 5e-3, "lr_opacity_logits": 5e-2, "lr_sh": 2.5e-3}


def matrix_cameras(views: int, elevation: float, distance: float, fovy: float, size: int) -> Cameras:
    """The V orbit cameras of the matrix: azimuth 360 v / V from the reference view (v = 0)."""
    return orbit_cameras(distance, elevation, torch.arange(views, dtype=torch.float32) * 360.0 / views, fovy,
                         size, size)


def matrix_times(frames: int) -> list[float]:
    """Time of each frame in [0, 1]: the reference frame at 0, the last at 1."""
    return [f / (frames - 1) for f in range(frames)]


def carve_gaussians(images: Tensor, masks: Tensor, cameras: Cameras, n: int, generator: torch.Generator,
                    extent: float = 1.0) -> GaussianSet:
    """``n`` Gaussians inside the visual hull of ``masks`` ``[V, H, W, 1]`` seen by ``cameras`` [V], coloured by
    the mean of ``images`` ``[V, H, W, 3]`` where they land (a rough start the fit refines)."""
    size = images.shape[1]
    kept, colours = [], []
    found = 0
    for _ in range(50):
        pts = (torch.rand(20 * n, 3, generator=generator) * 2 - 1) * extent
        uv, depth = cameras.project(pts)
        pix = uv.floor().long()
        inside = (pix >= 0).all(-1) & (pix < size).all(-1) & (depth > 0)
        pix = pix.clamp(0, size - 1)
        views = torch.arange(len(cameras))[:, None]
        m = masks[views, pix[..., 1], pix[..., 0], 0] * inside
        hull = (m > 0.5).all(0)
        kept.append(pts[hull])
        colours.append(images[views, pix[..., 1], pix[..., 0]].mean(0)[hull])
        found += int(hull.sum())
        if found >= n:
            break
    means, rgb = torch.cat(kept)[:n], torch.cat(colours)[:n]
    if means.shape[0] < 8:  # masks that agree nowhere: start from a small ball
        means = torch.randn(n, 3, generator=generator) * 0.2
        rgb = torch.full((n, 3), 0.5)
    count = means.shape[0]
    spacing = (8 * extent ** 3 * float((masks > 0.5).float().mean()) / count) ** (1 / 3)
    return GaussianSet(means, torch.tensor([[1.0, 0, 0, 0]]).repeat(count, 1),
                       torch.full((count, 3), math.log(max(spacing, 1e-3))), torch.full((count,), -1.0),
                       rgb_to_sh_dc(rgb.clamp(0.02, 0.98))[:, None])


def fit_settings(config: ReconstructionConfig, seed: int = 0) -> GaussianFitSettings:
    """The fitting loop's settings from stage 2's config: 3DGS's rates for rotations, scales, opacities
    and colours, the config's for positions and the deformation, its densification schedule."""
    return GaussianFitSettings(
        steps=config.steps, warmup_steps=config.warmup_steps, views_per_step=config.images_per_step,
        anchor_views=(0,) if config.anchor_reference else (),
        lr_means=config.lr_means, lr_deformation=config.lr_deformation, lr_final=config.lr_final,
        canonical_lr_scale=config.canonical_lr_scale, smoothness_weight=config.smoothness_weight,
        densify=DensifyConfig(start=config.densify_interval, interval=config.densify_interval,
                              stop=int(config.densify_until * config.steps), opacity_reset_interval=10 ** 9),
        scene_extent=1.0, seed=seed, **LR)


def matrix_weights(views: int, frames: int, far_loss_scale: float) -> Tensor:
    """Per-entry loss scales ``[V, F]``: 1 on the reference view (v = 0) and frame (f = 0), ``far_loss_scale``
    elsewhere (Sec. 3.4: "a reduced ... loss scale away from the reference view and frame")."""
    weights = torch.full((views, frames), float(far_loss_scale))
    weights[0, :] = 1.0
    weights[:, 0] = 1.0
    return weights


@dataclass(frozen=True)
class MatrixLoss:
    """Sec. 3.4's photometric loss, (1 - lambda) L1 + lambda D-SSIM (3DGS's), plus ``mask_weight`` times the
    squared error of the rendered alpha against the subject mask; every term scaled per image by ``weight``."""

    ssim_weight: float = 0.2
    mask_weight: float = 1.0

    def __call__(self, out: Rasterization, target: Tensor, mask: Tensor | None,
                 weight: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        l1 = ((out.rgb - target).abs().mean((1, 2, 3)) * weight).mean()
        d_ssim = ((1 - ssim(out.rgb, target)) * weight).mean()
        loss = (1 - self.ssim_weight) * l1 + self.ssim_weight * d_ssim
        parts = {"l1": l1, "d_ssim": d_ssim}
        if mask is not None:
            mask_loss = ((out.alpha - mask).square().mean((1, 2, 3)) * weight).mean()
            loss = loss + self.mask_weight * mask_loss
            parts["mask"] = mask_loss
        return loss, parts


def matrix_fit(images: Tensor, masks: Tensor, cameras: Cameras, config: ReconstructionConfig, background: float,
               seed: int = 0, device: torch.device | str = "cpu", times: list[float] | None = None) -> GaussianFit:
    """Stage 2 as a :class:`~renderers.gaussian_fit.GaussianFit` over the matrix ``images`` ``[V, F, H, W, 3]``
    (over ``background``) with subject ``masks`` ``[V, F, H, W, 1]``, seen by ``cameras`` [V] at ``times``
    [F] (default :func:`matrix_times`); canonical Gaussians carved from the reference frame's views."""
    views, frames = images.shape[:2]
    initial = carve_gaussians(images[:, 0], masks[:, 0], cameras, config.gaussians,
                              torch.Generator().manual_seed(seed))
    deformation = DeformationConfig(kind=config.deformation, width=config.deformation_width,
                                    depth=config.deformation_depth, pos_frequencies=6, time_frequencies=4)
    times = matrix_times(frames) if times is None else list(times)
    if len(times) != frames:
        raise ValueError(f"{len(times)} frame times for a matrix of {frames} frames")
    return GaussianFit(initial, deformation, cameras, times, images, masks=masks,
                       settings=fit_settings(config, seed), background=torch.full((3,), float(background)),
                       weights=matrix_weights(views, frames, config.far_loss_scale),
                       loss=MatrixLoss(config.ssim_weight, config.mask_weight), device=device)


def masks_from_images(images: Tensor, background: float, threshold: float = 0.08) -> Tensor:
    """Soft subject masks ``[..., H, W, 1]`` of generated images ``[..., H, W, 3]`` on a flat background."""
    dist = (images - background).abs().amax(-1, keepdim=True)
    soft = ((dist - 0.5 * threshold) / (0.5 * threshold)).clamp(0, 1)
    flat = soft.reshape(-1, 1, *soft.shape[-3:-1])
    # A 3 x 3 closing removes pinholes where the subject's colour touches the background's.
    closed = -F.max_pool2d(-F.max_pool2d(flat, 3, 1, 1), 3, 1, 1)
    return closed.reshape(soft.shape)
