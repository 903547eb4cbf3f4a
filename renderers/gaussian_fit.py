"""Fit deformable 3D Gaussians to posed images of a moving subject: the one loop that the fitting test
and Diffusion²'s reconstruction (``pipelines/diffusion2/reconstruct.py``, Sec. 3.4) both run.

The data is an image matrix: V cameras x F times, ``images[v, f]`` seen by camera v at ``times[f]``.
The schedule follows Deformable-3DGS (Yang et al. 2024) and Diffusion² Sec. 3.4:

1. warm-up: the canonical Gaussians alone, no deformation, on the reference frame (f = 0), so the
   canonical space is that frame's scene (a static multi-view fit, which is well posed) before any
   motion is learnt;
2. deformation stage: one frame per step, every frame once per epoch in a shuffled order, the
   deformation field and the canonical Gaussians (at ``canonical_lr_scale`` of their rates) together;
   3DGS densification (``renderers.densify``) on its own schedule; the field's temporal smoothness at
   a random time, so motion between two frames is the smooth one rather than any that fits both;
   an MLP field's position frequencies released coarse to fine (Nerfies, Park et al. 2021, Eq. 8),
   so each part of the subject first learns one smooth motion and finer detail follows;
3. throughout: the position and deformation learning rates decay exponentially to ``lr_final`` of
   their start (3DGS / Deformable-3DGS's schedule), so the last iterate is not Adam's noise.

The deformation field never gets a time frequency that the training times cannot determine
(:func:`deformation_for_times`): with F uniformly spaced times, a sin/cos of t at or above the Nyquist
frequency takes one value at every training time (a free bias) or vanishes there (a feature whose
weights no image constrains), and a held-out time between two frames then moves the Gaussians at
random. That was why the fit's held-out-time PSNR swung by several dB with the seed.

With every position frequency on from the start, a subject that moves further than its own size (the
test's red ball: 0.35 from its canonical place, radius 0.25) could tear: the half of it that still
overlapped its target followed, the half that did not had no gradient towards it and stayed behind,
and the field's fine spatial detail let the two halves move apart. Which half won depended on float
summation order (the torch thread count): seed 1 scored 28.9 dB at held-out time 0.6875 on two
threads and 24.1 dB on one.

    fit = GaussianFit(initial, DeformationConfig(kind="mlp"), cameras, times, images, settings=GaussianFitSettings())
    losses = fit.run()
    scene = fit.scene()          # DeformableGaussianScene
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from renderers.cameras import Cameras
from renderers.deformation import DeformationConfig, deform_gaussians, make_deformation
from renderers.densify import Densifier, DensifyConfig
from renderers.gaussian_scene import DeformableGaussianScene
from renderers.rasterize import Rasterization, render_gaussians
from renderers.splats import GaussianSet

PARAMS = ("means", "quats", "log_scales", "opacity_logits", "sh")

# (rendered, target [K, H, W, 3], mask [K, H, W, 1] or None, weight [K]) -> (loss, named parts)
Loss = Callable[[Rasterization, Tensor, "Tensor | None", Tensor], "tuple[Tensor, dict[str, Tensor]]"]


@dataclass(frozen=True)
class GaussianFitSettings:
    """Steps, schedule and learning rates of :class:`GaussianFit`.

    ``views_per_step``: cameras rendered per step (0: all); ``anchor_views``: cameras in every step's draw (a
    reference view that carries the motion), the rest drawn at random. Learning rates per parameter group;
    ``lr_final``: the factor the position and deformation rates decay to by the last step;
    ``canonical_lr_scale``: canonical Gaussians' rate factor after warm-up (Diffusion² Sec. 3.4's
    "reduced learning rate"). ``frequency_anneal``: the fraction of the deformation stage over which an
    MLP field's position frequencies are released, coarse to fine (0: all from the start).
    ``smoothness_weight``: the deformation field's temporal smoothness
    (an acceleration penalty, :meth:`~renderers.deformation.DeformationField.smoothness_loss`) at a random
    time each step. ``densify``: the 3DGS schedule (its ``opacity_reset_interval`` and
    thresholds); ``scene_extent``: the size densification measures scales against.
    """

    steps: int = 300
    warmup_steps: int = 60
    views_per_step: int = 0
    anchor_views: tuple[int, ...] = ()
    lr_means: float = 3e-3
    lr_quats: float = 1e-2
    lr_log_scales: float = 1e-2
    lr_opacity_logits: float = 5e-2
    lr_sh: float = 1e-2
    lr_deformation: float = 1e-2
    lr_final: float = 0.1
    canonical_lr_scale: float = 1.0
    # The fit test (seeds 1-8, 1 thread): 0.25 / 0.375 / 0.5 gave >= 32.0 / 32.6 / 30.9 dB held out, 0 and
    # 0.75 24.1 and 25.2 (likely: the last frequencies then arrive after densification stopped, rates decayed).
    frequency_anneal: float = 0.5
    smoothness_weight: float = 1.0
    densify: DensifyConfig = field(default_factory=lambda: DensifyConfig(
        start=50, stop=200, interval=50, opacity_reset_interval=10**9))
    scene_extent: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0 or not 0 <= self.warmup_steps <= self.steps:
            raise ValueError("fit steps must be >= 0 and warm-up steps between 0 and steps")
        if not 0 < self.lr_final <= 1:
            raise ValueError("lr_final must be in (0, 1]")
        if not 0 <= self.frequency_anneal <= 1:
            raise ValueError("frequency_anneal must be in [0, 1]")


def deformation_for_times(config: DeformationConfig, times: Sequence[float]) -> DeformationConfig:
    """``config`` with at most the time detail that ``times`` (the training times in [0, 1]) determine.

    MLP field: the encoding's k-th time frequency sin/cos(2^k pi (2t - 1)) has 2^k cycles per unit t;
    frames spaced by the largest gap d sample at most 1 / (2 d) cycles (Nyquist), so k must satisfy
    2^k < 1 / (2 d). Hex-plane field: no more time-plane nodes than training times."""
    ts = sorted({float(t) for t in times})
    if len(ts) < 2:
        return replace(config, time_frequencies=0, time_resolution=min(config.time_resolution, 2))
    gap = max(b - a for a, b in zip(ts, ts[1:]))
    nyquist = 1.0 / (2.0 * gap)
    frequencies = 0
    while frequencies < config.time_frequencies and 2.0 ** frequencies < nyquist - 1e-9:
        frequencies += 1
    return replace(config, time_frequencies=frequencies,
                   time_resolution=max(2, min(config.time_resolution, len(ts))))


def l1_loss(out: Rasterization, target: Tensor, mask: Tensor | None, weight: Tensor) -> tuple[Tensor, dict]:
    """The photometric L1 of 3DGS, one ``weight`` per image."""
    l1 = ((out.rgb - target).abs().mean((1, 2, 3)) * weight).mean()
    return l1, {"l1": l1}


class GaussianFit:
    """The optimisation state of a deformable-Gaussian fit and one :meth:`step` of it.

    ``initial``: the starting canonical Gaussians. ``deformation``: the field's config (capped by
    :func:`deformation_for_times`). ``cameras`` [V]; ``times`` [F]; ``images`` ``[V, F, H, W, 3]``
    (premultiplied when ``background`` is None, else over it); ``masks`` ``[V, F, H, W, 1]`` (for a
    loss that uses them); ``weights`` ``[V, F]`` per-image loss scales (default 1). ``loss``: the
    objective (default :func:`l1_loss`).
    """

    def __init__(self, initial: GaussianSet, deformation: DeformationConfig, cameras: Cameras,
                 times: Sequence[float], images: Tensor, *, masks: Tensor | None = None,
                 settings: GaussianFitSettings | None = None, background: Tensor | None = None,
                 weights: Tensor | None = None, loss: Loss = l1_loss, device: torch.device | str = "cpu") -> None:
        self.settings = settings or GaussianFitSettings()
        self.views, self.frames = images.shape[:2]
        if len(cameras) != self.views or len(times) != self.frames:
            raise ValueError(f"images are {self.views} views x {self.frames} times but there are {len(cameras)} "
                             f"cameras and {len(times)} times")
        if images.shape[-1] != 3 or (masks is not None and masks.shape[:4] != images.shape[:4]):
            raise ValueError("images must be [V, F, H, W, 3] and masks [V, F, H, W, 1]")
        if any(not 0 <= v < self.views for v in self.settings.anchor_views):
            raise ValueError(f"anchor views {self.settings.anchor_views} are not among the {self.views} views")
        self.device = torch.device(device)
        self.cameras, self.times, self.images, self.masks = cameras, [float(t) for t in times], images, masks
        self.background = None if background is None else background.to(self.device)
        self.weights = torch.ones(self.views, self.frames) if weights is None else weights
        self.loss = loss
        self.generator = torch.Generator().manual_seed(self.settings.seed)
        self.params = {k: getattr(initial, k).detach().clone().to(self.device).requires_grad_() for k in PARAMS}
        with torch.random.fork_rng(devices=[]):  # the field's initial weights from the fit's seed alone
            torch.manual_seed(self.settings.seed)
            self.field = make_deformation(deformation_for_times(deformation, self.times)).to(self.device)
        self._make_optimizers()
        self.densifier = Densifier(self.settings.densify, self.settings.scene_extent, self.generator)
        self.step_count = 0
        self._order: list[int] = []

    def _make_optimizers(self) -> None:
        s = self.settings
        self.optimizer = torch.optim.Adam([{"params": [self.params[k]], "lr": getattr(s, f"lr_{k}"), "name": k}
                                           for k in PARAMS], eps=1e-15)
        self.field_optimizer = torch.optim.Adam(self.field.parameters(), lr=s.lr_deformation)

    @property
    def warming_up(self) -> bool:
        return self.step_count < self.settings.warmup_steps

    def gaussians(self) -> GaussianSet:
        return GaussianSet(*(self.params[k] for k in PARAMS))

    def scene(self) -> DeformableGaussianScene:
        """The current result as a detached scene (deformation switched on once warm-up is over)."""
        field = None
        if not self.warming_up:
            field = make_deformation(self.field.config)
            field.load_state_dict(self.field.state_dict())
            if hasattr(field, "frequency_window"):
                field.frequency_window = self._frequency_window()
        gaussians = GaussianSet(*(self.params[k].detach().clone().cpu() for k in PARAMS))
        return DeformableGaussianScene(gaussians, field, tile_size=8)

    def _set_learning_rates(self) -> None:
        s = self.settings
        decay = s.lr_final ** (self.step_count / max(s.steps, 1))
        canonical = 1.0 if self.warming_up else s.canonical_lr_scale
        for group in self.optimizer.param_groups:
            k = group["name"]
            group["lr"] = getattr(s, f"lr_{k}") * canonical * (decay if k == "means" else 1.0)
        for group in self.field_optimizer.param_groups:
            group["lr"] = s.lr_deformation * decay
        if hasattr(self.field, "frequency_window"):
            self.field.frequency_window = self._frequency_window()

    def _frequency_window(self) -> float | None:
        """Nerfies' alpha for the MLP field's position encoding: 0 (linear in position only) when the
        deformation stage starts, every frequency by ``frequency_anneal`` of the way through it."""
        s = self.settings
        anneal = s.frequency_anneal * (s.steps - s.warmup_steps)
        progress = (self.step_count - s.warmup_steps) / anneal if anneal > 0 else 1.0
        return None if progress >= 1 else max(progress, 0.0) * self.field.config.pos_frequencies

    def _next_frame(self) -> int:
        if self.warming_up:
            return 0
        if not self._order:  # an epoch over the frames: no time goes unseen for long
            self._order = torch.randperm(self.frames, generator=self.generator).tolist()
        return self._order.pop()

    def step(self) -> dict[str, float]:
        """One optimisation step; returns its loss, the loss's parts and the Gaussian count."""
        s, g = self.settings, self.generator
        self._set_learning_rates()
        k = s.views_per_step if 0 < s.views_per_step < self.views else self.views
        if k >= self.views:
            views = torch.arange(self.views)
        elif s.anchor_views:
            anchors = torch.tensor(s.anchor_views)
            rest = torch.randperm(self.views, generator=g)
            views = torch.cat([anchors, rest[~torch.isin(rest, anchors)][:max(k - len(anchors), 0)]])
        else:
            views = torch.randperm(self.views, generator=g)[:k]
        f = self._next_frame()
        field = None if self.warming_up else self.field
        moved = deform_gaussians(self.gaussians(), field, self.times[f])
        cams = Cameras(self.cameras.c2w[views], self.cameras.K[views], self.cameras.width, self.cameras.height)
        out = render_gaussians(moved, cams.to(self.device), background=self.background, tile_size=8)
        target = self.images[views, f].to(self.device)
        mask = None if self.masks is None else self.masks[views, f].to(self.device)
        loss, parts = self.loss(out, target, mask, self.weights[views, f].to(self.device))
        if field is not None and s.smoothness_weight > 0:
            # At a random time, between the frames too: that is where nothing else constrains the motion.
            t = float(torch.rand((), generator=g))
            smooth = field.smoothness_loss(self.params["means"].detach(), t)
            loss = loss + s.smoothness_weight * smooth
            parts = {**parts, "smoothness": smooth}
        self.optimizer.zero_grad(set_to_none=True)
        self.field_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.densifier.step(self.step_count + 1, self.params, self.optimizer, out)
        self.optimizer.step()
        if field is not None:
            self.field_optimizer.step()
        self.step_count += 1
        metrics = {name: float(v.detach()) for name, v in parts.items()}
        return {"loss": loss.item(), **metrics, "gaussians": float(len(moved))}

    def run(self, callback: Callable[[int, dict[str, float]], None] | None = None) -> list[float]:
        """The remaining steps; returns the loss of each. ``callback(step, metrics)`` after every step."""
        losses = []
        while self.step_count < self.settings.steps:
            metrics = self.step()
            losses.append(metrics["loss"])
            if callback is not None:
                callback(self.step_count, metrics)
        return losses

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Tensor]:
        state = {f"gaussians.{k}": v.detach() for k, v in self.params.items()}
        state |= {f"field.{k}": v for k, v in self.field.state_dict().items()}
        return state

    def load_state(self, state: dict[str, Tensor], step: int) -> None:
        """Restore parameters saved by :meth:`state` after ``step`` steps (Adam moments start afresh)."""
        self.params = {k: state[f"gaussians.{k}"].to(self.device).clone().requires_grad_() for k in PARAMS}
        self.field.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("field.")})
        self.step_count = step
        self._make_optimizers()
        self.densifier.stats = None
