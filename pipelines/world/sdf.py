"""Signed distance functions of the world's shapes and where each motion puts them at time t.

Every shape lives in a local frame where it fits the unit ball (the walker: height 2, feet at
z = -1). A :class:`Pose` holds, for F times, the local-to-world rotation, the world position of
the local origin and the uniform scale; the walker adds its limb segments, moved by forward
kinematics of a walk cycle. Rotations and uniform scales keep a distance a distance, so
``world_sdf`` is exact wherever the local SDF is (all of them, including the union of capsules).

    pose = pose_at(spec, torch.tensor([0.0, 0.5]))      # 2 times
    d = world_sdf(spec.shape, pose, points, frame)       # points [N, 3], frame [N] (index into the times)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from pipelines.world.grammar import WorldSpec

# Radius of the local bounding ball of each shape (a little slack for the walker's swinging limbs).
LOCAL_BOUND = {"sphere": 1.0, "cube": 1.0, "torus": 1.0, "cone": 1.0, "cylinder": 1.0, "capsule": 1.0,
               "walker": 1.1}
# Local axis-aligned boxes (min corner, max corner) around each shape: a much tighter first cull than the ball
# for flat and thin shapes (the torus, the walker).
LOCAL_BOX = {
    "sphere": ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0)),
    "cube": ((-0.58, -0.58, -0.58), (0.58, 0.58, 0.58)),
    "torus": ((-0.98, -0.98, -0.28), (0.98, 0.98, 0.28)),
    "cone": ((-0.68, -0.68, -0.7), (0.68, 0.68, 0.8)),
    "cylinder": ((-0.6, -0.6, -0.75), (0.6, 0.6, 0.75)),
    "capsule": ((-0.42, -0.42, -0.97), (0.42, 0.42, 0.97)),
    "walker": ((-0.62, -0.42, -1.08), (0.62, 0.42, 1.0)),
}
# Tight local bounds of the shapes that turn about z: the radius of a ball about the origin and of a cylinder
# about the z axis that hold the shape (from the SDF parameters below: the cube is a 0.53 box grown by 0.05,
# the cone's base rim is at radius 0.68, z = -0.7). Rays start where they enter box, ball and cylinder.
LOCAL_RADII = {
    "sphere": (1.0, 1.0),
    "cube": (0.53 * math.sqrt(3) + 0.05, 0.53 * math.sqrt(2) + 0.05),
    "torus": (0.98, 0.98),
    "cone": (math.hypot(0.68, 0.7), 0.68),
    "cylinder": (math.hypot(0.6, 0.75), 0.6),
    "capsule": (0.97, 0.42),
}
TORUS_TILT_DEG = 60.0  # so the hole shows from the usual camera elevations

# Motion amplitudes (world units / degrees) over one clip t in [0, 1].
BOUNCE_HEIGHT = 0.55
SWAY_DEG = 22.0
PULSE_AMOUNT = 0.25
ORBIT_RADIUS = 0.36
WALK_DISTANCE = 0.7
WALK_STRIDES = 2


@dataclass
class Pose:
    """Where the object is at F times: ``rotation`` ``[F, 3, 3]`` (local to world), ``centre`` ``[F, 3]``,
    ``scale`` ``[F]``; for the walker ``seg_a``, ``seg_b`` ``[F, K, 3]`` (local) and ``seg_r`` ``[K]``."""

    rotation: Tensor
    centre: Tensor
    scale: Tensor
    seg_a: Tensor | None = None
    seg_b: Tensor | None = None
    seg_r: Tensor | None = None

    def __len__(self) -> int:
        return self.rotation.shape[0]

    def bound_radius(self, shape: str) -> Tensor:
        """World radius ``[F]`` of a ball around ``centre`` that holds the object."""
        return self.scale * LOCAL_BOUND[shape]


def _rot_z(angle: Tensor) -> Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    z, o = torch.zeros_like(angle), torch.ones_like(angle)
    return torch.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(*angle.shape, 3, 3)


def _rot_axis(axis: Tensor, angle: Tensor) -> Tensor:
    """Rodrigues: rotation ``[F, 3, 3]`` by ``angle`` ``[F]`` about unit ``axis`` ``[3]``."""
    x, y, z = axis
    k = torch.tensor([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    s, c = torch.sin(angle)[:, None, None], torch.cos(angle)[:, None, None]
    return torch.eye(3) + s * k + (1 - c) * (k @ k)


def pose_at(spec: WorldSpec, times: Tensor) -> Pose:
    """The object's pose at ``times`` ``[F]`` (each in [0, 1]); one clip is one period of the motion."""
    t = torch.as_tensor(times, dtype=torch.float32).reshape(-1)
    f = t.shape[0]
    phase = 2 * math.pi * t
    yaw = torch.full((f,), math.radians(spec.yaw))
    tilt = torch.eye(3)
    if spec.shape == "torus":
        tilt = _rot_axis(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([math.radians(TORUS_TILT_DEG)]))[0]
    scale = torch.full((f,), spec.radius)
    centre = torch.zeros(f, 3)
    motion = spec.motion
    if motion == "spin":
        yaw = yaw + phase
    rotation = _rot_z(yaw) @ tilt
    if motion == "bounce":
        # Two hops per clip; |sin| is a ballistic-looking arc that touches down at t = 0, 0.5, 1.
        centre[:, 2] = BOUNCE_HEIGHT * (torch.sin(phase).abs() - 0.5)
    elif motion == "sway":
        # An inverted pendulum about the bottom of the bounding ball, along the heading's side axis.
        axis = torch.tensor([math.cos(math.radians(spec.yaw)), math.sin(math.radians(spec.yaw)), 0.0])
        tip = _rot_axis(axis, math.radians(SWAY_DEG) * torch.sin(phase))
        pivot = torch.tensor([0.0, 0.0, -spec.radius])
        rotation = tip @ rotation
        centre = pivot + (tip @ -pivot)
    elif motion == "pulse":
        scale = scale * (1 + PULSE_AMOUNT * torch.sin(phase))
    elif motion == "orbit":
        angle = phase + math.radians(spec.yaw)
        centre = ORBIT_RADIUS * torch.stack([torch.cos(angle), torch.sin(angle), torch.zeros(f)], -1)
    elif motion == "walk":
        heading = rotation[:, :, 0]  # the walker faces local +x
        centre = heading * (WALK_DISTANCE * (t - 0.5))[:, None]
    pose = Pose(rotation, centre, scale)
    if spec.shape == "walker":
        walking = 1.0 if motion == "walk" else 0.0
        pose.seg_a, pose.seg_b, pose.seg_r = walker_segments(2 * math.pi * WALK_STRIDES * t, walking)
    return pose


