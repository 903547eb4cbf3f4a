"""Image metrics and the comparison of a generated `Scene` with its procedural ground truth.

    figures = evaluate_scene(result_scene, WorldScene.from_seed(7))   # {'psnr': .., 'ssim': .., 'mask_iou': ..}

Images are compared composited over a white background (what a viewer shows), on held-out cameras
and times that no pipeline trains on (:func:`evaluation_cameras`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from renderers.cameras import Cameras, orbit_cameras
from renderers.metrics import psnr  # noqa: F401 (part of this module's API)
from renderers.scene import Scene

# Held-out views: elevations and azimuths off the dataset rig's even spacing, at the same distance and fov.
EVAL_ELEVATIONS = (12.5, 27.5)
EVAL_AZIMUTHS = (22.5, 112.5, 202.5, 292.5)
EVAL_TIMES = (0.0625, 0.3125, 0.5625, 0.8125)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(pred: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Structural similarity (Wang et al. 2004: Gaussian window 11 / sigma 1.5, K1 0.01, K2 0.03, data range 1)
    per image ``[B]`` of ``[B, H, W, 3]`` images, averaged over channels and valid window positions."""
    c = pred.shape[-1]
    x, y = pred.permute(0, 3, 1, 2).float(), target.permute(0, 3, 1, 2).float()
    w = _gaussian_window(min(window, x.shape[-1], x.shape[-2]), sigma).to(x)[None, None].expand(c, 1, -1, -1)

    def blur(v: Tensor) -> Tensor:
        return F.conv2d(v, w, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x ** 2
    syy = blur(y * y) - mu_y ** 2
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2)
    return (num / den).mean(dim=(1, 2, 3))


def mask_iou(pred_alpha: Tensor, target_alpha: Tensor, threshold: float = 0.5) -> Tensor:
    """Intersection over union of the masks ``alpha > threshold`` per image ``[B]`` (1 when both are empty)."""
    a = pred_alpha.reshape(pred_alpha.shape[0], -1) > threshold
    b = target_alpha.reshape(target_alpha.shape[0], -1) > threshold
    inter = (a & b).sum(-1).float()
    union = (a | b).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def evaluation_cameras(resolution: int = 64, distance: float = 2.7, fovy: float = 40.0) -> Cameras:
    """The held-out views ``[len(EVAL_ELEVATIONS) * len(EVAL_AZIMUTHS)]`` every result is scored on."""
    el, az = torch.meshgrid(torch.tensor(EVAL_ELEVATIONS), torch.tensor(EVAL_AZIMUTHS), indexing="ij")
    return orbit_cameras(distance, el.reshape(-1), az.reshape(-1), fovy, resolution, resolution)


def evaluate_scene(scene: Scene, truth: Scene, cameras: Cameras | None = None,
                   times: tuple[float, ...] = EVAL_TIMES, background: float = 1.0) -> dict[str, float]:
    """PSNR, SSIM (over ``background``) and mask IoU of ``scene`` against ``truth``, averaged over
    ``cameras`` (default :func:`evaluation_cameras`) at each of ``times``; also per-time lists."""
    cameras = evaluation_cameras() if cameras is None else cameras
    per_time: dict[str, list[float]] = {"psnr": [], "ssim": [], "mask_iou": []}
    for t in times:
        got, want = scene.render(cameras, t), truth.render(cameras, t)
        got_rgb = got.composite(background).float().cpu().clamp(0, 1)
        want_rgb = want.composite(background).float().cpu().clamp(0, 1)
        per_time["psnr"].append(float(psnr(got_rgb, want_rgb).mean()))
        per_time["ssim"].append(float(ssim(got_rgb, want_rgb).mean()))
        per_time["mask_iou"].append(float(mask_iou(got.alpha.cpu(), want.alpha.cpu()).mean()))
    figures = {name: sum(values) / len(values) for name, values in per_time.items()}
    figures.update({f"{name}_per_time": values for name, values in per_time.items()})
    figures["times"] = list(times)
    return figures


def reprojection_error(depth: Tensor, alpha: Tensor, rgb: Tensor, cameras: Cameras, threshold: float = 0.5
                       ) -> float:
    """Multi-view consistency of images that claim one scene at one time: lift every covered pixel of view
    ``i`` with its depth, project it into view ``j``, and compare colours there (mean absolute RGB error
    over pairs where the point is visible, by depth test, in ``j``). Inputs ``[V, H, W, c]``; 0 is perfect."""
    v, h, w = depth.shape[:3]
    origins, dirs = cameras.rays()
    forward = cameras.c2w[:, None, None, :3, 2]
    points = origins + dirs * (depth / (dirs * forward).sum(-1, keepdim=True).clamp(min=1e-6))
    errors = []
    for i in range(v):
        keep = alpha[i, ..., 0] > threshold
        p = points[i][keep]
        if p.shape[0] == 0:
            continue
        colour_i = rgb[i][keep] / alpha[i][keep].clamp(min=1e-6)
        for j in range(v):
            if i == j:
                continue
            uv, z = cameras[j].project(p)
            uv, z = uv[0], z[0]
            x, y = uv[:, 0].floor().long(), uv[:, 1].floor().long()
            inside = (x >= 0) & (x < w) & (y >= 0) & (y < h) & (z > 0)
            x, y, zi = x[inside], y[inside], z[inside]
            seen = (alpha[j, y, x, 0] > threshold) & ((depth[j, y, x, 0] - zi).abs() < 0.02 * zi)
            if bool(seen.any()):
                colour_j = rgb[j, y, x] / alpha[j, y, x].clamp(min=1e-6)
                errors.append((colour_i[inside][seen] - colour_j[seen]).abs().mean(-1))
    if not errors:
        return math.nan
    return float(torch.cat(errors).mean())
