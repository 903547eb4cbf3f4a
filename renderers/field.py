"""The 4D neural field of 4D-fy (Sec. 3.1): a static 3D and a dynamic 4D hash grid whose features are summed
and decoded by two small MLPs into density and albedo, plus shading and a background model.

    f(x, t) = f_static(x) + f_dynamic(x, t)                     # Sec. 3.1, 4D-fy
    sigma = softplus(MLP_tau(f) + blob(x)),  albedo = sigmoid(MLP_c(f))

The density offset ``blob`` ("an offset to the density ... in the center of the scene", 4D-fy Sec. 4) is
threestudio's ``blob_magic3d``: ``scale * (1 - |x| / std)``. Points live in the box [-1, 1]^3 and ``t`` in
[0, 1]; the grids see them mapped to [0, 1]^D. 4D-fy trains only the static grid in stages 1-2 and
unfreezes the dynamic grid, with its own learning rate, in stage 3: see :attr:`Field4D.dynamic_mode` and
:meth:`Field4D.param_groups`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from renderers.hash_grid import HashGrid, HashGridConfig

DYNAMIC_MODES = ("off", "frozen", "train")
SHADING_MODES = ("albedo", "lambertian", "textureless")


@dataclass(frozen=True)
class FieldConfig:
    """Architecture of :class:`Field4D`. ``FieldConfig.preset("paper")`` is 4D-fy's (threestudio's implicit
    volume: 16 levels x 2 features, table 2^19, base 16, scale 1.447; one hidden layer of 64); ``"small"``
    renders and trains at interactive rates on a 2-core CPU."""

    static_grid: HashGridConfig = field(default_factory=HashGridConfig)
    dynamic_grid: HashGridConfig = field(default_factory=HashGridConfig)
    mlp_width: int = 64
    mlp_hidden_layers: int = 1
    density_bias: str = "blob_magic3d"  # "blob_magic3d" | "blob_dreamfusion" | "none"
    density_blob_scale: float = 10.0
    density_blob_std: float = 0.5
    normals: str = "finite_difference"  # "finite_difference" (differentiable) | "analytic" (density gradient)
    finite_difference_eps: float = 0.01
    background: str = "learned"  # "learned" (colour from ray direction) | "solid"
    background_color: tuple[float, float, float] = (1.0, 1.0, 1.0)

    presets: ClassVar[dict[str, dict]] = {
        "paper": {},
        "small": {
            "static_grid": HashGridConfig(n_levels=8, n_features_per_level=2, log2_hashmap_size=16,
                                          base_resolution=8, per_level_scale=1.5),
            "dynamic_grid": HashGridConfig(n_levels=8, n_features_per_level=2, log2_hashmap_size=16,
                                           base_resolution=8, per_level_scale=1.5),
            "mlp_width": 32,
        },
    }

    def __post_init__(self) -> None:
        if self.static_grid.n_output_dims != self.dynamic_grid.n_output_dims:
            raise ValueError("the static and dynamic grids must give features of the same size (they are summed): "
                             f"{self.static_grid.n_output_dims} vs {self.dynamic_grid.n_output_dims}")
        if self.density_bias not in ("blob_magic3d", "blob_dreamfusion", "none"):
            raise ValueError(f"unknown density_bias '{self.density_bias}'")
        if self.normals not in ("finite_difference", "analytic"):
            raise ValueError(f"unknown normals '{self.normals}' (finite_difference or analytic)")
        if self.background not in ("learned", "solid"):
            raise ValueError(f"unknown background '{self.background}' (learned or solid)")

    @classmethod
    def preset(cls, name: str, **overrides) -> FieldConfig:
        if name not in cls.presets:
            raise ValueError(f"unknown field preset '{name}' (known: {', '.join(cls.presets)})")
        return replace(cls(**cls.presets[name]), **overrides)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FieldConfig:
        data = dict(data)
        for key in ("static_grid", "dynamic_grid"):
            if key in data:
                data[key] = HashGridConfig(**data[key])
        if "background_color" in data:
            data["background_color"] = tuple(data["background_color"])
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"field config has unknown keys: {', '.join(sorted(unknown))}")
        return cls(**data)


def mlp(n_in: int, n_out: int, width: int, hidden_layers: int) -> nn.Sequential:
    """threestudio's VanillaMLP: ReLU hidden layers, no bias-free tricks, linear output."""
    layers: list[nn.Module] = []
    dim = n_in
    for _ in range(hidden_layers):
        layers += [nn.Linear(dim, width), nn.ReLU(inplace=True)]
        dim = width
    layers.append(nn.Linear(dim, n_out))
    return nn.Sequential(*layers)


