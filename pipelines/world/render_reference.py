"""The world renderer as it was at ``RENDER_VERSION`` 1, kept unchanged as the reference the fast renderer in
:mod:`pipelines.world.render` is checked against (tests/test_world_render_parity.py, benchmarks/world.py).
Nothing at run time uses it. Its dataset caches, the bundled classifier and the in-house prior were made with
these pictures, so the fast path must keep reproducing them.

Each camera may have its own time, so a V x F image matrix is one call. Rays that miss the
object's bounding ball never step; the rest step until they hit (|d| < ``HIT_EPS``) or leave the
ball, and finished rays are dropped from the working set as they finish. Anti-aliasing is
adaptive: only pixels on a silhouette or a depth jump are traced again with four
rotated-grid sub-samples, which are averaged with the centre sample.

    out = render_world(spec, cameras, t=0.25)         # WorldRender: rgb, alpha, depth, normal
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from pipelines.world.grammar import WorldSpec

# Constants, the result type, the one-thread guard and the per-camera times are the fast renderer's own:
# only the tracing below is frozen.
from pipelines.world.render import (
    _SUBSAMPLES,
    AMBIENT,
    AMBIENT_SKY,
    CONE_PIXELS,
    DIFFUSE,
    HIT_EPS,
    LIGHT_DIR,
    MAX_STEPS,
    NORMAL_STEP,
    PATTERN_CONTRAST,
    REFINE_STEPS,
    RELAX,
    SHININESS,
    SPECULAR,
    WorldRender,
    _times_for,
    one_thread,
)
from pipelines.world.sdf import LOCAL_BOX, LOCAL_SDF, Pose, pose_at, sdf_capsules, to_local
from renderers.cameras import Cameras


def _pose_parts(pose: Pose, frame: Tensor | None, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """Rotation ``[N, 3, 3]`` (or ``[1, 3, 3]``), centre and scale of each of ``n`` rays' poses."""
    if frame is None or len(pose) == 1:
        return pose.rotation[:1], pose.centre[:1], pose.scale[:1]
    return pose.rotation[frame], pose.centre[frame], pose.scale[frame]


def _segments(pose: Pose, frame: Tensor | None) -> tuple[Tensor, Tensor, Tensor] | None:
    if pose.seg_a is None:
        return None
    if frame is None or len(pose) == 1:
        return pose.seg_a[0], pose.seg_b[0], pose.seg_r
    return pose.seg_a[frame], pose.seg_b[frame], pose.seg_r


def _select(segments, mask: Tensor):
    """The per-ray walker segments of the rays in ``mask`` (shared segments pass through)."""
    if segments is None or segments[0].ndim == 2:
        return segments
    return segments[0][mask], segments[1][mask], segments[2]


def _sdf(shape: str, q: Tensor, segments) -> Tensor:
    if segments is not None:
        return sdf_capsules(q, *segments)
    return LOCAL_SDF[shape](q)


