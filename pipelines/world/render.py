"""The exact renderer of the procedural world: sphere tracing of analytic SDFs, and voxel grids.

Each camera may have its own time, so a V x F image matrix is one call. Rays are moved into the
local frame of their camera's pose once; rays that miss the shape's local box (and, for the shapes
that turn about z, a tight ball and z-cylinder) never step; the rest step until they come within a
fraction of a pixel of the surface or leave those bounds, and finished rays are dropped from the
working set as they finish. Anti-aliasing is adaptive: only pixels on a silhouette or a depth jump
are traced again with four rotated-grid sub-samples, which are averaged with the centre sample.

Speed: the working set is a ``[rows, N]`` tensor with contiguous coordinates (the SDFs read columns),
so each step is one gather and a few dozen whole-tensor ops; ``render_reference`` keeps the slower
tracer this one replaced, whose pictures it reproduces (tests/test_world_render_parity.py).

    out = render_world(spec, cameras, t=0.25)         # WorldRender: rgb, alpha, depth, normal
    grid = voxelize(spec, t=0.25, resolution=32)      # VoxelGrid: density [R, R, R], rgb [R, R, R, 3]
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pipelines.world.grammar import WorldSpec
from pipelines.world.sdf import LOCAL_BOX, LOCAL_GRADIENT, LOCAL_RADII, LOCAL_SDF, Pose, pose_at, to_local, world_sdf
from renderers.cameras import Cameras

HIT_EPS = 1e-4
CONE_PIXELS = 0.2  # a ray hits once it is this many pixels' footprint from the surface (then it is refined)
REFINE_STEPS = 16
RELAX = 1.8
MAX_STEPS = 128
NORMAL_STEP = 5e-4

# World lighting: a key light from above and in front of azimuth 30 deg, plus a sky/ground ambient, so that
# diffuse appearance is the same from every view (the priors learn 3D-consistent colour).
LIGHT_DIR = (0.45, 0.3, 0.84)
AMBIENT, AMBIENT_SKY, DIFFUSE = 0.3, 0.12, 0.66
SPECULAR, SHININESS = 0.6, 48.0
PATTERN_CONTRAST = 0.2  # darkening of alternate cells of the surface checker, so spins show on round shapes

# Rotated-grid sub-pixel offsets for the edge pixels (in pixels, from the centre).
_SUBSAMPLES = ((-0.125, -0.375), (0.375, -0.125), (0.125, 0.375), (-0.375, 0.125))


@dataclass
class WorldRender:
    """``rgb`` ``[C, H, W, 3]`` premultiplied by ``alpha`` ``[C, H, W, 1]``; ``depth`` ``[C, H, W, 1]``
    (camera z, 0 off the object); ``normal`` ``[C, H, W, 3]`` (world, unit on the object, 0 off it)."""

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    normal: Tensor

    def composite(self, background: Tensor | float) -> Tensor:
        """RGB over a background colour ``[3]`` or image ``[C, H, W, 3]``."""
        return self.rgb + (1 - self.alpha) * background


@dataclass
class VoxelGrid:
    """``density`` ``[R, R, R]`` occupancy in [0, 1] and ``rgb`` ``[R, R, R, 3]`` (lit diffuse colour), indexed
    [x, y, z] over the cube [-bound, bound]^3 at voxel centres."""

    density: Tensor
    rgb: Tensor
    bound: float


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside the block. Sphere tracing is many small ops (a few thousand rays per
    step); intra-op threads cost more than they give there, and on a loaded 2-core machine a 2-thread
    ``norm`` of 16k points measured 20x slower than a 1-thread one. Parallelise across processes instead."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _times_for(cameras: Cameras, t: float | Tensor) -> Tensor:
    times = torch.as_tensor(t, dtype=torch.float32).reshape(-1)
    if times.numel() == 1:
        return times
    if times.numel() != len(cameras):
        raise ValueError(f"{len(cameras)} cameras but {times.numel()} times")
    return times


@dataclass
class _Capsules:
    """The walker's limb capsules at each pose frame, laid out for the SDF: the rows of ``table`` ``[F, 7, K]``
    are a (x, y, z), b - a (x, y, z) and 1 / |b - a|^2; radii ``r`` ``[K]``."""

    table: Tensor
    r: Tensor
    balls: Tensor  # [F, 4, K]: centre (x, y, z) and radius of a ball around each capsule


def _capsules(pose: Pose) -> _Capsules | None:
    if pose.seg_a is None:
        return None
    ba = pose.seg_b - pose.seg_a
    length2 = (ba * ba).sum(-1)
    table = torch.cat([pose.seg_a.transpose(1, 2), ba.transpose(1, 2), 1.0 / length2.clamp(min=1e-12)[:, None]], 1)
    centre = pose.seg_a + 0.5 * ba
    balls = torch.cat([centre.transpose(1, 2), (0.5 * length2.sqrt() + pose.seg_r)[:, None]], 1)
    return _Capsules(table, pose.seg_r, balls)


def _near_capsules(capsules: _Capsules, o: Tensor, d: Tensor, frame: Tensor | None, margin: float) -> Tensor:
    """Which rays (``[3, N]`` origins, unit directions) pass within ``margin`` of a capsule's ball ``[N]`` bool.
    The others never come near the figure, so they cannot hit it."""
    balls = capsules.balls[0, :, None] if frame is None else capsules.balls[frame].transpose(0, 1)  # [4, N|1, K]
    ox, oy, oz = (balls[i] - o[i, :, None] for i in range(3))
    along = ox * d[0, :, None] + oy * d[1, :, None] + oz * d[2, :, None]
    return (ox * ox + oy * oy + oz * oz - along * along <= (balls[3] + margin) ** 2).any(-1)


def _sdf(shape: str, q: Tensor, capsules: _Capsules | None, frame: Tensor | None) -> Tensor:
    """Local signed distance ``[N]`` of points ``q`` ``[N, 3]`` (fastest as the transpose of a ``[3, N]`` tensor);
    ``frame`` ``[N]`` picks the walker's pose of each point (None: pose 0). The capsule union is
    ``sdf_capsules`` coordinate by coordinate, with b - a and its inverse squared length precomputed."""
    if capsules is None:
        return LOCAL_SDF[shape](q)
    table = capsules.table[0, :, None] if frame is None else capsules.table[frame].transpose(0, 1)  # [7, N|1, K]
    px, py, pz = (q[:, i, None] - table[i] for i in range(3))
    bx, by, bz = table[3], table[4], table[5]
    h = ((px * bx + py * by + pz * bz) * table[6]).clamp_(0, 1)
    return (_length3(px - bx * h, py - by * h, pz - bz * h) - capsules.r).amin(-1)


def _length3(x: Tensor, y: Tensor, z: Tensor) -> Tensor:
    return torch.sqrt(x * x + y * y + z * z)


def _matvec(m: Tensor, v: Tensor, index: Tensor | None = None) -> Tensor:
    """``m @ v`` column by column: ``m`` ``[3, 3]``, or ``[N, 3, 3]``, or a table ``[K, 3, 3]`` picked per column
    by ``index`` ``[N]``; ``v`` ``[3, N]``; returns ``[3, N]``."""
    if m.ndim == 2:
        return m @ v
    rows = m.reshape(-1, 9).T
    rows = rows.contiguous() if index is None else rows.index_select(1, index)
    return (rows.reshape(3, 3, -1) * v[None]).sum(1)


def _unit_columns(v: Tensor) -> Tensor:
    """Columns of ``v`` ``[3, N]`` scaled to unit length."""
    return v / _length3(v[0], v[1], v[2]).clamp(min=1e-12)


def _pose_rows(pose: Pose, frame: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Rotation ``[3, 3]`` or ``[N, 3, 3]``, centre and scale of each ray's pose (pose 0 for ``frame`` None)."""
    if frame is None:
        return pose.rotation[0], pose.centre[0], pose.scale[0]
    return pose.rotation[frame], pose.centre[frame], pose.scale[frame]