def walker_segments(phase: Tensor, walking: float) -> tuple[Tensor, Tensor, Tensor]:
    """Capsule segments of the jointed figure (local units, facing +x) at walk-cycle ``phase`` ``[F]``.

    Returns ends ``[F, K, 3]``, ``[F, K, 3]`` and radii ``[K]``: torso, head, shoulder bar, then thigh,
    shin, upper arm, forearm for the left and the right side. Joint angles follow a simple gait:
    hips swing ±28°, the knee bends in the swing phase, arms swing against the legs.
    """
    f = phase.shape[0]

    def limb(angle: Tensor) -> Tensor:  # unit direction of a limb ``angle`` rad forward of straight down
        return torch.stack([torch.sin(angle), torch.zeros_like(angle), -torch.cos(angle)], -1)

    a, b = [], []

    def seg(p: Tensor, q: Tensor) -> None:
        a.append(p.expand(f, 3))
        b.append(q.expand(f, 3))

    seg(torch.tensor([0.0, 0.0, -0.1]), torch.tensor([0.0, 0.0, 0.46]))    # torso
    seg(torch.tensor([0.0, 0.0, 0.76]), torch.tensor([0.0, 0.0, 0.76]))    # head
    seg(torch.tensor([0.0, -0.27, 0.42]), torch.tensor([0.0, 0.27, 0.42]))  # shoulders
    for side, offset in ((1.0, 0.0), (-1.0, math.pi)):
        p = phase + offset
        hip_angle = walking * math.radians(28) * torch.sin(p)
        knee = walking * math.radians(40) * torch.clamp(torch.sin(p + math.pi / 3), min=0)
        arm_angle = -walking * math.radians(24) * torch.sin(p)
        elbow = math.radians(12) + walking * math.radians(18) * torch.clamp(-torch.sin(p), min=0)
        hip = torch.tensor([0.0, 0.12 * side, -0.12])
        knee_pos = hip + 0.42 * limb(hip_angle)
        ankle = knee_pos + 0.42 * limb(hip_angle - knee)
        shoulder = torch.tensor([0.0, 0.27 * side, 0.42])
        elbow_pos = shoulder + 0.32 * limb(arm_angle)
        wrist = elbow_pos + 0.28 * limb(arm_angle + elbow)
        seg(hip, knee_pos)
        seg(knee_pos, ankle)
        seg(shoulder, elbow_pos)
        seg(elbow_pos, wrist)
    radii = torch.tensor([0.17, 0.2, 0.075] + [0.095, 0.085, 0.075, 0.065] * 2)
    return torch.stack(a, 1), torch.stack(b, 1), radii


