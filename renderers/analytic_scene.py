"""A small analytic moving scene rendered exactly from rays: the ground truth the field renderer is fitted
to in tests, the fitting example and the benchmark.

A red ball travels along +x while a blue box spins about +z beneath it; both are opaque with solid
colours. Images are anti-aliased by averaging ``supersample^2`` rays per pixel, so edges carry partial
alpha a volume can match.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from renderers.cameras import Cameras
from renderers.scene import RenderOutput

BALL_COLOR = (0.9, 0.25, 0.15)
BOX_COLOR = (0.15, 0.4, 0.9)
BALL_RADIUS = 0.3
BOX_HALF = 0.28


def ball_centre(t: float) -> Tensor:
    return torch.tensor([-0.4 + 0.8 * t, 0.0, 0.25])


def box_pose(t: float) -> tuple[Tensor, Tensor]:
    """Centre ``[3]`` and rotation ``[3, 3]`` (local -> world) of the box at time ``t``."""
    a = math.pi / 2 * t
    rot = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    return torch.tensor([0.0, 0.0, -0.35]), rot


def _sphere_hit(o: Tensor, d: Tensor, centre: Tensor, radius: float) -> Tensor:
    oc = o - centre
    b = (oc * d).sum(-1)
    c = (oc * oc).sum(-1) - radius**2
    disc = b * b - c
    t = -b - disc.clamp_min(0).sqrt()
    return torch.where((disc > 0) & (t > 0), t, torch.full_like(t, math.inf))


def _box_hit(o: Tensor, d: Tensor, centre: Tensor, rot: Tensor, half: float) -> Tensor:
    lo, ld = (o - centre) @ rot, d @ rot  # into the box frame
    safe = torch.where(ld.abs() < 1e-12, torch.full_like(ld, 1e-12), ld)
    t0, t1 = (-half - lo) / safe, (half - lo) / safe
    near = torch.minimum(t0, t1).amax(-1)
    far = torch.maximum(t0, t1).amin(-1)
    return torch.where((far > near) & (near > 0), near, torch.full_like(near, math.inf))


def trace(origins: Tensor, directions: Tensor, t: float) -> tuple[Tensor, Tensor, Tensor]:
    """Exact first hit of rays ``[N, 3]``: colour ``[N, 3]`` (0 on a miss), hit ``[N]`` bool, distance ``[N]``."""
    t_ball = _sphere_hit(origins, directions, ball_centre(t), BALL_RADIUS)
    t_box = _box_hit(origins, directions, *box_pose(t), BOX_HALF)
    dist = torch.minimum(t_ball, t_box)
    hit = torch.isfinite(dist)
    color = torch.where((t_ball <= t_box)[:, None], torch.tensor(BALL_COLOR), torch.tensor(BOX_COLOR))
    return color * hit[:, None], hit, torch.where(hit, dist, torch.zeros_like(dist))


def render_analytic(cameras: Cameras, t: float, supersample: int = 3) -> RenderOutput:
    """Exact anti-aliased render of the analytic scene (rgb premultiplied, as the Scene protocol says)."""
    cams = cameras.to(dtype=torch.float32)
    s = supersample
    big = cams.resized(cams.width * s, cams.height * s)
    origins, directions = big.rays()
    C, H, W = len(cams), cams.height, cams.width
    color, hit, dist = trace(origins.reshape(-1, 3), directions.reshape(-1, 3), t)
    forward = big.c2w[:, :3, 2]
    depth = dist.view(C, -1) * (directions.view(C, -1, 3) * forward[:, None]).sum(-1)

    def pool(x: Tensor) -> Tensor:
        x = x.reshape(C, H, s, W, s, -1)
        return x.mean(dim=(2, 4))

    rgb = pool(color)
    alpha = pool(hit.float()[:, None])
    depth_sum = pool(depth.reshape(-1, 1))
    depth = torch.where(alpha > 0, depth_sum / alpha.clamp_min(1e-8), torch.zeros_like(alpha))
    return RenderOutput(rgb, alpha, depth)


def analytic_views(times, views_per_time: int = 8, size: int = 32, *, elevations=(15.0, 40.0),
                   azimuth_offset: float = 20.0, distance: float = 3.0, fovy: float = 40.0):
    """Multi-view, multi-time ground truth: for each of ``times`` a ring of ``views_per_time`` cameras
    (alternating ``elevations``, the ring turned by ``azimuth_offset`` degrees per time so that times see
    different sides). Returns ``(cameras, times, images, alphas)`` lists, one entry per time."""
    from renderers.cameras import orbit_cameras

    cameras, images, alphas = [], [], []
    for i, t in enumerate(times):
        azimuth = torch.linspace(0, 360, views_per_time + 1)[:-1] + azimuth_offset * i
        elevation = torch.tensor(elevations).repeat(views_per_time // len(elevations) + 1)[:views_per_time]
        cams = orbit_cameras(distance, elevation, azimuth, fovy, size, size)
        truth = render_analytic(cams, float(t))
        cameras.append(cams)
        images.append(truth.rgb)
        alphas.append(truth.alpha)
    return cameras, [float(t) for t in times], images, alphas


def analytic_batches(rays: int, size: int = 32, *, distance: tuple[float, float] = (2.6, 3.4),
                     elevation: tuple[float, float] = (0.0, 50.0), fovy: float = 40.0):
    """Training rays from the exact scene at any time: each batch draws a time in [0, 1] and ``rays`` pixels
    (jittered inside the pixel) of four random orbit cameras, and traces them. Returns a callable
    ``sample(generator) -> renderers.field_fit.RayBatch``."""
    from renderers.cameras import CameraRanges, sample_cameras
    from renderers.field_fit import RayBatch

    ranges = CameraRanges(distance=distance, elevation=elevation, fovy=(fovy, fovy))

    def sample(generator: torch.Generator) -> RayBatch:
        t = float(torch.rand((), generator=generator))
        cams = sample_cameras(4, ranges, size, size, generator=generator, uniform_sphere=False)
        pixels = torch.rand(4, rays // 4, 2, generator=generator) * size
        origins, directions = cams.rays(pixels=pixels)
        origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
        color, hit, _ = trace(origins, directions, t)
        return RayBatch(origins, directions, t, color, hit.float()[:, None])

    return sample