def _camera_frames(cameras: Cameras, pose: Pose) -> tuple[Tensor, Tensor]:
    """Each camera's centre in its pose's local frame ``[C, 3]`` and the rotation ``[C, 3, 3]`` from camera axes to
    local axes. Rotation and uniform scale keep the SDF exact, so a ray's local parameter times the pose's
    scale is its world parameter."""
    c = len(cameras)
    rot, centre, scale = (pose.rotation, pose.centre, pose.scale) if len(pose) > 1 else \
        (pose.rotation.expand(c, 3, 3), pose.centre.expand(c, 3), pose.scale.expand(c))
    eye = cameras.c2w[:, :3, 3]
    origin = torch.bmm((eye - centre)[:, None], rot)[:, 0] / scale[:, None]
    return origin, rot.transpose(1, 2) @ cameras.c2w[:, :3, :3]


def _enter_leave(o: Tensor, d: Tensor, radius: float) -> tuple[Tensor, Tensor]:
    """Ray parameters ``[N]`` where rays ``o + t d`` (``[2, N]``: x and y) enter and leave the z-cylinder of
    ``radius`` (empty interval: enter > leave; a ray parallel to the axis never leaves)."""
    a = d[0] * d[0] + d[1] * d[1]
    b = o[0] * d[0] + o[1] * d[1]
    c = o[0] * o[0] + o[1] * o[1] - radius * radius
    disc = b * b - a * c
    parallel, inside = a < 1e-12, c <= 0
    root, a = disc.clamp(min=0).sqrt(), a.clamp(min=1e-12)
    t_in = torch.where(disc < 0, math.inf, (-b - root) / a)
    t_out = (-b + root) / a
    t_in = torch.where(parallel, torch.where(inside, -math.inf, math.inf), t_in)
    t_out = torch.where(parallel, torch.where(inside, math.inf, -math.inf), t_out)
    return t_in, t_out