def box_to_unit(points: Tensor) -> Tensor:
    """World points in [-1, 1]^3 -> grid coordinates in [0, 1]^3 (clamped)."""
    return ((points + 1) * 0.5).clamp(0.0, 1.0)


def time_column(t: float | Tensor, n: int, like: Tensor) -> Tensor:
    """``t`` (a float, a 0-d tensor or ``[N]``) as a column ``[N, 1]`` clamped to [0, 1]."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        t = t.expand(n)
    return t.reshape(n, 1).clamp(0.0, 1.0)


class Field4D(nn.Module):
    """Density and albedo over (x in [-1, 1]^3, t in [0, 1]).

    ``forward(points [N, 3], t) -> (sigma [N], albedo [N, 3])``; ``density(points, t) -> [N]``;
    ``normals(points, t) -> [N, 3]`` (unit, pointing out of the object).
    """

    def __init__(self, config: FieldConfig | None = None, *, dynamic_mode: str = "train",
                 generator: torch.Generator | None = None):
        super().__init__()
        self.config = config or FieldConfig()
        c = self.config
        self.static_grid = HashGrid(3, c.static_grid, generator=generator)
        self.dynamic_grid = HashGrid(4, c.dynamic_grid, generator=generator)
        n_features = c.static_grid.n_output_dims
        self.density_mlp = mlp(n_features, 1, c.mlp_width, c.mlp_hidden_layers)
        self.albedo_mlp = mlp(n_features, 3, c.mlp_width, c.mlp_hidden_layers)
        self._dynamic_mode = "train"
        self.dynamic_mode = dynamic_mode

    # ---------------------------------------------------------------- training state
    @property
    def dynamic_mode(self) -> str:
        """``"off"`` (not evaluated: a static field), ``"frozen"`` (evaluated, not trained) or ``"train"``."""
        return self._dynamic_mode

    @dynamic_mode.setter
    def dynamic_mode(self, mode: str) -> None:
        if mode not in DYNAMIC_MODES:
            raise ValueError(f"dynamic grid mode must be one of {', '.join(DYNAMIC_MODES)}, got '{mode}'")
        self._dynamic_mode = mode
        self.dynamic_grid.table.requires_grad_(mode == "train")

    def param_groups(self, lr_static: float = 0.01, lr_dynamic: float = 0.01, lr_mlp: float = 0.001) -> list[dict]:
        """Optimizer groups named ``static_grid``, ``dynamic_grid``, ``mlp`` (4D-fy Sec. 4: 0.01, 0.01, 0.001;
        the static rate drops to 1e-4 before stage 3). The dynamic group is always present so that
        unfreezing it later needs no new optimizer."""
        return [
            {"name": "static_grid", "params": [self.static_grid.table], "lr": lr_static},
            {"name": "dynamic_grid", "params": [self.dynamic_grid.table], "lr": lr_dynamic},
            {"name": "mlp", "params": [*self.density_mlp.parameters(), *self.albedo_mlp.parameters()],
             "lr": lr_mlp},
        ]

    # ---------------------------------------------------------------- evaluation
    def features(self, points: Tensor, t: float | Tensor) -> Tensor:
        """Summed static + dynamic grid features ``[N, L*F]`` of ``points`` ``[N, 3]`` at time ``t``."""
        unit = box_to_unit(points)
        feats = self.static_grid(unit)
        if self._dynamic_mode != "off":
            x4 = torch.cat([unit, time_column(t, unit.shape[0], unit)], dim=1)
            feats = feats + self.dynamic_grid(x4)
        return feats

    def density_bias(self, points: Tensor) -> Tensor:
        """4D-fy's object-centric density offset ``[N]`` (threestudio's blobs)."""
        c = self.config
        if c.density_bias == "none":
            return points.new_zeros(points.shape[0])
        radius2 = (points * points).sum(-1)
        if c.density_bias == "blob_magic3d":
            return c.density_blob_scale * (1 - radius2.sqrt() / c.density_blob_std)
        return c.density_blob_scale * torch.exp(-0.5 * radius2 / c.density_blob_std**2)

    def _sigma(self, points: Tensor, feats: Tensor) -> Tensor:
        raw = self.density_mlp(feats).squeeze(-1)
        return F.softplus(raw + self.density_bias(points))

    def forward(self, points: Tensor, t: float | Tensor = 0.0) -> tuple[Tensor, Tensor]:
        feats = self.features(points, t)
        return self._sigma(points, feats), torch.sigmoid(self.albedo_mlp(feats))

    def density(self, points: Tensor, t: float | Tensor = 0.0) -> Tensor:
        return self._sigma(points, self.features(points, t))

    def albedo(self, points: Tensor, t: float | Tensor = 0.0) -> Tensor:
        return torch.sigmoid(self.albedo_mlp(self.features(points, t)))

    def normals(self, points: Tensor, t: float | Tensor = 0.0) -> Tensor:
        """Unit normals ``[N, 3]``: minus the normalised density gradient.

        ``finite_difference`` (central, 6 extra density queries) stays differentiable for shading losses;
        ``analytic`` differentiates the encoding once and is detached (for display and meshes)."""
        if self.config.normals == "finite_difference":
            eps = self.config.finite_difference_eps
            offsets = torch.eye(3, dtype=points.dtype, device=points.device) * eps
            probe = torch.cat([points[:, None] + offsets, points[:, None] - offsets], 1)  # [N, 6, 3]
            n = points.shape[0]
            t_rep = t if not torch.is_tensor(t) or t.ndim == 0 else t.repeat_interleave(6)
            sigma = self.density(probe.reshape(-1, 3), t_rep).reshape(n, 6)
            grad = (sigma[:, :3] - sigma[:, 3:]) / (2 * eps)
        else:
            with torch.enable_grad():
                p = points.detach().requires_grad_(True)
                sigma = self.density(p, t)
                (grad,) = torch.autograd.grad(sigma.sum(), p)
        return -F.normalize(grad, dim=-1, eps=1e-12)


# -------------------------------------------------------------------- shading
@dataclass
class Lighting:
    """A point light for Lambertian shading: ``position`` ``[3]`` or ``[C, 3]`` world units and the ambient
    share of the light (diffuse = 1 - ambient), as threestudio's ``diffuse_with_point_light``."""

    position: Tensor
    ambient: float = 0.5


