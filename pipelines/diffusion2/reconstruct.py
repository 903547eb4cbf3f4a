"""Stage 2 of Diffusion² (Sec. 3.4): deformable 3D Gaussians fitted to the sampled V x F image matrix.

The matrix's cameras are known (V orbit views, Sec. 4.1) and so are its times (frame f at t = f / (F - 1)).
Canonical Gaussians start carved from the reference frame's masks (points inside every view's silhouette,
coloured from the images), then:

1. warm-up: only the static Gaussians, on the views of the reference frame (column 0), photometric loss;
2. deformation stage: the whole matrix; an MLP deformation field (Yang et al. 2024) moves the Gaussians
   over time while the canonical Gaussians are fine-tuned at a reduced learning rate, and entries away
   from the reference view and frame count with a reduced loss scale.

Loss: (1 - lambda) L1 + lambda D-SSIM over the background the priors used, plus an alpha-mask term;
3DGS densification (``renderers.densify``) during the first part of the fit.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from pipelines.diffusion2.config import ReconstructionConfig
from pipelines.world.metrics import ssim
from renderers.cameras import Cameras, orbit_cameras
from renderers.deformation import DeformationConfig, deform_gaussians, make_deformation
from renderers.densify import Densifier, DensifyConfig
from renderers.gaussian_scene import DeformableGaussianScene
from renderers.rasterize import render_gaussians
from renderers.splats import GaussianSet, rgb_to_sh_dc

PARAMS = ("means", "quats", "log_scales", "opacity_logits", "sh")
LR = {"quats": 1e-3, "log_scales": 5e-3, "opacity_logits": 5e-2, "sh": 2.5e-3}  # 3DGS's rates (means: config)


def matrix_cameras(views: int, elevation: float, distance: float, fovy: float, size: int) -> Cameras:
    """The V orbit cameras of the matrix: azimuth 360 v / V from the reference view (v = 0)."""
    return orbit_cameras(distance, elevation, torch.arange(views, dtype=torch.float32) * 360.0 / views, fovy,
                         size, size)


def matrix_times(frames: int) -> list[float]:
    """Time of each frame in [0, 1]: the reference frame at 0, the last at 1."""
    return [f / (frames - 1) for f in range(frames)]


def carve_gaussians(images: Tensor, masks: Tensor, cameras: Cameras, n: int, generator: torch.Generator,
                    extent: float = 1.0) -> GaussianSet:
    """``n`` Gaussians inside the visual hull of ``masks`` ``[V, H, W, 1]`` seen by ``cameras`` [V], coloured by
    the mean of ``images`` ``[V, H, W, 3]`` where they land (a rough start the fit refines)."""
    size = images.shape[1]
    kept, colours = [], []
    found = 0
    for _ in range(50):
        pts = (torch.rand(20 * n, 3, generator=generator) * 2 - 1) * extent
        uv, depth = cameras.project(pts)
        pix = uv.floor().long()
        inside = (pix >= 0).all(-1) & (pix < size).all(-1) & (depth > 0)
        pix = pix.clamp(0, size - 1)
        views = torch.arange(len(cameras))[:, None]
        m = masks[views, pix[..., 1], pix[..., 0], 0] * inside
        hull = (m > 0.5).all(0)
        kept.append(pts[hull])
        colours.append(images[views, pix[..., 1], pix[..., 0]].mean(0)[hull])
        found += int(hull.sum())
        if found >= n:
            break
    means, rgb = torch.cat(kept)[:n], torch.cat(colours)[:n]
    if means.shape[0] < 8:  # masks that agree nowhere: start from a small ball
        means = torch.randn(n, 3, generator=generator) * 0.2
        rgb = torch.full((n, 3), 0.5)
    count = means.shape[0]
    spacing = (8 * extent ** 3 * float((masks > 0.5).float().mean()) / count) ** (1 / 3)
    return GaussianSet(means, torch.tensor([[1.0, 0, 0, 0]]).repeat(count, 1),
                       torch.full((count, 3), math.log(max(spacing, 1e-3))), torch.full((count,), -1.0),
                       rgb_to_sh_dc(rgb.clamp(0.02, 0.98))[:, None])


class MatrixFit:
    """The optimisation state of stage 2 and one :meth:`step` of it.

    ``images`` ``[V, F, H, W, 3]`` (over ``background``), ``masks`` ``[V, F, H, W, 1]``.
    """

    def __init__(self, images: Tensor, masks: Tensor, cameras: Cameras, config: ReconstructionConfig,
                 background: float, seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.images, self.masks, self.cameras, self.config = images, masks, cameras, config
        self.views, self.frames = images.shape[:2]
        self.times = matrix_times(self.frames)
        self.device = torch.device(device)
        self.background = torch.full((3,), float(background), device=self.device)
        self.generator = torch.Generator().manual_seed(seed)
        init = carve_gaussians(images[:, 0], masks[:, 0], cameras, config.gaussians, self.generator)
        self.params = {k: getattr(init, k).to(self.device).requires_grad_() for k in PARAMS}
        self.field = make_deformation(DeformationConfig(
            kind=config.deformation, width=config.deformation_width, depth=config.deformation_depth,
            pos_frequencies=6, time_frequencies=4)).to(self.device)
        self._make_optimizers(1.0)
        self.densifier = Densifier(DensifyConfig(start=config.densify_interval, interval=config.densify_interval,
                                                 stop=int(config.densify_until * config.steps),
                                                 opacity_reset_interval=10 ** 9), 1.0, self.generator)
        self.step_count = 0

    def _make_optimizers(self, scale: float) -> None:
        lrs = dict(LR, means=self.config.lr_means)
        self.optimizer = torch.optim.Adam([{"params": [self.params[k]], "lr": lrs[k] * scale, "name": k}
                                           for k in PARAMS], eps=1e-15)
        self.field_optimizer = torch.optim.Adam(self.field.parameters(), lr=self.config.lr_deformation)

    @property
    def warming_up(self) -> bool:
        return self.step_count < self.config.warmup_steps

    def gaussians(self) -> GaussianSet:
        return GaussianSet(*(self.params[k] for k in PARAMS))

    def scene(self) -> DeformableGaussianScene:
        """The current result as a detached scene (deformation switched on once warm-up is over)."""
        field = None
        if not self.warming_up:
            field = make_deformation(self.field.config)
            field.load_state_dict(self.field.state_dict())
        gaussians = GaussianSet(*(self.params[k].detach().clone() for k in PARAMS))
        return DeformableGaussianScene(gaussians, field, tile_size=8)

    def step(self) -> dict[str, float]:
        """One optimisation step; returns its losses."""
        cfg = self.config
        g = self.generator
        if self.step_count == cfg.warmup_steps and cfg.warmup_steps > 0:
            self._make_optimizers(cfg.canonical_lr_scale)   # Sec. 3.4: reduced canonical LR after warm-up
        k = min(cfg.images_per_step, self.views)
        views = torch.randperm(self.views, generator=g)[:k]
        f = 0 if self.warming_up else int(torch.randint(0, self.frames, (1,), generator=g))
        field = None if self.warming_up else self.field
        moved = deform_gaussians(self.gaussians(), field, self.times[f])
        cams = Cameras(self.cameras.c2w[views], self.cameras.K[views], self.cameras.width, self.cameras.height)
        out = render_gaussians(moved, cams.to(self.device), background=self.background, tile_size=8)
        target = self.images[views, f].to(self.device)
        mask = self.masks[views, f].to(self.device)
        # Sec. 3.4: a reduced loss scale away from the reference view (v = 0) and frame (f = 0).
        weight = torch.where((views == 0) | (f == 0), 1.0, cfg.far_loss_scale).to(self.device)
        l1 = ((out.rgb - target).abs().mean((1, 2, 3)) * weight).mean()
        d_ssim = ((1 - ssim(out.rgb, target)) * weight).mean()
        mask_loss = ((out.alpha - mask).square().mean((1, 2, 3)) * weight).mean()
        loss = (1 - cfg.ssim_weight) * l1 + cfg.ssim_weight * d_ssim + cfg.mask_weight * mask_loss
        self.optimizer.zero_grad(set_to_none=True)
        self.field_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.densifier.step(self.step_count + 1, self.params, self.optimizer, out)
        self.optimizer.step()
        if field is not None:
            self.field_optimizer.step()
        self.step_count += 1
        return {"loss": loss.item(), "l1": l1.item(), "mask": mask_loss.item(), "gaussians": float(len(moved))}

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
        self._make_optimizers(1.0 if self.warming_up else self.config.canonical_lr_scale)
        self.densifier.stats = None


def masks_from_images(images: Tensor, background: float, threshold: float = 0.08) -> Tensor:
    """Soft subject masks ``[..., H, W, 1]`` of generated images ``[..., H, W, 3]`` on a flat background."""
    dist = (images - background).abs().amax(-1, keepdim=True)
    soft = ((dist - 0.5 * threshold) / (0.5 * threshold)).clamp(0, 1)
    flat = soft.reshape(-1, 1, *soft.shape[-3:-1])
    # A 3 x 3 closing removes pinholes where the subject's colour touches the background's.
    closed = -F.max_pool2d(-F.max_pool2d(flat, 3, 1, 1), 3, 1, 1)
    return closed.reshape(soft.shape)