def _march(shape: str, capsules: _Capsules | None, o: Tensor, d: Tensor, frame: Tensor | None, eps: float,
           cone: float, max_steps: int) -> tuple[Tensor, Tensor]:
    """Sphere-trace local rays (origins and unit directions ``[3, N]``) from where they enter the local box until
    each comes within ``cone`` times its length of the surface (at least ``eps``), leaves the box or runs
    out of steps. Returns the indices ``[M]`` of the rays that did not leave the box and their parameters.

    Rays that miss a ball about the origin go no further (a dozen ops per ray, for every pixel); the rest
    also need to cross the box and, for the shapes that turn about z, a tight z-cylinder. Rays that miss
    these never come near the surface, and rays past where they leave them only move away from it: they
    stop there. (Stepping still starts at the box: a later start changes which grazing rays the
    refinement calls hits.) The working set is one tensor of rows (origin, direction, t, t_far, ray index,
    frame), coordinates contiguous, so that dropping finished rays is one gather and each step is one SDF
    evaluation of the live rays only.
    """
    lo_corner, hi_corner = LOCAL_BOX[shape]
    if shape in LOCAL_RADII:
        ball = LOCAL_RADII[shape][0] + 1e-3
    else:  # around the box, grown like the box below
        ball = math.hypot(*(max(-lo, hi) + 1e-3 for lo, hi in zip(lo_corner, hi_corner))) + 1e-3
    b = o[0] * d[0] + o[1] * d[1] + o[2] * d[2]
    c = o[0] * o[0] + o[1] * o[1] + o[2] * o[2] - ball * ball
    disc = b * b - c
    ray = torch.nonzero((disc > 0) & ((b < 0) | (c < 0))).squeeze(1)
    root = disc[ray].sqrt()
    b, o, d = b[ray], o[:, ray], d[:, ray]
    frame = None if frame is None else frame[ray]
    lo, hi = (torch.tensor(corner)[:, None] for corner in (lo_corner, hi_corner))
    inv = 1.0 / torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    t0, t1 = (lo - 1e-3 - o) * inv, (hi + 1e-3 - o) * inv
    t_in, t_out = torch.minimum(t0, t1), torch.maximum(t0, t1)
    near = torch.maximum(torch.maximum(t_in[0], t_in[1]), t_in[2]).clamp(min=0)
    far = torch.minimum(torch.minimum(t_out[0], t_out[1]), torch.minimum(t_out[2], root - b))
    live = far > torch.maximum(near, -b - root)
    if shape in LOCAL_RADII:
        t_in, t_out = _enter_leave(o, d, LOCAL_RADII[shape][1] + 1e-3)
        live &= t_out > torch.maximum(near, t_in)
        far = torch.minimum(far, t_out)
    keep = torch.nonzero(live).squeeze(1)
    if capsules is not None:  # the walker: rays that pass by every limb's ball never step
        keep = keep[_near_capsules(capsules, o[:, keep], d[:, keep], None if frame is None else frame[keep], 1e-3)]
    per_ray = capsules is not None and frame is not None
    rows = [o, d, near[None], far[None], ray.float()[None]]  # ray indices as float: exact below 2^24 rays
    if per_ray:
        rows.append(frame.float()[None])
    state = torch.cat(rows).index_select(1, keep)
    pending = []
    for _ in range(max_steps):
        if state.shape[1] == 0:
            break
        t = state[6]
        dist = _sdf(shape, torch.addcmul(state[:3], state[3:6], t).T, capsules, state[9].long() if per_ray else None)
        t += dist  # in place, in the working set
        hit = dist < (cone * t).clamp_(min=eps)
        done = hit | (t > state[7])
        if bool(done.any()):
            pending.append(state[6:9:2].index_select(1, torch.nonzero(hit).squeeze(1)))
            state = state.index_select(1, torch.nonzero(~done).squeeze(1))
    # Rays still stepping after max_steps are creeping along a surface: resolve them like the others.
    pending.append(state[6:9:2])
    found = torch.cat(pending, 1)
    return found[1].long(), found[0]


