"""Latent 3D diffusion (Sec. 3.3, App. B.2): an EDM-preconditioned 3D UNet over normalised latent volumes,
conditioned on a class label and/or a caption (cross-attention), with classifier-free guidance.

    unet = LatentUNet3d(DiffusionConfig(), latent_channels=32)
    edm = EDM(unet)                                     # sigma_data = 0.5 (the paper fixes it)
    loss = edm.loss(z, labels=labels, tokens=tokens)    # Karras et al. 2022, Eq. 2 + Table 1
    z = edm.sample((N, C, 8, 8, 8), labels=labels, guidance=3.0, steps=18, generator=g)   # Heun, Alg. 1

Preconditioning (EDM Table 1): D(x; s) = c_skip x + c_out F(c_in x; c_noise) with
c_skip = sd^2 / (s^2 + sd^2), c_out = s sd / sqrt(s^2 + sd^2), c_in = 1 / sqrt(s^2 + sd^2), c_noise = ln(s) / 4.

Text: the paper embeds captions with T5-11B (32 tokens x 1024); offline we hash words into a learned token
table (:func:`tokenize`). A hashed word is only an id: "crimson" and "red" share nothing, and a colour seen on
few shapes does not carry over to others. So the caption is also parsed by the world grammar into its
attributes (shape, colour, size, material; synonyms included), each with its own learned embedding added to
the time embedding (:func:`parse_attributes`) - a factorised stand-in for what T5 knows about words. All
conditions of a caption come from :func:`caption_conditions`.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipelines.config import Config


@dataclass(frozen=True)
class DiffusionConfig(Config):
    """Latent diffusion UNet and EDM settings; defaults are tiny CPU sizes, ``paper`` is Table 5 (Objaverse)."""

    schema_version: ClassVar[int] = 1
    presets: ClassVar[dict] = {
        "preview": {},
        "standard": {"channels": 64, "channel_mult": (1, 2), "depth": 2, "steps": 4000},
        "paper": {"channels": 192, "channel_mult": (3, 4), "depth": 3, "attention_resolutions": (8, 4),
                  "context_dim": 1024, "context_length": 32, "transformer_depth": 2, "lr": 4.5e-5,
                  "sample_steps": 64},
    }

    channels: int = field(default=32, metadata={"help": "UNet base channels"})
    channel_mult: tuple[int, ...] = field(default=(1, 2), metadata={"help": "channel multiplier per level"})
    depth: int = field(default=1, metadata={"help": "residual blocks per level"})
    attention_resolutions: tuple[int, ...] = field(default=(4,), metadata={"help": "resolutions with SA/CA"})
    num_classes: int = field(default=0, metadata={"help": "class labels (0: no class conditioning)"})
    vocab_size: int = field(default=0, metadata={"help": "hashed word tokens (0: no text conditioning)"})
    context_dim: int = field(default=64, metadata={"help": "token embedding width (paper: T5, 1024)"})
    context_length: int = field(default=32, metadata={"help": "tokens per caption (paper: 32)"})
    transformer_depth: int = field(default=1, metadata={"help": "cross-attention layers per site"})
    sigma_data: float = field(default=0.5, metadata={"help": "EDM sigma_data (the paper fixes 0.5)"})
    p_mean: float = field(default=-1.2, metadata={"help": "EDM training log-sigma mean"})
    p_std: float = field(default=1.2, metadata={"help": "EDM training log-sigma std"})
    sigma_min: float = field(default=0.002, metadata={"help": "sampler's smallest noise level"})
    sigma_max: float = field(default=80.0, metadata={"help": "sampler's largest noise level"})
    rho: float = field(default=7.0, metadata={"help": "EDM time-step exponent"})
    sample_steps: int = field(default=18, metadata={"help": "Heun steps"})
    attributes: tuple[str, ...] = field(default=(), metadata={
        "help": "caption attributes parsed by the world grammar, each a learned embedding (of ATTRIBUTES)"})
    guidance: float = field(default=3.0, metadata={"help": "classifier-free guidance weight (paper: 3)"})
    cond_dropout: float = field(default=0.1, metadata={"help": "training drop rate of the condition (CFG)"})
    latent_before_relu: bool = field(default=False, metadata={
        "help": "diffuse the latent level's features before its final ReLU (decoding applies it)"})
    attribute_dropout: float = field(default=0.1, metadata={
        "help": "training drop rate of each attribute alone (prompts that name only some attributes)"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate (paper: 4.5e-5)"})
    steps: int = field(default=500, metadata={"help": "training steps"})
    batch_size: int = field(default=8, metadata={"help": "latents per step"})

    def __post_init__(self) -> None:
        for name in ("channels", "depth", "context_dim", "context_length", "sample_steps", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"'{name}' must be at least 1")
        if not self.channel_mult:
            raise ValueError("'channel_mult' needs at least one level")
        unknown = [a for a in self.attributes if a not in ATTRIBUTES]
        if unknown:
            raise ValueError(f"unknown attribute '{unknown[0]}' (choose from: {', '.join(ATTRIBUTES)})")


# -------------------------------------------------------------------- text tokens
def attribute_values() -> dict[str, tuple[str, ...]]:
    from pipelines.world.grammar import COLOURS, MATERIALS, SHAPES, SIZES

    return {"shape": SHAPES, "colour": COLOURS, "size": SIZES, "material": MATERIALS}


# Static attributes a caption can name (motion is not: the autodecoder's objects do not move).
ATTRIBUTES = ("shape", "colour", "size", "material")


def parse_attributes(captions: list[str], names: tuple[str, ...]) -> Tensor:
    """Value index of each attribute in ``names`` that each caption names, ``[B, len(names)]``, -1 where it
    names none; read by :func:`pipelines.world.grammar.attributes_from_text` (so "a crimson ball" is red sphere).
    The grammar's unnamed size is "medium" (captions leave it out), so size falls back to medium."""
    from pipelines.world.grammar import attributes_from_text

    values = attribute_values()
    out = torch.full((len(captions), len(names)), -1, dtype=torch.long)
    for i, caption in enumerate(captions):
        found = attributes_from_text(caption)
        if "shape" in found:  # a named object without a size word is medium-sized, as the world's captions say
            found.setdefault("size", "medium")
        for j, name in enumerate(names):
            if name in found:
                out[i, j] = values[name].index(found[name])
    return out


