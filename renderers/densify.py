"""Adaptive density control of 3D Gaussians (3DGS, Kerbl et al. 2023, Sec. 5), on CPU or GPU.

Every step after backward, the norm of each Gaussian's view-space (NDC) position gradient is
accumulated; every ``interval`` steps Gaussians whose mean gradient reaches ``grad_threshold``
are cloned (when small) or split in two (when large), and transparent or oversized ones are
pruned; every ``opacity_reset_interval`` steps opacities are clamped down to ``reset_opacity``.
Parameters live in a dict of leaf tensors that an optimizer holds; editing them keeps the
optimizer's per-parameter state (Adam moments) aligned, with zeros for new Gaussians.

    densifier = Densifier(DensifyConfig(), scene_extent=1.0)
    out = render_gaussians(gaussian_set_from(params), cameras)
    loss.backward()
    densifier.step(step, params, optimizer, out)           # accumulate, and edit when due
    optimizer.step()

Written from the paper, not from gsplat's strategy: gsplat 1.5.3 shipped an opacity-reset
regression (gsplat#797, fixed by #776), and a full reset to 0.01 can push a Gaussian below the
1/255 alpha cutoff at all its pixels, zeroing its gradient for good (gsplat#1011); here reset
Gaussians still reach 1/255 within 1.37 sigma, and densification stops before the last reset's
effect would be pruned (``stop`` < final step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from renderers.rotations import quat_to_matrix

PARAM_NAMES = ("means", "quats", "log_scales", "opacity_logits", "sh")


@dataclass(frozen=True)
class DensifyConfig:
    """Thresholds and schedule, the 3DGS paper's defaults (its ``OptimizationParams``)."""

    grad_threshold: float = 0.0002  # mean NDC-space position gradient that triggers densification
    percent_dense: float = 0.01  # clone when the largest scale <= this x scene extent, else split
    split_count: int = 2  # a split Gaussian becomes this many, scales divided by 0.8 x split_count
    min_opacity: float = 0.005  # prune below
    max_screen_size: float = 20.0  # prune larger screen radius (pixels), after the first opacity reset
    max_world_size: float = 0.1  # prune larger than this x scene extent, after the first opacity reset
    start: int = 500
    stop: int = 15_000
    interval: int = 100
    opacity_reset_interval: int = 3000
    reset_opacity: float = 0.01


@dataclass
class DensifyStats:
    """Per-Gaussian statistics accumulated between two densifications (``[N]`` each)."""

    grad_sum: Tensor
    count: Tensor
    max_radii: Tensor

    @classmethod
    def zeros(cls, n: int, device=None) -> DensifyStats:
        return cls(torch.zeros(n, device=device), torch.zeros(n, device=device), torch.zeros(n, device=device))


def accumulate_gradients(stats: DensifyStats, means2d: Tensor, radii: Tensor, width: int, height: int) -> None:
    """Add one render's view-space gradients. ``means2d`` ``[C, N, 2]`` (its ``.grad`` set by backward,
    in pixels), ``radii`` ``[C, N, 2]``. Pixel gradients are scaled to NDC units as in 3DGS; times C
    because a loss averaged over a batch of C images divides each image's gradient by C (as gsplat)."""
    if means2d.grad is None:
        raise ValueError("means2d has no gradient: call accumulate_gradients after loss.backward().")
    grad = means2d.grad.detach().clone()
    C = grad.shape[0]
    grad[..., 0] *= width / 2 * C
    grad[..., 1] *= height / 2 * C
    visible = (radii > 0).all(-1)  # [C, N]
    norms = grad.norm(dim=-1).to(stats.grad_sum.dtype)
    stats.grad_sum += (norms * visible).sum(0)
    stats.count += visible.sum(0).to(stats.count.dtype)
    radius = (radii.detach().amax(-1) * visible).amax(0).to(stats.max_radii.dtype)
    torch.maximum(stats.max_radii, radius, out=stats.max_radii)