def _resolve(shape: str, capsules: _Capsules | None, o: Tensor, d: Tensor, t: Tensor, frame: Tensor | None,
             eps: float) -> tuple[Tensor, Tensor]:
    """Decide rays (``[3, M]`` origins and directions, parameters ``t`` ``[M]``) that came within the cone of the
    surface: did they hit it, and where exactly?

    Plain sphere tracing crawls along a silhouette, and a ray that passes the surface just outside looks
    the same as one that grazes it. Over-relaxed steps (``RELAX`` times the distance) settle it: a hit
    crosses the surface (the distance turns negative; a secant step and exact SDF steps then land on it),
    a miss passes its closest approach (the distance grows). Returns the hit rows ``[H]`` (into ``t``) and
    their parameters ``[H]``.
    """
    per_ray = capsules is not None and frame is not None
    dist = _sdf(shape, torch.addcmul(o, d, t).T, capsules, frame)
    rows = [o, d, t[None], dist[None], torch.arange(t.shape[0], dtype=torch.float32)[None]]
    if per_ray:
        rows.append(frame.float()[None])
    state = torch.cat(rows)
    settled_rows = []
    for _ in range(REFINE_STEPS):
        if state.shape[1] == 0:
            break
        t, dist = state[6], state[7]
        t_new = t + RELAX * dist
        d_new = _sdf(shape, torch.addcmul(state[:3], state[3:6], t_new).T, capsules,
                     state[9].long() if per_ray else None)
        crossed = d_new < 0
        settled = (d_new.abs() < eps) | crossed
        receding = (d_new >= dist) & ~settled
        if bool(settled.any()):
            secant = t + dist * (t_new - t) / (dist - d_new).clamp(min=1e-12)
            rows = torch.nonzero(settled).squeeze(1)
            settled_rows.append(torch.stack([torch.where(crossed, secant, t_new)[rows], state[8, rows]]))
        state[6], state[7] = t_new, d_new
        state = state.index_select(1, torch.nonzero(~(settled | receding)).squeeze(1))
    if not settled_rows:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0)
    found = torch.cat(settled_rows, 1)
    row, ts = found[1].long(), found[0]
    so, sd, sf = o[:, row], d[:, row], None if frame is None else frame[row]
    for _ in range(2):  # exact SDF steps from either side converge onto the crossing
        ts = ts + _sdf(shape, torch.addcmul(so, sd, ts).T, capsules, sf)
    return row, ts


