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

import contextlib
import functools
import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

CPU = torch.device("cpu")

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


@dataclass(frozen=True)
class LevelGroup:
    """A run of consecutive levels indexed the same way (dense or hashed), evaluated together as
    ``[G, 2**D, N]`` tensors: per-level ``scales`` ``[G, 1, 1]`` (float64), table ``offsets`` and ``masks``
    ``[G, 1, 1]`` (int32; the level's size for a dense level, size - 1 for a hashed one) and, for dense
    levels, the per-axis ``strides`` ``[D, G, 1]``."""

    first: int
    count: int
    dense: bool
    scales: Tensor
    offsets: Tensor
    masks: Tensor
    strides: Tensor | None


@functools.lru_cache(maxsize=64)
def level_groups(levels: tuple[Level, ...], n_dims: int, device: torch.device = CPU) -> tuple[LevelGroup, ...]:
    """``levels`` split into runs of dense and of hashed levels. Dense levels are the coarse ones, so a
    tiny-cuda-nn layout has at most two runs: the work per run is a handful of big tensor operations
    instead of dozens of small ones per level (the per-op overhead dominated at a few thousand points)."""
    groups, start = [], 0
    for end in range(1, len(levels) + 1):
        if end < len(levels) and levels[end].dense == levels[start].dense:
            continue
        run = levels[start:end]
        dense = run[0].dense
        strides = None
        if dense:
            strides = torch.tensor([[lv.resolution**d for lv in run] for d in range(n_dims)], dtype=torch.int32)
            strides = strides.view(n_dims, len(run), 1).to(device)
        groups.append(LevelGroup(
            first=start, count=len(run), dense=dense,
            scales=torch.tensor([lv.scale for lv in run], dtype=torch.float64, device=device).view(-1, 1, 1),
            offsets=torch.tensor([lv.offset for lv in run], dtype=torch.int32, device=device).view(-1, 1, 1),
            masks=torch.tensor([lv.size if dense else lv.size - 1 for lv in run], dtype=torch.int32,
                               device=device).view(-1, 1, 1),
            strides=strides))
        start = end
    return tuple(groups)


def _hash_step(d: int) -> int:
    """tiny-cuda-nn's prime for axis ``d`` as a wrapped int32 (the hash only needs the low 32 bits)."""
    return PRIMES[d] - (1 << 32) if PRIMES[d] >= 1 << 31 else PRIMES[d]


def group_corners(points: Tensor, group: LevelGroup, *, with_offsets: bool = True) -> tuple[Tensor, Tensor]:
    """Table indices and interpolation weights of the ``2**D`` corners around each point, for every level of
    ``group`` at once.

    Args:
        points: ``[N, D]`` in [0, 1].
    Returns:
        ``idx`` ``[G, 2**D, N]`` int32 (into the whole table, or within each level's table when
        ``with_offsets`` is False) and ``weights`` ``[G, 2**D, N]`` in the points' dtype; corner ``c``
        takes the upper vertex along axis ``d`` when bit ``D-1-d`` of ``c`` is set.
    """
    N, D = points.shape
    G = group.count
    pos = points.t().unsqueeze(0) * group.scales.to(points.dtype) + 0.5  # [G, D, N]
    base = pos.floor()
    frac = pos.sub_(base)
    # int32 arithmetic is ~1.8x faster here; the hash only needs the low bits, which wrapping keeps
    base = base.int()

    def corners_over(axes: range) -> tuple[Tensor, Tensor]:
        idx = weights = None
        for d in axes:
            step = group.strides[d] if group.dense else _hash_step(d)
            first = base[:, d] * step  # [G, N]
            terms = torch.stack([first, first + step], 1)  # [G, 2, N]
            f = frac[:, d]
            w = torch.stack([1 - f, f], 1)
            if idx is None:
                idx, weights = terms, w
                continue
            idx = _combine(idx, terms, group.dense)
            weights = (weights.unsqueeze(2) * w.unsqueeze(1)).view(G, -1, N)
        return idx, weights

    # the two halves of the axes separately, then one product: fewer and smaller temporaries than
    # growing the corner set one axis at a time
    half = (D + 1) // 2
    idx, weights = corners_over(range(half))
    if half < D:
        idx_b, weights_b = corners_over(range(half, D))
        idx = _combine(idx, idx_b, group.dense)
        weights = (weights.unsqueeze(2) * weights_b.unsqueeze(1)).view(G, -1, N)
    # tcnn: index % table size (a dense corner on the far face can reach past the table and wraps)
    idx = idx.remainder_(group.masks) if group.dense else idx.bitwise_and_(group.masks)
    if with_offsets:
        idx += group.offsets
    return idx, weights


