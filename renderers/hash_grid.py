"""Multi-resolution hash-grid encoding (Instant-NGP, Müller et al. 2022) with tiny-cuda-nn's semantics.

Level ``l`` has ``scale_l = base_resolution * per_level_scale**l - 1`` and ``resolution_l = ceil(scale_l) + 1``
vertices per axis; a point ``x`` in [0, 1]^D sits at ``x * scale_l + 0.5`` in grid units. A level whose
``resolution_l**D`` vertices fit in its table (``min(2**log2_table, next_multiple(resolution_l**D, 8))``
entries) is indexed densely (x fastest), the others by tiny-cuda-nn's coherent-prime hash
``XOR_d(p_d * prime_d) mod table``. Features of the ``2**D`` corners are D-linearly interpolated and the
levels concatenated: ``[N, levels * features]``.

The parameters are one table ``[features, total_entries]`` (feature-planar: each feature is a 1-D row, so
gathers and scatters are 1-D ``index_select`` / ``index_add_``, the fast CPU path in
shared/notes/cpu-performance.md). Transposed and flattened it is exactly tiny-cuda-nn's parameter layout,
which :class:`HashGrid` hands to ``tinycudann`` when it is installed and the input lives on a GPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

# tiny-cuda-nn's coherent primes (the first is 1 so neighbouring x share cache lines).
PRIMES = (1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737)


@dataclass(frozen=True)
class HashGridConfig:
    """Encoding hyper-parameters, named as in tiny-cuda-nn's ``HashGrid`` config."""

    n_levels: int = 16
    n_features_per_level: int = 2
    log2_hashmap_size: int = 19
    base_resolution: int = 16
    per_level_scale: float = 1.447269237440378  # 4D-fy / threestudio: 2048 finest at 16 levels

    def __post_init__(self) -> None:
        if not 1 <= self.n_levels <= 32:
            raise ValueError(f"hash grid n_levels must be in 1..32, got {self.n_levels}")
        if self.n_features_per_level not in (1, 2, 4, 8):
            raise ValueError(f"hash grid n_features_per_level must be 1, 2, 4 or 8, got {self.n_features_per_level}")
        if not 4 <= self.log2_hashmap_size <= 24:
            raise ValueError(f"hash grid log2_hashmap_size must be in 4..24, got {self.log2_hashmap_size}")
        if self.base_resolution < 2 or self.per_level_scale < 1:
            raise ValueError("hash grid needs base_resolution >= 2 and per_level_scale >= 1")

    @property
    def n_output_dims(self) -> int:
        return self.n_levels * self.n_features_per_level

    def to_tcnn(self) -> dict:
        return {"otype": "HashGrid", "n_levels": self.n_levels, "n_features_per_level": self.n_features_per_level,
                "log2_hashmap_size": self.log2_hashmap_size, "base_resolution": self.base_resolution,
                "per_level_scale": self.per_level_scale, "interpolation": "Linear"}

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Level:
    """One level's geometry: ``scale`` (grid units per input unit, minus one), ``resolution`` (vertices per
    axis), ``size`` (table entries), ``offset`` (first entry in the shared table), ``dense``."""

    scale: float
    resolution: int
    size: int
    offset: int
    dense: bool