def _trace_local(shape: str, capsules: _Capsules | None, o: Tensor, d: Tensor, frame: Tensor | None, eps: float,
                 cone: float, max_steps: int = MAX_STEPS) -> tuple[Tensor, Tensor]:
    """Hit ray indices ``[H]`` of local rays (``[3, N]`` origins and unit directions) and their local ray
    parameters ``[H]``.

    A ray counts as hitting once it is within ``cone`` times its length of the surface (a fraction of a
    pixel: rays grazing a silhouette stop there instead of creeping along it); up to ``REFINE_STEPS`` more
    steps then bring it within ``eps`` (frontal hits converge in one or two), and rays that do not
    converge passed the surface without touching it.
    """
    ray, t = _march(shape, capsules, o, d, frame, eps, cone, max_steps)
    if ray.numel() == 0:
        return ray, t
    row, t_hit = _resolve(shape, capsules, o[:, ray], d[:, ray], t, None if frame is None else frame[ray], eps)
    return ray[row], t_hit


def trace(shape: str, pose: Pose, origins: Tensor, dirs: Tensor, frame: Tensor | None,
          max_steps: int = MAX_STEPS, hit_eps: float = HIT_EPS, cone: float = 0.0) -> Tensor:
    """Sphere-trace world rays ``[N, 3]`` (unit ``dirs``) against the posed shape; ray parameter ``[N]`` of the
    hit, ``inf`` for a miss. ``frame`` ``[N]`` picks each ray's pose (None: pose 0 for all)."""
    frame = None if len(pose) == 1 else frame
    rot, centre, scale = _pose_rows(pose, frame)
    rot_t = rot.T if frame is None else rot.transpose(1, 2)
    o = _matvec(rot_t, (origins - centre).T) / (scale if frame is None else scale[None])
    d = _matvec(rot_t, dirs.T.contiguous())
    ray, t = _trace_local(shape, _capsules(pose), o, d, frame, hit_eps / float(pose.scale.min()), cone, max_steps)
    result = torch.full((origins.shape[0],), math.inf)
    result[ray] = t * (scale if frame is None else scale[ray])
    return result


def _local_gradient(shape: str, capsules: _Capsules | None, q: Tensor, frame: Tensor | None,
                    step: float) -> Tensor:
    """Gradient direction ``[3, N]`` (unnormalised) of the local SDF at ``q`` ``[3, N]``: closed form where the
    SDF is smooth near its surface (``LOCAL_GRADIENT``; the walker's nearest capsule away from the creases
    where two capsules meet), else central differences ``step`` either side (which blend the faces at a rim
    or crease, as the reference renderer did)."""
    if capsules is not None:
        table = capsules.table[0, :, None] if frame is None else capsules.table[frame].transpose(0, 1)
        px, py, pz = (q[i, :, None] - table[i] for i in range(3))
        bx, by, bz = table[3], table[4], table[5]
        h = ((px * bx + py * by + pz * bz) * table[6]).clamp_(0, 1)
        vx, vy, vz = px - bx * h, py - by * h, pz - bz * h
        two = (_length3(vx, vy, vz) - capsules.r).topk(2, -1, largest=False)
        grad = torch.stack([v.gather(1, two.indices[:, :1])[:, 0] for v in (vx, vy, vz)])
        # A probe ``step`` away can change the nearest capsule only within 2 ``step`` of a crease.
        crease = torch.nonzero(two.values[:, 1] - two.values[:, 0] < 3 * step).squeeze(1)
        if crease.numel():
            grad[:, crease] = _central_difference(shape, capsules, q[:, crease],
                                                  None if frame is None else frame[crease], step)
        return grad
    if shape in LOCAL_GRADIENT:
        return torch.stack(LOCAL_GRADIENT[shape](q.T))
    return _central_difference(shape, capsules, q, frame, step)


