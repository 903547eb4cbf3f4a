"""SH evaluation, deformation fields and densification of deformable Gaussians."""

from __future__ import annotations

import math

import pytest
import torch

from renderers.cameras import orbit_cameras
from renderers.deformation import (
    DeformationConfig,
    HexPlaneField,
    deform_gaussians,
    make_deformation,
    positional_encoding,
)
from renderers.densify import Densifier, DensifyConfig, DensifyStats, densify_and_prune, reset_opacity
from renderers.gaussian_fit import GaussianFit, GaussianFitSettings, deformation_for_times
from renderers.rasterize import render_gaussians
from renderers.sh import sh_basis, sh_to_color
from renderers.splats import GaussianSet


# -------------------------------------------------------------------- spherical harmonics
def test_sh_basis_is_orthonormal_on_the_sphere():
    # A Fibonacci lattice: near-uniform points, so the mean is an accurate integral over the sphere.
    n = 20_000
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (1 + 5**0.5) * i
    r = (1 - z * z).sqrt()
    dirs = torch.stack([r * phi.cos(), r * phi.sin(), z], -1)
    Y = sh_basis(3, dirs)  # [P, 16]
    gram = 4 * math.pi * (Y.t() @ Y) / n
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=1e-3, rtol=0)


def test_sh_colour_degrees_and_errors():
    sh = torch.zeros(5, 16, 3)
    sh[:, 0] = 1.0
    d = torch.randn(5, 3)
    torch.testing.assert_close(sh_to_color(sh, d), torch.full((5, 3), 0.28209479177387814 + 0.5))
    sh[:, 2] = 1.0  # the z-linear band: brighter looking along +z than along -z
    up, down = sh_to_color(sh, torch.tensor([[0.0, 0, 1]]).expand(5, 3)), sh_to_color(sh, torch.tensor([[0.0, 0, -1]]))
    assert (up > down).all()
    torch.testing.assert_close(sh_to_color(sh, d, degree=0), torch.full((5, 3), 0.28209479177387814 + 0.5))
    with pytest.raises(ValueError, match="degree must be"):
        sh_to_color(sh, d, degree=4)


