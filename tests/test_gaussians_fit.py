"""Fit deformable Gaussians (with densification) to multi-view, multi-time renders of a small analytic
moving scene on a CPU with the shared loop (``renderers.gaussian_fit``), and check held-out cameras at
held-out times. PNGs of the result go to the tmp folder."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from renderers.cameras import orbit_cameras
from renderers.deformation import DeformationConfig
from renderers.gaussian_fit import GaussianFit, GaussianFitSettings
from renderers.metrics import pooled_psnr as psnr
from renderers.rasterize import render_gaussians
from renderers.splats import GaussianSet, rgb_to_sh_dc

SIZE = 32
TRAIN_TIMES = [i / 8 for i in range(9)]
HELD_OUT_TIMES = [0.3125, 0.6875]  # half-way between two training times: the hardest place to interpolate


def analytic_scene(t: float) -> GaussianSet:
    """Three coloured balls: red swings along x, green rises, blue stays."""
    g = torch.Generator().manual_seed(0)

    def ball(center, radius, color, n):
        d = torch.randn(n, 3, generator=g)
        pts = d / d.norm(dim=-1, keepdim=True) * radius * torch.rand(n, 1, generator=g) ** (1 / 3)
        return torch.tensor(center) + pts, torch.tensor(color).expand(n, 3)

    parts = [ball([0.35 * math.sin(2 * math.pi * t), 0.0, 0.0], 0.25, (0.9, 0.2, 0.1), 150),
             ball([0.0, 0.4, 0.3 * t - 0.15], 0.2, (0.1, 0.8, 0.2), 120),
             ball([0.0, -0.4, 0.0], 0.22, (0.2, 0.3, 0.9), 120)]
    means, rgb = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    n = means.shape[0]
    return GaussianSet(means, torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1), torch.full((n, 3), math.log(0.07)),
                       torch.full((n,), 4.0), rgb_to_sh_dc(rgb)[:, None])


def train_cameras():
    return orbit_cameras(2.6, torch.tensor([10.0, 35.0] * 4), torch.arange(8) * 45.0, 40.0, SIZE, SIZE)


def held_out_cameras():
    return orbit_cameras(2.6, 22.0, torch.tensor([20.0, 200.0]), 40.0, SIZE, SIZE)


def fit_analytic(seed: int, steps: int = 300) -> tuple[GaussianFit, list[float]]:
    """500 grey Gaussians in a box, fitted to 8 cameras x 9 times of :func:`analytic_scene`."""
    cams = train_cameras()
    with torch.no_grad():
        images = torch.stack([render_gaussians(analytic_scene(t), cams).rgb for t in TRAIN_TIMES], 1)  # [V, F, ...]
    g = torch.Generator().manual_seed(seed)
    n = 500
    initial = GaussianSet((torch.rand(n, 3, generator=g) - 0.5) * 1.2, torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                          torch.full((n, 3), math.log(0.05)), torch.zeros(n), torch.zeros(n, 1, 3))
    fit = GaussianFit(initial, DeformationConfig(kind="mlp", width=64, depth=2, pos_frequencies=4, time_frequencies=4),
                      cams, TRAIN_TIMES, images, settings=GaussianFitSettings(steps=steps, seed=seed))
    return fit, fit.run()


def held_out_renders(fit: GaussianFit) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(prediction, truth) ``[2, H, W, 3]`` from the held-out cameras at each held-out time."""
    cams, scene = held_out_cameras(), fit.scene()
    with torch.no_grad():
        return [(scene.render(cams, t).rgb, render_gaussians(analytic_scene(t), cams).rgb) for t in HELD_OUT_TIMES]


@pytest.fixture(scope="module", params=[1, 2], ids=["1-thread", "2-threads"])
def fitted(request):
    """The fit on one and on two torch threads: the float summation order differs, and a fit that only
    reaches the bar for one order (seed 1 once scored 28.9 dB on two threads, 24.1 on one) is not robust."""
    threads = torch.get_num_threads()
    torch.set_num_threads(request.param)
    try:
        fit, losses = fit_analytic(seed=1)
        renders = held_out_renders(fit)
    finally:
        torch.set_num_threads(threads)
    return {"fit": fit, "losses": losses, "renders": renders}


