"""Differentiable Gaussian splatting: a pure-torch tile rasterizer, and gsplat on CUDA.

    out = rasterize(means, quats, scales, opacities, colors, viewmats, Ks, width, height)
    out.rgb [C, H, W, 3], out.alpha [C, H, W, 1], out.depth [C, H, W, 1]
    out = render_gaussians(gaussians, cameras)            # the same from a GaussianSet + Cameras

The torch path is the specification (the semantics of gsplat's "classic" mode): EWA projection
with a 0.3 px low-pass dilation, tile binning by the box where a Gaussian's alpha can reach 1/255,
one sort on (camera, tile, depth) keys, front-to-back compositing in chunks of Gaussians per tile
with alpha clamped at 0.999, contributions below 1/255 skipped, and a pixel stopping once its
transmittance would fall below 1e-4. Memory scales with tiles x overlaps, never Gaussians x pixels.
The compositing has a hand-written backward that keeps each chunk's alpha
(shared/notes/cpu-performance.md: plain autograd over chunks is ~2x slower and takes 3x the memory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from renderers.rotations import quat_to_matrix
from renderers.sh import sh_to_color

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4
_PAD_LOGIT = -1e4  # exponent of padding slots: exp() is exactly 0
_CHUNK_PAIRS = 4096  # (tile, Gaussian) pairs per compositing step, at least
_CHUNK_MIN, _CHUNK_MAX = 32, 256  # Gaussians per tile per step


@dataclass
class Rasterization:
    """What :func:`rasterize` returns.

    Attributes:
        rgb: ``[C, H, W, 3]``, background composited in (premultiplied when there is none).
        alpha: ``[C, H, W, 1]`` accumulated opacity.
        depth: ``[C, H, W, 1]`` expected camera z of the visible surface (0 where alpha is 0).
        means2d: ``[C, N, 2]`` projected centres in pixels; its ``.grad`` after backward is the
            view-space gradient that densification accumulates (retained when differentiable).
        radii: ``[C, N, 2]`` half-extents of each Gaussian's screen box in pixels (0: not visible).
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    means2d: Tensor
    radii: Tensor


# -------------------------------------------------------------------- public functions
def rasterize(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
              viewmats: Tensor, Ks: Tensor, width: int, height: int, *, sh_degree: int | None = None,
              near_plane: float = 0.01, far_plane: float = 1e10, backgrounds: Tensor | None = None,
              tile_size: int | None = None, eps2d: float = 0.3, backend: str = "auto") -> Rasterization:
    """Render N Gaussians into C cameras.

    Args:
        means: ``[N, 3]``; quats: ``[N, 4]`` wxyz (normalised here); scales: ``[N, 3]`` (not log);
        opacities: ``[N]`` in [0, 1].
        colors: ``[N, 3]`` or ``[C, N, 3]`` RGB, or SH coefficients ``[N, K, 3]`` with ``sh_degree``.
        viewmats: world-to-camera ``[C, 4, 4]`` (OpenCV axes); Ks: ``[C, 3, 3]``.
        backgrounds: ``[3]`` or ``[C, 3]`` colour behind the Gaussians; None leaves rgb premultiplied.
        tile_size: side of the square tiles; default 8 for the torch path (half the compositing work of
            16 on a CPU, shared/notes/cpu-performance.md) and 16 for gsplat. The image does not depend on it.
        backend: "auto" (gsplat when installed and the tensors are on CUDA), "torch" or "gsplat".
    """
    means, quats, scales, opacities, colors, viewmats, Ks = _checked(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree)
    if backend not in ("auto", "torch", "gsplat"):
        raise ValueError(f"unknown rasterizer backend '{backend}' (use auto, torch or gsplat)")
    if backend == "gsplat" or (backend == "auto" and means.is_cuda and _gsplat_available()):
        return _rasterize_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                                 sh_degree, near_plane, far_plane, backgrounds, tile_size or 16, eps2d)
    return _rasterize_torch(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree,
                            near_plane, far_plane, backgrounds, tile_size or 8, eps2d)