def trace(shape: str, pose: Pose, origins: Tensor, dirs: Tensor, frame: Tensor | None,
          max_steps: int = MAX_STEPS, hit_eps: float = HIT_EPS, cone: float = 0.0) -> Tensor:
    """Sphere-trace rays ``[N, 3]`` (unit ``dirs``) against the posed shape; ray parameter ``[N]`` of the hit,
    ``inf`` for a miss. ``frame`` ``[N]`` picks each ray's pose (None: pose 0 for all).

    Rays are moved into the shape's local frame once (rotation and uniform scale keep the SDF exact), so each
    step is one local SDF evaluation. A ray counts as hitting once it is within ``cone`` times its length of
    the surface (a fraction of a pixel: rays grazing a silhouette stop there instead of creeping along it);
    up to ``REFINE_STEPS`` more steps then bring it within ``hit_eps`` (frontal hits converge in one or two),
    and rays that do not converge passed the surface without touching it.
    """
    n = origins.shape[0]
    rot, centre, scale = _pose_parts(pose, frame, n)
    o_local = torch.einsum("ni,nij->nj", origins - centre, rot.expand(n, 3, 3)) / scale[:, None].expand(n, 1)
    d_local = torch.einsum("ni,nij->nj", dirs, rot.expand(n, 3, 3))
    # Enter/leave the local bounding box (slab test); distances below are local until the end.
    lo, hi = (torch.tensor(corner) for corner in LOCAL_BOX[shape])
    inv = 1.0 / torch.where(d_local.abs() < 1e-12, torch.full_like(d_local, 1e-12), d_local)
    t0, t1 = (lo - 1e-3 - o_local) * inv, (hi + 1e-3 - o_local) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp(min=0)
    far = torch.maximum(t0, t1).amin(-1)
    result = torch.full((n,), math.inf)
    idx = torch.nonzero(far > near).squeeze(1)
    o, d, t, t_far = o_local[idx], d_local[idx], near[idx], far[idx]
    seg_frame = None if frame is None or len(pose) == 1 else frame[idx]
    segments = _segments(pose, seg_frame)
    local_eps = hit_eps / float(pose.scale.min())
    pending_idx, pending_t = [], []  # rays within the cone, resolved together after the loop (fewer small ops)
    for _ in range(max_steps):
        if idx.numel() == 0:
            break
        dist = _sdf(shape, torch.addcmul(o, d, t[:, None]), segments)
        t = t + dist
        hit = dist < torch.clamp(cone * t, min=local_eps)
        done = hit | (t > t_far)
        if bool(done.any()):
            pending_idx.append(idx[hit])
            pending_t.append(t[hit])
            keep = ~done
            idx, o, d, t, t_far = idx[keep], o[keep], d[keep], t[keep], t_far[keep]
            segments = _select(segments, keep)
    # Rays still stepping after max_steps are creeping along a surface: resolve them like the others.
    pending_idx.append(idx)
    pending_t.append(t)
    idx, t = torch.cat(pending_idx), torch.cat(pending_t)
    if idx.numel():
        segments = _segments(pose, None if frame is None or len(pose) == 1 else frame[idx])
        t_hit, is_hit = _resolve(shape, o_local[idx], d_local[idx], t, segments, local_eps)
        result[idx[is_hit]] = t_hit[is_hit]
    return result * scale.expand(n)


def _resolve(shape: str, o: Tensor, d: Tensor, t: Tensor, segments, eps: float) -> tuple[Tensor, Tensor]:
    """Decide rays that came within the cone of the surface: did they hit it, and where exactly?

    Plain sphere tracing crawls along a silhouette, and a ray that passes the surface just outside looks
    the same as one that grazes it. Over-relaxed steps (``RELAX`` times the distance) settle it: a hit
    crosses the surface (the distance turns negative; a secant step and exact SDF steps then land on it),
    a miss passes its closest approach (the distance grows). Returns ``t`` ``[M]`` and ``hit`` ``[M]``.
    """
    m = t.shape[0]
    t_out, hit = t.clone(), torch.zeros(m, dtype=torch.bool)
    live = torch.arange(m)
    dist = _sdf(shape, torch.addcmul(o, d, t[:, None]), segments)
    for _ in range(REFINE_STEPS):
        if live.numel() == 0:
            break
        t_new = t + RELAX * dist
        d_new = _sdf(shape, torch.addcmul(o, d, t_new[:, None]), segments)
        converged = d_new.abs() < eps
        crossed = d_new < 0
        receding = (d_new >= dist) & ~converged & ~crossed
        settled = converged | crossed
        if bool(settled.any()):
            secant = t + dist * (t_new - t) / (dist - d_new).clamp(min=1e-12)
            ts = torch.where(crossed, secant, t_new)[settled]
            so, sd, sseg = o[settled], d[settled], _select(segments, settled)
            for _ in range(2):  # exact SDF steps from either side converge onto the crossing
                ts = ts + _sdf(shape, torch.addcmul(so, sd, ts[:, None]), sseg)
            t_out[live[settled]] = ts
            hit[live[settled]] = True
        keep = ~(settled | receding)
        live, o, d, t, dist = live[keep], o[keep], d[keep], t_new[keep], d_new[keep]
        segments = _select(segments, keep)
    return t_out, hit


