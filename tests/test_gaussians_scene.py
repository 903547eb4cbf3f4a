"""The deformable Gaussian scene: Scene protocol, save/load, splats for the viewer and PLY, mesh."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from renderers.cameras import orbit_cameras
from renderers.deformation import DeformationConfig, make_deformation
from renderers.gaussian_scene import DeformableGaussianScene
from renderers.scene import DeformableScene, Scene, SplatScene, load_scene
from renderers.splats import GaussianSet, rgb_to_sh_dc


def _scene(kind="mlp", n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, 3, generator=g)
    means = d / d.norm(dim=-1, keepdim=True) * 0.4 * torch.rand(n, 1, generator=g) ** (1 / 3)
    sh = torch.randn(n, 16, 3, generator=g) * 0.05
    sh[:, 0] = rgb_to_sh_dc(torch.tensor([0.8, 0.3, 0.1]))
    gaussians = GaussianSet(means, torch.randn(n, 4, generator=g), torch.full((n, 3), -2.8), torch.full((n,), 3.0), sh)
    torch.manual_seed(seed)
    field = make_deformation(DeformationConfig(kind=kind, width=16, depth=1, plane_resolutions=(8,), time_resolution=4,
                                               plane_features=4, pos_frequencies=2, time_frequencies=2))
    with torch.no_grad():  # a visible motion: position head and (hex-plane) time planes made to vary with t
        for p in field.heads["means"][-1].parameters():
            p.normal_(0, 0.3)
        for p in getattr(field, "planes", []):
            p.add_(torch.randn_like(p))
    return DeformableGaussianScene(gaussians, field)


@pytest.mark.parametrize("kind", ["hexplane", "mlp"])
def test_protocols_render_and_round_trip(tmp_path, kind):
    scene = _scene(kind)
    assert isinstance(scene, Scene) and isinstance(scene, DeformableScene) and isinstance(scene, SplatScene)
    cams = orbit_cameras(2.5, 15.0, torch.tensor([0.0, 120.0]), 40.0, 40, 32)
    with torch.no_grad():
        a, b = scene.render(cams, 0.0), scene.render(cams, 1.0)
    assert a.rgb.shape == (2, 32, 40, 3) and a.alpha.shape == a.depth.shape == (2, 32, 40, 1)
    assert (a.rgb - b.rgb).abs().mean() > 1e-3  # it moves
    assert float(a.alpha.max()) > 0.9 and float(a.alpha.min()) == 0.0
    scene.save(tmp_path / "scene")
    loaded = load_scene(tmp_path / "scene")  # found by kind, without importing the module first
    assert type(loaded) is DeformableGaussianScene and loaded.time_range == scene.time_range
    with torch.no_grad():
        c = loaded.render(cams, 1.0)
    torch.testing.assert_close(c.rgb, b.rgb, rtol=0, atol=0)
    moved = torch.tensor([[0.1, 0.0, 0.2], [0.0, -0.3, 0.0]])
    torch.testing.assert_close(loaded.deform_points(moved, 0.6), scene.deform_points(moved, 0.6))
    assert (scene.deform_points(moved, 0.6) - moved).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["hexplane", "mlp"])
def test_a_placed_scene_is_the_scene_seen_from_cameras_moved_the_same_way(tmp_path, kind):
    from renderers.cameras import Cameras

    scene = _scene(kind)
    cams = orbit_cameras(2.5, 15.0, torch.tensor([0.0, 120.0]), 40.0, 32, 32)
    once = scene.placed(0.7, [0.2, -0.1, 0.3])
    twice = once.placed(1.5, [0.0, 0.2, -0.1])  # placements compose, the motion's with them
    placed_cams = cams
    for scale, offset in ((0.7, [0.2, -0.1, 0.3]), (1.5, [0.0, 0.2, -0.1])):
        c2w = placed_cams.c2w.clone()
        c2w[:, :3, 3] = c2w[:, :3, 3] * scale + torch.tensor(offset)
        placed_cams = Cameras(c2w, cams.K, 32, 32)
    twice.save(tmp_path / "placed")
    loaded = load_scene(tmp_path / "placed")
    with torch.no_grad():
        for t in (0.0, 0.7):
            want = scene.render(cams, t)
            for placed in (twice, loaded):
                got = placed.render(placed_cams, t)
                torch.testing.assert_close(got.rgb, want.rgb, rtol=0, atol=1e-4)
                torch.testing.assert_close(got.alpha, want.alpha, rtol=0, atol=1e-4)
    point = torch.tensor([[0.1, 0.0, 0.2]])
    torch.testing.assert_close(twice.deform_points(point * 1.05 + torch.tensor([0.3, 0.05, 0.35]), 0.6),
                               scene.deform_points(point, 0.6) * 1.05 + torch.tensor([0.3, 0.05, 0.35]))
    assert scene.deformation.config.placement_scale == 1.0  # the original is untouched


def test_splats_at_time_are_ply_ready():
    """gaussians_at gives the 3DGS PLY parameters as they are stored: float32, finite, SH channel-major rest."""
    scene = _scene()
    g = scene.gaussians_at(0.5)
    assert not g.means.requires_grad and len(g) == 400 and g.sh_degree == 3
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
        value = getattr(g, name)
        assert value.dtype == torch.float32 and torch.isfinite(value).all()
    assert (g.means - scene.gaussians.means).abs().max() > 1e-3  # deformed, not the canonical set
    # The PLY columns: f_dc_0..2, then f_rest_* channel-major (all R coefficients, then G, then B).
    f_dc = g.sh[:, 0].numpy()
    f_rest = g.sh[:, 1:].transpose(1, 2).reshape(len(g), -1).numpy()
    assert f_dc.shape == (400, 3) and f_rest.shape == (400, 45)
    back = torch.from_numpy(f_rest).view(len(g), 3, 15).transpose(1, 2)
    torch.testing.assert_close(back, g.sh[:, 1:])


def test_mesh_from_the_opacity_field_follows_the_motion():
    scene = _scene()
    m0, m1 = scene.to_mesh(0.0, resolution=32), scene.to_mesh(1.0, resolution=32)
    assert not m0.is_empty and m0.vertex_colors is not None
    centre = scene.gaussians_at(0.0).means.mean(0).numpy()
    size = m0.bounds()[1] - m0.bounds()[0]
    assert (size > 0.5).all() and (size < 1.4).all()  # a ball of radius ~0.4 plus the Gaussians' spread
    assert np.abs(m0.vertices.mean(0) - centre).max() < 0.15
    # Faces wind outwards: the signed volume is positive; colour is the DC colour.
    v, f = m0.vertices.astype(np.float64), m0.faces
    volume = np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6
    assert volume > 0.05
    np.testing.assert_allclose(m0.vertex_colors.mean(0), [0.8, 0.3, 0.1], atol=0.05)
    shift = m1.vertices.mean(0) - m0.vertices.mean(0)
    expected = (scene.gaussians_at(1.0).means.mean(0) - scene.gaussians_at(0.0).means.mean(0)).numpy()
    np.testing.assert_allclose(shift, expected, atol=0.1)


def test_load_errors_name_the_folder(tmp_path):
    scene = _scene()
    scene.save(tmp_path / "s")
    (tmp_path / "s" / "deformation.safetensors").unlink()
    with pytest.raises(ValueError, match="not a complete Gaussian scene"):
        DeformableGaussianScene.load(tmp_path / "s")
    static = DeformableGaussianScene(scene.gaussians)
    static.save(tmp_path / "static")
    loaded = DeformableGaussianScene.load(tmp_path / "static")
    assert loaded.deformation is None
    torch.testing.assert_close(loaded.gaussians_at(0.3).means, scene.gaussians.means)