def render_gaussians(gaussians, cameras, *, background: Tensor | None = None, sh_degree: int | None = None,
                     **kwargs) -> Rasterization:
    """:func:`rasterize` for a :class:`~renderers.splats.GaussianSet` seen by :class:`~renderers.cameras.Cameras`.

    Colours come from the SH coefficients (all of them unless ``sh_degree`` says fewer).
    """
    degree = gaussians.sh_degree if sh_degree is None else sh_degree
    dtype, device = gaussians.means.dtype, gaussians.means.device
    return rasterize(gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities, gaussians.sh,
                     cameras.viewmats.to(device, dtype), cameras.K.to(device, dtype), cameras.width,
                     cameras.height, sh_degree=degree, backgrounds=background, **kwargs)


# -------------------------------------------------------------------- input checks
def _checked(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree):
    n = means.shape[0] if means.ndim == 2 else -1
    if means.ndim != 2 or means.shape[1] != 3:
        raise ValueError(f"means must be [N, 3], got {list(means.shape)}")
    for name, t, shape in (("quats", quats, (n, 4)), ("scales", scales, (n, 3)), ("opacities", opacities, (n,))):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must be {list(shape)} for {n} Gaussians, got {list(t.shape)}")
    if viewmats.ndim != 3 or viewmats.shape[1:] != (4, 4) or Ks.ndim != 3 or Ks.shape[1:] != (3, 3):
        raise ValueError(f"viewmats must be [C, 4, 4] and Ks [C, 3, 3], got {list(viewmats.shape)}, {list(Ks.shape)}")
    if Ks.shape[0] != viewmats.shape[0]:
        raise ValueError(f"{viewmats.shape[0]} viewmats but {Ks.shape[0]} intrinsics")
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    c = viewmats.shape[0]
    if sh_degree is None:
        if colors.shape not in ((n, 3), (c, n, 3)):
            raise ValueError(f"colors must be [N, 3] or [C, N, 3] (or SH [N, K, 3] with sh_degree), "
                             f"got {list(colors.shape)}")
    elif colors.ndim != 3 or colors.shape[0] != n or colors.shape[2] != 3 or colors.shape[1] < (sh_degree + 1) ** 2:
        raise ValueError(f"SH colours of degree {sh_degree} must be [N, >={(sh_degree + 1) ** 2}, 3], "
                         f"got {list(colors.shape)}")
    for name, t in (("means", means), ("quats", quats), ("scales", scales), ("opacities", opacities),
                    ("colors", colors), ("viewmats", viewmats), ("Ks", Ks)):
        if t.numel() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"Gaussian {name} contain NaN or infinite values; fix or drop those Gaussians.")
    dtype = means.dtype
    return (means, quats.to(dtype), scales.to(dtype), opacities.to(dtype), colors.to(dtype), viewmats.to(dtype),
            Ks.to(dtype))


def _gsplat_available() -> bool:
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


# -------------------------------------------------------------------- projection
def project_gaussians(means: Tensor, quats: Tensor, scales: Tensor, viewmats: Tensor, Ks: Tensor, width: int,
                      height: int, eps2d: float = 0.3) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """EWA splatting of 3D Gaussians into C cameras (differentiable by autograd).

    Returns ``means2d`` ``[C, N, 2]`` (pixels), ``cov2d`` ``[C, N, 2, 2]`` with the ``eps2d`` low-pass
    dilation added, camera ``depths`` ``[C, N]`` and the camera-space means ``[C, N, 3]``.
    """
    M = quat_to_matrix(quats) * scales[:, None, :]  # cov3d = M M^T  [N, 3, 3]
    Rw, tw = viewmats[:, :3, :3], viewmats[:, :3, 3]
    pc = torch.einsum("cij,nj->cni", Rw, means) + tw[:, None]  # [C, N, 3]
    RM = torch.einsum("cij,njk->cnik", Rw, M)  # camera-space factor of the covariance [C, N, 3, 3]
    x, y, z = pc.unbind(-1)
    zs = z.clamp_min(1e-6)  # culled anyway below the near plane; keeps the maths finite
    fx, fy, cx, cy = Ks[:, 0, 0, None], Ks[:, 1, 1, None], Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    # Clamp the Jacobian's tangent to 1.3x the field of view, as 3DGS and gsplat do.
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    tx = zs * torch.minimum((width - cx) / fx + 0.3 * tan_x, torch.maximum(-(cx / fx + 0.3 * tan_x), x / zs))
    ty = zs * torch.minimum((height - cy) / fy + 0.3 * tan_y, torch.maximum(-(cy / fy + 0.3 * tan_y), y / zs))
    # J = [[fx/z, 0, -fx tx/z^2], [0, fy/z, -fy ty/z^2]]; cov2d = (J RM)(J RM)^T, written out since J is sparse.
    row0 = (fx / zs)[..., None] * (RM[..., 0, :] - (tx / zs)[..., None] * RM[..., 2, :])  # [C, N, 3]
    row1 = (fy / zs)[..., None] * (RM[..., 1, :] - (ty / zs)[..., None] * RM[..., 2, :])
    a = (row0 * row0).sum(-1) + eps2d
    b = (row0 * row1).sum(-1)
    c = (row1 * row1).sum(-1) + eps2d
    cov2d = torch.stack([a, b, b, c], -1).reshape(*a.shape, 2, 2)
    means2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], -1)
    return means2d, cov2d, z, pc


