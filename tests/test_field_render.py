"""The 4D field and its volume renderer: compositing against closed forms, occupancy skipping and early
termination against dense sampling, normals, shading, training modes and bad input."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from renderers.cameras import Cameras, look_at, orbit_cameras
from renderers.field import Field4D, FieldConfig, Lighting, random_point_light, shade
from renderers.hash_grid import HashGridConfig
from renderers.volume import OccupancyGrid, RenderSettings, ray_box, render_image, render_rays, segment_bounds

TINY_GRID = HashGridConfig(n_levels=4, n_features_per_level=2, log2_hashmap_size=12, base_resolution=4,
                           per_level_scale=2.0)
TINY = FieldConfig(static_grid=TINY_GRID, dynamic_grid=TINY_GRID, mlp_width=16)


class UniformBall(nn.Module):
    """Closed-form input for the renderer: density ``sigma`` inside a ball of radius ``r``, one colour."""

    def __init__(self, sigma: float, radius: float = 0.5):
        super().__init__()
        self.sigma, self.radius = sigma, radius
        self.color = nn.Parameter(torch.tensor([0.2, 0.6, 0.9]))

    def forward(self, points, t):
        inside = (points.norm(dim=-1) < self.radius).float()
        return inside * self.sigma, self.color.expand(points.shape[0], 3)

    def normals(self, points, t):
        return torch.nn.functional.normalize(points, dim=-1)


def blob_field(seed: int = 0, **overrides) -> Field4D:
    """A fresh field: random tiny tables plus 4D-fy's density blob, i.e. a soft ball of radius ~0.5."""
    return Field4D(dataclasses.replace(TINY, **overrides), generator=torch.Generator().manual_seed(seed))


def test_ray_box_clips_to_the_cube_and_starts_inside_cameras_at_zero():
    origins = torch.tensor([[-3.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-3.0, 2.0, 0.0]])
    dirs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    near, far, hit = ray_box(origins, dirs)
    torch.testing.assert_close(near[:2], torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(far[:2], torch.tensor([4.0, 1.0]))
    assert hit.tolist() == [True, True, False]


def test_compositing_matches_the_closed_form_opacity_of_a_uniform_ball():
    field = UniformBall(sigma=3.0, radius=0.5)
    origins = torch.tensor([[-3.0, 0.0, 0.0], [-3.0, 0.3, 0.0], [-3.0, 0.8, 0.0]])
    dirs = torch.tensor([[1.0, 0.0, 0.0]]).expand(3, 3)
    out = render_rays(field, origins, dirs, 0.0, settings=RenderSettings(n_samples=1024, segments=4))
    chord = 2 * torch.sqrt((0.25 - torch.tensor([0.0, 0.09, 0.0])).clamp_min(0)) * torch.tensor([1.0, 1.0, 0.0])
    expected = 1 - torch.exp(-3.0 * chord)
    torch.testing.assert_close(out.alpha[:, 0], expected, atol=5e-3, rtol=0)
    torch.testing.assert_close(out.rgb, expected[:, None] * field.color.detach(), atol=5e-3, rtol=0)
    # the expected distance to the slab of constant density is where half its weight lies, ~ near the centre
    assert 2.5 < float(out.distance[0]) < 3.0 and float(out.distance[2]) == 0.0


def test_occupancy_skipping_and_early_termination_give_the_dense_image():
    field = blob_field(density_blob_scale=40.0)  # an opaque ball, so rays do terminate
    cams = orbit_cameras(3.0, 20.0, torch.tensor([0.0, 120.0]), 40.0, 24, 24)
    settings = RenderSettings(n_samples=64, segments=1)
    with torch.no_grad():
        dense = render_image(field, cams, 0.4, settings=settings)
        grid = OccupancyGrid(16)
        occupied = grid.update(field.density, [0.0, 0.4, 1.0], settings.step)
        skipped = render_image(field, cams, 0.4, occupancy=grid, settings=settings)
        early = render_image(field, cams, 0.4, occupancy=grid, settings=dataclasses.replace(settings, segments=8))
    assert 0.02 < occupied < 0.5
    assert skipped.skipped > 0.4 and early.skipped > skipped.skipped
    for out in (skipped, early):
        torch.testing.assert_close(out.rgb, dense.rgb, atol=2e-3, rtol=0)
        torch.testing.assert_close(out.alpha, dense.alpha, atol=2e-3, rtol=0)
    assert float(dense.alpha.amax()) > 0.99  # the blob is opaque, so the comparison means something


def test_segments_too_small_to_pay_for_a_field_query_join_a_neighbour():
    def counts(*runs):  # samples to query per index, 16 indices per run
        return torch.tensor([c for run in runs for c in [run] * 16])

    assert segment_bounds(counts(10, 10, 10, 10), 4) == [0, 16, 32, 48, 64]
    # empty space in front of the object joins the first run that has queries; a thin tail joins the one before
    assert segment_bounds(counts(0, 30, 70, 5), 4) == [0, 32, 64]
    assert segment_bounds(counts(0, 0, 0, 0), 4) == [0, 64]
    assert segment_bounds(counts(10, 10, 10, 10), 1) == [0, 64]
    assert segment_bounds(torch.tensor([0, 0, 9, 0, 0]), 2) == [0, 5]


def test_chunked_rendering_equals_one_batch_and_gradients_reach_every_group():
    field = blob_field()
    cams = orbit_cameras(3.0, 10.0, 45.0, 40.0, 12, 12)
    whole = render_image(field, cams, 0.5, settings=RenderSettings(n_samples=32))
    parts = render_image(field, cams, 0.5, settings=RenderSettings(n_samples=32, chunk=37))
    torch.testing.assert_close(whole.rgb, parts.rgb)
    (whole.rgb.sum() + whole.alpha.sum()).backward()
    for group in field.param_groups():
        grads = [p.grad for p in group["params"]]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), group["name"]
        assert any(float(g.abs().sum()) > 0 for g in grads), group["name"]