def normals(shape: str, pose: Pose, points: Tensor, frame: Tensor | None) -> Tensor:
    """Unit world normals ``[N, 3]`` by central differences of the local SDF, rotated to world."""
    n = points.shape[0]
    rot, _, _ = _pose_parts(pose, frame, n)
    q = to_local(pose, points, frame)
    offsets = torch.eye(3) * (NORMAL_STEP / float(pose.scale.min()))
    probe = torch.cat([q[None] + offsets[:, None], q[None] - offsets[:, None]]).reshape(-1, 3)
    segments = _segments(pose, None if frame is None or len(pose) == 1 else frame.repeat(6))
    d = _sdf(shape, probe, segments).reshape(6, n)
    grad = torch.einsum("nj,nij->ni", (d[:3] - d[3:]).T, rot.expand(n, 3, 3))
    return grad / grad.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def albedo_at(spec: WorldSpec, pose: Pose, points: Tensor, frame: Tensor | None) -> Tensor:
    """Surface colour ``[N, 3]``: the palette colour with a faint soft checker fixed to the object (local
    frame), which makes a spinning sphere visibly spin. Its edges are smooth so that it needs no
    anti-aliasing. The walker's limbs move through its frame, so it has none."""
    base = torch.tensor(spec.albedo)
    if spec.shape == "walker":
        return base.expand(points.shape[0], 3)
    q = to_local(pose, points, frame)
    wave = torch.sin(2 * math.pi * q).prod(-1)
    dark = 0.5 + 0.5 * (4 * wave).clamp(-1, 1)
    return base * (1 - PATTERN_CONTRAST * dark)[:, None]


def shade(spec: WorldSpec, albedo: Tensor, normal: Tensor, view_dirs: Tensor | None) -> Tensor:
    """Lit colour ``[N, 3]`` in [0, 1]; ``view_dirs`` (ray directions) add the glossy highlight, None leaves only
    the diffuse part (view-independent, for voxel colour)."""
    light = torch.tensor(LIGHT_DIR)
    light = light / light.norm()
    lambert = (normal @ light).clamp(min=0)
    rgb = albedo * (AMBIENT + AMBIENT_SKY * normal[:, 2] + DIFFUSE * lambert)[:, None]
    if spec.material == "glossy" and view_dirs is not None:
        half = light - view_dirs
        half = half / half.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        highlight = SPECULAR * (normal * half).sum(-1).clamp(min=0) ** SHININESS
        rim = 0.12 * (1 + (normal * view_dirs).sum(-1)).clamp(0, 1) ** 4  # a faint Fresnel rim
        rgb = rgb + (highlight + rim)[:, None]
    return rgb.clamp(0, 1)


