"""Image metrics against known values and a maintained reference, and scoring a scene against the truth."""

import math

import pytest
import torch

from pipelines.world.grammar import WorldSpec
from pipelines.world.metrics import evaluate_scene, evaluation_cameras, mask_iou, psnr, reprojection_error, ssim
from pipelines.world.render import render_world
from pipelines.world.scene import WorldScene
from renderers.cameras import orbit_cameras


def test_psnr_of_a_known_error():
    a = torch.zeros(2, 8, 8, 3)
    b = a + 0.1
    assert torch.allclose(psnr(a, b), torch.full((2,), 20.0), atol=1e-4)
    assert float(psnr(a, a)[0]) == 100.0
    mask = torch.zeros(2, 8, 8, 1)
    mask[:, :4] = 1
    b[:, 4:] = 1.0  # errors outside the mask do not count
    assert torch.allclose(psnr(a, b, mask), torch.full((2,), 20.0), atol=1e-4)


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 32, 40, 3, generator=g)
    b = (a + 0.2 * torch.randn(2, 32, 40, 3, generator=g)).clamp(0, 1)
    ours = ssim(a, b)
    for i in range(2):
        ref = structural_similarity(a[i].numpy(), b[i].numpy(), gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=1.0, channel_axis=-1)
        assert abs(float(ours[i]) - ref) < 2e-3
    assert torch.allclose(ssim(a, a), torch.ones(2), atol=1e-5)


def test_mask_iou():
    a = torch.zeros(1, 4, 4, 1)
    b = torch.zeros(1, 4, 4, 1)
    a[0, :2] = 1
    b[0, 1:3] = 1
    assert float(mask_iou(a, b)[0]) == pytest.approx(4 / 12)
    assert float(mask_iou(b * 0, b * 0)[0]) == 1.0


def test_a_scene_scores_perfectly_against_itself_and_worse_against_another():
    cams = evaluation_cameras(resolution=20)
    truth = WorldScene(WorldSpec("cube", "red", "spin"))
    same = evaluate_scene(truth, truth, cams, times=(0.1, 0.6))
    assert same["psnr"] == 100.0 and same["ssim"] == pytest.approx(1.0) and same["mask_iou"] == 1.0
    recoloured = evaluate_scene(WorldScene(WorldSpec("cube", "blue", "spin")), truth, cams, times=(0.1, 0.6))
    assert recoloured["mask_iou"] == 1.0 and recoloured["psnr"] < 25
    moved = evaluate_scene(WorldScene(WorldSpec("cube", "red", "orbit")), truth, cams, times=(0.1, 0.6))
    assert moved["mask_iou"] < 0.9


def test_reprojection_error_separates_consistent_views_from_inconsistent_ones():
    cams = orbit_cameras(2.7, 20.0, torch.tensor([0.0, 30.0, 60.0]), 40.0, 32, 32)
    spec = WorldSpec("capsule", "green", "still", "matte")
    out = render_world(spec, cams, 0.0)
    consistent = reprojection_error(out.depth, out.alpha, out.rgb, cams)
    other = render_world(WorldSpec("capsule", "purple", "still", "matte"), cams, 0.0)
    mixed = torch.cat([out.rgb[:1], other.rgb[1:]])
    inconsistent = reprojection_error(out.depth, out.alpha, mixed, cams)
    assert consistent < 0.05 < inconsistent
    assert not math.isnan(consistent)


def test_pooled_psnr_pools_every_value_whatever_the_layout():
    from renderers.metrics import pooled_psnr

    a = torch.zeros(2, 3, 4, 4, 3)
    b = a + 0.1
    assert pooled_psnr(a.reshape(6, 4, 4, 3), b) == pytest.approx(20.0, abs=1e-4)
    assert pooled_psnr(a, a) == 100.0
    with pytest.raises(ValueError, match="as many values"):
        pooled_psnr(a, b[:1])