def densify_and_prune(params: dict[str, Tensor], optimizer: torch.optim.Optimizer | None, stats: DensifyStats,
                      config: DensifyConfig, scene_extent: float, *, prune_large: bool = False,
                      generator: torch.Generator | None = None) -> dict[str, int]:
    """Clone small and split large high-gradient Gaussians, then prune; edits ``params`` in place
    (new leaf tensors) and the optimizer's state. Returns counts ``cloned``, ``split``, ``pruned``."""
    n = params["means"].shape[0]
    with torch.no_grad():
        avg = stats.grad_sum / stats.count.clamp_min(1)
        high = avg >= config.grad_threshold
        max_scale = params["log_scales"].exp().amax(-1)
        small = max_scale <= config.percent_dense * scene_extent
        clone, split = high & small, high & ~small
        # Clone: an exact copy (the gradient then pulls the two apart).
        new = {k: v[clone] for k, v in params.items()}
        # Split: k samples from the Gaussian itself, each with scales / (0.8 k), replacing it.
        k = config.split_count
        scales = params["log_scales"][split].exp().repeat(k, 1)
        R = quat_to_matrix(params["quats"][split]).repeat(k, 1, 1)
        noise = torch.randn(scales.shape, generator=generator, device=scales.device, dtype=scales.dtype)
        samples = (R @ (noise * scales)[..., None])[..., 0] + params["means"][split].repeat(k, 1)
        split_new = {name: v[split].repeat(k, *([1] * (v.ndim - 1))) for name, v in params.items()}
        split_new["means"] = samples
        split_new["log_scales"] = (scales / (0.8 * k)).log()
        keep = ~split
        added = {name: torch.cat([new[name], split_new[name]]) for name in params}
        _edit(params, optimizer, keep, added)
        for name in ("grad_sum", "count", "max_radii"):
            old = getattr(stats, name)
            setattr(stats, name, torch.cat([old[keep], torch.zeros(added["means"].shape[0], device=old.device,
                                                                   dtype=old.dtype)]))
        # Prune: transparent, and (once opacities have been reset) too big on screen or in the world.
        prune = torch.sigmoid(params["opacity_logits"]) < config.min_opacity
        if prune_large:
            prune |= stats.max_radii > config.max_screen_size
            prune |= params["log_scales"].exp().amax(-1) > config.max_world_size * scene_extent
        if prune.all():  # never leave nothing to optimise
            prune[torch.argmax(params["opacity_logits"])] = False
        _edit(params, optimizer, ~prune, None)
    return {"cloned": int(clone.sum()), "split": int(split.sum()), "pruned": int(prune.sum()),
            "before": n, "after": params["means"].shape[0]}


def reset_opacity(params: dict[str, Tensor], optimizer: torch.optim.Optimizer | None, value: float = 0.01) -> None:
    """Clamp every opacity to at most ``value`` (3DGS's periodic reset) and clear its optimizer moments."""
    with torch.no_grad():
        limit = math.log(value / (1 - value))
        new = params["opacity_logits"].clamp_max(limit)
        _replace(params, optimizer, "opacity_logits", new, lambda s: torch.zeros_like(s))


class Densifier:
    """The 3DGS schedule around :func:`accumulate_gradients`, :func:`densify_and_prune` and
    :func:`reset_opacity`. Call :meth:`step` after ``loss.backward()`` and before ``optimizer.step()``."""

    def __init__(self, config: DensifyConfig | None = None, scene_extent: float = 1.0,
                 generator: torch.Generator | None = None) -> None:
        self.config = config or DensifyConfig()
        self.scene_extent = scene_extent
        self.generator = generator
        self.stats: DensifyStats | None = None

    def step(self, step: int, params: dict[str, Tensor], optimizer, rendered) -> dict[str, int] | None:
        """``rendered``: the :class:`~renderers.rasterize.Rasterization` whose loss was back-propagated.
        Returns the densification counts on steps that densified, else None."""
        cfg = self.config
        n = params["means"].shape[0]
        if self.stats is None or self.stats.grad_sum.shape[0] != n:
            self.stats = DensifyStats.zeros(n, params["means"].device)
        result = None
        if step < cfg.stop:
            width, height = rendered.rgb.shape[2], rendered.rgb.shape[1]
            accumulate_gradients(self.stats, rendered.means2d, rendered.radii, width, height)
            if step >= cfg.start and step % cfg.interval == 0:
                result = densify_and_prune(params, optimizer, self.stats, cfg, self.scene_extent,
                                           prune_large=step > cfg.opacity_reset_interval, generator=self.generator)
                self.stats = DensifyStats.zeros(params["means"].shape[0], params["means"].device)
            if step > 0 and step % cfg.opacity_reset_interval == 0:
                reset_opacity(params, optimizer, cfg.reset_opacity)
        return result


# -------------------------------------------------------------------- parameter surgery
def _param_state(optimizer, param):
    if optimizer is None:
        return None, None
    for group in optimizer.param_groups:
        for i, p in enumerate(group["params"]):
            if p is param:
                return group, i
    return None, None


def _replace(params, optimizer, name, value: Tensor, edit_state) -> None:
    """Swap ``params[name]`` for a new leaf holding ``value``; ``edit_state`` maps each old state tensor."""
    old = params[name]
    new = value.detach().clone().requires_grad_(old.requires_grad)
    group, i = _param_state(optimizer, old)
    if group is not None:
        state = optimizer.state.pop(old, {})
        group["params"][i] = new
        optimizer.state[new] = {k: (edit_state(v) if torch.is_tensor(v) and v.shape == old.shape else v)
                                for k, v in state.items()}
    params[name] = new


def _edit(params, optimizer, keep: Tensor, added: dict[str, Tensor] | None) -> None:
    """Keep the rows ``keep`` of every parameter and append ``added`` rows (zero optimizer moments)."""
    for name in list(params):
        value = params[name][keep]
        extra = None if added is None else added[name]
        if extra is not None:
            value = torch.cat([value, extra])

        def edit_state(s, extra=extra):
            s = s[keep]
            return s if extra is None else torch.cat([s, torch.zeros((extra.shape[0], *s.shape[1:]), dtype=s.dtype,
                                                                       device=s.device)])

        _replace(params, optimizer, name, value, edit_state)