def caption_conditions(captions: list[str], config: DiffusionConfig) -> dict[str, Tensor | None]:
    """Every condition ``config`` was trained with, for ``captions``: ``labels`` (the shape class, -1 = none),
    hashed ``tokens`` and parsed ``attributes``; None for those it does not use. Training, evaluation and the
    text-to-3d pipeline all build conditions here."""
    labels = tokens = attributes = None
    if config.num_classes:
        labels = parse_attributes(captions, ("shape",))[:, 0]
    if config.vocab_size:
        tokens = tokenize(captions, config.vocab_size, config.context_length)
    if config.attributes:
        attributes = parse_attributes(captions, config.attributes)
    return {"labels": labels, "tokens": tokens, "attributes": attributes}


def tokenize(captions: list[str], vocab_size: int, length: int) -> Tensor:
    """Word ids ``[B, length]`` by CRC32 hashing into ``1 .. vocab_size - 1``; 0 pads (trim / zero-pad, as
    the paper fixes T5 sequences to 32)."""
    out = torch.zeros(len(captions), length, dtype=torch.long)
    for i, caption in enumerate(captions):
        words = caption.lower().replace(",", " ").split()[:length]
        for j, word in enumerate(words):
            out[i, j] = 1 + zlib.crc32(word.encode()) % (vocab_size - 1)
    return out