def _central_difference(shape: str, capsules: _Capsules | None, q: Tensor, frame: Tensor | None,
                        step: float) -> Tensor:
    """Central-difference gradient ``[3, N]`` (times 2 ``step``) of the local SDF at ``q`` ``[3, N]``."""
    n = q.shape[1]
    probe = q.repeat(1, 6)
    for axis in range(3):
        probe[axis, axis * n:(axis + 1) * n] += step
        probe[axis, (axis + 3) * n:(axis + 4) * n] -= step
    d = _sdf(shape, probe.T, capsules, None if frame is None else frame.repeat(6)).reshape(6, n)
    return d[:3] - d[3:]


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def normals(shape: str, pose: Pose, points: Tensor, frame: Tensor | None) -> Tensor:
    """Unit world normals ``[N, 3]`` by central differences of the local SDF, rotated to world."""
    frame = None if len(pose) == 1 else frame
    q = to_local(pose, points, frame).T.contiguous()
    grad = _local_gradient(shape, _capsules(pose), q, frame, NORMAL_STEP / float(pose.scale.min()))
    return _unit(_matvec(_pose_rows(pose, frame)[0], grad).T)


def _albedo_local(spec: WorldSpec, q: Tensor) -> Tensor:
    base = torch.tensor(spec.albedo)
    if spec.shape == "walker":
        return base.expand(q.shape[0], 3)
    wave = torch.sin(2 * math.pi * q[:, 0]) * torch.sin(2 * math.pi * q[:, 1]) * torch.sin(2 * math.pi * q[:, 2])
    dark = 0.5 + 0.5 * (4 * wave).clamp(-1, 1)
    return base * (1 - PATTERN_CONTRAST * dark)[:, None]


def albedo_at(spec: WorldSpec, pose: Pose, points: Tensor, frame: Tensor | None) -> Tensor:
    """Surface colour ``[N, 3]``: the palette colour with a faint soft checker fixed to the object (local
    frame), which makes a spinning sphere visibly spin. Its edges are smooth so that it needs no
    anti-aliasing. The walker's limbs move through its frame, so it has none."""
    if spec.shape == "walker":
        return _albedo_local(spec, points)
    return _albedo_local(spec, to_local(pose, points, frame))


def shade(spec: WorldSpec, albedo: Tensor, normal: Tensor, view_dirs: Tensor | None) -> Tensor:
    """Lit colour ``[N, 3]`` in [0, 1]; ``view_dirs`` (ray directions) add the glossy highlight, None leaves only
    the diffuse part (view-independent, for voxel colour). Written per coordinate: the renderer passes
    transposed ``[3, N]`` tensors."""
    light = torch.tensor(LIGHT_DIR)
    lx, ly, lz = (light / light.norm()).tolist()
    nx, ny, nz = normal[:, 0], normal[:, 1], normal[:, 2]
    lambert = (nx * lx + ny * ly + nz * lz).clamp(min=0)
    rgb = albedo * (AMBIENT + AMBIENT_SKY * nz + DIFFUSE * lambert)[:, None]
    if spec.material == "glossy" and view_dirs is not None:
        vx, vy, vz = view_dirs[:, 0], view_dirs[:, 1], view_dirs[:, 2]
        hx, hy, hz = lx - vx, ly - vy, lz - vz
        cos_half = (nx * hx + ny * hy + nz * hz) / _length3(hx, hy, hz).clamp(min=1e-12)
        highlight = SPECULAR * cos_half.clamp(min=0) ** SHININESS
        rim = 0.12 * (1 + (nx * vx + ny * vy + nz * vz)).clamp(0, 1) ** 4  # a faint Fresnel rim
        rgb = rgb + (highlight + rim)[:, None]
    return rgb.clamp(0, 1)


