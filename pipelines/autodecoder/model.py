"""The volumetric autodecoder (Sec. 3.1 and App. B.1 of the paper in ``shared/seeds/001_*``).

Each training object owns an embedding (plain, or the paper's hash embedding of App. B.3); a fully
connected layer turns it into a ``base``^3 feature volume, and upsampling 3D residual blocks halve the
channels and double the resolution until a final norm + 1x1x1 conv gives the 1 + 3 channel radiance
volume (raw density, raw colour) that :class:`renderers.voxels.VoxelScene` renders.

    model = Autodecoder(AutodecoderConfig(num_objects=3))
    grid = model(torch.tensor([0, 2]))                 # [2, 4, 32, 32, 32]
    scene = model.scene(grid[0])                       # VoxelScene
    z = model.latent(torch.tensor([0]))                # [1, C, 8, 8, 8] at config.latent_level
    same = model.decode_latent(z)                      # G_2: the rest of the decoder

Decoder "levels": level 0 is the ``base``^3 volume after the fully connected layer, level ``i`` the
output of the ``i``-th upsampling block (resolution ``base * 2**i``). The latent diffusion model works at
``latent_level`` (the paper: level 1, 8^3 x 256).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipelines.config import Config

HASH_WORD_BITS = 32  # w of Eq. 10


@dataclass(frozen=True)
class AutodecoderConfig(Config):
    """Architecture and training of the autodecoder. Defaults are tiny CPU sizes; ``paper`` is Table 5
    (Objaverse column) and App. B / C.2."""

    schema_version: ClassVar[int] = 1
    presets: ClassVar[dict] = {
        "preview": {},
        "standard": {"embedding_dim": 128, "max_channels": 64, "min_channels": 16, "levels": 3, "depth": 1,
                     "image_size": 48, "samples_per_ray": 64, "steps": 3000},
        "paper": {"embedding_dim": 1024, "max_channels": 512, "min_channels": 32, "levels": 4, "depth": 4,
                  "attention_levels": (1, 2), "norm": "batch", "hash_embedding": True, "hash_codebooks": 256,
                  "hash_codebook_size": 32768, "views_per_object": 4, "mask_weight": 0.0, "lr": 5e-4,
                  "image_size": 128, "samples_per_ray": 128, "latent_level": 1},
    }

    num_objects: int = field(default=8, metadata={"help": "training objects (embeddings)"})
    embedding_dim: int = field(default=64, metadata={"help": "z-length of the 1D object embedding"})
    hash_embedding: bool = field(default=False, metadata={"help": "hash embedding of App. B.3"})
    hash_codebooks: int = field(default=8, metadata={"help": "smaller codebooks concatenated (paper: 256)"})
    hash_codebook_size: int = field(default=64, metadata={"help": "entries per codebook, a power of 2"})
    base_resolution: int = field(default=4, metadata={"help": "resolution after the fully connected layer"})
    max_channels: int = field(default=32, metadata={"help": "channels at the base volume (paper: 512)"})
    min_channels: int = field(default=16, metadata={"help": "lower bound when halving channels per level"})
    levels: int = field(default=2, metadata={"help": "upsampling blocks (output = base * 2**levels)"})
    depth: int = field(default=1, metadata={"help": "residual blocks per level (paper: 2-4)"})
    attention_levels: tuple[int, ...] = field(default=(), metadata={"help": "levels with self-attention"})
    norm: str = field(default="group", metadata={"help": "'batch' (paper) or 'group'"})
    latent_level: int = field(default=1, metadata={"help": "decoder level the diffusion model works at"})
    density_scale: float = field(default=10.0, metadata={"help": "sigma = scale * softplus(raw)"})
    # training (Sec. 3.2, App. C.2)
    steps: int = field(default=300, metadata={"help": "Adam steps"})
    lr: float = field(default=1e-2, metadata={"help": "Adam learning rate (paper: 5e-4, betas 0.5, 0.999)"})
    lr_schedule: str = field(default="linear", metadata={"help": "'linear' (decay to 0 at steps) or 'constant'"})
    decoder_only: bool = field(default=False, metadata={
        "help": "train only G_2 (the decoder after latent_level): the latents, and a diffusion model over them, "
                "stay valid"})
    objects_per_step: int = field(default=3, metadata={"help": "objects in a batch"})
    views_per_object: int = field(default=2, metadata={"help": "renders per object per step (paper: 4)"})
    image_size: int = field(default=24, metadata={"help": "training render size in pixels"})
    samples_per_ray: int = field(default=32, metadata={"help": "ray-marching samples (paper: 128)"})
    mask_weight: float = field(default=1.0, metadata={"help": "lambda of the foreground loss, Eq. 2"})
    checkpoint_every: int = field(default=100, metadata={"help": "steps between checkpoints"})

    def __post_init__(self) -> None:
        for name in ("num_objects", "embedding_dim", "base_resolution", "max_channels", "min_channels", "levels",
                     "depth", "steps", "objects_per_step", "views_per_object", "image_size", "samples_per_ray",
                     "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"'{name}' must be at least 1")
        if self.lr_schedule not in ("constant", "linear"):
            raise ValueError(f"'lr_schedule' must be 'constant' or 'linear', got '{self.lr_schedule}'")
        if self.norm not in ("batch", "group"):
            raise ValueError(f"'norm' must be 'batch' or 'group', got '{self.norm}'")
        if not 0 <= self.latent_level <= self.levels:
            raise ValueError(f"'latent_level' must be between 0 and levels ({self.levels})")
        if self.hash_embedding:
            if self.embedding_dim % self.hash_codebooks:
                raise ValueError("'embedding_dim' must be a multiple of 'hash_codebooks'")
            size = self.hash_codebook_size
            if size < 2 or size & (size - 1):
                raise ValueError("'hash_codebook_size' must be a power of 2")

    @property
    def resolution(self) -> int:
        return self.base_resolution * 2**self.levels

    def channels(self, level: int) -> int:
        """Feature channels at decoder ``level`` (halved per level, Table 5 MaxChannels at level 0)."""
        return max(self.max_channels // 2**level, self.min_channels)


# -------------------------------------------------------------------- embeddings
def hash_indices(objects: Tensor, codebooks: int, codebook_size: int) -> Tensor:
    """Eq. 10-11: entry of each codebook for each object, ``[N]`` -> ``[N, codebooks]``.

    m_i(k) = ((a_i * k) mod 2^w) >> (w - r) with a_i = 2^(w-1) + 2 i^2 + 1, w = 32, 2^r = codebook_size.
    """
    r = codebook_size.bit_length() - 1
    i = torch.arange(codebooks, dtype=torch.int64, device=objects.device)
    a = 2 ** (HASH_WORD_BITS - 1) + 2 * i * i + 1
    product = (a[None] * objects.to(torch.int64)[:, None]) % (2**HASH_WORD_BITS)
    return product >> (HASH_WORD_BITS - r)


class ObjectEmbedding(nn.Module):
    """Per-object 1D embeddings ``[N] -> [N, embedding_dim]``: a plain table, or Eq. 9's concatenation of
    ``hash_codebooks`` pieces of length ``embedding_dim / hash_codebooks``, each chosen by Eq. 10."""

    def __init__(self, config: AutodecoderConfig) -> None:
        super().__init__()
        self.hashed = config.hash_embedding
        self.num_objects = config.num_objects
        if self.hashed:
            self.codebooks, self.codebook_size = config.hash_codebooks, config.hash_codebook_size
            piece = config.embedding_dim // config.hash_codebooks
            self.table = nn.Parameter(torch.randn(config.hash_codebooks, config.hash_codebook_size, piece) * 0.1)
        else:
            self.table = nn.Parameter(torch.randn(config.num_objects, config.embedding_dim) * 0.1)

    def forward(self, objects: Tensor) -> Tensor:
        if objects.numel() and (int(objects.min()) < 0 or int(objects.max()) >= self.num_objects):
            raise IndexError(f"object index out of range 0..{self.num_objects - 1}")
        if not self.hashed:
            return self.table[objects]
        idx = hash_indices(objects, self.codebooks, self.codebook_size)  # [N, n]
        pieces = self.table[torch.arange(self.codebooks, device=objects.device)[None], idx]  # [N, n, piece]
        return pieces.flatten(1)


# -------------------------------------------------------------------- decoder blocks
def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    return nn.GroupNorm(min(8, channels), channels)


class ResBlock3d(nn.Module):
    """App. B.1: two 3x3x3 convs with norms on the main path, a 1x1x1 conv on the residual path, ReLU."""

    def __init__(self, c_in: int, c_out: int, norm: str) -> None:
        super().__init__()
        self.conv1, self.norm1 = nn.Conv3d(c_in, c_out, 3, padding=1), _norm(norm, c_out)
        self.conv2, self.norm2 = nn.Conv3d(c_out, c_out, 3, padding=1), _norm(norm, c_out)
        self.skip = nn.Conv3d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, activate: bool = True) -> Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h)) + self.skip(x)
        return F.relu(h) if activate else h


class SelfAttention3d(nn.Module):
    """Multi-head self-attention over the voxels of a ``[B, C, D, H, W]`` volume (residual)."""

    def __init__(self, channels: int, heads: int = 4) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(min(8, channels), channels)
        self.attn = nn.MultiheadAttention(channels, heads if channels % heads == 0 else 1, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        B, C = x.shape[:2]
        h = self.norm(x).flatten(2).transpose(1, 2)  # [B, N, C]
        h, _ = self.attn(h, h, h, need_weights=False)
        return x + h.transpose(1, 2).reshape(x.shape)


class UpLevel(nn.Module):
    """One decoder level: x2 trilinear upsampling, ``depth`` residual blocks, optional self-attention."""

    def __init__(self, c_in: int, c_out: int, depth: int, attention: bool, norm: str) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([ResBlock3d(c_in if i == 0 else c_out, c_out, norm) for i in range(depth)])
        self.attention = SelfAttention3d(c_out) if attention else None

    def forward(self, x: Tensor, activate: bool = True) -> Tensor:
        """``activate=False`` leaves out the last block's ReLU (a level with attention ends signed anyway)."""
        x = F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False)
        for i, block in enumerate(self.blocks):
            x = block(x, activate or self.attention is not None or i < len(self.blocks) - 1)
        return self.attention(x) if self.attention is not None else x


