"""Deformation fields for deformable 3D Gaussians: (canonical Gaussian, t) -> offsets.

Diffusion² (Sec. 3.4) drives canonical Gaussians with a learnt deformation field that predicts each
Gaussian's 6-DoF change from its mean and the time. Two published designs are offered:

- ``"hexplane"`` (4DGaussians): six multi-resolution feature planes over (x, y, z, t) pairs,
  multiplied together (K-planes), then a small MLP with one head per offset.
- ``"mlp"`` (Deformable-3DGS, the design Diffusion² names): an MLP on positional encodings of
  the mean and t.

    field = make_deformation(DeformationConfig(kind="hexplane"))
    d_means, d_quats, d_log_scales = field(means, t)        # [N, 3], [N, 4], [N, 3]
    moved = deform_gaussians(gaussians, field, t)           # a GaussianSet at time t

The output layers start at zero, so a new field is the identity and fitting begins from the
canonical (warm-up) Gaussians, as Diffusion² does after its static warm-up.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from renderers.splats import GaussianSet


@dataclass(frozen=True)
class DeformationConfig:
    """Hyper-parameters of a deformation field (saved beside its weights as JSON).

    ``bounds``: the canonical space covered, [-bounds, bounds]^3; t is in [0, 1].
    ``placement_scale`` and ``placement_offset``: where the scene was moved after fitting (world = scale *
    fitted + offset, :meth:`~renderers.gaussian_scene.DeformableGaussianScene.placed`); the field reads its
    input and scales its position offsets through them, so the motion moves with the scene.
    Hex-plane (4DGaussians): ``plane_resolutions`` spatial sizes per level, ``time_resolution``,
    ``plane_features`` channels per plane. MLP (Deformable-3DGS; its paper uses depth 8, width 256,
    10 and 6 frequencies): ``pos_frequencies``, ``time_frequencies``. Both: ``width`` and ``depth``
    of the trunk MLP.
    """

    kind: str = "hexplane"
    bounds: float = 1.0
    plane_resolutions: tuple[int, ...] = (32, 64)
    time_resolution: int = 16
    plane_features: int = 16
    pos_frequencies: int = 10
    time_frequencies: int = 6
    width: int = 64
    depth: int = 2
    placement_scale: float = 1.0
    placement_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if self.kind not in ("hexplane", "mlp"):
            raise ValueError(f"unknown deformation field kind '{self.kind}' (use hexplane or mlp)")
        if self.bounds <= 0 or self.width < 1 or self.depth < 1 or self.placement_scale <= 0:
            raise ValueError("deformation bounds, width, depth and placement scale must be positive")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["plane_resolutions"] = list(self.plane_resolutions)
        d["placement_offset"] = list(self.placement_offset)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DeformationConfig:
        d = dict(d)
        d["plane_resolutions"] = tuple(d.get("plane_resolutions", (32, 64)))
        d["placement_offset"] = tuple(d.get("placement_offset", (0.0, 0.0, 0.0)))
        return cls(**d)


class DeformationField(nn.Module):
    """Base: ``forward(means [N, 3], t) -> (d_means [N, 3], d_quats [N, 4], d_log_scales [N, 3])``."""

    config: DeformationConfig

    def __init__(self, config: DeformationConfig, features: int) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        for i in range(config.depth):
            layers += [nn.Linear(features if i == 0 else config.width, config.width), nn.ReLU()]
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({name: _head(config.width, k) for name, k in
                                    (("means", 3), ("quats", 4), ("log_scales", 3))})

    def encode(self, x: Tensor, t: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, means: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor, Tensor]:
        c = self.config
        if c.placement_scale != 1.0 or any(c.placement_offset):  # back to where the field was fitted
            means = (means - means.new_tensor(c.placement_offset)) / c.placement_scale
        x = means / c.bounds  # canonical space -> [-1, 1]
        t = torch.as_tensor(t, dtype=means.dtype, device=means.device).reshape(-1, 1)
        t = t.expand(means.shape[0], 1) if t.shape[0] == 1 else t  # one time for all, or one per Gaussian
        h = self.trunk(self.encode(x, t * 2 - 1))
        return self.heads["means"](h) * c.placement_scale, self.heads["quats"](h), self.heads["log_scales"](h)

    def smoothness_loss(self, means: Tensor, t: float, dt: float = 0.02) -> Tensor:
        """Temporal smoothness: mean squared second difference of the position offsets over time
        (an acceleration penalty) at ``means`` around ``t``."""
        a, b, c = (self(means, min(max(s, 0.0), 1.0))[0] for s in (t - dt, t, t + dt))
        return (a - 2 * b + c).square().sum(-1).mean()


def _head(width: int, out: int) -> nn.Sequential:
    last = nn.Linear(width, out)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)  # identity deformation at start
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(), last)


class HexPlaneField(DeformationField):
    """4DGaussians' hex-plane encoding: for each resolution, the Hadamard product of bilinear
    samples of six planes over (x, y), (x, z), (y, z), (x, t), (y, t), (z, t); levels concatenated."""

    PAIRS = tuple(itertools.combinations(range(4), 2))  # (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)

    def __init__(self, config: DeformationConfig) -> None:
        super().__init__(config, config.plane_features * len(config.plane_resolutions))
        self.planes = nn.ParameterList()
        for res in config.plane_resolutions:
            for _, b in self.PAIRS:
                h = config.time_resolution if b == 3 else res  # grid_sample: y (rows) <- coordinate b
                if b == 3:  # planes with time start at 1: the product is then the spatial features (K-planes)
                    plane = torch.ones(1, config.plane_features, h, res)
                else:
                    plane = torch.empty(1, config.plane_features, h, res).uniform_(0.1, 0.5)
                self.planes.append(nn.Parameter(plane))

    def encode(self, x: Tensor, t: Tensor) -> Tensor:
        xt = torch.cat([x, t], -1).clamp(-1, 1)  # [N, 4]
        levels = []
        planes = iter(self.planes)
        for _ in self.config.plane_resolutions:
            feat = None
            for a, b in self.PAIRS:
                grid = torch.stack([xt[:, a], xt[:, b]], -1).view(1, -1, 1, 2)
                sample = F.grid_sample(next(planes), grid, mode="bilinear", align_corners=True)  # [1, F, N, 1]
                sample = sample[0, :, :, 0].t()
                feat = sample if feat is None else feat * sample
            levels.append(feat)
        return torch.cat(levels, -1)

    def plane_smoothness(self) -> Tensor:
        """K-planes' time smoothness: squared second differences of the time planes along t."""
        total = 0.0
        for i, plane in enumerate(self.planes):
            if self.PAIRS[i % len(self.PAIRS)][1] == 3 and plane.shape[2] >= 3:
                total = total + (plane[:, :, 2:] - 2 * plane[:, :, 1:-1] + plane[:, :, :-2]).square().mean()
        return torch.as_tensor(total)

    def smoothness_loss(self, means: Tensor, t: float, dt: float = 0.02) -> Tensor:
        return super().smoothness_loss(means, t, dt) + self.plane_smoothness()


