"""`toy-fit`: fit a voxel volume to renders of a moving coloured sphere.

The smallest real pipeline: Adam steps on a :class:`renderers.voxels.VoxelScene` against an
analytic ray-traced target, with progress, previews, scene updates, checkpoints and resume. The
job runner, the command line and the studio are tested with it; ``preview`` runs in seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

from pipelines.config import Config
from pipelines.registry import PipelineInfo, register_pipeline


@dataclass(frozen=True)
class ToyFitConfig(Config):
    schema_version: ClassVar[int] = 1
    presets: ClassVar[dict] = {
        "preview": {},
        "standard": {"steps": 600, "resolution": 48, "frames": 5, "image_size": 64, "views_per_step": 4,
                     "samples_per_ray": 96, "lr": 0.1},
        "paper": {"steps": 2000, "resolution": 96, "frames": 9, "image_size": 128, "views_per_step": 4,
                  "samples_per_ray": 192, "lr": 0.1},
    }

    steps: int = field(default=120, metadata={"help": "Adam steps"})
    resolution: int = field(default=20, metadata={"help": "voxels per axis of the fitted grid"})
    frames: int = field(default=3, metadata={"help": "grids over time (1 = static)"})
    image_size: int = field(default=24, metadata={"help": "training render size in pixels"})
    views_per_step: int = field(default=2, metadata={"help": "random cameras per step"})
    samples_per_ray: int = field(default=32, metadata={"help": "ray-marching samples per ray"})
    lr: float = field(default=0.15, metadata={"help": "Adam learning rate"})
    preview_every: int = field(default=25, metadata={"help": "steps between preview images"})
    preview_size: int = field(default=48, metadata={"help": "preview tile size in pixels"})
    scene_every: int = field(default=50, metadata={"help": "steps between scene updates for the viewer"})
    step_delay_s: float = field(default=0.0, metadata={"help": "extra seconds per step (simulates a slow model)"})

    def __post_init__(self) -> None:
        for name in ("steps", "resolution", "frames", "image_size", "views_per_step", "samples_per_ray",
                     "preview_every", "preview_size", "scene_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"'{name}' must be at least 1")
        if self.resolution < 2:
            raise ValueError("'resolution' must be at least 2")


# -------------------------------------------------------------------- the target
SPHERE_RADIUS = 0.4


def sphere_centre(t: float) -> tuple[float, float, float]:
    """The target sphere slides along x and bobs in z over t in [0, 1]."""
    return (-0.45 + 0.9 * t, 0.0, 0.15 * math.sin(2 * math.pi * t))


def render_target(cameras, t: float):
    """Analytic render of the target: rgb (premultiplied) ``[C, H, W, 3]`` and alpha ``[C, H, W, 1]``.
    The colour follows the surface normal, so every side of the sphere looks different."""
    import torch

    origins, dirs = cameras.rays()
    centre = torch.tensor(sphere_centre(t), dtype=origins.dtype, device=origins.device)
    oc = origins - centre
    b = (oc * dirs).sum(-1, keepdim=True)
    c = (oc * oc).sum(-1, keepdim=True) - SPHERE_RADIUS**2
    disc = b * b - c
    hit = (disc > 0) & (-b - disc.clamp_min(0).sqrt() > 0)
    depth = -b - disc.clamp_min(0).sqrt()
    normal = (origins + depth * dirs - centre) / SPHERE_RADIUS
    colour = 0.1 + 0.8 * (0.5 * normal + 0.5)
    alpha = hit.to(origins.dtype)
    return colour * alpha, alpha


# -------------------------------------------------------------------- the pipeline
def run(inputs: dict[str, str], config: ToyFitConfig, context) -> Iterator:
    """Fit; yields Progress every step, Preview / SceneUpdate periodically; returns the VoxelScene."""
    import torch
    import torch.nn.functional as F

    from pipelines.checkpoints import load_optimizer_state, optimizer_state
    from pipelines.events import EtaEstimator, Log, Preview, Progress, SceneUpdate
    from renderers.cameras import CameraRanges, orbit_cameras, sample_cameras
    from renderers.voxels import VoxelScene

    device = context.device
    scene = VoxelScene.empty(config.resolution, config.frames, samples_per_ray=config.samples_per_ray,
                             device=device)
    scene.grid = torch.nn.Parameter(scene.grid)
    optimizer = torch.optim.Adam([scene.grid], lr=config.lr)
    start = 0
    if (ckpt := context.last_checkpoint()) is not None:
        with torch.no_grad():
            scene.grid.copy_(ckpt.state["grid"])
        load_optimizer_state(optimizer, ckpt.state, ckpt.extra["optimizer"])
        start = ckpt.step
        yield Log(f"resumed from the checkpoint after step {start}")

    def state():
        tensors, meta = optimizer_state(optimizer)
        return {"grid": scene.grid, **tensors}, {"optimizer": meta}

    def checkpoint_state():
        return state()[0]

    def checkpoint_extra():
        return state()[1]

    ranges = CameraRanges(distance=(2.6, 3.2), elevation=(-15.0, 60.0), fovy=(40.0, 45.0))
    preview_cams = orbit_cameras(3.0, 20.0, 30.0, 42.0, config.preview_size, config.preview_size)
    eta = EtaEstimator(config.steps)
    for step in range(start, config.steps):
        generator = context.generator(offset=step)
        cameras = sample_cameras(config.views_per_step, ranges, config.image_size, config.image_size,
                                 generator=generator)
        t = float(torch.rand((), generator=generator))
        target_rgb, target_alpha = render_target(cameras, t)
        out = scene.render(cameras.to(device), t, generator=generator)
        loss = F.mse_loss(out.rgb, target_rgb.to(device)) + F.mse_loss(out.alpha, target_alpha.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if config.step_delay_s:
            time.sleep(config.step_delay_s)
        done = step + 1
        yield Progress("fit", done, config.steps, {"loss": loss.item()}, eta_s=eta.update(done))
        if done % config.preview_every == 0 or done == config.steps:
            yield Preview("target vs fit", image=_preview(scene, preview_cams), grid=(2, 3), step=done)
        if done % config.scene_every == 0 and done < config.steps:
            yield SceneUpdate(scene=scene.detach(), step=done)
        context.step_done(done, checkpoint_state, checkpoint_extra)
    return scene.detach()


def _preview(scene, cameras):
    """Top row the target, bottom row the fit, at t = 0, 0.5, 1: ``[2 * S, 3 * S, 3]`` uint8."""
    import torch

    from pipelines.events import preview_pixels

    rows = [[], []]
    with torch.no_grad():
        for t in (0.0, 0.5, 1.0):
            rows[0].append(render_target(cameras, t)[0][0])
            rows[1].append(scene.render(cameras.to(scene.grid.device), t).rgb[0].cpu())
    image = torch.cat([torch.cat(row, 1) for row in rows], 0)
    return preview_pixels(image)


register_pipeline(PipelineInfo(
    name="toy-fit",
    title="Fit a voxel volume to a moving coloured sphere (a test of the job machinery)",
    config_cls=ToyFitConfig,
    entry="pipelines.toy:run",
    inputs=(),
    oom_hint="image_size",
))