# -------------------------------------------------------------------- network
def _gn(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


class ResBlock(nn.Module):
    """ADM residual block in 3D with an additive embedding (time + class)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = _gn(c_in), nn.Conv3d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.conv2 = _gn(c_out), nn.Conv3d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv3d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Self-attention over voxels, then ``cross`` cross-attention layers to a token context (LDM-style)."""

    def __init__(self, channels: int, context_dim: int | None, cross: int) -> None:
        super().__init__()
        heads = 4 if channels % 4 == 0 else 1
        self.norm = _gn(channels)
        self.self_attn = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.cross = nn.ModuleList()
        if context_dim is not None:
            for _ in range(cross):
                self.cross.append(nn.ModuleDict({
                    "norm": nn.LayerNorm(channels),
                    "attn": nn.MultiheadAttention(channels, heads, kdim=context_dim, vdim=context_dim,
                                                  batch_first=True)}))

    def forward(self, x: Tensor, context: Tensor | None) -> Tensor:
        h0 = self.norm(x).flatten(2).transpose(1, 2)  # [B, N, C]
        h = h0 + self.self_attn(h0, h0, h0, need_weights=False)[0]
        if context is not None:
            for layer in self.cross:
                q = layer["norm"](h)
                h = h + layer["attn"](q, context, context, need_weights=False)[0]
        return x + (h - h0).transpose(1, 2).reshape(x.shape)


class LatentUNet3d(nn.Module):
    """F_theta of EDM: ``[B, C, R, R, R]`` latents -> same shape, given c_noise ``[B]``, class labels
    ``[B]`` (-1 = none) and caption tokens ``[B, L]`` (None / all zero = none)."""

    def __init__(self, config: DiffusionConfig, latent_channels: int, latent_resolution: int) -> None:
        super().__init__()
        self.config = config
        self.latent_channels, self.latent_resolution = latent_channels, latent_resolution
        ch = config.channels
        emb_dim = 4 * ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # one extra row: the "no class" embedding used for unconditional / dropped samples (CFG)
        self.class_emb = nn.Embedding(config.num_classes + 1, emb_dim) if config.num_classes else None
        # one table per parsed attribute, likewise with a last "not named" row: added to the time embedding so a
        # colour is one vector whatever the shape (colour generalises across shapes)
        values = attribute_values()
        self.attribute_emb = nn.ModuleList([nn.Embedding(len(values[a]) + 1, emb_dim) for a in config.attributes])
        ctx = None
        if config.vocab_size:
            self.token_emb = nn.Embedding(config.vocab_size, config.context_dim)
            self.null_token = nn.Parameter(torch.randn(1, 1, config.context_dim) * 0.02)  # always attendable
            self.token_pos = nn.Parameter(torch.zeros(1, config.context_length + 1, config.context_dim))
            ctx = config.context_dim
        self.input = nn.Conv3d(latent_channels, ch, 3, padding=1)
        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        skips, c, res = [], ch, latent_resolution
        for level, mult in enumerate(config.channel_mult):
            blocks = nn.ModuleList()
            for _ in range(config.depth):
                blocks.append(ResBlock(c, ch * mult, emb_dim))
                c = ch * mult
            attn = Attention(c, ctx, config.transformer_depth) if res in config.attention_resolutions else None
            down = nn.Conv3d(c, c, 3, stride=2, padding=1) if level < len(config.channel_mult) - 1 else None
            self.down.append(nn.ModuleDict({"blocks": blocks, "attn": attn, "down": down}) if attn or down
                             else nn.ModuleDict({"blocks": blocks}))
            skips.append(c)
            if down is not None:
                res //= 2
        self.mid1 = ResBlock(c, c, emb_dim)
        self.mid_attn = Attention(c, ctx, config.transformer_depth)
        self.mid2 = ResBlock(c, c, emb_dim)
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            blocks = nn.ModuleList()
            c_skip = skips[level]
            for i in range(config.depth):
                blocks.append(ResBlock(c + c_skip if i == 0 else ch * mult, ch * mult, emb_dim))
                c = ch * mult
            attn = Attention(c, ctx, config.transformer_depth) if res in config.attention_resolutions else None
            up = level > 0
            self.up.append(nn.ModuleDict({"blocks": blocks, **({"attn": attn} if attn else {})}))
            self.up[-1].upsample = up
            if up:
                res *= 2
        self.out_norm = _gn(c)
        self.out = nn.Conv3d(c, latent_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def context(self, tokens: Tensor | None, batch: int, device) -> Tensor | None:
        if not self.config.vocab_size:
            return None
        if tokens is None:
            tokens = torch.zeros(batch, self.config.context_length, dtype=torch.long, device=device)
        emb = self.token_emb(tokens) * (tokens > 0)[..., None]  # padding contributes nothing
        ctx = torch.cat([self.null_token.expand(batch, -1, -1), emb], 1)
        return ctx + self.token_pos[:, :ctx.shape[1]]

    def condition_embedding(self, labels: Tensor | None, attributes: Tensor | None, batch: int, device) -> Tensor:
        """The class and attribute embeddings added to the time embedding, ``[B, 4 * channels]``: a sum of one
        vector per named value ("none" rows for -1 / None), so a colour adds the same vector to every shape."""
        emb = torch.zeros(batch, 4 * self.config.channels, device=device)
        if self.class_emb is not None:
            if labels is None:
                labels = torch.full((batch,), -1, dtype=torch.long, device=device)
            emb = emb + self.class_emb(torch.where(labels < 0, self.config.num_classes, labels))
        for j, table in enumerate(self.attribute_emb):
            none = table.num_embeddings - 1
            a = torch.full((batch,), none, device=device) if attributes is None else attributes[:, j]
            emb = emb + table(torch.where(a < 0, none, a))
        return emb

    def forward(self, x: Tensor, c_noise: Tensor, labels: Tensor | None = None,
                tokens: Tensor | None = None, attributes: Tensor | None = None) -> Tensor:
        B = x.shape[0]
        half = self.config.channels // 2
        freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=x.device) / half)
        angles = c_noise.reshape(-1, 1).float() * 1000 * freqs[None]  # c_noise = ln(s)/4 is O(1): spread it
        emb = self.time_mlp(torch.cat([angles.cos(), angles.sin()], 1).expand(B, -1))
        emb = emb + self.condition_embedding(labels, attributes, B, x.device)
        ctx = self.context(tokens, B, x.device)
        h = self.input(x)
        skips = []
        for level in self.down:
            for block in level["blocks"]:
                h = block(h, emb)
            if "attn" in level and level["attn"] is not None:
                h = level["attn"](h, ctx)
            skips.append(h)
            if "down" in level and level["down"] is not None:
                h = level["down"](h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb), ctx), emb)
        for level in self.up:
            h = torch.cat([h, skips.pop()], 1)
            for block in level["blocks"]:
                h = block(h, emb)
            if "attn" in level:
                h = level["attn"](h, ctx)
            if level.upsample:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
        return self.out(F.silu(self.out_norm(h)))