def _rasterize_torch(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, near_plane,
                     far_plane, backgrounds, tile_size, eps2d) -> Rasterization:
    C, N = viewmats.shape[0], means.shape[0]
    dtype, device = means.dtype, means.device
    means2d, cov2d, depths, _ = project_gaussians(means, quats, scales, viewmats, Ks, width, height, eps2d)
    if means2d.requires_grad:
        means2d.retain_grad()
    a, b, c = cov2d[..., 0, 0], cov2d[..., 0, 1], cov2d[..., 1, 1]
    det = (a * c - b * b).clamp_min(1e-12)
    conic = torch.stack([c / det, -b / det, a / det], -1)  # inverse covariance [C, N, 3]

    # Screen box where alpha = o exp(-sigma) can reach 1/255: sigma <= L = ln(255 o) (exactly what is drawn).
    with torch.no_grad():
        level = torch.log(opacities.clamp_min(1e-30) / ALPHA_MIN).expand(C, N)
        half = torch.sqrt(2 * level.clamp_min(0)[..., None] * torch.stack([a, c], -1).clamp_min(0))  # [C, N, 2]
        visible = (depths > near_plane) & (depths < far_plane) & (level > 0) & (det > 1e-12)
        lo, hi = means2d - half, means2d + half
        visible &= (hi[..., 0] > 0) & (lo[..., 0] < width) & (hi[..., 1] > 0) & (lo[..., 1] < height)
        radii = torch.where(visible[..., None], half, torch.zeros_like(half))

    # Colours and depths as the features composited: [r, g, b, z, 1] (the last one accumulates alpha).
    if sh_degree is not None:
        campos = -(viewmats[:, :3, :3].transpose(1, 2) @ viewmats[:, :3, 3:])[..., 0]  # [C, 3]
        rgb = sh_to_color(colors[None].expand(C, -1, -1, -1), means[None] - campos[:, None], sh_degree)
    else:
        rgb = colors if colors.ndim == 3 else colors[None].expand(C, -1, -1)
    feats = torch.cat([rgb, depths[..., None], torch.ones_like(depths[..., None])], -1)  # [C, N, 5]

    if backgrounds is None:
        bg = torch.zeros(C, 5, dtype=dtype, device=device)
    else:
        bg = torch.cat([torch.as_tensor(backgrounds, dtype=dtype, device=device).expand(C, 3),
                        torch.zeros(C, 2, dtype=dtype, device=device)], -1)

    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    n_tiles = tiles_x * tiles_y
    flat_ids, gauss_ids, tile_ids, tile_x, tile_y = _bin_tiles(lo, hi, visible, depths, tile_size, tiles_x, tiles_y)

    # Per-intersection exponent coefficients in tile-local pixel coordinates:
    # q(px, py) = log o - 0.5 (A dx^2 + 2 B dx dy + C dy^2), dx = px - u, written as 6 coefficients of
    # [px^2, px py, py^2, px, py, 1] so a chunk's exponents are one matrix multiply.
    # (1-D index_select throughout: multi-index advanced indexing is several times slower on CPU.)
    uv = means2d.reshape(-1, 2).index_select(0, flat_ids)
    u = uv[:, 0] - tile_x * tile_size
    v = uv[:, 1] - tile_y * tile_size
    A, B, Cc = conic.reshape(-1, 3).index_select(0, flat_ids).unbind(-1)
    logo = torch.log(opacities.clamp_min(1e-30)).index_select(0, gauss_ids)
    coefs = torch.stack([-0.5 * A, -B, -0.5 * Cc, A * u + B * v, B * u + Cc * v,
                         logo - 0.5 * A * u * u - B * u * v - 0.5 * Cc * v * v], -1)  # [M, 6]
    inter_feats = feats.reshape(-1, 5).index_select(0, flat_ids)  # [M, 5]
    counts = torch.bincount(tile_ids, minlength=C * n_tiles)
    starts = torch.cumsum(counts, 0) - counts
    bg_pix = bg.repeat_interleave(n_tiles, 0)  # [C * n_tiles, 5]
    clamp_alpha = bool((opacities > ALPHA_MAX).any())  # else alpha <= o <= 0.999 needs no clamp
    out = _Composite.apply(coefs, inter_feats, starts, counts, bg_pix, tile_size, clamp_alpha)  # [C * n_tiles, S, 5]

    out = out.view(C, tiles_y, tiles_x, tile_size, tile_size, 5).permute(0, 1, 3, 2, 4, 5)
    out = out.reshape(C, tiles_y * tile_size, tiles_x * tile_size, 5)[:, :height, :width]
    alpha = out[..., 4:5]
    depth = torch.where(alpha > 1e-6, out[..., 3:4] / alpha.clamp_min(1e-6), torch.zeros_like(alpha))
    return Rasterization(rgb=out[..., :3], alpha=alpha, depth=depth, means2d=means2d, radii=radii)