# -------------------------------------------------------------------- deformation
def _blob(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    return GaussianSet(torch.randn(n, 3, generator=g) * 0.2, torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                       torch.full((n, 3), -3.0), torch.full((n,), 2.0), torch.rand(n, 1, 3, generator=g))


@pytest.mark.parametrize("kind", ["hexplane", "mlp"])
def test_deformation_starts_at_identity_and_learns_a_motion(kind):
    torch.manual_seed(0)
    config = DeformationConfig(kind=kind, width=32, depth=2, plane_resolutions=(8, 16), time_resolution=8,
                               plane_features=8, pos_frequencies=4, time_frequencies=4)
    field = make_deformation(config)
    blob = _blob()
    for t in (0.0, 0.7):
        moved = deform_gaussians(blob, field, t)
        assert torch.equal(moved.means, blob.means) and torch.equal(moved.log_scales, blob.log_scales)
    # Teach it x += 0.3 t; renders then move with t.
    opt = torch.optim.Adam(field.parameters(), lr=1e-2)
    for _ in range(150):
        t = torch.rand(blob.means.shape[0], 1)
        d_means, d_quats, d_scales = field(blob.means, t)
        loss = (d_means[:, 0] - 0.3 * t[:, 0]).square().mean() + d_means[:, 1:].square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        shift = (deform_gaussians(blob, field, 1.0).means - blob.means).mean(0)
        assert abs(float(shift[0]) - 0.3) < 0.05 and shift[1:].abs().max() < 0.05
        cams = orbit_cameras(3.0, 0.0, 90.0, 40.0, 32, 32)  # looking along -y: x is image-horizontal
        a = render_gaussians(deform_gaussians(blob, field, 0.0), cams)
        b = render_gaussians(deform_gaussians(blob, field, 1.0), cams)
        cx = [float((o.alpha[0, ..., 0] * torch.arange(32.0)).sum() / o.alpha.sum()) for o in (a, b)]
        assert abs(cx[1] - cx[0]) > 2.0  # the blob moved across the image by pixels
        assert float(field.smoothness_loss(blob.means, 0.5)) >= 0


def test_hexplane_time_smoothness_penalises_jagged_time_planes():
    field = HexPlaneField(DeformationConfig(plane_resolutions=(8,), time_resolution=8, plane_features=4))
    assert float(field.plane_smoothness().detach()) == 0  # time planes start constant
    with torch.no_grad():
        field.planes[2][:, :, ::2] += 0.5  # (x, t) plane, jagged along t
    assert float(field.plane_smoothness().detach()) > 0.1
    with pytest.raises(ValueError, match="unknown deformation field kind"):
        DeformationConfig(kind="spline")
    cfg = DeformationConfig(kind="mlp", plane_resolutions=(4, 8))
    assert DeformationConfig.from_dict(cfg.to_dict()) == cfg


def test_time_detail_is_capped_at_what_the_training_times_determine():
    mlp = DeformationConfig(kind="mlp", time_frequencies=6)
    # 2^k cycles per unit time for sin/cos(2^k pi (2t - 1)); F uniform times sample up to (F - 1) / 2 cycles.
    assert deformation_for_times(mlp, [f / 24 for f in range(25)]).time_frequencies == 4  # 8 < 12 <= 16
    assert deformation_for_times(mlp, [f / 8 for f in range(9)]).time_frequencies == 2  # 4 cycles: sin vanishes
    assert deformation_for_times(mlp, [f / 7 for f in range(8)]).time_frequencies == 2
    assert deformation_for_times(mlp, [0.0, 0.5, 1.0]).time_frequencies == 0  # t itself only
    assert deformation_for_times(mlp, [0.0]).time_frequencies == 0
    assert deformation_for_times(mlp, [f / 99 for f in range(100)]).time_frequencies == 6  # never above the config
    hexplane = DeformationConfig(kind="hexplane", time_resolution=16)
    assert deformation_for_times(hexplane, [f / 5 for f in range(6)]).time_resolution == 6
    field = make_deformation(deformation_for_times(mlp, [0.0, 0.5, 1.0]))
    assert field(torch.zeros(4, 3), 0.5)[0].shape == (4, 3)


def test_position_frequencies_are_released_coarse_to_fine():
    x = torch.rand(5, 3) * 2 - 1
    full = positional_encoding(x, 4)
    assert torch.equal(positional_encoding(x, 4, 4.0), full)  # Nerfies' window at alpha = L: every frequency
    sin = positional_encoding(x, 4, 1.5)[:, 3:15].view(5, 3, 4)  # alpha 1.5: k = 0 whole, k = 1 half, k >= 2 off
    assert torch.allclose(sin, full[:, 3:15].view(5, 3, 4) * torch.tensor([1.0, 0.5, 0.0, 0.0]), atol=1e-6)
    # The fit opens the window over the first half of the deformation stage and leaves it open.
    n, times = 8, [0.0, 0.5, 1.0]
    initial = GaussianSet(torch.rand(n, 3), torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1), torch.full((n, 3), -3.0),
                          torch.zeros(n), torch.zeros(n, 1, 3))
    cams = orbit_cameras(2.6, 20.0, torch.tensor([0.0, 90.0]), 40.0, 8, 8)
    fit = GaussianFit(initial, DeformationConfig(kind="mlp", pos_frequencies=4), cams, times,
                      torch.zeros(2, 3, 8, 8, 3), settings=GaussianFitSettings(steps=10, warmup_steps=2))
    windows = []
    for _ in range(10):
        fit.step()
        windows.append(fit.field.frequency_window)
    assert windows == [0.0, 0.0, 0.0, 1.0, 2.0, 3.0, None, None, None, None]
    assert fit.scene().deformation.frequency_window is None


# -------------------------------------------------------------------- densification
def _params(n=6):
    params = {
        "means": torch.zeros(n, 3), "quats": torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
        "log_scales": torch.log(torch.tensor([0.001, 0.001, 0.05, 0.05, 0.001, 0.3]))[:, None].repeat(1, 3),
        "opacity_logits": torch.tensor([2.0, 2.0, 2.0, 2.0, -8.0, 2.0]), "sh": torch.arange(n * 3.0).view(n, 1, 3)}
    return {k: v.requires_grad_() for k, v in params.items()}


