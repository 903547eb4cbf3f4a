"""The exact renderer against analytic answers, and the motions and voxel grids built on it."""

import math

import pytest
import torch

from pipelines.world.grammar import MOTIONS, WorldSpec, motions_for
from pipelines.world.render import render_world, voxelize
from pipelines.world.sdf import pose_at
from renderers.cameras import Cameras, orbit_cameras

DIST, FOV = 2.7, 40.0


def _sphere_truth(cams: Cameras, radius: float):
    """Exact ray-sphere hits for every pixel centre: hit mask, camera depth and normals."""
    o, d = cams.rays()
    b = (o * d).sum(-1)
    disc = b * b - ((o * o).sum(-1) - radius ** 2)
    t = -b - disc.clamp(min=0).sqrt()
    points = o + d * t[..., None]
    depth = t * (d * cams.c2w[:, None, None, :3, 2]).sum(-1)
    return disc > 0, depth, points / radius


@pytest.mark.parametrize("res", [24, 48])
def test_sphere_silhouette_depth_and_normals_are_exact(res):
    spec = WorldSpec("sphere", "red", "still")
    cams = orbit_cameras(DIST, torch.tensor([0.0, 35.0]), torch.tensor([10.0, 200.0]), FOV, res, res)
    out = render_world(spec, cams, 0.0)
    f = float(cams.K[0, 0, 0])
    r_px = f * spec.radius / math.sqrt(DIST ** 2 - spec.radius ** 2)
    area = out.alpha.sum(dim=(1, 2, 3))
    # Anti-aliased coverage: within a tenth of a pixel along the whole outline.
    assert torch.allclose(area, torch.full_like(area, math.pi * r_px ** 2), atol=0.1 * 2 * math.pi * r_px)
    hit, depth, normal = _sphere_truth(cams, spec.radius)
    inner = hit & (out.alpha[..., 0] == 1)
    assert inner.sum() > 0.5 * hit.sum()
    assert (out.depth[..., 0][inner] - depth[inner]).abs().max() < 1e-3
    assert (out.normal[inner] - normal[inner]).abs().max() < 1e-3
    centre = out.depth[:, res // 2, res // 2, 0]
    assert torch.allclose(centre, depth[:, res // 2, res // 2], atol=1e-3)
    off = out.alpha[..., 0] == 0
    assert (out.depth[..., 0][off] == 0).all() and (out.rgb[off] == 0).all()
    assert (out.rgb <= out.alpha + 1e-6).all()  # premultiplied


def test_cube_faces_have_axis_normals_and_the_silhouette_is_antialiased():
    spec = WorldSpec("cube", "blue", "still")
    cams = orbit_cameras(DIST, 0.0, 0.0, FOV, 32, 32)  # looking along -x at the +x face
    out = render_world(spec, cams, 0.0)
    assert torch.allclose(out.normal[0, 16, 16], torch.tensor([1.0, 0.0, 0.0]), atol=1e-3)
    half = 0.58 * spec.radius
    assert abs(float(out.depth[0, 16, 16, 0]) - (DIST - half)) < 1e-3
    partial = (out.alpha > 0) & (out.alpha < 1)
    assert partial.sum() > 10  # the outline is blended, not stair-stepped
    plain = render_world(spec, cams, 0.0, antialias=False)
    assert set(plain.alpha.unique().tolist()) <= {0.0, 1.0}


def test_per_camera_times_match_one_time_per_call():
    spec = WorldSpec("walker", "yellow", "walk", "glossy")
    cams = orbit_cameras(DIST, 15.0, torch.tensor([0.0, 90.0]), FOV, 24, 24)
    both = render_world(spec, cams, torch.tensor([0.1, 0.6]))
    for i, t in enumerate((0.1, 0.6)):
        one = render_world(spec, cams[i], t)
        assert torch.allclose(both.rgb[i], one.rgb[0], atol=1e-5)
        assert torch.allclose(both.depth[i], one.depth[0], atol=1e-5)


@pytest.mark.parametrize("motion", MOTIONS)
def test_every_motion_moves_and_still_does_not(motion):
    shape = "walker" if motion == "walk" else "cube"
    spec = WorldSpec(shape, "green", motion, yaw=15.0)
    cams = orbit_cameras(DIST, 20.0, 30.0, FOV, 24, 24)
    a, b = render_world(spec, cams, 0.0), render_world(spec, cams, 0.3)
    change = float((a.rgb - b.rgb).abs().mean())
    if motion == "still":
        assert change == 0
    else:
        assert change > 1e-3, f"{motion} looks still"
    assert motion in motions_for(shape)


def test_the_walker_swings_its_limbs_and_stays_in_the_unit_cube():
    spec = WorldSpec("walker", "red", "walk", size="large")
    pose = pose_at(spec, torch.linspace(0, 1, 9))
    assert (pose.seg_b[0] - pose.seg_b[2]).abs().max() > 0.1  # the feet move relative to the body
    still = pose_at(WorldSpec("walker", "red", "spin"), torch.linspace(0, 1, 5))
    assert torch.allclose(still.seg_b[0], still.seg_b[3])
    for shape in ("sphere", "cube", "torus", "cone", "cylinder", "capsule", "walker"):
        for motion in motions_for(shape):
            grid = voxelize(WorldSpec(shape, "red", motion, size="large", yaw=33.0), 0.27, 20)
            inside = grid.density > 0.5
            border = inside[0].any() or inside[-1].any() or inside[:, 0].any() or inside[:, -1].any() or \
                inside[:, :, 0].any() or inside[:, :, -1].any()
            assert not border, f"{shape} {motion} leaves [-1, 1]^3"


def test_voxel_grid_holds_the_sphere_volume_and_colour():
    spec = WorldSpec("sphere", "orange", "still")
    grid = voxelize(spec, 0.0, 32)
    volume = float(grid.density.sum()) * (2 / 32) ** 3
    assert abs(volume - 4 / 3 * math.pi * spec.radius ** 3) < 0.03 * volume
    surface = grid.density > 0.5
    colour = grid.rgb[surface].mean(0)
    assert colour[0] > colour[1] > colour[2]  # orange, lit
    assert float(grid.rgb[grid.density == 0].abs().sum()) >= 0
