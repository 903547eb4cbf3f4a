"""The T1-style field diffusion network: a DiT over latent tokens that carry their field coordinates.

A *view set* is N views of one field (one 4D object): each view is an image latent ``[C, h, w]`` with its
camera (``c2w`` ``[4, 4]``, ``K`` ``[3, 3]``), its time ``t`` in [0, 1] and whether it is given clean (a
conditioning view) or is being denoised. Every latent pixel becomes one token whose embedding sums

- its latent content (a linear map of the ``C`` channels),
- its coordinates: pixel position (Fourier features of ``(u, v)``), the ray through it as Plücker
  coordinates ``(d, o x d)`` (the camera of its view) and the time of its frame (Fourier features),
- a learned "clean" flag for conditioning views,
- optionally (``arch.heading``) the object's heading: the yaw of the field's object about +Z in the
  cameras' frame, or "unknown". A caption names no heading, so without it an object that orbits on a
  ring (its phase is the heading) or walks along its heading may sit anywhere, and a small model's samples
  scatter over all the places it could be. A known heading turns the cameras into the object's frame
  before the rays are computed (so the rays alone say where an orbiting or walking object is, as MVDream's
  cameras are relative to the object's front) and its embedding says where the world, and its light, lie.
  Text roles give heading 0 (the canonical pose); image roles leave it unknown (the reference shows it).
- optionally (``arch.background``) the grey level of the background behind the subject (0 black, 1 white).
  The world renders over black, where matter with a black albedo looks like empty space, so a score
  distilled through a black-only prior neither keeps nor removes it; a prior that also knows white shows it.
- optionally (``arch.self_condition``) the network's own previous estimate of the clean latents (self-conditioning,
  Chen et al. 2022, "Analog Bits"): a sampler passes each step's x0 estimate to the next, so the network refines
  one picture instead of guessing afresh where the object is at every step; zeros mean "no estimate" (the
  first step, and score distillation).

So one network denoises a single image (N = 1), V views of one time, F frames of one camera, or a V x F
block. Tokens of all views attend to one another jointly (T1 Sec. 3.1 attends within a view and leaves the
cross-view coupling to text and shared noise; on a small model joint attention is what keeps orbit views
consistent, and N <= 16 views of 8 x 8 tokens stay cheap). Each block is adaLN-Zero (DiT) modulated by the
noise level plus the pooled prompt embedding — the same scale and shift for every view of the set, T1's
cross-view condition consistency (Sec. 3.2) — followed by cross-attention to the prompt tokens.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from pipelines.models.text import TextEncoder

HEADING_BANDS = 4


@dataclass(frozen=True)
class FieldPriorArch:
    """Architecture of a field prior (saved as JSON next to its weights).

    ``resolution`` pixels per side, ``downsample`` pixels per latent token side; the latent is the exact
    space-to-depth of the image (``latent_channels = 3 * downsample**2``), so no VAE has to be trained.
    """

    resolution: int = 32
    downsample: int = 4
    width: int = 128
    depth: int = 6
    heads: int = 4
    text_width: int = 128
    text_layers: int = 2
    text_length: int = 16
    vocab_size: int = 0
    cross_attention: bool = True
    fourier_bands: int = 8
    fovy: float = 40.0          # the dataset rig's field of view, used when a caller gives no intrinsics
    distance: float = 2.7       # the dataset rig's camera distance, for default orbit cameras
    heading: bool = False       # condition on the object's heading (see the module docstring)
    background: bool = False    # condition on the background's grey level (see the module docstring)
    self_condition: bool = False  # take the previous x0 estimate as an input (see the module docstring)

    @property
    def latent_channels(self) -> int:
        return 3 * self.downsample ** 2

    @property
    def latent_size(self) -> int:
        return self.resolution // self.downsample

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FieldPriorArch:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def fourier(x: torch.Tensor, bands: int) -> torch.Tensor:
    """Fourier features [..., D * 2 * bands] of coordinates x [..., D] in about [-1, 1]."""
    freqs = (2.0 ** torch.arange(bands, device=x.device, dtype=x.dtype)) * math.pi
    angles = x[..., None] * freqs
    return torch.cat([angles.sin(), angles.cos()], -1).flatten(-2)


def timestep_embedding(level: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of noise levels [B] (DDPM timesteps)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=level.device, dtype=torch.float32) / half)
    args = level.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], -1)


def plucker_rays(c2w: torch.Tensor, K: torch.Tensor, size: int, downsample: int) -> torch.Tensor:
    """Plücker coordinates [..., size, size, 6] of the rays through latent pixel centres.

    c2w [..., 4, 4] (OpenCV axes), K [..., 3, 3] of the full-resolution image; latent pixel (i, j) covers
    image pixels ``[i*d, (i+1)*d)`` so its centre is at ``(j + 0.5) * d``.
    """
    centres = (torch.arange(size, device=c2w.device, dtype=c2w.dtype) + 0.5) * downsample
    v, u = torch.meshgrid(centres, centres, indexing="ij")
    fx, fy = K[..., 0, 0, None, None], K[..., 1, 1, None, None]
    cx, cy = K[..., 0, 2, None, None], K[..., 1, 2, None, None]
    d_cam = torch.stack([(u - cx) / fx, (v - cy) / fy, torch.ones_like(u - cx)], -1)  # [..., s, s, 3]
    R = c2w[..., :3, :3]
    d = torch.einsum("...ij,...hwj->...hwi", R, d_cam)
    d = d / d.norm(dim=-1, keepdim=True)
    o = c2w[..., None, None, :3, 3].expand_as(d)
    return torch.cat([d, torch.linalg.cross(o, d, dim=-1)], -1)


def object_frame(c2w: torch.Tensor, heading: torch.Tensor) -> torch.Tensor:
    """Cameras c2w [B, N, 4, 4] of an object at yaw ``heading`` [B] (radians) about +Z, in the object's frame:
    turned by -heading about +Z (heading 0 leaves them as they are)."""
    c, s = torch.cos(heading), torch.sin(heading)
    turn = torch.zeros(heading.shape[0], 4, 4, dtype=c2w.dtype, device=c2w.device)
    turn[:, 0, 0], turn[:, 0, 1], turn[:, 1, 0], turn[:, 1, 1] = c, s, -s, c
    turn[:, 2, 2] = turn[:, 3, 3] = 1.0
    return turn[:, None] @ c2w


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: Norm(x) * (1 + scale) + shift with per-item shift/scale [B, D] (T1 Sec. 3.2, DiT)."""
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, context_width: int | None = None) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(context_width or width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        B, N, D = x.shape
        ctx = x if context is None else context
        q = self.q(x).view(B, N, self.heads, D // self.heads).transpose(1, 2)
        k, v = self.kv(ctx).view(B, ctx.shape[1], 2, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(B, N, D))


class DiTBlock(nn.Module):
    """adaLN-Zero self-attention + (optional) cross-attention to text + MLP."""

    def __init__(self, width: int, heads: int, text_width: int, cross_attention: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(width, heads)
        self.cross = Attention(width, heads, text_width) if cross_attention else None
        self.norm_cross = nn.LayerNorm(width, eps=1e-6) if cross_attention else None
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Linear(4 * width, width))
        self.ada = nn.Linear(width, 6 * width)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)
        if self.cross is not None:
            nn.init.zeros_(self.cross.out.weight)
            nn.init.zeros_(self.cross.out.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        s1, sc1, g1, s2, sc2, g2 = self.ada(F.silu(c)).chunk(6, -1)
        x = x + g1[:, None] * self.attn(modulate(self.norm1(x), s1, sc1))
        if self.cross is not None:
            x = x + self.cross(self.norm_cross(x), text)
        return x + g2[:, None] * self.mlp(modulate(self.norm2(x), s2, sc2))


class FieldDiT(nn.Module):
    """Text encoder + denoiser of view sets. See the module docstring."""

    def __init__(self, arch: FieldPriorArch) -> None:
        super().__init__()
        if arch.vocab_size <= 0:
            raise ValueError("FieldPriorArch.vocab_size must be set (the tokenizer's vocabulary size)")
        self.arch = arch
        W, C, nb = arch.width, arch.latent_channels, arch.fourier_bands
        self.text = TextEncoder(arch.vocab_size, arch.text_width, arch.text_layers, max(1, arch.text_width // 32),
                                arch.text_length)
        self.content = nn.Linear(C, W)
        self.pixel = nn.Linear(2 * 2 * nb, W)
        self.ray = nn.Linear(6 + 6 * 2 * (nb // 2), W)
        self.time = nn.Linear(2 * nb, W)
        self.clean = nn.Embedding(2, W)
        self.level = nn.Sequential(nn.Linear(W, W), nn.SiLU(), nn.Linear(W, W))
        self.pooled = nn.Linear(arch.text_width, W)
        self.blocks = nn.ModuleList(DiTBlock(W, arch.heads, arch.text_width, arch.cross_attention)
                                    for _ in range(arch.depth))
        self.final_norm = nn.LayerNorm(W, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Linear(W, 2 * W)
        self.final = nn.Linear(W, C)
        zero = [self.final_ada, self.final]
        if arch.heading:
            # sin/cos of k * heading for k = 1..HEADING_BANDS, into every token and the adaLN condition;
            # "unknown" is a learned vector. Zero at the start, so a model grown from one without a heading
            # begins as that model's function.
            self.heading_token = nn.Linear(2 * HEADING_BANDS, W)
            self.heading_cond = nn.Linear(2 * HEADING_BANDS, W)
            self.heading_unknown = nn.Parameter(torch.zeros(2, W))
            zero += [self.heading_token, self.heading_cond]
        if arch.background:
            # (b, 1 - b) of the grey level b, into every token and the adaLN condition; zero at the start, so
            # a model grown from one trained on black alone begins as that model's function.
            self.background_token = nn.Linear(2, W)
            self.background_cond = nn.Linear(2, W)
            zero += [self.background_token, self.background_cond]
        if arch.self_condition:
            # the previous estimate's latent, mapped like the content; zero at the start, so a model grown from
            # one without it begins as that model's function
            self.self_condition_token = nn.Linear(C, W)
            zero.append(self.self_condition_token)
        for layer in zero:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids [B, L] -> prompt features [B, L, Dt] (the ``Conditioning.text`` of this prior)."""
        return self.text(ids)

    def forward(self, x: torch.Tensor, level: torch.Tensor, text: torch.Tensor, c2w: torch.Tensor,
                K: torch.Tensor, times: torch.Tensor, clean: torch.Tensor,
                heading: torch.Tensor | None = None, background: torch.Tensor | None = None,
                estimate: torch.Tensor | None = None) -> torch.Tensor:
        """Raw prediction [B, N, C, h, w] for view sets x [B, N, C, h, w].

        level [B] noise timesteps; text [B, L, Dt] prompt features; c2w [B, N, 4, 4]; K [B, N, 3, 3];
        times [B, N]; clean [B, N] bool (views given clean as conditioning); heading [B] radians, NaN (or
        None for all) = unknown; a model without ``arch.heading`` ignores it. background [B] the grey level behind
        the subject (0 black, the default; 1 white); a model without ``arch.background`` ignores it. estimate
        [B, N, C, h, w]: the previous x0 estimate (None = zeros, no estimate); a model without
        ``arch.self_condition`` ignores it.
        """
        B, N, C, h, w = x.shape
        a = self.arch
        if a.latent_channels != C or h != w:
            raise ValueError(f"expected latents [B, N, {a.latent_channels}, s, s], got {list(x.shape)}")
        tokens = self.content(x.permute(0, 1, 3, 4, 2))                            # [B, N, h, w, W]
        if a.self_condition and estimate is not None:
            tokens = tokens + self.self_condition_token(estimate.to(x).permute(0, 1, 3, 4, 2))
        elif a.self_condition:
            tokens = tokens + self.self_condition_token.bias
        grid = (torch.arange(h, device=x.device, dtype=x.dtype) + 0.5) / h * 2 - 1
        gv, gu = torch.meshgrid(grid, grid, indexing="ij")
        tokens = tokens + self.pixel(fourier(torch.stack([gu, gv], -1), a.fourier_bands))
        known = None
        if a.heading:
            if heading is None:
                heading = torch.full((B,), float("nan"), device=x.device)
            heading = heading.to(x.device, x.dtype).reshape(-1).expand(B)
            known = ~torch.isnan(heading)
            heading = torch.where(known, heading, torch.zeros_like(heading))
            c2w = object_frame(c2w, heading)
        rays = plucker_rays(c2w.to(x.dtype), K.to(x.dtype), h, a.resolution // h)   # [B, N, h, w, 6]
        rays = torch.cat([rays, fourier(rays, a.fourier_bands // 2)], -1)
        tokens = tokens + self.ray(rays)
        tok_t = self.time(fourier(times.to(x.dtype)[..., None] * 2 - 1, a.fourier_bands)) + self.clean(clean.long())
        tokens = (tokens + tok_t[:, :, None, None]).reshape(B, N * h * w, -1)
        c = self.level(timestep_embedding(level, a.width).to(x.dtype)) + self.pooled(text[:, 0])
        if known is not None:
            k = torch.arange(1, HEADING_BANDS + 1, device=x.device, dtype=x.dtype)
            angles = heading[:, None] * k
            feats = torch.cat([angles.sin(), angles.cos()], -1)
            on = known[:, None].to(x.dtype)
            tokens = tokens + (on * self.heading_token(feats) + (1 - on) * self.heading_unknown[0])[:, None]
            c = c + on * self.heading_cond(feats) + (1 - on) * self.heading_unknown[1]
        if a.background:
            grey = torch.zeros(B, device=x.device, dtype=x.dtype) if background is None else \
                background.to(x.device, x.dtype).reshape(-1).expand(B)
            feats = torch.stack([grey, 1 - grey], -1)
            tokens = tokens + self.background_token(feats)[:, None]
            c = c + self.background_cond(feats)
        for block in self.blocks:
            tokens = block(tokens, c, text)
        shift, scale = self.final_ada(F.silu(c)).chunk(2, -1)
        out = self.final(modulate(self.final_norm(tokens), shift, scale))
        return out.reshape(B, N, h, w, C).permute(0, 1, 4, 2, 3)


def images_to_latents(images: torch.Tensor, downsample: int) -> torch.Tensor:
    """Images [..., 3, H, W] in [0, 1] -> latents [..., 3 d^2, H/d, W/d] in [-1, 1] (space-to-depth)."""
    lead = images.shape[:-3]
    z = F.pixel_unshuffle(images.reshape(-1, *images.shape[-3:]) * 2 - 1, downsample)
    return z.reshape(*lead, *z.shape[-3:])


def latents_to_images(latents: torch.Tensor, downsample: int) -> torch.Tensor:
    """Inverse of :func:`images_to_latents`, clamped to [0, 1]."""
    lead = latents.shape[:-3]
    x = F.pixel_shuffle(latents.reshape(-1, *latents.shape[-3:]), downsample)
    return ((x + 1) / 2).clamp(0, 1).reshape(*lead, *x.shape[-3:])