def _bin_tiles(lo, hi, visible, depths, tile_size, tiles_x, tiles_y):
    """Every (camera, Gaussian, tile) overlap, sorted once by (camera, tile, depth).

    Returns ``[M]`` flat (camera * N + Gaussian) ids, Gaussian ids, global tile (camera * tiles + tile)
    ids and tile x, y.
    """
    with torch.no_grad():
        N = visible.shape[1]
        vis = torch.nonzero(visible.reshape(-1)).squeeze(1)
        lo_v, hi_v = lo.reshape(-1, 2).index_select(0, vis), hi.reshape(-1, 2).index_select(0, vis)
        tx0 = torch.floor(lo_v[:, 0] / tile_size).clamp(0, tiles_x).long()
        tx1 = (torch.floor(hi_v[:, 0] / tile_size) + 1).clamp(0, tiles_x).long()
        ty0 = torch.floor(lo_v[:, 1] / tile_size).clamp(0, tiles_y).long()
        ty1 = (torch.floor(hi_v[:, 1] / tile_size) + 1).clamp(0, tiles_y).long()
        nx = (tx1 - tx0).clamp_min(0)
        per = nx * (ty1 - ty0).clamp_min(0)
        src = torch.repeat_interleave(torch.arange(per.shape[0], device=per.device), per)
        first = torch.cumsum(per, 0) - per
        offset = torch.arange(src.shape[0], device=per.device) - first.index_select(0, src)
        nx_s = nx.index_select(0, src).clamp_min(1)
        tx = tx0.index_select(0, src) + offset % nx_s
        ty = ty0.index_select(0, src) + offset // nx_s
        flat = vis.index_select(0, src)
        tile_ids = torch.div(flat, N, rounding_mode="floor") * (tiles_x * tiles_y) + ty * tiles_x + tx
        # Camera depths are > near_plane > 0, so their float bits order like the floats.
        d = depths.detach().reshape(-1).float().index_select(0, flat)
        key = (tile_ids << 32) | d.view(torch.int32).long()
        order = torch.sort(key).indices
        flat = flat.index_select(0, order)
        return (flat, flat % N, tile_ids.index_select(0, order), tx.index_select(0, order),
                ty.index_select(0, order))


# -------------------------------------------------------------------- compositing
def _pixel_features(tile_size: int, dtype, device) -> Tensor:
    """``[S, 6]`` = [px^2, px py, py^2, px, py, 1] for the S pixel centres of a tile, row-major."""
    i = torch.arange(tile_size, dtype=dtype, device=device) + 0.5
    py, px = torch.meshgrid(i, i, indexing="ij")
    px, py = px.reshape(-1), py.reshape(-1)
    return torch.stack([px * px, px * py, py * py, px, py, torch.ones_like(px)], -1)


def _rows(table: Tensor, idx: Tensor) -> Tensor:
    """``table[idx]`` for a 2-D index ``[A, B]`` into ``[M, K]`` rows, as one 1-D index_select."""
    return table.index_select(0, idx.reshape(-1)).view(*idx.shape, table.shape[1])


