"""Priors from the registry as the EDM denoisers ``D(x; sigma)`` the matrix sampler composes.

A prior (:class:`~pipelines.priors.denoiser.Denoiser`) is asked in its own noise level and input scaling;
here the EDM state ``x = x0 + sigma eps`` is scaled by the prior's ``alpha`` at the level whose EDM
sigma is ``sigma`` (``x_t = alpha x``), and its prediction is read back as x0. A row of the matrix is a
clip for the video prior (latents ``[R, 1, F, ...]``), a column an orbit for the multi-view prior
(``[K, V, 1, ...]``); each is conditioned on its first element (Sec. 3.2, Diffusion²): the reference view
at that frame for a column, the orbit view at the reference frame for a row.

Conditioning is built once per row / column from the known images and selected per call, so a chunk of
rows costs one network evaluation. The in-house prior takes cameras ``[B, V, 16]``; SV3D takes elevations
and azimuths (radians); SVD takes the image alone.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import Tensor

from pipelines.priors.denoiser import Conditioning, Denoiser


def max_sigma(prior: Denoiser) -> float:
    """The largest EDM sigma the prior was trained at (the top of its noise ladder)."""
    schedule = prior.schedule
    if schedule.kind == "edm":
        return float(schedule.sigma_max)
    return float(schedule.to_edm_sigma(torch.tensor([schedule.num_steps - 1.0]))[0])


def image_conditioning(prior: Denoiser, images: Tensor, c2w: Tensor, elevation: float, azimuths: Tensor,
                       prompt: str = "") -> Conditioning:
    """Conditioning of B reference images ``[B, 3, H, W]`` for B sequences whose views have camera-to-world
    ``c2w`` ``[B, V, 4, 4]`` and azimuths ``[B, V]`` (degrees) at ``elevation`` (degrees)."""
    images = images.to(prior.device, prior.dtype)
    if hasattr(prior, "arch"):  # the in-house field prior
        return prior.encode_image_condition(images, prompt, cameras=c2w.flatten(2).to(prior.device))
    cond = prior.encode_image_condition(images)
    if getattr(prior, "name", "") .startswith("sv3d"):
        cond.elevations = torch.full(azimuths.shape, math.radians(elevation), device=prior.device)
        cond.azimuths = torch.deg2rad(azimuths).to(prior.device)
    return cond


def select(cond: Conditioning, index: Tensor) -> Conditioning:
    """The conditioning of items ``index`` of a batched one."""
    return replace(cond, **{k: v[index.to(v.device)] for k, v in cond.tensors().items()})


class PriorDenoiser:
    """``D(x; sigma)`` over rows (``axis="rows"``, a video prior) or columns (``"cols"``, a multi-view prior).

    ``cond`` holds one item per row / column (indexed by the sampler's ``index``).
    """

    def __init__(self, prior: Denoiser, cond: Conditioning, axis: str, guidance: float = 1.0) -> None:
        if axis not in ("rows", "cols"):
            raise ValueError(f"axis must be 'rows' or 'cols', got {axis!r}")
        self.prior, self.cond, self.axis, self.guidance = prior, cond, axis, guidance
        self.calls = 0

    @torch.no_grad()
    def __call__(self, x: Tensor, sigma: float, index: Tensor) -> Tensor:
        """x ``[B, L, C, h, w]`` (B rows of L frames, or B columns of L views) -> x0 of the same shape."""
        self.calls += 1
        schedule = self.prior.schedule
        level = schedule.from_edm_sigma(torch.tensor([float(sigma)])).expand(x.shape[0])
        alpha, _ = schedule.alpha_sigma(level[:1])
        x_t = x * alpha.to(x).item()
        x_t = x_t[:, None] if self.axis == "rows" else x_t[:, :, None]
        pred = self.prior.predict(x_t, level, select(self.cond, index), guidance_scale=self.guidance)
        x0 = pred.x0
        return x0[:, 0] if self.axis == "rows" else x0[:, :, 0]