def _shade_rays(spec: WorldSpec, pose: Pose, origins: Tensor, dirs: Tensor, frame: Tensor | None,
                forward: Tensor, cone: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Trace and shade rays ``[N, 3]``: rgb ``[N, 3]`` (0 on a miss), hit ``[N]`` bool, depth ``[N]`` (camera z
    along ``forward`` ``[N, 3]``), normal ``[N, 3]``."""
    t = trace(spec.shape, pose, origins, dirs, frame, cone=cone)
    hit = torch.isfinite(t)
    n = origins.shape[0]
    rgb, depth, normal = torch.zeros(n, 3), torch.zeros(n), torch.zeros(n, 3)
    if bool(hit.any()):
        sel = torch.nonzero(hit).squeeze(1)
        f = None if frame is None else frame[sel]
        points = origins[sel] + dirs[sel] * t[sel, None]
        nrm = normals(spec.shape, pose, points, f)
        rgb[sel] = shade(spec, albedo_at(spec, pose, points, f), nrm, dirs[sel])
        normal[sel] = nrm
        depth[sel] = t[sel] * (dirs[sel] * forward[sel]).sum(-1)
    return rgb, hit, depth, normal


def _edge_pixels(alpha: Tensor, rgb: Tensor, depth: Tensor) -> Tensor:
    """Pixels ``[C, H, W]`` whose 3x3 neighbourhood holds a silhouette or a depth jump (the surface pattern is
    smooth and needs none)."""
    a = alpha[:, None]
    mixed = (F.max_pool2d(a, 3, 1, 1) - (-F.max_pool2d(-a, 3, 1, 1))) > 0
    d = depth[:, None]
    d_jump = (F.max_pool2d(d, 3, 1, 1) + F.max_pool2d(-d, 3, 1, 1)) > 0.03 * d.clamp(min=1e-3)
    return (mixed | d_jump)[:, 0]


def render_world(spec: WorldSpec, cameras: Cameras, t: float | Tensor = 0.0, *, antialias: bool = True,
                 pose: Pose | None = None) -> WorldRender:
    """Render ``spec`` from ``cameras`` [C] at time ``t`` (a float, or ``[C]``: one time per camera)."""
    with one_thread(), torch.no_grad():
        return _render(spec, cameras, t, antialias, pose)


def _render(spec: WorldSpec, cameras: Cameras, t: float | Tensor, antialias: bool, pose: Pose | None
            ) -> WorldRender:
    cameras = cameras.to("cpu", torch.float32)
    times = _times_for(cameras, t)
    pose = pose_at(spec, times) if pose is None else pose
    c, h, w = len(cameras), cameras.height, cameras.width
    origins, dirs = cameras.rays()
    origins, dirs = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    camera_of_ray = torch.arange(c).repeat_interleave(h * w)
    frame = None if len(pose) == 1 else camera_of_ray
    forward_per_cam = cameras.c2w[:, :3, 2]
    forward = forward_per_cam[camera_of_ray]
    cone = CONE_PIXELS / float(cameras.K[:, 0, 0].max())
    rgb, hit, depth, normal = _shade_rays(spec, pose, origins, dirs, frame, forward, cone)
    rgb, alpha = rgb.reshape(c, h, w, 3), hit.float().reshape(c, h, w)
    depth, normal = depth.reshape(c, h, w), normal.reshape(c, h, w, 3)
    if antialias:
        edge = _edge_pixels(alpha, rgb, depth)
        cam_i, y, x = torch.nonzero(edge, as_tuple=True)
        if cam_i.numel():
            k = len(_SUBSAMPLES)
            offsets = torch.tensor(_SUBSAMPLES)
            u = (x.float() + 0.5)[:, None] + offsets[None, :, 0]
            v = (y.float() + 0.5)[:, None] + offsets[None, :, 1]
            cam_k = cam_i.repeat_interleave(k)
            K, c2w = cameras.K[cam_k], cameras.c2w[cam_k]
            cam_dirs = torch.stack([(u.reshape(-1) - K[:, 0, 2]) / K[:, 0, 0],
                                    (v.reshape(-1) - K[:, 1, 2]) / K[:, 1, 1], torch.ones(u.numel())], -1)
            sub_dirs = torch.einsum("nij,nj->ni", c2w[:, :3, :3], cam_dirs)
            sub_dirs = sub_dirs / sub_dirs.norm(dim=-1, keepdim=True)
            sub_origins = c2w[:, :3, 3]
            sub_frame = None if frame is None else cam_k
            s_rgb, s_hit, s_depth, s_normal = _shade_rays(spec, pose, sub_origins, sub_dirs, sub_frame,
                                                          forward_per_cam[cam_k], cone)
            s_rgb, s_hit = s_rgb.reshape(-1, k, 3), s_hit.float().reshape(-1, k)
            s_depth, s_normal = s_depth.reshape(-1, k), s_normal.reshape(-1, k, 3)
            centre_hit = alpha[cam_i, y, x]
            n_samples = k + 1
            rgb[cam_i, y, x] = (rgb[cam_i, y, x] + s_rgb.sum(1)) / n_samples
            hits = centre_hit + s_hit.sum(1)
            alpha[cam_i, y, x] = hits / n_samples
            # Depth and normal stay point samples of the pixel centre where it hits (exact, and no blend of
            # two surfaces across a depth jump); a centre that misses takes the mean of its sub-samples' hits.
            centre_missed = centre_hit == 0
            sub_hits = s_hit.sum(1)
            mean_depth = s_depth.sum(1) / sub_hits.clamp(min=1)
            depth[cam_i, y, x] = torch.where(centre_missed, mean_depth, depth[cam_i, y, x])
            mean_normal = s_normal.sum(1)
            mean_normal = mean_normal / mean_normal.norm(dim=-1, keepdim=True).clamp(min=1e-12)
            normal[cam_i, y, x] = torch.where(centre_missed[:, None], mean_normal, normal[cam_i, y, x])
    return WorldRender(rgb, alpha[..., None], depth[..., None], normal)