def _chunk(n_active: int) -> int:
    """Gaussians per tile per step: 32 while many tiles are busy, more (fewer steps) as they finish."""
    b = _CHUNK_MIN
    while b < _CHUNK_MAX and b * n_active < _CHUNK_PAIRS:
        b *= 2
    return b


class _Composite(torch.autograd.Function):
    """Front-to-back compositing of sorted per-tile Gaussian lists, with a hand-written backward.

    Inputs: ``coefs`` ``[M, 6]`` exponent coefficients, ``feats`` ``[M, F]`` features whose last
    column is 1 (it accumulates alpha), ``starts`` / ``counts`` ``[T]`` each tile's slice of the M
    sorted overlaps, ``bg`` ``[T, F]`` background per tile. Output ``[T, S, F]``:
    sum_k w_k f_k + T_final bg, with w_k = alpha_k prod_{j<k} (1 - alpha_j).

    Every step handles B Gaussians of every still-active tile at once as ``[Ta, S, B]`` tensors;
    transmittance is kept relative to the step's start (T0 per pixel is folded into the small
    ``[Ta, S, F]`` products), so each step makes about 8 passes over its big tensors.
    """

    @staticmethod
    def forward(ctx, coefs, feats, starts, counts, bg, tile_size, clamp_alpha):
        n_tiles, F = bg.shape
        dtype, device = coefs.dtype, coefs.device
        P = _pixel_features(tile_size, dtype, device)
        S = P.shape[0]
        trans = torch.ones(n_tiles, S, dtype=dtype, device=device)
        alive = torch.ones(n_tiles, S, dtype=torch.bool, device=device)
        acc = torch.zeros(n_tiles, S, F, dtype=dtype, device=device)
        ends = starts + counts
        pad = torch.zeros(6, dtype=dtype, device=device)
        pad[5] = _PAD_LOGIT
        log_alpha_min, log_alpha_max = math.log(ALPHA_MIN), math.log(ALPHA_MAX)
        active = torch.nonzero(counts > 0).squeeze(1)
        pos = 0
        steps = []
        while active.numel():
            B = _chunk(active.numel())
            idx = starts[active, None] + pos + torch.arange(B, device=device)
            inr = idx < ends[active, None]
            idx = torch.where(inr, idx, 0)
            G = torch.where(inr[..., None], _rows(coefs, idx), pad)  # [Ta, B, 6]
            Fk = _rows(feats, idx).masked_fill_(~inr[..., None], 0)  # [Ta, B, F]
            q = torch.matmul(P, G.transpose(1, 2))  # exponent log(alpha) [Ta, S, B]
            if clamp_alpha:
                q.clamp_max_(log_alpha_max)
            torch.nn.functional.threshold_(q, log_alpha_min, -math.inf)  # alpha < 1/255 is skipped
            alpha = q.exp_()
            incl = torch.cumprod(torch.rsub(alpha, 1), -1)  # transmittance after each Gaussian, relative to T0
            T0 = trans.index_select(0, active)  # [Ta, S]
            alive_a = alive.index_select(0, active)
            # A pixel stops before the Gaussian that would take its transmittance below 1e-4; only
            # the (few) pixels where that happens inside this step need masking.
            threshold = torch.where(alive_a, T_MIN / T0, math.inf)
            stops = torch.nonzero((incl[..., -1] <= threshold).view(-1)).squeeze(1)
            if stops.numel():
                rows_a, rows_i = alpha.view(-1, B), incl.view(-1, B)
                rows_a[stops] *= rows_i[stops] > threshold.view(-1)[stops, None]
            w = torch.empty_like(alpha)
            w[..., 0] = alpha[..., 0]
            torch.mul(alpha[..., 1:], incl[..., :-1], out=w[..., 1:])
            step_acc = torch.matmul(w, Fk).mul_(T0[..., None])  # [Ta, S, F]
            acc.index_add_(0, active, step_acc)
            trans.index_copy_(0, active, T0 - step_acc[..., -1])  # the last feature is 1: its sum is sum_k w_k
            still = alive_a
            if stops.numel():
                still.view(-1)[stops] = False
                alive.index_copy_(0, active, still)
            steps.append((active, idx, inr, alpha, incl, T0))
            pos += B
            keep = (ends[active] > starts[active] + pos) & still.any(-1)
            active = active[keep]
        out = acc.add_(trans[..., None] * bg[:, None])
        ctx.steps = steps
        ctx.clamp_alpha = clamp_alpha
        ctx.save_for_backward(feats, out, trans, P)
        ctx.n_coefs = coefs.shape[0]
        return out

    @staticmethod
    def backward(ctx, grad_out):
        feats, out, trans, P = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        M, F = feats.shape
        d_coefs = torch.zeros(ctx.n_coefs, 6, dtype=feats.dtype, device=feats.device)
        d_feats = torch.zeros(M, F, dtype=feats.dtype, device=feats.device)
        g_total = (grad_out * out).sum(-1)  # g . C_final per pixel [T, S]
        g_done = torch.zeros_like(g_total)  # g . (what was accumulated before this step)
        Pt = P.t()
        for active, idx, inr, alpha, incl, T0 in ctx.steps:
            g = grad_out.index_select(0, active)  # [Ta, S, F]
            Fk = _rows(feats, idx).masked_fill_(~inr[..., None], 0)
            # With E_k = prod_{j<k} (1 - alpha_j) relative to T0 (so T_k = T0 E_k), and gc_k = g . f_k:
            # dC/dalpha_k . g = T0 E_k gc_k - (g . C_final - g . sum_{j<=k} T0 E_j alpha_j f_j) / (1 - alpha_k)
            Egc = torch.matmul(g, Fk.transpose(1, 2))  # gc [Ta, S, B]
            Egc[..., 1:].mul_(incl[..., :-1])
            cs = torch.cumsum(alpha * Egc, -1)  # (g . sum_{j<=k} w_j f_j - g_done) / T0
            g_step = cs[..., -1] * T0
            rest = (g_total.index_select(0, active) - g_done.index_select(0, active)) / T0  # [Ta, S]
            d_q = cs.sub_(rest[..., None]).div_(torch.rsub(alpha, 1)).add_(Egc).mul_(alpha)  # dL/dq / T0
            if ctx.clamp_alpha:
                d_q.masked_fill_(alpha >= ALPHA_MAX * (1 - 1e-6), 0)  # alpha = exp(q) unless clamped
            d_G = torch.matmul(Pt * T0[:, None, :], d_q)  # [Ta, 6, B]
            w = torch.empty_like(alpha)
            w[..., 0] = alpha[..., 0]
            torch.mul(alpha[..., 1:], incl[..., :-1], out=w[..., 1:])
            d_F = torch.matmul(w.transpose(1, 2), g * T0[..., None])  # [Ta, B, F]
            sel = idx[inr]
            d_coefs[sel] = d_G.transpose(1, 2)[inr]
            d_feats[sel] = d_F[inr]
            g_done.index_add_(0, active, g_step)
        d_bg = grad_out * trans[..., None]
        return d_coefs, d_feats, None, None, d_bg.sum(1), None, None