def test_clone_split_prune_counts_and_optimizer_state():
    params = _params()
    opt = torch.optim.Adam([{"params": [p]} for p in params.values()])
    sum(p.sum() for p in params.values()).backward()
    opt.step()  # Adam now has moments for every Gaussian
    stats = DensifyStats(grad_sum=torch.tensor([1e-3, 0, 1e-3, 0, 0, 0]), count=torch.ones(6), max_radii=torch.ones(6))
    cfg = DensifyConfig()
    # Gaussian 0: high gradient, small -> cloned. 2: high, large (0.05 > 0.01 x extent 1) -> split in 2.
    # 4: opacity sigmoid(-8) < 0.005 -> pruned. 5: too big in the world (0.3 > 0.1) -> pruned when prune_large.
    result = densify_and_prune(params, opt, stats, cfg, scene_extent=1.0, prune_large=True,
                               generator=torch.Generator().manual_seed(0))
    assert result == {"cloned": 1, "split": 1, "pruned": 2, "before": 6, "after": 6 - 1 + 1 + 2 - 2}
    n = params["means"].shape[0]
    assert all(p.shape[0] == n and p.is_leaf and p.requires_grad for p in params.values())
    # The split pair has scales 0.05 / 1.6 and sits near the parent; the clone is exact.
    split_scales = params["log_scales"].exp()[:, 0]
    assert torch.isclose(split_scales, torch.tensor(0.05 / 1.6), rtol=0.01).sum() == 2  # Adam moved them by 1e-3
    assert (params["sh"][:, 0, 0].abs() < 0.01).sum() == 2  # Gaussian 0 and its clone
    # The optimizer follows: new tensors, moments kept for survivors and zero for new Gaussians.
    opt_params = [p for group in opt.param_groups for p in group["params"]]
    assert all(any(p is q for q in opt_params) for p in params.values())
    exp_avg = opt.state[params["sh"]]["exp_avg"]
    assert exp_avg.shape == params["sh"].shape
    assert int((exp_avg.abs().sum((1, 2)) > 0).sum()) == 3  # survivors 0, 1, 3; the clone and split halves are new
    opt.step()  # still a consistent optimizer


def test_opacity_reset_and_schedule():
    params = _params()
    opt = torch.optim.Adam([{"params": [p]} for p in params.values()])
    reset_opacity(params, opt, 0.01)
    assert torch.sigmoid(params["opacity_logits"]).max() <= 0.01 + 1e-6
    assert float(torch.sigmoid(params["opacity_logits"].detach()).min()) < 0.001  # lower ones untouched

    g = torch.Generator().manual_seed(0)
    n = 400
    params = {"means": torch.randn(n, 3, generator=g) * 0.3, "quats": torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
              "log_scales": torch.full((n, 3), -2.5), "opacity_logits": torch.zeros(n),
              "sh": torch.zeros(n, 1, 3)}
    params = {k: v.requires_grad_() for k, v in params.items()}
    opt = torch.optim.Adam([{"params": [p], "lr": 1e-3} for p in params.values()])
    densifier = Densifier(DensifyConfig(start=2, interval=2, stop=10, grad_threshold=1e-5), 1.0, g)
    cams = orbit_cameras(3.0, 20.0, torch.tensor([0.0, 90.0]), 40.0, 32, 32)
    target = torch.zeros(2, 32, 32, 3)
    target[:, 8:24, 8:24, 0] = 1.0
    counts = []
    for step in range(1, 5):
        out = render_gaussians(GaussianSet(**params), cams)
        loss = (out.rgb - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        result = densifier.step(step, params, opt, out)
        opt.step()
        counts.append(params["means"].shape[0])
        if step % 2:
            assert result is None
        else:
            assert result["after"] == result["before"] + result["cloned"] + result["split"] - result["pruned"]
    assert counts[-1] > n  # it grew where the gradients were