def _shade_rays(spec: WorldSpec, pose: Pose, capsules: _Capsules | None, o: Tensor, d: Tensor, d_cam: Tensor,
                camera: Tensor, cam_rot: Tensor, cone: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Trace and shade rays given by local origins and directions ``[3, N]`` and unit directions in camera axes
    ``d_cam`` ``[3, N]``, of cameras ``camera`` ``[N]`` (camera-to-world rotations ``cam_rot`` ``[C, 3, 3]``):
    rgb ``[N, 3]`` (0 on a miss), hit ``[N]`` bool, depth ``[N]`` (camera z), world normal ``[N, 3]``."""
    frame = None if len(pose) == 1 else camera
    min_scale = float(pose.scale.min())
    ray, t = _trace_local(spec.shape, capsules, o, d, frame, HIT_EPS / min_scale, cone)
    n = o.shape[1]
    rgb, hit, depth, normal = torch.zeros(n, 3), torch.zeros(n, dtype=torch.bool), torch.zeros(n), torch.zeros(n, 3)
    if ray.numel():
        f = None if frame is None else frame[ray]
        q = torch.addcmul(o[:, ray], d[:, ray], t)
        grad = _local_gradient(spec.shape, capsules, q, f, NORMAL_STEP / min_scale)
        nrm = _unit_columns(_matvec(pose.rotation if f is not None else pose.rotation[0], grad, f)).T
        ray_cam = d_cam[:, ray]
        view = _matvec(cam_rot, ray_cam, camera[ray]).T
        rgb[ray] = shade(spec, _albedo_local(spec, q.T), nrm, view)
        normal[ray] = nrm
        hit[ray] = True
        depth[ray] = t * (pose.scale[0] if f is None else pose.scale[f]) * ray_cam[2]
    return rgb, hit, depth, normal


def _pool3(x: Tensor) -> tuple[Tensor, Tensor]:
    """Max and min ``[C, H, W]`` over each pixel's 3x3 neighbourhood (edge pixels see only their image)."""
    p = F.pad(x[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    out = []
    for fn in (torch.maximum, torch.minimum):
        r = fn(fn(p[:, :, :-2], p[:, :, 1:-1]), p[:, :, 2:])
        out.append(fn(fn(r[:, :-2], r[:, 1:-1]), r[:, 2:]))
    return out[0], out[1]


def _edge_pixels(alpha: Tensor, depth: Tensor) -> Tensor:
    """Pixels ``[C, H, W]`` whose 3x3 neighbourhood holds a silhouette or a depth jump (the surface pattern is
    smooth and needs none)."""
    a_max, a_min = _pool3(alpha)
    d_max, d_min = _pool3(depth)
    return (a_max > a_min) | (d_max - d_min > 0.03 * depth.clamp(min=1e-3))


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
    capsules = _capsules(pose)
    c, h, w = len(cameras), cameras.height, cameras.width
    origin, to_local = _camera_frames(cameras, pose)
    cam_rot, K = cameras.c2w[:, :3, :3], cameras.K
    # Pixel-centre rays in camera axes [3, C, H*W], then into each camera's local frame (one pose per camera).
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float32) + 0.5, torch.arange(w, dtype=torch.float32) + 0.5,
                          indexing="ij")
    x = (u.reshape(1, -1) - K[:, 0, 2, None]) / K[:, 0, 0, None]
    y = (v.reshape(1, -1) - K[:, 1, 2, None]) / K[:, 1, 1, None]
    inv_len = torch.rsqrt(x * x + y * y + 1)
    d_cam = torch.stack([x * inv_len, y * inv_len, inv_len])
    d_local = torch.stack([to_local[:, i, 0, None] * d_cam[0] + to_local[:, i, 1, None] * d_cam[1]
                           + to_local[:, i, 2, None] * d_cam[2] for i in range(3)])
    o_local = origin.T[:, :, None].expand(3, c, h * w)
    camera = torch.arange(c).repeat_interleave(h * w)
    cone = CONE_PIXELS / float(K[:, 0, 0].max())
    rgb, hit, depth, normal = _shade_rays(spec, pose, capsules, o_local.reshape(3, -1), d_local.reshape(3, -1),
                                          d_cam.reshape(3, -1), camera, cam_rot, cone)
    rgb, alpha = rgb.reshape(c, h, w, 3), hit.float().reshape(c, h, w)
    depth, normal = depth.reshape(c, h, w), normal.reshape(c, h, w, 3)
    if antialias:
        cam_i, y, x = torch.nonzero(_edge_pixels(alpha, depth), as_tuple=True)
        if cam_i.numel():
            k = len(_SUBSAMPLES)
            offsets = torch.tensor(_SUBSAMPLES)
            u = (x.float() + 0.5)[:, None] + offsets[None, :, 0]
            v = (y.float() + 0.5)[:, None] + offsets[None, :, 1]
            cam_k = cam_i.repeat_interleave(k)
            K_k = K[cam_k]
            sub_cam = _unit_columns(torch.stack([(u.reshape(-1) - K_k[:, 0, 2]) / K_k[:, 0, 0],
                                                 (v.reshape(-1) - K_k[:, 1, 2]) / K_k[:, 1, 1], torch.ones(u.numel())]))
            s_rgb, s_hit, s_depth, s_normal = _shade_rays(spec, pose, capsules, origin[cam_k].T,
                                                          _matvec(to_local, sub_cam, cam_k), sub_cam, cam_k,
                                                          cam_rot, cone)
            s_rgb, s_hit = s_rgb.reshape(-1, k, 3), s_hit.float().reshape(-1, k)
            s_depth, s_normal = s_depth.reshape(-1, k), s_normal.reshape(-1, k, 3)
            centre_hit = alpha[cam_i, y, x]
            n_samples = k + 1
            rgb[cam_i, y, x] = (rgb[cam_i, y, x] + s_rgb.sum(1)) / n_samples
            sub_hits = s_hit.sum(1)
            alpha[cam_i, y, x] = (centre_hit + sub_hits) / n_samples
            # Depth and normal stay point samples of the pixel centre where it hits (exact, and no blend of
            # two surfaces across a depth jump); a centre that misses takes the mean of its sub-samples' hits.
            centre_missed = centre_hit == 0
            mean_depth = s_depth.sum(1) / sub_hits.clamp(min=1)
            depth[cam_i, y, x] = torch.where(centre_missed, mean_depth, depth[cam_i, y, x])
            mean_normal = _unit(s_normal.sum(1))
            normal[cam_i, y, x] = torch.where(centre_missed[:, None], mean_normal, normal[cam_i, y, x])
    return WorldRender(rgb, alpha[..., None], depth[..., None], normal)


def voxelize(spec: WorldSpec, t: float = 0.0, resolution: int = 32, bound: float = 1.0) -> VoxelGrid:
    """Density and colour of ``spec`` at time ``t`` on a ``resolution``^3 grid over [-bound, bound]^3.

    Density is the fraction of a voxel inside the object, estimated from the signed distance at its
    centre (a linear ramp over one voxel width), so thin parts do not vanish between samples. Colour
    is the diffuse-lit surface colour at the nearest surface point (view-independent).
    """
    with one_thread(), torch.no_grad():
        return _voxelize(spec, t, resolution, bound)


def _voxelize(spec: WorldSpec, t: float, resolution: int, bound: float) -> VoxelGrid:
    pose = pose_at(spec, torch.tensor([float(t)]))
    axis = (torch.arange(resolution, dtype=torch.float32) + 0.5) / resolution * 2 * bound - bound
    points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    d = world_sdf(spec.shape, pose, points)
    voxel = 2 * bound / resolution
    density = (0.5 - d / voxel).clamp(0, 1)
    rgb = torch.zeros_like(points)
    near = torch.nonzero(d < voxel).squeeze(1)
    if near.numel():
        p = points[near]
        nrm = normals(spec.shape, pose, p, None)
        surface = p - nrm * d[near, None]  # project onto the surface along the gradient
        rgb[near] = shade(spec, albedo_at(spec, pose, surface, None), nrm, None)
    r = resolution
    return VoxelGrid(density.reshape(r, r, r), rgb.reshape(r, r, r, 3), bound)


def sdf_grid(spec: WorldSpec, t: float, resolution: int, bound: float = 1.0) -> Tensor:
    """Signed distance ``[R, R, R]`` sampled at the corners of a grid over [-bound, bound]^3 (for marching cubes)."""
    pose = pose_at(spec, torch.tensor([float(t)]))
    axis = torch.linspace(-bound, bound, resolution)
    points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    out = torch.cat([world_sdf(spec.shape, pose, chunk) for chunk in points.split(1 << 18)])
    return out.reshape(resolution, resolution, resolution)