class Autodecoder(nn.Module):
    """G = G_2 o G_1 (Fig. 1): embeddings -> latent volume at ``latent_level`` -> radiance volume."""

    def __init__(self, config: AutodecoderConfig) -> None:
        super().__init__()
        self.config = config
        c0, b = config.channels(0), config.base_resolution
        self.embedding = ObjectEmbedding(config)
        self.fc = nn.Linear(config.embedding_dim, c0 * b**3)
        self.levels = nn.ModuleList([
            UpLevel(config.channels(i), config.channels(i + 1), config.depth, (i + 1) in config.attention_levels,
                    config.norm)
            for i in range(config.levels)])
        c_last = config.channels(config.levels)
        self.out_norm = _norm(config.norm, c_last)
        self.out = nn.Conv3d(c_last, 4, 1)
        # Object-wide colour offsets read off the mean of the latent volume: the per-sample normalisations of
        # the decoder remove such global shifts, so without this path every object decodes to the same mean
        # colour. Colour only (a global density offset lets early training empty every volume at once), and
        # zero at the start, so training begins from the paper's decoder.
        self.global_head = nn.Linear(config.channels(config.latent_level), 3)
        nn.init.zeros_(self.global_head.weight)
        nn.init.zeros_(self.global_head.bias)
        with torch.no_grad():  # start nearly empty and grey, as VoxelScene.empty does
            self.out.bias.copy_(torch.tensor([-3.0, 0.0, 0.0, 0.0]))
            self.out.weight.mul_(0.1)

    def latent_shape(self, level: int | None = None) -> tuple[int, int, int, int]:
        """``(C, R, R, R)`` of the volume at ``level`` (default ``latent_level``)."""
        level = self.config.latent_level if level is None else level
        r = self.config.base_resolution * 2**level
        return (self.config.channels(level), r, r, r)

    def decoder_modules(self) -> list[nn.Module]:
        """The modules of G_2, the decoder after ``latent_level`` (the global colour head reads the latent
        volume, so it is G_2's); everything else is G_1."""
        return [*self.levels[self.config.latent_level:], self.out_norm, self.out, self.global_head]

    def latent(self, objects: Tensor, level: int | None = None, before_relu: bool = False) -> Tensor:
        """G_1: the feature volume ``[N, C, R, R, R]`` of objects ``[N]`` at decoder ``level``; ``before_relu``
        stops before that level's final ReLU (signed features; ``relu`` of them is the default volume)."""
        level = self.config.latent_level if level is None else level
        c0, b = self.config.channels(0), self.config.base_resolution
        x = self.fc(self.embedding(objects)).reshape(-1, c0, b, b, b)
        for i, up in enumerate(self.levels[:level]):
            x = up(x, activate=not before_relu or i < level - 1)
        return x

    def decode_latent(self, latent: Tensor, level: int | None = None) -> Tensor:
        """G_2: the raw radiance grid ``[N, 4, R, R, R]`` (density, rgb; axes z, y, x) from a level's volume."""
        level = self.config.latent_level if level is None else level
        if level > self.config.latent_level:
            raise ValueError(f"decode from level {self.config.latent_level} or below, not {level}")
        x, offsets = latent, None
        for i, up in enumerate(self.levels[level:], start=level):
            if i == self.config.latent_level:
                offsets = self.global_head(x.mean((2, 3, 4)))
            x = up(x)
        if offsets is None:  # the latent level is the last one
            offsets = self.global_head(x.mean((2, 3, 4)))
        # no ReLU before the head: with non-negative features a density head that early training turns negative
        # (the background dominates the images) could never raise density again; normalised features are signed.
        raw = self.out(self.out_norm(x))
        return torch.cat([raw[:, :1], raw[:, 1:] + offsets[:, :, None, None, None]], 1)

    def forward(self, objects: Tensor) -> Tensor:
        """The raw radiance grids ``[N, 4, R, R, R]`` of objects ``[N]``."""
        return self.decode_latent(self.latent(objects, 0), 0)

    def scene(self, grid: Tensor, samples_per_ray: int | None = None):
        """A :class:`renderers.voxels.VoxelScene` of one raw grid ``[4, R, R, R]`` (kept differentiable)."""
        from renderers.voxels import VoxelScene

        return VoxelScene(grid[None], density_scale=self.config.density_scale,
                          samples_per_ray=samples_per_ray or self.config.samples_per_ray)
