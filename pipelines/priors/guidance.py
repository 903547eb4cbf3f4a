"""Score-distillation losses in the form 4D-fy uses them: SDS (2D, multi-view, video) and VSD with its LoRA.

Each loss is ``0.5 * ||latents - stopgrad(latents - grad)||^2 / B`` so that its gradient with respect to
the latents (and, through the VAE encoder, the rendered images) is exactly the guidance ``grad / B``;
the optimiser of the 3D/4D representation then simply calls ``backward()``.

Multi-view SDS is :func:`sds_loss` with a multi-view prior (latents [B, 4, 1, ...]), video SDS is
:func:`sds_loss` with a video prior (latents [B, 1, F, ...]): one function, the layout says which.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipelines.priors.denoiser import Conditioning, Denoiser
from pipelines.priors.lora import CameraLoRA


@dataclass
class GuidanceOutput:
    """loss: scalar to back-propagate; grad [B, V, F, C, h, w] the (weighted) score difference; level [B]."""

    loss: torch.Tensor
    grad: torch.Tensor
    level: torch.Tensor


def anneal_range(step: int, total: int, start: tuple[float, float] = (0.02, 0.98),
                 end: tuple[float, float] = (0.02, 0.98)) -> tuple[float, float]:
    """Noise-level range (fractions of the ladder) at ``step`` of ``total``, linear from ``start`` to ``end``.

    4D-fy and threestudio anneal the upper bound down as the optimisation converges.
    """
    f = min(max(step / max(total, 1), 0.0), 1.0)
    return tuple(a + (b - a) * f for a, b in zip(start, end, strict=True))


def sample_levels(denoiser: Denoiser, n: int, t_range: tuple[float, float] = (0.02, 0.98),
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` noise levels drawn uniformly over the ``t_range`` fraction of the model's ladder [n]."""
    lo, hi = t_range
    u = lo + (hi - lo) * torch.rand(n, generator=generator)
    level = denoiser.schedule.level_at(u)
    return level.round() if denoiser.schedule.kind == "ddpm" else level


def sds_weight(alpha: torch.Tensor, sigma: torch.Tensor, weighting: str = "sds") -> torch.Tensor:
    """w(t) [B]: "sds" sigma^2 (= 1 - abar, DreamFusion), "uniform" 1, "fantasia" alpha * sigma^2."""
    if weighting == "sds":
        return sigma ** 2
    if weighting == "uniform":
        return torch.ones_like(sigma)
    if weighting == "fantasia":
        return alpha * sigma ** 2
    raise ValueError(f"unknown SDS weighting {weighting!r}; expected 'sds', 'uniform' or 'fantasia'")


def _noise(latents: torch.Tensor, generator: torch.Generator | None, sharing: float = 0.0) -> torch.Tensor:
    """Noise like ``latents`` ``[B, V, F, C, h, w]``; ``sharing`` is the share of its variance common to all the
    views and frames of an item (T1's cross-view noise consistency at 1)."""
    eps = torch.randn(latents.shape, generator=generator, dtype=torch.float32)
    if sharing > 0:
        common = torch.randn((latents.shape[0], 1, 1, *latents.shape[3:]), generator=generator)
        eps = sharing ** 0.5 * common + (1.0 - sharing) ** 0.5 * eps
    return eps.to(latents)