# ---------------------------------------------------------------------------------------- local SDFs
def _length2(x: Tensor, y: Tensor) -> Tensor:
    return torch.sqrt(x * x + y * y)


def _length3(x: Tensor, y: Tensor, z: Tensor) -> Tensor:
    return torch.sqrt(x * x + y * y + z * z)


# The SDFs work on the columns of ``q`` ``[N, 3]``: the renderer passes the transpose of a ``[3, N]`` tensor,
# whose columns are contiguous (reductions over the last dim of such a view are ~10x slower).
def sdf_sphere(q: Tensor) -> Tensor:
    return _length3(q[:, 0], q[:, 1], q[:, 2]) - 1.0


def sdf_cube(q: Tensor, half: float = 0.58, rounding: float = 0.05) -> Tensor:
    dx, dy, dz = (q[:, i].abs() - (half - rounding) for i in range(3))
    outside = _length3(dx.clamp(min=0), dy.clamp(min=0), dz.clamp(min=0))
    inside = torch.maximum(torch.maximum(dx, dy), dz).clamp(max=0)
    return outside + inside - rounding


def sdf_torus(q: Tensor, major: float = 0.7, minor: float = 0.28) -> Tensor:
    return _length2(_length2(q[:, 0], q[:, 1]) - major, q[:, 2]) - minor


def sdf_cylinder(q: Tensor, radius: float = 0.6, half_height: float = 0.75) -> Tensor:
    dx = _length2(q[:, 0], q[:, 1]) - radius
    dz = q[:, 2].abs() - half_height
    return torch.maximum(dx, dz).clamp(max=0) + _length2(dx.clamp(min=0), dz.clamp(min=0))


def sdf_cone(q: Tensor, radius: float = 0.68, apex: float = 0.8, height: float = 1.5) -> Tensor:
    """Exact distance to a solid cone, apex at (0, 0, apex) pointing up, base disc ``height`` below."""
    wx = _length2(q[:, 0], q[:, 1])
    wy = q[:, 2] - apex
    qx, qy = radius, -height  # the base rim in the (radial, vertical) plane, relative to the apex
    h = ((wx * qx + wy * qy) / (qx * qx + qy * qy)).clamp(0, 1)
    ax, ay = wx - qx * h, wy - qy * h  # to the slanted side
    bx, by = wx - qx * (wx / qx).clamp(0, 1), wy - qy  # to the base disc
    d = torch.minimum(ax * ax + ay * ay, bx * bx + by * by)
    s = torch.maximum(-(wx * qy - wy * qx), -(wy - qy))  # k = sign(qy) = -1
    return torch.sqrt(d) * torch.sign(s)


