"""Image metrics shared by every layer: PSNR per image and pooled (peak 1, images in [0, 1]).

The world's evaluator, the fitting loops, the prior's evaluation and the tests all read these, so a "dB"
means the same thing everywhere. (SSIM and mask IoU live with the world's evaluator, their only user.)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

CAP_DB = 100.0  # the PSNR of identical images (the MSE floor is 1e-10)


def psnr(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """PSNR in dB per image ``[B]`` of ``pred``, ``target`` ``[B, ...]`` (e.g. ``[B, H, W, 3]``), capped at
    100 dB for identical images; ``mask`` (broadcastable, e.g. ``[B, H, W, 1]``) weights the mean."""
    err = (pred.float() - target.float()) ** 2
    dims = tuple(range(1, err.ndim))
    if mask is None:
        mse = err.mean(dim=dims)
    else:
        weight = mask.float().expand_as(err)
        mse = (err * weight).sum(dim=dims) / weight.sum(dim=dims).clamp(min=1e-8)
    return (-10 * torch.log10(mse.clamp(min=1e-10))).clamp(max=CAP_DB)


def pooled_psnr(pred: Tensor, target: Tensor) -> float:
    """One PSNR in dB over every value of ``pred`` and ``target`` (the MSE pooled before the log); the two
    hold the same values in the same order, whatever their shapes (e.g. ``[N V, H, W, 3]`` and ``[N, V, H, W, 3]``)."""
    if pred.numel() != target.numel():
        raise ValueError(f"pooled_psnr needs as many values in both, got {list(pred.shape)} and {list(target.shape)}")
    mse = float(((pred.reshape(-1).float() - target.reshape(-1).float()) ** 2).mean())
    return min(CAP_DB, 10 * math.log10(1.0 / max(mse, 1e-10)))
