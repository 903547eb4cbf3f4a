import math

import pytest
import torch

from renderers.cameras import (
    CameraRanges,
    Cameras,
    intrinsics_from_fov,
    look_at,
    orbit_cameras,
    rigid_inverse,
    sample_cameras,
)
from renderers.rotations import ZUP_TO_YUP, matrix_to_quat, quat_to_matrix


def test_look_at_is_a_rotation_with_opencv_axes():
    c2w = look_at(torch.tensor([[3.0, 0.0, 0.0]]))[0]
    R = c2w[:3, :3]
    assert torch.allclose(R @ R.T, torch.eye(3), atol=1e-6)
    assert torch.det(R) == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(R[:, 2], torch.tensor([-1.0, 0.0, 0.0]))  # z forward: towards the origin
    assert torch.allclose(R[:, 1], torch.tensor([0.0, 0.0, -1.0]))  # y down: against world +Z


def test_look_at_straight_down_is_still_a_rotation():
    R = look_at(torch.tensor([[0.0, 0.0, 3.0]]))[0, :3, :3]
    assert torch.allclose(R @ R.T, torch.eye(3), atol=1e-6)
    assert torch.allclose(R[:, 2], torch.tensor([0.0, 0.0, -1.0]))


def test_origin_projects_to_the_image_centre_and_offsets_land_on_the_right_pixel():
    cams = orbit_cameras(distance=4.0, elevation=0.0, azimuth=0.0, fovy=60.0, width=64, height=48)
    uv, depth = cams.project(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))
    assert torch.allclose(uv[0, 0], torch.tensor([32.0, 24.0]), atol=1e-4)
    assert depth[0, 0] == pytest.approx(4.0, abs=1e-5)
    fy = 24 / math.tan(math.radians(30))
    # World +Z is image up (smaller v). The camera's right axis is forward x up = (-1,0,0) x (0,0,1)
    # = (0,1,0), so world +Y is image right (larger u).
    assert torch.allclose(uv[0, 1], torch.tensor([32.0, 24.0 - fy / 4]), atol=1e-3)
    assert torch.allclose(uv[0, 2], torch.tensor([32.0 + fy / 4, 24.0]), atol=1e-3)


def test_rays_pass_through_projected_points():
    gen = torch.Generator().manual_seed(0)
    cams = sample_cameras(5, CameraRanges(), 40, 30, generator=gen)
    points = torch.rand(7, 3, generator=gen) - 0.5
    uv, depth = cams.project(points)
    origins, dirs = cams.rays(pixels=uv)
    # march along each ray by the distance to the point: lands on the point
    dist = (points[None] - origins).norm(dim=-1, keepdim=True)
    assert torch.allclose(origins + dist * dirs, points[None].expand(5, -1, -1), atol=1e-4)
    assert (depth > 0).all()


def test_full_image_rays_match_pixel_rays():
    cams = orbit_cameras(3.0, 20.0, torch.tensor([0.0, 90.0]), 45.0, 8, 6)
    o, d = cams.rays()
    assert o.shape == d.shape == (2, 6, 8, 3)
    v, u = 4, 5
    o2, d2 = cams.rays(pixels=torch.tensor([[u + 0.5, v + 0.5]]))
    assert torch.allclose(d[:, v, u], d2[:, 0], atol=1e-6)
    assert torch.allclose(d.norm(dim=-1), torch.ones(2, 6, 8), atol=1e-5)


def test_orbit_positions_and_fov():
    cams = orbit_cameras(2.0, 30.0, torch.tensor([0.0, 90.0, 180.0]), 50.0, 32, 32)
    assert torch.allclose(cams.positions.norm(dim=-1), torch.full((3,), 2.0), atol=1e-5)
    assert cams.positions[1, 1] > 1.0 and cams.positions[2, 0] < -1.0
    assert torch.allclose(cams.positions[:, 2], torch.full((3,), 1.0), atol=1e-5)
    assert torch.allclose(cams.fovy, torch.full((3,), 50.0), atol=1e-4)