def sdf_capsule(q: Tensor, half_length: float = 0.55, radius: float = 0.42) -> Tensor:
    z = q[:, 2].clamp(-half_length, half_length)
    return torch.sqrt(q[:, 0] ** 2 + q[:, 1] ** 2 + (q[:, 2] - z) ** 2) - radius


def sdf_capsules(q: Tensor, a: Tensor, b: Tensor, r: Tensor) -> Tensor:
    """Union of capsules: ``q`` ``[N, 3]``, ends ``a``, ``b`` ``[N, K, 3]`` or ``[K, 3]``, radii ``[K]``."""
    pa = q[:, None, :] - a
    ba = b - a
    h = ((pa * ba).sum(-1) / (ba * ba).sum(-1).clamp(min=1e-12)).clamp(0, 1)
    return ((pa - ba * h[..., None]).norm(dim=-1) - r).amin(dim=-1)


LOCAL_SDF = {"sphere": sdf_sphere, "cube": sdf_cube, "torus": sdf_torus, "cone": sdf_cone,
              "cylinder": sdf_cylinder, "capsule": sdf_capsule}


# Gradient directions (unnormalised) of the SDFs that are smooth near their surface, per coordinate: exact
# normals for one evaluation instead of six. The cone and the cylinder have sharp rims, where a central
# difference blends the two faces; they keep it.
def grad_sphere(q: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return q[:, 0], q[:, 1], q[:, 2]


def grad_cube(q: Tensor, half: float = 0.58, rounding: float = 0.05) -> tuple[Tensor, Tensor, Tensor]:
    # Near the surface some coordinate is past the inner box (the rounding shell), so the outside part rules.
    return tuple(torch.sign(q[:, i]) * (q[:, i].abs() - (half - rounding)).clamp(min=0) for i in range(3))


def grad_torus(q: Tensor, major: float = 0.7) -> tuple[Tensor, Tensor, Tensor]:
    radial = _length2(q[:, 0], q[:, 1])
    along = (radial - major) / radial.clamp(min=1e-12)
    return q[:, 0] * along, q[:, 1] * along, q[:, 2]


def grad_capsule(q: Tensor, half_length: float = 0.55) -> tuple[Tensor, Tensor, Tensor]:
    return q[:, 0], q[:, 1], q[:, 2] - q[:, 2].clamp(-half_length, half_length)


LOCAL_GRADIENT = {"sphere": grad_sphere, "cube": grad_cube, "torus": grad_torus, "capsule": grad_capsule}


def to_local(pose: Pose, points: Tensor, frame: Tensor | None) -> Tensor:
    """World points ``[N, 3]`` into the local frame of pose ``frame`` ``[N]`` (None: all use pose 0)."""
    if frame is None or len(pose) == 1:
        return ((points - pose.centre[0]) @ pose.rotation[0]) / pose.scale[0]
    v = points - pose.centre[frame]
    return torch.einsum("ni,nij->nj", v, pose.rotation[frame]) / pose.scale[frame][:, None]


def local_sdf(shape: str, pose: Pose, q: Tensor, frame: Tensor | None) -> Tensor:
    if shape == "walker":
        if frame is None or len(pose) == 1:
            return sdf_capsules(q, pose.seg_a[0], pose.seg_b[0], pose.seg_r)
        return sdf_capsules(q, pose.seg_a[frame], pose.seg_b[frame], pose.seg_r)
    return LOCAL_SDF[shape](q)


def world_sdf(shape: str, pose: Pose, points: Tensor, frame: Tensor | None = None) -> Tensor:
    """Signed distance ``[N]`` (world units) from ``points`` ``[N, 3]`` at pose ``frame`` ``[N]``."""
    q = to_local(pose, points, frame)
    scale = pose.scale[0] if frame is None or len(pose) == 1 else pose.scale[frame]
    return local_sdf(shape, pose, q, frame) * scale