def random_point_light(camera_positions: Tensor, *, distance: tuple[float, float] = (0.8, 1.5),
                       jitter: float = 0.9, ambient: tuple[float, float] = (0.1, 0.5),
                       generator: torch.Generator | None = None) -> Lighting:
    """A light near the first camera (the SDS literature: light on the camera's side, jittered), so
    shaded renders show geometry the diffusion prior can judge. ``camera_positions`` ``[C, 3]``."""
    cam = camera_positions[0].float().cpu()
    direction = F.normalize(cam, dim=0) + jitter * torch.randn(3, generator=generator)
    direction = F.normalize(direction, dim=0)
    d = distance[0] + (distance[1] - distance[0]) * torch.rand((), generator=generator)
    a = ambient[0] + (ambient[1] - ambient[0]) * torch.rand((), generator=generator)
    return Lighting(direction * d * cam.norm(), float(a))


def shade(albedo: Tensor, normals: Tensor | None, points: Tensor, mode: str,
          lighting: Lighting | None = None) -> Tensor:
    """Colour ``[N, 3]`` of samples: ``albedo`` as is, ``lambertian`` (albedo x (ambient + diffuse n.l)), or
    ``textureless`` (white x the same light) — the three shading modes DreamFusion-style SDS alternates."""
    if mode not in SHADING_MODES:
        raise ValueError(f"unknown shading mode '{mode}' (one of {', '.join(SHADING_MODES)})")
    if mode == "albedo":
        return albedo
    if normals is None or lighting is None:
        raise ValueError(f"'{mode}' shading needs normals and a light")
    to_light = F.normalize(lighting.position.to(points) - points, dim=-1)
    diffuse = (normals * to_light).sum(-1, keepdim=True).clamp_min(0.0)
    light = lighting.ambient + (1 - lighting.ambient) * diffuse
    return light.expand_as(albedo) if mode == "textureless" else albedo * light


# -------------------------------------------------------------------- background
class Background(nn.Module):
    """Colour behind the object ``[N, 3]`` for unit ray directions ``[N, 3]``: a learned colour over the
    direction (threestudio's neural environment map: a tiny MLP on a frequency encoding) or a solid colour."""

    def __init__(self, kind: str = "learned", color: tuple[float, float, float] = (1.0, 1.0, 1.0),
                 n_frequencies: int = 2, width: int = 16):
        super().__init__()
        self.kind = kind
        self.register_buffer("color", torch.tensor(color, dtype=torch.float32))
        self.n_frequencies = n_frequencies
        self.net = mlp(3 + 6 * n_frequencies, 3, width, 1) if kind == "learned" else None

    def forward(self, directions: Tensor) -> Tensor:
        if self.net is None:
            return self.color.to(directions).expand(directions.shape[0], 3)
        enc = [directions]
        for k in range(self.n_frequencies):
            enc += [torch.sin(directions * (math.pi * 2**k)), torch.cos(directions * (math.pi * 2**k))]
        return torch.sigmoid(self.net(torch.cat(enc, -1)))