# -------------------------------------------------------------------- gsplat
def _rasterize_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, near_plane,
                      far_plane, backgrounds, tile_size, eps2d) -> Rasterization:
    from gsplat import rasterization

    C = viewmats.shape[0]
    if backgrounds is not None:
        backgrounds = torch.as_tensor(backgrounds, dtype=means.dtype, device=means.device).expand(C, 3)
    if means.shape[0] == 0:
        return _rasterize_torch(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree,
                                near_plane, far_plane, backgrounds, tile_size, eps2d)
    render, alpha, meta = rasterization(
        means, quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12), scales, opacities, colors, viewmats, Ks,
        width, height, near_plane=near_plane, far_plane=far_plane, sh_degree=sh_degree, backgrounds=backgrounds,
        render_mode="RGB+ED", tile_size=tile_size, eps2d=eps2d, packed=False, rasterize_mode="classic")
    means2d = meta["means2d"]
    if means2d.requires_grad:
        means2d.retain_grad()
    radii = meta["radii"]
    if radii.ndim == 2:  # older gsplat: one radius per Gaussian
        radii = radii[..., None].expand(*radii.shape, 2)
    depth = torch.where(alpha > 1e-6, render[..., 3:4], torch.zeros_like(alpha))
    return Rasterization(rgb=render[..., :3], alpha=alpha, depth=depth, means2d=means2d, radii=radii.to(means.dtype))