def test_fit_reduces_loss_and_grows_by_densification(fitted):
    losses = fitted["losses"]
    assert np.mean(losses[-20:]) < 0.3 * np.mean(losses[:10])
    assert len(fitted["fit"].gaussians()) > 500


def test_deformation_keeps_only_time_frequencies_the_training_times_determine(fitted):
    # 9 times 1/8 apart sample up to 4 cycles per unit time: sin/cos(2^k pi (2t - 1)) for k = 0, 1 only.
    assert fitted["fit"].field.config.time_frequencies == 2


def test_fit_generalises_to_held_out_cameras_and_times(fitted, tmp_path_factory):
    import imageio.v3 as iio

    renders = fitted["renders"]
    scores = [psnr(p, t) for p, t in renders]
    rows = [torch.cat([torch.cat(list(p), 1), torch.cat(list(t), 1)], 0) for p, t in renders]
    image = (torch.cat(rows, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)
    iio.imwrite(tmp_path_factory.mktemp("gaussian_fit") / "held_out.png", np.kron(image, np.ones((4, 4, 1), np.uint8)))
    # The moving balls are where they should be: far above an empty guess.
    static = [psnr(torch.zeros_like(t), t) for _, t in renders]
    assert min(scores) > max(static) + 8
    # The bar, at each held-out time from held-out cameras. Measured 38.7 / 34.9 dB for this seed on
    # one thread, 37.2 / 33.5 on two; seeds 1-4 on 1 and 2 threads gave 32.9-38.7 dB per held-out time, seeds
    # 5-8 on one thread 30.9-36.8 (29.5 dB the worst single camera).
    assert min(scores) >= 28.0, scores


def test_state_restores_the_fit_for_a_resume(fitted):
    """A fresh fit given a finished one's ``state()`` renders the same scene and goes on from its step
    (what a checkpointed Diffusion² reconstruction resumes with)."""
    fit = fitted["fit"]
    fresh = GaussianFit(analytic_scene(0.0), fit.field.config, fit.cameras, fit.times, fit.images,
                        settings=fit.settings)
    fresh.load_state(fit.state(), fit.step_count - 1)
    assert fresh.step_count == fit.step_count - 1 and not fresh.warming_up
    cams = held_out_cameras()
    with torch.no_grad():
        assert torch.allclose(fresh.scene().render(cams, 0.3125).rgb, fit.scene().render(cams, 0.3125).rgb)
    assert np.isfinite(fresh.run()).all() and fresh.step_count == fit.settings.steps


def test_anchor_views_are_rendered_in_every_step(monkeypatch):
    """With ``anchor_views`` (Diffusion²'s reference view, which carries the input's motion) every step's draw of
    ``views_per_step`` cameras holds them; the others are drawn at random and all of them come up."""
    import renderers.gaussian_fit as gaussian_fit

    cams = train_cameras()
    with torch.no_grad():
        images = torch.stack([render_gaussians(analytic_scene(t), cams).rgb for t in TRAIN_TIMES[:2]], 1)
    drawn = []

    def recording(gaussians, cameras, **kwargs):
        drawn.append([int(torch.nonzero((cams.c2w - c).abs().amax((1, 2)) < 1e-6)[0]) for c in cameras.c2w])
        return render_gaussians(gaussians, cameras, **kwargs)

    monkeypatch.setattr(gaussian_fit, "render_gaussians", recording)
    settings = GaussianFitSettings(steps=12, warmup_steps=4, views_per_step=3, anchor_views=(2,))
    GaussianFit(analytic_scene(0.0), DeformationConfig(kind="mlp", width=8, depth=1), cams, TRAIN_TIMES[:2], images,
                settings=settings).run()
    assert len(drawn) == 12 and all(len(d) == 3 and len(set(d)) == 3 and 2 in d for d in drawn)
    assert len({v for d in drawn for v in d}) >= 6  # the rest are drawn at random
    with pytest.raises(ValueError, match="not among the 8 views"):
        GaussianFit(analytic_scene(0.0), DeformationConfig(kind="mlp", width=8, depth=1), cams, TRAIN_TIMES[:2],
                    images, settings=GaussianFitSettings(views_per_step=3, anchor_views=(8,)))