def level_layout(config: HashGridConfig, n_dims: int) -> list[Level]:
    """tiny-cuda-nn's per-level geometry for a ``n_dims``-D input (GridEncodingTemplated's constructor)."""
    levels, offset = [], 0
    max_params = (1 << 31) - 1
    log2_scale = math.log2(config.per_level_scale)
    for level in range(config.n_levels):
        # tcnn computes these in float32: exp2f(level * log2(per_level_scale)) * base_resolution - 1
        scale = float(torch.tensor(level * log2_scale, dtype=torch.float32).exp2() * config.base_resolution - 1)
        resolution = math.ceil(scale) + 1
        dense_size = resolution**n_dims
        size = min(max_params, dense_size)
        size = -(-size // 8) * 8
        size = min(size, 1 << config.log2_hashmap_size)
        levels.append(Level(scale, resolution, size, offset, dense_size <= size))
        offset += size
    return levels


def corner_indices(points: Tensor, level: Level) -> tuple[Tensor, Tensor]:
    """Table indices and interpolation weights of the ``2**D`` corners around each point.

    Args:
        points: ``[N, D]`` in [0, 1].
    Returns:
        ``idx`` ``[2**D, N]`` int32 (within the level's table) and ``weights`` ``[2**D, N]``; corner ``c``
        takes the upper vertex along axis ``d`` when bit ``D-1-d`` of ``c`` is set.
    """
    pos = points * level.scale + 0.5
    floor = pos.floor()
    frac = pos - floor
    # int32 arithmetic is ~1.8x faster here; the hash only needs the low bits, which wrapping keeps
    base = floor.int()
    idx = weights = None
    stride = 1
    for d in range(points.shape[1]):
        lo = base[:, d]
        if level.dense:
            step = stride
            stride *= level.resolution
        else:
            step = PRIMES[d] - (1 << 32) if PRIMES[d] >= 1 << 31 else PRIMES[d]
        first = lo * step
        terms = torch.stack([first, first + step])
        f = frac[:, d]
        w = torch.stack([1 - f, f])
        if idx is None:
            idx, weights = terms, w
        else:
            idx = (idx[:, None] + terms[None]) if level.dense else (idx[:, None] ^ terms[None])
            idx = idx.view(-1, idx.shape[-1])
            weights = (weights[:, None] * w[None]).view(-1, w.shape[-1])
    # tcnn: index % table size (a dense corner on the far face can reach past the table and wraps)
    idx = idx.remainder(level.size) if level.dense else idx & (level.size - 1)
    return idx, weights


def _weight_derivatives(points: Tensor, level: Level) -> list[Tensor]:
    """d weights / d points[:, d] for each axis d, each ``[2**D, N]`` (same corner order as corner_indices)."""
    pos = points * level.scale + 0.5
    frac = pos - pos.floor()
    D = points.shape[1]
    out = []
    for axis in range(D):
        weights = None
        for d in range(D):
            f = frac[:, d]
            if d == axis:
                w = torch.stack([torch.full_like(f, -level.scale), torch.full_like(f, level.scale)])
            else:
                w = torch.stack([1 - f, f])
            weights = w if weights is None else (weights[:, None] * w[None]).reshape(-1, f.shape[0])
        out.append(weights)
    return out


class _HashGridFunction(torch.autograd.Function):
    """Encoding of ``points`` ``[N, D]`` with ``table`` ``[F, total]`` -> ``[N, L * F]``, one level at a time so
    each level's rows stay in cache; the backward recomputes indices rather than storing 2**D x N x L of them."""

    @staticmethod
    def forward(ctx, points: Tensor, table: Tensor, levels: list[Level]) -> Tensor:
        F = table.shape[0]
        out = points.new_empty(points.shape[0], len(levels) * F, dtype=table.dtype)
        for li, level in enumerate(levels):
            idx, w = corner_indices(points, level)
            flat = idx.reshape(-1)
            w = w.to(table.dtype)
            for f in range(F):
                row = table[f, level.offset:level.offset + level.size]
                out[:, li * F + f] = (row.index_select(0, flat).view_as(w) * w).sum(0)
        ctx.save_for_backward(points, table)
        ctx.levels = levels
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        points, table = ctx.saved_tensors
        levels = ctx.levels
        F = table.shape[0]
        grad_table = torch.zeros_like(table) if ctx.needs_input_grad[1] else None
        grad_points = torch.zeros_like(points) if ctx.needs_input_grad[0] else None
        grad_out = grad_out.to(table.dtype)
        for li, level in enumerate(levels):
            idx, w = corner_indices(points, level)
            flat = idx.reshape(-1)
            w = w.to(table.dtype)
            if grad_table is not None:
                for f in range(F):
                    g = grad_out[:, li * F + f]
                    grad_table[f, level.offset:level.offset + level.size].index_add_(0, flat, (w * g).reshape(-1))
            if grad_points is not None:
                # sum_f g_f * feature_f at every corner, then the weights' derivative per axis
                corner_dot = None
                for f in range(F):
                    row = table[f, level.offset:level.offset + level.size]
                    term = row.index_select(0, flat).view_as(w) * grad_out[:, li * F + f]
                    corner_dot = term if corner_dot is None else corner_dot + term
                for d, dw in enumerate(_weight_derivatives(points, level)):
                    grad_points[:, d] += (corner_dot * dw.to(table.dtype)).sum(0).to(points.dtype)
        return grad_points, grad_table, None


def hash_grid_encode(points: Tensor, table: Tensor, levels: list[Level]) -> Tensor:
    """Pure-torch encoding (the reference): ``points`` ``[N, D]`` in [0, 1], ``table`` ``[F, total]`` -> ``[N, L*F]``.

    Differentiable in ``table`` and in ``points`` (once; normals by autograd work, their second derivative
    does not — use finite differences for losses on normals)."""
    if points.ndim != 2:
        raise ValueError(f"hash grid expects points [N, D], got {tuple(points.shape)}")
    return _HashGridFunction.apply(points, table, levels)


class HashGrid(nn.Module):
    """A learnable multi-resolution hash encoding of ``n_dims``-D points in [0, 1]^D.

    ``forward(points [N, D]) -> [N, n_levels * n_features_per_level]``. On a CUDA device with ``tinycudann``
    installed the same table is evaluated by tiny-cuda-nn (fp32); otherwise by :func:`hash_grid_encode`.
    """

    def __init__(self, n_dims: int, config: HashGridConfig | None = None, *, init_scale: float = 1e-4,
                 generator: torch.Generator | None = None, use_tcnn: bool = True):
        super().__init__()
        if n_dims < 1 or n_dims > len(PRIMES):
            raise ValueError(f"hash grid supports 1..{len(PRIMES)} input dimensions, got {n_dims}")
        self.n_dims = n_dims
        self.config = config or HashGridConfig()
        self.levels = level_layout(self.config, n_dims)
        total = self.levels[-1].offset + self.levels[-1].size
        # tiny-cuda-nn initialises grid features uniformly in [-1e-4, 1e-4]
        table = (torch.rand(self.config.n_features_per_level, total, generator=generator) * 2 - 1) * init_scale
        self.table = nn.Parameter(table)
        self.use_tcnn = use_tcnn
        self._tcnn = None

    @property
    def n_output_dims(self) -> int:
        return self.config.n_output_dims

    def forward(self, points: Tensor) -> Tensor:
        if points.shape[-1] != self.n_dims:
            raise ValueError(f"hash grid over {self.n_dims}-D points got points of shape {tuple(points.shape)}")
        lead = points.shape[:-1]
        flat = points.reshape(-1, self.n_dims)
        if flat.shape[0] == 0:
            return self.table.new_zeros(*lead, self.n_output_dims)
        encoder = self._tcnn_encoder(flat)
        if encoder is not None:
            out = self._encode_tcnn(encoder, flat)
        else:
            out = hash_grid_encode(flat, self.table, self.levels)
        return out.reshape(*lead, self.n_output_dims)

    # ---------------------------------------------------------------- tiny-cuda-nn path
    def _tcnn_encoder(self, points: Tensor):
        if not (self.use_tcnn and points.is_cuda):
            return None
        if self._tcnn is None:
            try:
                import tinycudann as tcnn
            except ImportError:
                self.use_tcnn = False
                return None
            try:
                encoder = tcnn.Encoding(self.n_dims, self.config.to_tcnn(), dtype=torch.float32)
            except TypeError:  # older bindings without dtype
                encoder = tcnn.Encoding(self.n_dims, self.config.to_tcnn())
            except RuntimeError:  # e.g. a build without this many input dimensions
                self.use_tcnn = False
                return None
            if encoder.params.numel() != self.table.numel():
                self.use_tcnn = False  # a tcnn version with another layout: stay on the reference path
                return None
            # kept out of self._modules so state_dict holds only our table
            object.__setattr__(self, "_tcnn", encoder)
        return self._tcnn

    def _encode_tcnn(self, encoder, points: Tensor) -> Tensor:
        # our [F, total] table transposed is tcnn's [total, F] parameter layout; pass it through the module's
        # own forward (padding, loss scale) as its params so gradients reach self.table.
        encoder._parameters["params"] = self.table.float().t().reshape(-1)
        out = encoder(points.float().contiguous())
        return out.to(self.table.dtype)

    def extra_repr(self) -> str:
        c = self.config
        return (f"n_dims={self.n_dims}, levels={c.n_levels}x{c.n_features_per_level}, table=2^{c.log2_hashmap_size}, "
                f"base={c.base_resolution}, scale={c.per_level_scale:.4g}, dense_levels="
                f"{sum(level.dense for level in self.levels)}")