@pytest.mark.parametrize("normals", ["finite_difference", "analytic"])
def test_normals_of_the_blob_point_outward(normals):
    field = blob_field(normals=normals, finite_difference_eps=0.02)
    directions = torch.nn.functional.normalize(torch.randn(50, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    n = field.normals(directions * 0.45, 0.2).detach()
    assert float((n * directions).sum(-1).min()) > 0.9
    torch.testing.assert_close(n.norm(dim=-1), torch.ones(50))


def test_shading_modes():
    albedo = torch.tensor([[0.5, 0.2, 1.0]]).repeat(2, 1)
    points = torch.zeros(2, 3)
    normals = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    light = Lighting(torch.tensor([5.0, 0.0, 0.0]), ambient=0.25)
    torch.testing.assert_close(shade(albedo, None, points, "albedo"), albedo)
    lit = shade(albedo, normals, points, "lambertian", light)
    torch.testing.assert_close(lit[0], albedo[0])  # facing the light: ambient + full diffuse
    torch.testing.assert_close(lit[1], albedo[1] * 0.25)  # facing away: ambient only
    grey = shade(albedo, normals, points, "textureless", light)
    torch.testing.assert_close(grey[:, 0], grey[:, 1])
    with pytest.raises(ValueError, match="shading"):
        shade(albedo, normals, points, "phong", light)
    random_light = random_point_light(torch.tensor([[3.0, 0.0, 0.0]]), generator=torch.Generator().manual_seed(0))
    assert 0.1 <= random_light.ambient <= 0.5 and float(random_light.position.norm()) > 1.0


def test_lambertian_render_is_darker_on_the_side_away_from_the_light():
    field = UniformBall(sigma=50.0)
    cams = Cameras(look_at(torch.tensor([[0.0, -3.0, 0.0]])), orbit_cameras(3, 0, 0, 40, 16, 16).K, 16, 16)
    settings = RenderSettings(shading="lambertian", n_samples=96)
    out = render_image(field, cams, 0.0, settings=settings, lighting=Lighting(torch.tensor([-4.0, 0.0, 0.0]), 0.1))
    # the light is at -x; seen from -y, image right is world +x, so the left half faces the light
    left, right = out.rgb[0, 6:10, 3:6].mean().item(), out.rgb[0, 6:10, 10:13].mean().item()
    assert float(left) > 2 * float(right)


def test_dynamic_grid_modes_and_parameter_groups():
    field = blob_field()
    torch.nn.init.uniform_(field.dynamic_grid.table, -1, 1)
    points = torch.rand(64, 3) * 1.6 - 0.8
    assert not torch.allclose(field.density(points, 0.0), field.density(points, 1.0))
    field.dynamic_mode = "off"
    torch.testing.assert_close(field.density(points, 0.0), field.density(points, 1.0))
    field.dynamic_mode = "frozen"
    assert not field.dynamic_grid.table.requires_grad and field.static_grid.table.requires_grad
    field.density(points, 0.3).sum().backward()
    assert field.dynamic_grid.table.grad is None and field.static_grid.table.grad is not None
    groups = {g["name"]: g["lr"] for g in field.param_groups(0.01, 0.02, 0.001)}
    assert groups == {"static_grid": 0.01, "dynamic_grid": 0.02, "mlp": 0.001}
    with pytest.raises(ValueError, match="dynamic grid mode"):
        field.dynamic_mode = "paused"


def test_presets():
    paper = FieldConfig.preset("paper")
    assert (paper.static_grid.n_levels, paper.static_grid.n_features_per_level, paper.static_grid.log2_hashmap_size,
            paper.static_grid.base_resolution) == (16, 2, 19, 16)
    assert math.isclose(paper.static_grid.per_level_scale, 1.447, abs_tol=1e-3)
    assert paper.dynamic_grid == paper.static_grid
    small = FieldConfig.preset("small")
    assert small.static_grid.log2_hashmap_size < 19
    assert FieldConfig.from_dict(small.to_dict()) == small
    with pytest.raises(ValueError, match="unknown field preset"):
        FieldConfig.preset("huge")


def test_bad_input_gives_a_clear_error_or_a_defined_image():
    field = blob_field()
    cams = orbit_cameras(3.0, 20.0, 0.0, 40.0, 8, 8)
    bad = Cameras(cams.c2w.clone(), cams.K, 8, 8)
    bad.c2w[0, 0, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        render_image(field, bad, 0.0)
    with pytest.raises(ValueError, match="time"):
        render_image(field, cams, float("nan"))
    with pytest.raises(ValueError, match="image size"):
        Cameras(cams.c2w, cams.K, 0, 8)
    empty = render_rays(field, torch.zeros(0, 3), torch.zeros(0, 3), 0.0)
    assert empty.rgb.shape == (0, 3)
    with torch.no_grad():
        inside = render_image(field, Cameras(look_at(torch.tensor([[0.0, 0.0, 0.2]]), torch.tensor([0.0, 1.0, 0.2])),
                                             cams.K, 8, 8), 0.0)  # a camera inside the box and the object
        away = render_image(field, Cameras(look_at(torch.tensor([[0.0, 0.0, 3.0]]), torch.tensor([0.0, 0.0, 6.0])),
                                           cams.K, 8, 8), 0.0)  # looking away from the box
    assert torch.isfinite(inside.rgb).all() and float(inside.alpha.mean()) > 0.5
    assert float(away.alpha.abs().max()) == 0.0 and float(away.depth.abs().max()) == 0.0


@pytest.mark.gpu
def test_cuda_render_matches_the_cpu_reference():
    field = blob_field()
    torch.nn.init.uniform_(field.static_grid.table, -0.5, 0.5)
    cams = orbit_cameras(3.0, 20.0, 30.0, 40.0, 32, 32)
    grid = OccupancyGrid(16)
    with torch.no_grad():
        grid.update(field.density, [0.0, 0.5], RenderSettings().step)
        cpu = render_image(field, cams, 0.5, occupancy=grid)
        gpu = render_image(field.cuda(), cams.to("cuda"), 0.5, occupancy=grid.cuda())
    torch.testing.assert_close(gpu.rgb.cpu(), cpu.rgb, atol=2e-3, rtol=0)
    torch.testing.assert_close(gpu.alpha.cpu(), cpu.alpha, atol=2e-3, rtol=0)