def _as_loss(latents: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    grad = torch.nan_to_num(grad)
    target = (latents - grad).detach()
    return 0.5 * F.mse_loss(latents.float(), target.float(), reduction="sum") / latents.shape[0]


def _bcast(w: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return w.to(like).reshape((-1,) + (1,) * (like.ndim - 1))


def sds_loss(denoiser: Denoiser, latents: torch.Tensor, cond: Conditioning, *, guidance_scale: float = 100.0,
             uncond: Conditioning | None = None, t_range: tuple[float, float] = (0.02, 0.98),
             weighting: str = "sds", level: torch.Tensor | None = None,
             generator: torch.Generator | None = None, noise_sharing: float = 0.0) -> GuidanceOutput:
    """Score distillation sampling (DreamFusion Eq. 3): grad = w(t) (eps_cfg(x_t; y, t) - eps).

    latents [B, V, F, C, h, w] (with grad); the denoiser runs without building a graph. ``noise_sharing``: the
    share of eps common to an item's views and frames (0: independent; 1: one noise, so that what differs
    between the frames' gradients is the prior's prediction alone, not the noise drawn).
    """
    if level is None:
        level = sample_levels(denoiser, latents.shape[0], t_range, generator)
    eps = _noise(latents, generator, noise_sharing)
    with torch.no_grad():
        x_t = denoiser.add_noise(latents.detach(), eps, level)
        pred = denoiser.predict(x_t, level, cond, guidance_scale, uncond)
        alpha, sigma = denoiser.schedule.alpha_sigma(level)
        grad = _bcast(sds_weight(alpha, sigma, weighting), latents) * (pred.eps - eps)
    return GuidanceOutput(_as_loss(latents, grad), grad, level)


def emphasise_motion(out: GuidanceOutput, latents: torch.Tensor, strength: float) -> GuidanceOutput:
    """A video score-distillation output with its motion part scaled by ``strength``.

    Each frame's gradient is the mean over the frames (axis 2 of ``[B, V, F, C, h, w]``: what every frame shares,
    the appearance) plus its own deviation from that mean (what changes between frames, the motion); the
    deviation is multiplied by ``strength``. 1 leaves the gradient as it is; 0 keeps the appearance alone. Under
    Adam a uniform scale of a loss does not change how far the parameters only it trains move (the dynamic
    grid of 4D-fy), so motion has to be emphasised in the gradient's direction, not its size."""
    mean = out.grad.mean(2, keepdim=True)
    grad = mean + strength * (out.grad - mean)
    return GuidanceOutput(_as_loss(latents, grad), grad, out.level)


def vsd_loss(denoiser: Denoiser, lora: CameraLoRA, latents: torch.Tensor, cond: Conditioning,
             cameras: torch.Tensor, *, guidance_scale: float = 7.5, lora_guidance_scale: float = 1.0,
             uncond: Conditioning | None = None, t_range: tuple[float, float] = (0.02, 0.98),
             weighting: str = "sds", level: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> GuidanceOutput:
    """Variational score distillation (ProlificDreamer Eq. 9; the VSD term of 4D-fy's hybrid SDS).

    grad = w(t) (eps_pretrained_cfg(x_t; y, t) - eps_lora(x_t; y, t, c)) with c the cameras [B, 16]
    (flattened camera-to-world matrices) the latents [B, V, F, ...] were rendered from.
    """
    if level is None:
        level = sample_levels(denoiser, latents.shape[0], t_range, generator)
    eps = _noise(latents, generator)
    with torch.no_grad():
        x_t = denoiser.add_noise(latents.detach(), eps, level)
        pretrained = denoiser.predict(x_t, level, cond, guidance_scale, uncond).eps
        cams = cameras.reshape(cameras.shape[0], -1)
        if lora_guidance_scale != 1.0:  # the unconditional LoRA branch drops the camera too
            cams = torch.cat([cams, torch.zeros_like(cams)])
        with lora.active(cams):
            estimated = denoiser.predict(x_t, level, cond, lora_guidance_scale, uncond).eps
        alpha, sigma = denoiser.schedule.alpha_sigma(level)
        grad = _bcast(sds_weight(alpha, sigma, weighting), latents) * (pretrained - estimated)
    return GuidanceOutput(_as_loss(latents, grad), grad, level)


def _lora_objective(denoiser: Denoiser, lora: CameraLoRA, latents: torch.Tensor, cond: Conditioning,
                    cams: torch.Tensor, samples: int, generator: torch.Generator | None) -> torch.Tensor:
    """The diffusion loss of the LoRA score on detached renders; call inside ``lora.active(cams)``."""
    x0 = latents.detach().repeat_interleave(samples, 0)
    level = sample_levels(denoiser, x0.shape[0], (0.0, 1.0), generator)
    eps = _noise(x0, generator)
    x_t = denoiser.add_noise(x0, eps, level)
    alpha, sigma = denoiser.schedule.alpha_sigma(level)
    target = {"epsilon": eps, "sample": x0,
              "v_prediction": _bcast(alpha, x0) * eps - _bcast(sigma, x0) * x0}[denoiser.parameterization]
    pred = denoiser(x_t.to(denoiser.device, denoiser.dtype), level.to(denoiser.device),
                    cond.repeat(samples).to(denoiser.device, denoiser.dtype))
    return F.mse_loss(pred.float(), target.to(pred.device).float())


def _lora_cameras(cameras: torch.Tensor, samples: int, camera_dropout: float,
                  generator: torch.Generator | None) -> torch.Tensor:
    cams = cameras.reshape(cameras.shape[0], -1).repeat_interleave(samples, 0).float()
    drop = torch.rand(cams.shape[0], generator=generator) < camera_dropout
    return torch.where(drop[:, None].to(cams.device), torch.zeros_like(cams), cams)


def lora_train_step(denoiser: Denoiser, lora: CameraLoRA, optimizer: torch.optim.Optimizer, latents: torch.Tensor,
                    cond: Conditioning, cameras: torch.Tensor, *, samples: int = 1, camera_dropout: float = 0.1,
                    generator: torch.Generator | None = None) -> float:
    """One optimiser step of the LoRA estimator on the current renders (ProlificDreamer Alg. 1, line 6).

    The renders' latents [B, V, F, C, h, w] are detached; noise levels are drawn over the whole ladder; with
    probability ``camera_dropout`` a camera [B, 4, 4] is zeroed so the LoRA also learns the unconditional
    score. Forward and backward both run with the LoRA active, so gradient checkpointing (which re-runs the
    forward during backward) sees the same graph. Returns the loss (MSE in the model's parameterisation).
    """
    cams = _lora_cameras(cameras, samples, camera_dropout, generator)
    optimizer.zero_grad(set_to_none=True)
    with lora.active(cams):
        loss = _lora_objective(denoiser, lora, latents, cond, cams, samples, generator)
        loss.backward()
    optimizer.step()
    return loss.item()


@torch.no_grad()
def lora_loss(denoiser: Denoiser, lora: CameraLoRA, latents: torch.Tensor, cond: Conditioning,
              cameras: torch.Tensor, *, samples: int = 1, camera_dropout: float = 0.0,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """The LoRA estimator's loss without a step (for monitoring); see :func:`lora_train_step`."""
    cams = _lora_cameras(cameras, samples, camera_dropout, generator)
    with lora.active(cams):
        return _lora_objective(denoiser, lora, latents, cond, cams, samples, generator)


def render_latents(denoiser: Denoiser, rgb: torch.Tensor, size: int, chunk: int = 8) -> torch.Tensor:
    """Rendered images [B, V, F, H, W, 3] in [0, 1] -> differentiable latents [B, V, F, C, size/d, size/d]."""
    b, v, f = rgb.shape[:3]
    images = rgb.flatten(0, 2).permute(0, 3, 1, 2)
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, (size, size), mode="bilinear", align_corners=False)
    z = denoiser.encode_images(images, chunk)
    return z.reshape(b, v, f, *z.shape[1:])