class MLPField(DeformationField):
    """Deformable-3DGS: an MLP on sin/cos positional encodings of the mean and of t.

    ``frequency_window`` (Nerfies' coarse-to-fine alpha, in [0, pos_frequencies]; None: all) weights the
    position encoding's k-th frequency by its Eq. 8 window, so a fit can start from spatially smooth
    motion and release finer detail as it goes (:class:`~renderers.gaussian_fit.GaussianFit` sets it)."""

    def __init__(self, config: DeformationConfig) -> None:
        features = 3 * (1 + 2 * config.pos_frequencies) + (1 + 2 * config.time_frequencies)
        super().__init__(config, features)
        self.frequency_window: float | None = None

    def encode(self, x: Tensor, t: Tensor) -> Tensor:
        return torch.cat([positional_encoding(x, self.config.pos_frequencies, self.frequency_window),
                          positional_encoding(t, self.config.time_frequencies)], -1)


def positional_encoding(x: Tensor, frequencies: int, window: float | None = None) -> Tensor:
    """NeRF's encoding ``[..., D]`` -> ``[..., D (1 + 2 L)]``: x, sin(2^k pi x), cos(2^k pi x).
    ``window``: Nerfies' alpha (Eq. 8), frequency k weighted by (1 - cos(pi clamp(alpha - k, 0, 1))) / 2."""
    k = torch.arange(frequencies, dtype=x.dtype, device=x.device)
    angles = (x[..., None] * ((2.0 ** k) * torch.pi)).flatten(-2)
    sin, cos = angles.sin(), angles.cos()
    if window is not None:
        w = ((1 - torch.cos(torch.pi * (window - k).clamp(0, 1))) / 2).repeat(x.shape[-1])
        sin, cos = sin * w, cos * w
    return torch.cat([x, sin, cos], -1)


def make_deformation(config: DeformationConfig | None = None) -> DeformationField:
    config = config or DeformationConfig()
    return HexPlaneField(config) if config.kind == "hexplane" else MLPField(config)


def deform_gaussians(gaussians: GaussianSet, field: DeformationField | None, t: float) -> GaussianSet:
    """The canonical ``gaussians`` moved to time ``t`` (offsets added to means, quaternions and
    log-scales, as 4DGaussians and Deformable-3DGS do; opacity and colour are not deformed)."""
    if field is None:
        return gaussians
    d_means, d_quats, d_scales = field(gaussians.means, t)
    return GaussianSet(gaussians.means + d_means, gaussians.quats + d_quats, gaussians.log_scales + d_scales,
                       gaussians.opacity_logits, gaussians.sh)
