"""The one denoiser interface every prior answers to, classifier-free guidance, and chunked VAE coding.

Latents are laid out as ``[B, V, F, C, h, w]``: B independent items, V views, F frames. A text-to-image
model sees V = F = 1, MVDream V = 4, F = 1, a video model V = 1, F frames, SV3D V orbit views, F = 1.
The noise level is the model's native one: a DDPM timestep or an EDM sigma (``denoiser.schedule`` converts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch

from pipelines.priors.schedules import Schedule, to_eps, to_v, to_x0


@dataclass
class Conditioning:
    """What a prior is conditioned on; each adapter reads the fields it needs.

    text [B, L, D] token embeddings; image_embeds [B, 1, D] CLIP image embedding; image_latents [B, C, h, w]
    VAE latent of the conditioning image (unscaled, as SVD concatenates it); cameras [B, V, 16] flattened
    camera-to-world matrices (MVDream, the VSD LoRA); elevations / azimuths [B, V] radians (SV3D);
    fps, motion_bucket_id, noise_aug: the SVD micro-conditioning scalars; background: the grey level behind the
    subject (0 black, 1 white), which a prior trained on both is told (the in-house one) and others ignore;
    estimate [B, V, F, C, h, w]: a sampler's previous clean-latent estimate, for a self-conditioning prior (the
    in-house one, when trained so); None (score distillation, a first step) means none, and others ignore it.
    """

    text: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    image_latents: torch.Tensor | None = None
    cameras: torch.Tensor | None = None
    elevations: torch.Tensor | None = None
    azimuths: torch.Tensor | None = None
    fps: float = 7.0
    motion_bucket_id: float = 127.0
    noise_aug: float = 0.02
    background: float = 0.0
    estimate: torch.Tensor | None = None

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if isinstance(getattr(self, f.name), torch.Tensor)}

    def cat(self, other: Conditioning) -> Conditioning:
        """Batch-concatenate two conditionings (e.g. conditional and unconditional for one CFG pass)."""
        mine, theirs = self.tensors(), other.tensors()
        if mine.keys() != theirs.keys():
            raise ValueError(f"cannot batch conditionings with fields {sorted(mine)} and {sorted(theirs)}")
        return replace(self, **{k: torch.cat([v, theirs[k].to(v)]) for k, v in mine.items()})

    def repeat(self, n: int) -> Conditioning:
        """Each item repeated ``n`` times along the batch (``repeat_interleave``)."""
        return replace(self, **{k: v.repeat_interleave(n, 0) for k, v in self.tensors().items()})

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Conditioning:
        def move(v):
            return v.to(device=device, dtype=dtype if v.is_floating_point() and dtype else v.dtype)
        return replace(self, **{k: move(v) for k, v in self.tensors().items()})


@dataclass
class Prediction:
    """A raw model output with what is needed to read it as eps, x0 or v. Tensors [B, V, F, C, h, w]."""

    raw: torch.Tensor
    x_t: torch.Tensor
    alpha: torch.Tensor
    sigma: torch.Tensor
    parameterization: str

    @property
    def eps(self) -> torch.Tensor:
        return to_eps(self.raw, self.x_t, self.alpha, self.sigma, self.parameterization)

    @property
    def x0(self) -> torch.Tensor:
        return to_x0(self.raw, self.x_t, self.alpha, self.sigma, self.parameterization)

    @property
    def v(self) -> torch.Tensor:
        return to_v(self.raw, self.x_t, self.alpha, self.sigma, self.parameterization)


class Denoiser(torch.nn.Module):
    """Base of every prior adapter.

    Subclasses set ``parameterization`` ("epsilon" | "v_prediction" | "sample"), ``schedule``,
    ``latent_channels``, ``downsample`` (pixels per latent) and implement :meth:`forward`, and
    :meth:`encode_images` / :meth:`decode_latents` when the model works in a VAE latent space.
    """

    name: str = "denoiser"
    parameterization: str = "epsilon"
    schedule: Schedule
    latent_channels: int = 4
    downsample: int = 8
    views: int | None = None  # a fixed number of views the model needs (MVDream: 4), else None
    # Recompute the image encoder chunk by chunk in the backward pass instead of keeping its activations:
    # score distillation backpropagates through the VAE encoder, whose activations at 16 frames of 320 x 576
    # (4D-fy's video SDS) dwarf the models themselves. Costs one more encoder forward.
    encode_checkpointing: bool = False

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def forward(self, x_t: torch.Tensor, level: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """Raw prediction [B, V, F, C, h, w] for noisy latents x_t [B, V, F, C, h, w] at noise level [B]."""
        raise NotImplementedError

    def frame_times(self, frames: int) -> list[float]:
        """The times in [0, 1] of the ``frames`` frames of a clip this model draws, for whoever puts the clip on
        a time axis (4D-fy's video renders, Diffusion²'s fit). A model that is given no times spans the clip:
        the first frame at 0, the last at 1."""
        return [f / (frames - 1) for f in range(frames)] if frames > 1 else [0.0]

    def uncond(self, cond: Conditioning) -> Conditioning:
        """The unconditional counterpart of ``cond`` for classifier-free guidance (default: zeros)."""
        return replace(cond, **{k: torch.zeros_like(v) for k, v in cond.tensors().items()
                                if k in ("text", "image_embeds", "image_latents")})

    def predict(self, x_t: torch.Tensor, level: torch.Tensor, cond: Conditioning,
                guidance_scale: float | torch.Tensor = 1.0, uncond: Conditioning | None = None) -> Prediction:
        """One (guided) model evaluation on the caller's device, read back in any parameterisation.

        With ``guidance_scale != 1`` the conditional and unconditional halves run as one batch:
        ``raw = uncond + scale * (cond - uncond)`` (classifier-free guidance, Ho & Salimans 2022).
        A tensor scale [F] guides each frame differently (SVD ramps it from 1 to 3 over the clip).
        """
        level = torch.as_tensor(level, dtype=torch.float32).reshape(-1).expand(x_t.shape[0])
        out_device = x_t.device
        x_in, lev = x_t.to(self.device, self.dtype), level.to(self.device)
        c = cond.to(self.device, self.dtype)
        scale = torch.as_tensor(guidance_scale, dtype=torch.float32)
        if scale.ndim == 0 and float(scale) == 1.0:
            raw = self(x_in, lev, c)
        else:
            u = (uncond if uncond is not None else self.uncond(cond)).to(self.device, self.dtype)
            both = self(torch.cat([x_in, x_in]), torch.cat([lev, lev]), c.cat(u))
            pos, neg = both.chunk(2)
            scale = scale.reshape(1, 1, -1, 1, 1, 1) if scale.ndim == 1 else scale
            raw = neg + scale.to(pos) * (pos - neg)
        alpha, sigma = self.schedule.alpha_sigma(level)
        return Prediction(raw.to(out_device, x_t.dtype), x_t, alpha.to(out_device), sigma.to(out_device),
                          self.parameterization)

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """x_t = alpha x0 + sigma eps for latents [B, ...] at noise level [B]."""
        alpha, sigma = self.schedule.alpha_sigma(level)
        shape = (-1,) + (1,) * (x0.ndim - 1)
        return alpha.to(x0).reshape(shape) * x0 + sigma.to(x0).reshape(shape) * eps

    def encode_images(self, images: torch.Tensor, chunk: int = 8) -> torch.Tensor:
        """Images [N, 3, H, W] in [0, 1] -> model latents [N, C, H/d, W/d]."""
        raise NotImplementedError(f"{self.name} has no image encoder")

    def decode_latents(self, latents: torch.Tensor, chunk: int = 8) -> torch.Tensor:
        """Model latents [N, C, h, w] -> images [N, 3, h*d, w*d] in [0, 1]."""
        raise NotImplementedError(f"{self.name} has no image decoder")


def in_chunks(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk: int,
              checkpoint: bool = False) -> torch.Tensor:
    """``fn`` applied to ``x`` [N, ...] ``chunk`` items at a time (bounds VAE memory at large N).

    ``checkpoint``: when gradients flow, keep only each chunk's input for the backward pass and recompute
    ``fn`` there (gradient checkpointing), so the saved activations are those of one chunk at a time."""
    if checkpoint and torch.is_grad_enabled() and x.requires_grad:
        from torch.utils.checkpoint import checkpoint as recompute

        return torch.cat([recompute(fn, part, use_reentrant=False) for part in x.split(max(1, chunk))])
    return torch.cat([fn(part) for part in x.split(max(1, chunk))])


def vae_encode(vae, images: torch.Tensor, chunk: int = 8, scale: bool = True, sample: bool = False,
               generator: torch.Generator | None = None, checkpoint: bool = False) -> torch.Tensor:
    """Images [N, 3, H, W] in [0, 1] -> latents [N, C, H/8, W/8] through a diffusers VAE, in chunks.

    ``scale`` multiplies by the VAE's ``scaling_factor`` (the diffusion latent space); SVD's image
    conditioning uses the unscaled mode instead.
    """
    dtype = next(vae.parameters()).dtype

    def one(x):
        dist = vae.encode((x * 2 - 1).to(vae.device, dtype)).latent_dist
        return dist.sample(generator) if sample else dist.mode()
    z = in_chunks(one, images, chunk, checkpoint)
    return (z * vae.config.scaling_factor if scale else z).to(images.dtype)


def vae_decode(vae, latents: torch.Tensor, chunk: int = 8, **kwargs) -> torch.Tensor:
    """Latents [N, C, h, w] (scaled) -> images [N, 3, 8h, 8w] in [0, 1], in chunks."""
    dtype = next(vae.parameters()).dtype

    def one(z):
        extra = {k: (z.shape[0] if v == "chunk" else v) for k, v in kwargs.items()}
        return vae.decode((z / vae.config.scaling_factor).to(vae.device, dtype), **extra).sample
    x = in_chunks(one, latents, chunk)
    return ((x.float() + 1) / 2).clamp(0, 1).to(latents.dtype)