def _combine(idx_a: Tensor, idx_b: Tensor, dense: bool) -> Tensor:
    """Indices of every pair of corners ``[G, A, N]`` x ``[G, B, N]`` -> ``[G, A * B, N]`` (``a`` major): dense
    indices add, hashed ones XOR."""
    a, b = idx_a.unsqueeze(2), idx_b.unsqueeze(1)
    out = (a + b) if dense else (a ^ b)
    return out.view(idx_a.shape[0], -1, idx_a.shape[2])


def _group_weight_derivatives(points: Tensor, group: LevelGroup) -> list[Tensor]:
    """d weights / d points[:, d] for each axis d, each ``[G, 2**D, N]`` (the corner order of group_corners)."""
    N, D = points.shape
    scales = group.scales.to(points.dtype)
    pos = points.t().unsqueeze(0) * scales + 0.5
    frac = pos - pos.floor()
    slope = torch.cat([-scales, scales], 1).expand(-1, 2, N)  # [G, 2, N]
    out = []
    for axis in range(D):
        weights = None
        for d in range(D):
            f = frac[:, d]
            w = slope if d == axis else torch.stack([1 - f, f], 1)
            weights = w if weights is None else (weights.unsqueeze(2) * w.unsqueeze(1)).reshape(group.count, -1, N)
        out.append(weights)
    return out


def corner_indices(points: Tensor, level: Level) -> tuple[Tensor, Tensor]:
    """One level's corner indices (within the level's table) and weights, each ``[2**D, N]``."""
    (group,) = level_groups((level,), points.shape[1], points.device)
    idx, weights = group_corners(points, group, with_offsets=False)
    return idx[0], weights[0]


# 1-D index_select / index_add_ run on one thread in torch's CPU kernels, yet they are most of the encoding's
# time: the features' rows and runs of levels occupy disjoint parts of the table, so they are gathered and
# scattered from a small pool of threads (torch releases the GIL inside the kernels), about 2x on 2 cores.
_POOL: ThreadPoolExecutor | None = None
_POOL_KEY = (0, 0)  # (process id, threads): a forked child must not wait on its parent's threads


def _run_parallel(tasks: list, device: torch.device) -> None:
    global _POOL, _POOL_KEY
    n_threads = torch.get_num_threads()
    if len(tasks) == 1 or n_threads == 1 or device.type != "cpu":
        for task in tasks:
            task()
        return
    if _POOL is None or (os.getpid(), n_threads) != _POOL_KEY:
        _POOL = ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="hash-grid")
        _POOL_KEY = (os.getpid(), n_threads)

    def run(task):
        with torch.no_grad():  # grad mode is per thread; these are the kernels of a custom Function
            task()

    for future in [_POOL.submit(run, task) for task in tasks]:
        future.result()


