"""Batched pinhole cameras in the project's one convention.

World: right-handed, +Z up, objects inside [-1, 1]^3. Camera axes follow OpenCV (x right, y down,
z forward), the convention of gsplat and viser. A camera is a 4x4 camera-to-world matrix plus
pinhole intrinsics; a batch of C cameras shares one image size.

    cams = orbit_cameras(distance=3.0, elevation=15.0, azimuth=torch.linspace(0, 360, 8), fovy=40.0,
                         width=128, height=128)
    origins, directions = cams.rays()          # [C, H, W, 3] each
    uv, depth = cams.project(points)           # [C, P, 2], [C, P]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from renderers.rotations import ZUP_TO_YUP, matrix_to_quat, quat_to_matrix

WORLD_UP = (0.0, 0.0, 1.0)

# OpenCV camera axes -> OpenGL camera axes (x right, y up, z backward): flip y and z.
_CV_TO_GL = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


@dataclass
class Cameras:
    """A batch of C pinhole cameras.

    Attributes:
        c2w: camera-to-world matrices ``[C, 4, 4]`` (OpenCV camera axes).
        K: intrinsics ``[C, 3, 3]`` in pixels; pixel centres sit at half-integers.
        width, height: image size in pixels, shared by the batch.
    """

    c2w: Tensor
    K: Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.c2w.ndim == 2:
            self.c2w = self.c2w[None]
        if self.K.ndim == 2:
            self.K = self.K[None]
        if self.c2w.shape[-2:] != (4, 4) or self.K.shape[-2:] != (3, 3):
            raise ValueError(f"expected c2w [C, 4, 4] and K [C, 3, 3], got {tuple(self.c2w.shape)} "
                             f"and {tuple(self.K.shape)}")
        if self.K.shape[0] != self.c2w.shape[0]:
            if self.K.shape[0] != 1:
                raise ValueError(f"{self.c2w.shape[0]} poses but {self.K.shape[0]} intrinsics")
            self.K = self.K.expand(self.c2w.shape[0], 3, 3)
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        self.width, self.height = int(self.width), int(self.height)

    # ---------------------------------------------------------------- batch handling
    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, index) -> Cameras:
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return Cameras(self.c2w[index], self.K[index], self.width, self.height)

    @property
    def device(self) -> torch.device:
        return self.c2w.device

    def to(self, device=None, dtype=None) -> Cameras:
        return Cameras(self.c2w.to(device, dtype), self.K.to(device, dtype), self.width, self.height)

    @staticmethod
    def cat(cameras: Sequence[Cameras]) -> Cameras:
        sizes = {(c.width, c.height) for c in cameras}
        if len(sizes) != 1:
            raise ValueError(f"cannot batch cameras of different image sizes: {sorted(sizes)}")
        w, h = sizes.pop()
        return Cameras(torch.cat([c.c2w for c in cameras]), torch.cat([c.K for c in cameras]), w, h)

    def resized(self, width: int, height: int) -> Cameras:
        """The same cameras rendering an image of another size (the field of view is kept)."""
        K = self.K.clone()
        K[:, 0] *= width / self.width
        K[:, 1] *= height / self.height
        return Cameras(self.c2w, K, width, height)

    # ---------------------------------------------------------------- derived quantities
    @property
    def viewmats(self) -> Tensor:
        """World-to-camera matrices ``[C, 4, 4]`` (gsplat's ``viewmats``)."""
        return rigid_inverse(self.c2w)

    @property
    def positions(self) -> Tensor:
        return self.c2w[:, :3, 3]

    @property
    def fovy(self) -> Tensor:
        """Vertical field of view in degrees ``[C]``."""
        return torch.rad2deg(2 * torch.atan(self.height / (2 * self.K[:, 1, 1])))

    @property
    def fovx(self) -> Tensor:
        return torch.rad2deg(2 * torch.atan(self.width / (2 * self.K[:, 0, 0])))

    # ---------------------------------------------------------------- geometry
    def project(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Project world points ``[P, 3]`` or ``[C, P, 3]`` to pixels ``[C, P, 2]`` and depth ``[C, P]``.

        Pixel (u, v) = (0.5, 0.5) is the centre of the top-left pixel. Depth is the camera z.
        """
        if points.ndim == 2:
            points = points[None].expand(len(self), -1, -1)
        w2c = self.viewmats.to(points)
        cam = points @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3]
        depth = cam[..., 2]
        xy = cam[..., :2] / depth[..., None].clamp_min(1e-8)
        K = self.K.to(points)
        uv = xy * torch.stack([K[:, 0, 0], K[:, 1, 1]], -1)[:, None] + K[:, None, :2, 2]
        return uv, depth

    def rays(self, *, pixels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """World-space rays through pixel centres.

        Returns origins and unit directions, each ``[C, H, W, 3]``; with ``pixels`` (``[C, P, 2]``
        or ``[P, 2]`` in pixel coordinates) ``[C, P, 3]`` through those points instead.
        """
        dtype, device = self.c2w.dtype, self.c2w.device
        if pixels is None:
            v, u = torch.meshgrid(
                torch.arange(self.height, dtype=dtype, device=device) + 0.5,
                torch.arange(self.width, dtype=dtype, device=device) + 0.5,
                indexing="ij",
            )
            uv = torch.stack([u, v], -1).reshape(1, -1, 2)
        else:
            uv = pixels if pixels.ndim == 3 else pixels[None]
        K = self.K.to(dtype)
        x = (uv[..., 0] - K[:, None, 0, 2]) / K[:, None, 0, 0]
        y = (uv[..., 1] - K[:, None, 1, 2]) / K[:, None, 1, 1]
        dirs_cam = torch.stack([x, y, torch.ones_like(x)], -1)
        dirs = dirs_cam @ self.c2w[:, :3, :3].transpose(1, 2)
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        origins = self.c2w[:, None, :3, 3].expand_as(dirs)
        if pixels is None:
            shape = (len(self), self.height, self.width, 3)
            return origins.reshape(shape), dirs.reshape(shape)
        return origins, dirs

    # ---------------------------------------------------------------- conversions
    def to_opengl_c2w(self) -> Tensor:
        """Camera-to-world ``[C, 4, 4]`` with OpenGL camera axes (x right, y up, z backward)."""
        return self.c2w @ _CV_TO_GL.to(self.c2w)

    def to_gltf(self, index: int = 0) -> dict:
        """A glTF camera for camera ``index``: node matrix in +Y-up world, OpenGL axes, and yfov."""
        to_yup = torch.eye(4, dtype=self.c2w.dtype)
        to_yup[:3, :3] = ZUP_TO_YUP.to(self.c2w.dtype)
        matrix = to_yup @ self.to_opengl_c2w()[index].cpu()
        return {
            "matrix": matrix,
            "yfov": math.radians(float(self.fovy[index])),
            "aspect_ratio": self.width / self.height,
        }

    def to_viser(self, index: int = 0) -> dict:
        """Pose for ``viser``'s camera handle (OpenCV axes): ``wxyz``, ``position``, ``fov`` (rad)."""
        c2w = self.c2w[index].detach().double().cpu()
        return {
            "wxyz": matrix_to_quat(c2w[:3, :3]).numpy(),
            "position": c2w[:3, 3].numpy(),
            "fov": math.radians(float(self.fovy[index])),
            "aspect": self.width / self.height,
        }

    @classmethod
    def from_viser(cls, wxyz, position, fov: float, width: int, height: int) -> Cameras:
        """Inverse of :meth:`to_viser`: viser's camera pose (``fov`` vertical, in radians)."""
        c2w = torch.eye(4)
        c2w[:3, :3] = quat_to_matrix(torch.as_tensor(wxyz, dtype=torch.float64)).float()
        c2w[:3, 3] = torch.as_tensor(position, dtype=torch.float32)
        return cls(c2w[None], intrinsics_from_fov(math.degrees(fov), width, height)[None], width, height)


# -------------------------------------------------------------------- constructors
def rigid_inverse(m: Tensor) -> Tensor:
    """Inverse of rigid 4x4 transforms ``[..., 4, 4]`` without a general matrix inverse."""
    R = m[..., :3, :3]
    t = m[..., :3, 3:]
    out = torch.zeros_like(m)
    out[..., :3, :3] = R.transpose(-1, -2)
    out[..., :3, 3:] = -R.transpose(-1, -2) @ t
    out[..., 3, 3] = 1
    return out


def intrinsics_from_fov(fovy: float | Tensor, width: int, height: int) -> Tensor:
    """Pinhole intrinsics ``[..., 3, 3]`` with square pixels and the principal point at the centre."""
    fovy = torch.as_tensor(fovy, dtype=torch.float32)
    fy = height / (2 * torch.tan(torch.deg2rad(fovy) / 2))
    K = torch.zeros(*fovy.shape, 3, 3)
    K[..., 0, 0] = fy
    K[..., 1, 1] = fy
    K[..., 0, 2] = width / 2
    K[..., 1, 2] = height / 2
    K[..., 2, 2] = 1
    return K


def look_at(eye: Tensor, target: Tensor | None = None, up: Sequence[float] = WORLD_UP) -> Tensor:
    """Camera-to-world matrices ``[C, 4, 4]`` (OpenCV axes) looking from ``eye`` ``[C, 3]`` at ``target``.

    When the view direction is parallel to ``up`` (a camera straight above), a stable fallback
    right-vector is used so the pose is still a rotation.
    """
    eye = torch.as_tensor(eye, dtype=torch.float32)
    if eye.ndim == 1:
        eye = eye[None]
    target = torch.zeros_like(eye) if target is None else torch.as_tensor(target, dtype=eye.dtype).expand_as(eye)
    up_vec = torch.as_tensor(up, dtype=eye.dtype, device=eye.device).expand_as(eye)
    forward = target - eye
    forward = forward / forward.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    right = torch.linalg.cross(forward, up_vec)
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    fallback = torch.linalg.cross(forward, torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype).expand_as(eye))
    right = torch.where(degenerate, fallback, right)
    right = right / right.norm(dim=-1, keepdim=True)
    down = torch.linalg.cross(forward, right)  # OpenCV y points down
    c2w = torch.eye(4, dtype=eye.dtype, device=eye.device).repeat(eye.shape[0], 1, 1)
    c2w[:, :3, 0] = right
    c2w[:, :3, 1] = down
    c2w[:, :3, 2] = forward
    c2w[:, :3, 3] = eye
    return c2w


def orbit_positions(distance, elevation, azimuth) -> Tensor:
    """Points on a sphere around the origin; elevation and azimuth in degrees, ``[C, 3]``.

    Azimuth 0 looks from +X towards the origin, increasing counter-clockwise seen from above (+Z).
    """
    distance, elevation, azimuth = torch.broadcast_tensors(
        *(torch.as_tensor(v, dtype=torch.float32) for v in (distance, elevation, azimuth))
    )
    el, az = torch.deg2rad(elevation), torch.deg2rad(azimuth)
    pos = torch.stack([torch.cos(el) * torch.cos(az), torch.cos(el) * torch.sin(az), torch.sin(el)], -1)
    return (distance[..., None] * pos).reshape(-1, 3)


def orbit_cameras(distance, elevation, azimuth, fovy, width: int, height: int,
                  target: Sequence[float] = (0.0, 0.0, 0.0)) -> Cameras:
    """Cameras on an orbit looking at ``target``; scalar or ``[C]`` distance / elevation / azimuth / fovy
    (degrees)."""
    distance, elevation, azimuth, fovy = torch.broadcast_tensors(
        *(torch.as_tensor(v, dtype=torch.float32) for v in (distance, elevation, azimuth, fovy))
    )
    target_t = torch.as_tensor(target, dtype=torch.float32)
    eye = orbit_positions(distance, elevation, azimuth) + target_t
    c2w = look_at(eye, target_t)
    K = intrinsics_from_fov(fovy.reshape(-1), width, height)
    return Cameras(c2w, K, width, height)


@dataclass(frozen=True)
class CameraRanges:
    """Ranges for random camera sampling (degrees and world units), as in SDS training set-ups."""

    distance: tuple[float, float] = (2.5, 3.5)
    elevation: tuple[float, float] = (-10.0, 45.0)
    azimuth: tuple[float, float] = (-180.0, 180.0)
    fovy: tuple[float, float] = (40.0, 70.0)

    def __post_init__(self) -> None:
        for name in ("distance", "elevation", "azimuth", "fovy"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"camera range '{name}' is empty: {lo} > {hi}")
        if self.distance[0] <= 0:
            raise ValueError("camera distance must be positive")
        if not (self.fovy[0] > 0 and self.fovy[1] < 180):
            raise ValueError("camera field of view must lie in (0, 180) degrees")


def sample_cameras(n: int, ranges: CameraRanges, width: int, height: int, *,
                   generator: torch.Generator | None = None, uniform_sphere: bool = True) -> Cameras:
    """Random orbit cameras. With ``uniform_sphere`` elevation is drawn uniform in area (sin),
    as threestudio and 4D-fy do, otherwise uniform in angle."""

    def uniform(lo: float, hi: float) -> Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    if uniform_sphere:
        s_lo, s_hi = (math.sin(math.radians(e)) for e in ranges.elevation)
        elevation = torch.rad2deg(torch.asin(uniform(s_lo, s_hi)))
    else:
        elevation = uniform(*ranges.elevation)
    return orbit_cameras(uniform(*ranges.distance), elevation, uniform(*ranges.azimuth),
                         uniform(*ranges.fovy), width, height)