# -------------------------------------------------------------------- EDM
class EDM(nn.Module):
    """Karras et al. 2022 preconditioning, training loss and Heun sampler around a :class:`LatentUNet3d`."""

    def __init__(self, net: LatentUNet3d) -> None:
        super().__init__()
        self.net = net
        self.config = net.config

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """EDM Table 1: c_skip, c_out, c_in, c_noise for noise levels ``sigma`` ``[B]``."""
        sd = self.config.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        c_in = 1 / (sigma**2 + sd**2).sqrt()
        return c_skip, c_out, c_in, sigma.log() / 4

    def denoise(self, x: Tensor, sigma: Tensor, labels: Tensor | None = None, tokens: Tensor | None = None,
                attributes: Tensor | None = None) -> Tensor:
        """D_theta(x; sigma) ``[B, C, R, R, R]`` (sigma ``[B]`` or scalar)."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        c_skip, c_out, c_in, c_noise = (c.reshape(-1, 1, 1, 1, 1) for c in self.coefficients(sigma))
        return c_skip * x + c_out * self.net(c_in * x, c_noise.reshape(-1), labels, tokens, attributes)

    def guided(self, x: Tensor, sigma: Tensor, labels: Tensor | None, tokens: Tensor | None,
               guidance: float, attributes: Tensor | None = None) -> Tensor:
        """Classifier-free guidance: D_u + w (D_c - D_u); w = 1 is plain conditional, no condition skips it.
        D_u drops every condition at once, as training's ``cond_dropout`` does."""
        conditions = (labels, tokens, attributes)
        if all(c is None for c in conditions) or guidance == 1.0:
            return self.denoise(x, sigma, labels, tokens, attributes)
        B = x.shape[0]
        none = (lambda c: torch.full_like(c, -1), torch.zeros_like, lambda c: torch.full_like(c, -1))
        both = self.denoise(torch.cat([x, x]), sigma,
                            *(None if c is None else torch.cat([c, drop(c)]) for c, drop in zip(conditions, none)))
        cond, uncond = both[:B], both[B:]
        return uncond + guidance * (cond - uncond)

    def loss(self, y: Tensor, labels: Tensor | None = None, tokens: Tensor | None = None,
             generator: torch.Generator | None = None, attributes: Tensor | None = None) -> Tensor:
        """EDM training loss on clean (normalised) latents ``y``: ln sigma ~ N(P_mean, P_std^2), weight
        lambda = (s^2 + sd^2) / (s sd)^2; all conditions are dropped together with ``cond_dropout`` (the
        unconditional model of CFG) and each attribute alone with ``attribute_dropout``."""
        cfg = self.config
        B = y.shape[0]
        rnd = torch.randn(B, generator=generator).to(y)
        sigma = (rnd * cfg.p_std + cfg.p_mean).exp()
        weight = (sigma**2 + cfg.sigma_data**2) / (sigma * cfg.sigma_data) ** 2
        noise = torch.randn(y.shape, generator=generator).to(y) * sigma.reshape(-1, 1, 1, 1, 1)
        drop = torch.rand(B, generator=generator).to(y.device) < cfg.cond_dropout
        if labels is not None:
            labels = torch.where(drop, torch.full_like(labels, -1), labels)
        if tokens is not None:
            tokens = torch.where(drop[:, None], torch.zeros_like(tokens), tokens)
        if attributes is not None:
            alone = torch.rand(attributes.shape, generator=generator).to(y.device) < cfg.attribute_dropout
            attributes = torch.where(drop[:, None] | alone, torch.full_like(attributes, -1), attributes)
        denoised = self.denoise(y + noise, sigma, labels, tokens, attributes)
        return (weight.reshape(-1, 1, 1, 1, 1) * (denoised - y) ** 2).mean()

    def sigmas(self, steps: int | None = None) -> Tensor:
        """EDM Eq. 5 time steps: ``steps`` decreasing sigmas from sigma_max to sigma_min, then 0 (``[steps + 1]``)."""
        cfg = self.config
        n = steps or cfg.sample_steps
        i = torch.arange(n, dtype=torch.float64)
        inv = 1 / cfg.rho
        s = (cfg.sigma_max**inv + i / max(n - 1, 1) * (cfg.sigma_min**inv - cfg.sigma_max**inv)) ** cfg.rho
        return torch.cat([s, torch.zeros(1, dtype=torch.float64)])

    @torch.no_grad()
    def sample(self, shape: tuple[int, ...], labels: Tensor | None = None, tokens: Tensor | None = None, *,
               attributes: Tensor | None = None, guidance: float | None = None, steps: int | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        """EDM Alg. 1 (deterministic Heun, 2nd order): normalised latents of ``shape`` ``[B, C, R, R, R]``."""
        device = next(self.parameters()).device
        w = self.config.guidance if guidance is None else guidance
        t = self.sigmas(steps)
        x = torch.randn(shape, generator=generator).to(device) * t[0].item()
        for i in range(len(t) - 1):
            t_cur, t_next = float(t[i]), float(t[i + 1])
            d = (x - self.guided(x, torch.tensor(t_cur), labels, tokens, w, attributes)) / t_cur
            x_next = x + (t_next - t_cur) * d
            if t_next > 0:
                d2 = (x_next - self.guided(x_next, torch.tensor(t_next), labels, tokens, w, attributes)) / t_next
                x_next = x + (t_next - t_cur) * 0.5 * (d + d2)
            x = x_next
        return x