def test_sampling_respects_ranges_and_seed():
    ranges = CameraRanges(distance=(2.0, 2.5), elevation=(0.0, 30.0), azimuth=(-30.0, 30.0), fovy=(40.0, 41.0))
    a = sample_cameras(64, ranges, 16, 16, generator=torch.Generator().manual_seed(3))
    b = sample_cameras(64, ranges, 16, 16, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.c2w, b.c2w)
    d = a.positions.norm(dim=-1)
    el = torch.rad2deg(torch.asin(a.positions[:, 2] / d))
    assert d.min() >= 2.0 - 1e-5 and d.max() <= 2.5 + 1e-5
    assert el.min() >= -1e-3 and el.max() <= 30.0 + 1e-3
    assert a.fovy.min() >= 40.0 - 1e-3 and a.fovy.max() <= 41.0 + 1e-3
    with pytest.raises(ValueError, match="elevation"):
        CameraRanges(elevation=(10.0, 0.0))


def test_viser_round_trip():
    cams = orbit_cameras(3.0, 25.0, 70.0, 45.0, 64, 48)
    pose = cams.to_viser(0)
    back = Cameras.from_viser(pose["wxyz"], pose["position"], pose["fov"], 64, 48)
    assert torch.allclose(back.c2w, cams.c2w, atol=1e-5)
    assert torch.allclose(back.K, cams.K, atol=1e-4)


def test_quaternion_round_trip_covers_all_branches():
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(256, 4, generator=gen)
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[:, :1] < 0, -q, q)
    assert torch.allclose(matrix_to_quat(quat_to_matrix(q)), q, atol=1e-5)
    R180 = torch.diag(torch.tensor([1.0, -1.0, -1.0]))  # trace -1: the w branch is unusable
    assert torch.allclose(quat_to_matrix(matrix_to_quat(R180)), R180, atol=1e-6)


def test_gltf_conversion_is_y_up_and_opengl():
    cams = orbit_cameras(3.0, 90.0 - 1e-3, 0.0, 45.0, 32, 32)  # camera above, looking down -Z
    gl = cams.to_gltf(0)
    m = gl["matrix"]
    assert m[1, 3] == pytest.approx(3.0, abs=1e-3)  # world +Z height becomes glTF +Y
    # OpenGL cameras look along -z: the camera's -z axis in glTF world points down (-Y)
    assert torch.allclose(-m[:3, 2], torch.tensor([0.0, -1.0, 0.0]), atol=1e-3)
    assert gl["yfov"] == pytest.approx(math.radians(45.0), abs=1e-5)
    assert torch.allclose(ZUP_TO_YUP @ torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 1.0, 0.0]))


def test_rigid_inverse_and_resize():
    cams = orbit_cameras(3.0, 10.0, 40.0, 45.0, 64, 64)
    assert torch.allclose(cams.viewmats @ cams.c2w, torch.eye(4)[None], atol=1e-5)
    assert torch.allclose(rigid_inverse(cams.c2w), torch.linalg.inv(cams.c2w), atol=1e-5)
    small = cams.resized(16, 16)
    p = torch.tensor([[0.3, -0.2, 0.1]])
    assert torch.allclose(small.project(p)[0] * 4, cams.project(p)[0], atol=1e-4)
    assert torch.allclose(small.fovy, cams.fovy, atol=1e-4)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="image size"):
        Cameras(torch.eye(4), intrinsics_from_fov(40.0, 8, 8), 0, 8)
    with pytest.raises(ValueError, match="different image sizes"):
        Cameras.cat([orbit_cameras(3, 0, 0, 40, 8, 8), orbit_cameras(3, 0, 0, 40, 16, 8)])


def test_allocator_tuning_is_idempotent():
    from renderers.allocator import tune_cpu_allocator

    first = tune_cpu_allocator()
    assert tune_cpu_allocator() == first