def _work_slices(group: LevelGroup, n_features: int, n_entries: int, device: torch.device) -> list[tuple[int, slice]]:
    """(feature, range of the level-major corner entries) pairs that split the work of every feature into
    runs of whole levels, so that features x runs >= threads and no two pairs write the same table entries."""
    n_threads = 1 if device.type != "cpu" else torch.get_num_threads()
    runs = min(group.count, max(1, -(-n_threads // n_features)))
    bounds = [round(i * group.count / runs) * (n_entries // group.count) for i in range(runs + 1)]
    return [(f, slice(a, b)) for f in range(n_features) for a, b in zip(bounds[:-1], bounds[1:])]


def _gather(table: Tensor, idx: Tensor, group: LevelGroup) -> Tensor:
    """``table[f, idx]`` for every feature: ``[F, *idx.shape]``."""
    F = table.shape[0]
    flat = idx.view(-1)
    out = table.new_empty(F, flat.numel())
    tasks = [functools.partial(torch.index_select, table[f], 0, flat[part], out=out[f, part])
             for f, part in _work_slices(group, F, flat.numel(), table.device)]
    _run_parallel(tasks, table.device)
    return out.view(F, *idx.shape)


def _scatter_add(grad_table: Tensor, idx: Tensor, values: list[Tensor], group: LevelGroup) -> None:
    """``grad_table[f, idx] += values[f]`` for every feature (each ``values[f]`` shaped like ``idx``)."""
    flat = idx.view(-1).long()  # scatter_add_ wants int64; its CPU loop is ~2x index_add_'s
    tasks = [functools.partial(grad_table[f].scatter_add_, 0, flat[part], values[f].reshape(-1)[part])
             for f, part in _work_slices(group, len(values), flat.numel(), grad_table.device)]
    _run_parallel(tasks, grad_table.device)


# Levels are evaluated in pieces of at most this many corner entries (2**D x N x levels), so that the
# temporaries stay around 32 MB each whatever the number of points (one level at a time for huge batches).
PIECE_MAX = 1 << 23
# A call's corner indices and weights are kept for the backward pass up to this many entries in all
# (8 bytes each); beyond it the backward recomputes them.
SAVE_CORNERS_MAX = 1 << 24


def _pieces(groups: tuple[LevelGroup, ...], n_points: int, n_dims: int) -> list[LevelGroup]:
    """``groups`` cut into runs of levels whose corner tensors hold at most :data:`PIECE_MAX` entries."""
    per_level = max(1, n_points << n_dims)
    step = max(1, PIECE_MAX // per_level)
    pieces = []
    for g in groups:
        for a in range(0, g.count, step):
            b = min(g.count, a + step)
            if a == 0 and b == g.count:
                pieces.append(g)
                continue
            pieces.append(LevelGroup(first=g.first + a, count=b - a, dense=g.dense, scales=g.scales[a:b],
                                     offsets=g.offsets[a:b], masks=g.masks[a:b],
                                     strides=None if g.strides is None else g.strides[:, a:b]))
    return pieces


class _HashGridFunction(torch.autograd.Function):
    """Encoding of ``points`` ``[N, D]`` with ``table`` ``[F, total]`` -> ``[N, L * F]``. Each run of dense or
    hashed levels is gathered with one 1-D ``index_select`` per feature over indices laid out level by level,
    so each level's rows stay in cache as they would in a loop over levels."""

    @staticmethod
    def forward(ctx, points: Tensor, table: Tensor, groups: tuple[LevelGroup, ...], token: Tensor | None = None
                ) -> Tensor:
        F = table.shape[0]
        N = points.shape[0]
        n_levels = sum(g.count for g in groups)
        out = points.new_empty(N, n_levels, F, dtype=table.dtype)
        pieces = _pieces(groups, N, points.shape[1])
        keep = (n_levels * N << points.shape[1]) <= SAVE_CORNERS_MAX
        saved = []
        for group in pieces:
            idx, w = group_corners(points, group)
            w = w.to(table.dtype)
            feats = _gather(table.detach(), idx, group).mul_(w).sum(2)  # [F, G, N]
            out[:, group.first:group.first + group.count] = feats.permute(2, 1, 0)
            saved.append((idx, w) if keep else None)
        ctx.save_for_backward(points, table)
        ctx.pieces = pieces
        ctx.corners = saved
        ctx.sink = None if token is None else token.grad_fn  # a _SharedTableGradient node, or None
        return out.view(N, n_levels * F)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        points, table = ctx.saved_tensors
        F = table.shape[0]
        N = points.shape[0]
        grad_table = grad_token = None
        sink = ctx.sink
        if sink is not None:
            grad_token = grad_out.new_zeros(())
            # only when this backward pass goes on to the table (not, e.g., autograd.grad w.r.t. the points)
            if torch._C._will_engine_execute_node(sink):
                grad_table = _SharedTableGradient.buffer(sink, table)
        elif ctx.needs_input_grad[1]:
            grad_table = torch.zeros_like(table)
        grad_points = torch.zeros_like(points) if ctx.needs_input_grad[0] else None
        grad_out = grad_out.to(table.dtype).view(N, -1, F)
        for group, corners in zip(ctx.pieces, ctx.corners):
            if corners is None:
                idx, w = group_corners(points, group)
                w = w.to(table.dtype)
            else:
                idx, w = corners
            # [F, G, 1, N]: the output gradient of each level, broadcast over the corners. Contiguous: as a view of
            # grad_out its points are L * F apart, and w * g then ran 5-10x slower than a vectorised product.
            grads = grad_out[:, group.first:group.first + group.count].permute(2, 1, 0).unsqueeze(2).contiguous()
            if grad_table is not None:
                _scatter_add(grad_table, idx, [w * g for g in grads], group)
            if grad_points is not None:
                # sum_f g_f * feature_f at every corner, then the weights' derivative per axis
                corner_dot = (_gather(table, idx, group) * grads).sum(0)
                for d, dw in enumerate(_group_weight_derivatives(points, group)):
                    grad_points[:, d] += (corner_dot * dw.to(table.dtype)).sum((0, 1)).to(points.dtype)
        if sink is not None:
            return grad_points, None, None, grad_token
        return grad_points, grad_table, None, None


class _SharedTableGradient(torch.autograd.Function):
    """One table gradient for every encoding call of a render (see :func:`shared_table_gradient`).

    ``forward(table)`` returns a scalar token that each call takes as an input. Their backward passes
    scatter into this node's buffer and hand the token a zero; autograd runs this node only after every
    call that holds the token has run its backward, and it returns the buffer as the table's gradient.
    The calls of a ray-marched render (one per ray segment) would otherwise each zero a table-sized
    gradient and autograd would add them up: ~10 ms per call and grid at the paper's 2^19 tables."""

    @staticmethod
    def forward(ctx, table: Tensor) -> Tensor:
        ctx.grad = None
        return table.new_zeros(())

    @staticmethod
    def buffer(node, table: Tensor) -> Tensor:
        """The gradient buffer of the node (this Function's ``grad_fn``) that a call scatters into."""
        if node.grad is None:
            node.grad = torch.zeros_like(table)
        return node.grad

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_token: Tensor):
        grad, ctx.grad = ctx.grad, None  # a second backward pass (retain_graph) starts from zero again
        return grad


# The shared gradient asks autograd whether a backward pass reaches the table (a private hook, there since
# torch 2.0); without it every call keeps its own gradient, as outside shared_table_gradient.
_CAN_SHARE = hasattr(torch._C, "_will_engine_execute_node")


@contextlib.contextmanager
def shared_table_gradient(field: object) -> Iterator[None]:
    """Within this block, the torch-path encodings of every :class:`HashGrid` in ``field`` (a module; anything
    else has none) that take part in autograd share one table gradient: a renderer that queries a field
    several times per image (ray segments, chunks) pays for one zeroed table per grid instead of one per query
    plus their sum. Values and gradients are those of separate calls (up to float summation order). Re-entrant."""
    modules = field.modules() if isinstance(field, nn.Module) else ()
    grids = [m for m in modules if isinstance(m, HashGrid) and not m._sharing]
    for grid in grids:
        grid._sharing, grid._token = True, None
    try:
        yield
    finally:
        for grid in grids:
            grid._sharing, grid._token = False, None


def hash_grid_encode(points: Tensor, table: Tensor, levels: list[Level], *, token: Tensor | None = None) -> Tensor:
    """Pure-torch encoding (the reference): ``points`` ``[N, D]`` in [0, 1], ``table`` ``[F, total]`` -> ``[N, L*F]``.

    Differentiable in ``table`` and in ``points`` (once; normals by autograd work, their second derivative
    does not — use finite differences for losses on normals). ``token``: from a
    :class:`_SharedTableGradient` of ``table``, to add the table's gradient to that shared buffer."""
    if points.ndim != 2:
        raise ValueError(f"hash grid expects points [N, D], got {tuple(points.shape)}")
    groups = level_groups(tuple(levels), points.shape[1], points.device)
    return _HashGridFunction.apply(points, table, groups, token)


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
        self._sharing = False  # inside shared_table_gradient()
        self._token: Tensor | None = None

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
            out = hash_grid_encode(flat, self.table, self.levels, token=self._shared_token())
        return out.reshape(*lead, self.n_output_dims)

    def _shared_token(self) -> Tensor | None:
        if not (self._sharing and self.table.requires_grad and torch.is_grad_enabled() and _CAN_SHARE):
            return None
        if self._token is None:
            self._token = _SharedTableGradient.apply(self.table)
        return self._token

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
