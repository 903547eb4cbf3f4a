"""The torch Gaussian rasterizer against a dense all-pairs autograd reference, finite differences and gsplat."""

from __future__ import annotations

import math

import pytest
import torch

from renderers.cameras import orbit_cameras
from renderers.rasterize import ALPHA_MAX, ALPHA_MIN, T_MIN, project_gaussians, rasterize, render_gaussians
from renderers.sh import sh_to_color
from renderers.splats import GaussianSet


def dense_reference(means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds=None):
    """Every Gaussian against every pixel with plain autograd: the definition the tiles must reproduce."""
    means2d, cov2d, depths, _ = project_gaussians(means, quats, scales, viewmats, Ks, width, height)
    conic = torch.linalg.inv(cov2d)  # [C, N, 2, 2]
    ys, xs = torch.meshgrid(torch.arange(height, dtype=means.dtype) + 0.5, torch.arange(width, dtype=means.dtype) + 0.5,
                            indexing="ij")
    pix = torch.stack([xs, ys], -1).reshape(-1, 2)  # [P, 2]
    rgbs, alphas, depth_maps = [], [], []
    for c in range(viewmats.shape[0]):
        order = torch.argsort(depths[c].detach())
        order = order[depths[c, order] > 0.01]
        d = pix[:, None] - means2d[c, order][None]  # [P, N, 2]
        sigma = 0.5 * torch.einsum("pni,nij,pnj->pn", d, conic[c, order], d)
        alpha = (opacities[order][None] * torch.exp(-sigma)).clamp(max=ALPHA_MAX)
        alpha = torch.where(alpha < ALPHA_MIN, torch.zeros_like(alpha), alpha)
        rows_rgb, rows_a, rows_d = [], [], []
        for p in range(pix.shape[0]):
            T = torch.ones((), dtype=means.dtype)
            rgb = torch.zeros(3, dtype=means.dtype)
            acc_d = torch.zeros((), dtype=means.dtype)
            for k in range(order.shape[0]):
                a = alpha[p, k]
                if a == 0:
                    continue
                if T * (1 - a) <= T_MIN:
                    break
                rgb = rgb + a * T * colors[order[k]]
                acc_d = acc_d + a * T * depths[c, order[k]]
                T = T * (1 - a)
            if backgrounds is not None:
                rgb = rgb + T * backgrounds
            rows_rgb.append(rgb)
            rows_a.append(1 - T)
            rows_d.append(acc_d)
        rgbs.append(torch.stack(rows_rgb).reshape(height, width, 3))
        alphas.append(torch.stack(rows_a).reshape(height, width, 1))
        depth_maps.append(torch.stack(rows_d).reshape(height, width, 1))
    return torch.stack(rgbs), torch.stack(alphas), torch.stack(depth_maps)


def tiny_scene(n=6, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * 0.8
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = 0.08 + 0.12 * torch.rand(n, 3, generator=g, dtype=dtype)
    opacities = 0.4 + 0.5 * torch.rand(n, generator=g, dtype=dtype)
    colors = torch.rand(n, 3, generator=g, dtype=dtype)
    cams = orbit_cameras(3.0, torch.tensor([10.0, 30.0]), torch.tensor([20.0, 140.0]), 30.0, 20, 13)
    return means, quats, scales, opacities, colors, cams.viewmats.to(dtype), cams.K.to(dtype), cams.width, cams.height


@pytest.mark.parametrize("tile_size", [4, 8, 16])
def test_matches_dense_reference_values_and_gradients(tile_size):
    means, quats, scales, opacities, colors, viewmats, Ks, w, h = tiny_scene()
    bg = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    params = [t.clone().requires_grad_() for t in (means, quats, scales, opacities, colors)]
    out = rasterize(*params, viewmats, Ks, w, h, backgrounds=bg, tile_size=tile_size)
    ref_params = [t.clone().requires_grad_() for t in (means, quats, scales, opacities, colors)]
    ref_rgb, ref_alpha, ref_acc_depth = dense_reference(*ref_params, viewmats, Ks, w, h, backgrounds=bg)
    assert out.alpha.max() > 0.5  # the scene is really visible
    torch.testing.assert_close(out.rgb, ref_rgb, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out.alpha, ref_alpha, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out.depth * out.alpha, ref_acc_depth, rtol=1e-9, atol=1e-9)
    weights = torch.rand(out.rgb.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    loss = (out.rgb * weights).sum() + out.alpha.sum() + (out.depth * out.alpha).sum() * 0.3
    ref_loss = (ref_rgb * weights).sum() + ref_alpha.sum() + ref_acc_depth.sum() * 0.3
    loss.backward()
    ref_loss.backward()
    for name, p, r in zip(("means", "quats", "scales", "opacities", "colors"), params, ref_params):
        assert p.grad.abs().max() > 0, name
        torch.testing.assert_close(p.grad, r.grad, rtol=1e-7, atol=1e-9, msg=f"gradient of {name}")


def test_gradients_match_finite_differences():
    means, quats, scales, opacities, colors, viewmats, Ks, w, h = tiny_scene(n=4, seed=3)
    bg = torch.tensor([0.3, 0.1, 0.6], dtype=torch.float64)

    def f(means, quats, scales, opacities, colors, bg):
        out = rasterize(means, quats, scales, opacities, colors, viewmats, Ks, w, h, backgrounds=bg, tile_size=8)
        return out.rgb, out.alpha, out.depth

    inputs = [t.clone().requires_grad_() for t in (means, quats, scales, opacities, colors, bg)]
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_sh_colours_depend_on_view_like_the_sh_evaluation():
    means, quats, scales, opacities, _, viewmats, Ks, w, h = tiny_scene(n=1, seed=5)
    means = torch.zeros(1, 3, dtype=torch.float64)
    sh = torch.randn(1, 16, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.3
    out = rasterize(means, quats, scales, torch.ones(1, dtype=torch.float64) * 0.999, sh, viewmats, Ks, w, h,
                    sh_degree=3)
    campos = torch.linalg.inv(viewmats)[:, :3, 3]
    expected = sh_to_color(sh[0], -campos)  # direction camera -> Gaussian
    centre = out.rgb[:, h // 2, w // 2] / out.alpha[:, h // 2, w // 2]
    torch.testing.assert_close(centre, expected, rtol=1e-6, atol=1e-6)
    assert (expected[0] - expected[1]).abs().max() > 0.01


def test_bad_input_is_defined_or_named():
    means, quats, scales, opacities, colors, viewmats, Ks, w, h = tiny_scene(n=3, dtype=torch.float32)
    bg = torch.tensor([0.1, 0.2, 0.3])
    empty = rasterize(means[:0], quats[:0], scales[:0], opacities[:0], colors[:0], viewmats, Ks, w, h, backgrounds=bg)
    assert empty.rgb.shape == (2, h, w, 3) and torch.allclose(empty.rgb, bg.expand(2, h, w, 3))
    assert empty.alpha.abs().max() == 0 and empty.depth.abs().max() == 0
    bad = means.clone()
    bad[1, 0] = float("nan")
    with pytest.raises(ValueError, match="means contain NaN"):
        rasterize(bad, quats, scales, opacities, colors, viewmats, Ks, w, h)
    with pytest.raises(ValueError, match="colors must be"):
        rasterize(means, quats, scales, opacities, colors[:, :2], viewmats, Ks, w, h)
    # Zero scales and a zero quaternion: the 0.3 px dilation still draws a finite dot.
    degenerate = rasterize(means, torch.zeros_like(quats), torch.zeros_like(scales), opacities, colors, viewmats, Ks,
                           w, h)
    assert torch.isfinite(degenerate.rgb).all() and degenerate.alpha.max() > 0.1
    # Behind the camera, or too transparent to reach 1/255: nothing is drawn.
    gone = rasterize(means, quats, scales, torch.full_like(opacities, 1e-3), colors, viewmats, Ks, w, h)
    assert gone.alpha.abs().max() == 0 and (gone.radii == 0).all()


def test_render_gaussians_from_a_set_and_cameras():
    g = torch.Generator().manual_seed(0)
    n = 200
    gs = GaussianSet(means=torch.randn(n, 3, generator=g) * 0.3, quats=torch.randn(n, 4, generator=g),
                     log_scales=torch.full((n, 3), -3.0), opacity_logits=torch.zeros(n),
                     sh=torch.randn(n, 4, 3, generator=g) * 0.2)
    cams = orbit_cameras(3.0, 20.0, torch.tensor([0.0, 90.0, 180.0]), 40.0, 48, 32)
    out = render_gaussians(gs, cams, background=torch.ones(3))
    assert out.rgb.shape == (3, 32, 48, 3) and out.alpha.shape == (3, 32, 48, 1)
    assert out.means2d.shape == (3, n, 2) and out.radii.shape == (3, n, 2)
    covered = out.alpha[..., 0] > 0.5
    assert 0.02 < covered.float().mean() < 0.9
    d = out.depth[..., 0][covered]
    assert ((d > 2.0) & (d < 4.0)).all()


@pytest.mark.gpu
def test_gsplat_matches_torch_on_cuda():
    pytest.importorskip("gsplat")
    g = torch.Generator().manual_seed(0)
    n = 3000
    params = [torch.randn(n, 3, generator=g) * 0.4, torch.randn(n, 4, generator=g),
              torch.exp(torch.randn(n, 3, generator=g) * 0.3 - 3.5), torch.rand(n, generator=g) * 0.9 + 0.05,
              torch.randn(n, 16, 3, generator=g) * 0.3]
    cams = orbit_cameras(3.0, 20.0, torch.tensor([0.0, 120.0]), 40.0, 128, 96)
    outs, grads = {}, {}
    for backend in ("torch", "gsplat"):
        p = [t.cuda().requires_grad_() for t in params]
        out = rasterize(*p, cams.viewmats.cuda(), cams.K.cuda(), 128, 96, sh_degree=3, backend=backend,
                        backgrounds=torch.tensor([0.1, 0.2, 0.3], device="cuda"))
        (out.rgb.square().sum() + out.alpha.sum()).backward()
        outs[backend], grads[backend] = out, [t.grad for t in p]
    mse = (outs["torch"].rgb - outs["gsplat"].rgb).square().mean()
    assert -10 * math.log10(float(mse) + 1e-20) >= 40
    for gt, gg in zip(grads["torch"], grads["gsplat"]):
        assert float((gt - gg).norm() / gg.norm().clamp_min(1e-12)) < 2e-2


@pytest.mark.parametrize("chunk", [3, 32])
def test_opaque_stacks_terminate_and_clamp_like_the_reference(monkeypatch, chunk):
    """Many stacked Gaussians: pixels stop at T < 1e-4 (inside or across steps) and alpha clamps at 0.999."""
    import renderers.rasterize as rast

    monkeypatch.setattr(rast, "_CHUNK_MIN", chunk)
    monkeypatch.setattr(rast, "_CHUNK_MAX", chunk)
    n = 24
    g = torch.Generator().manual_seed(2)
    means = torch.zeros(n, 3, dtype=torch.float64)
    means[:, 0] = torch.linspace(-0.6, 0.6, n, dtype=torch.float64)  # along the view axis: distinct depths
    means[:, 1:] = (torch.rand(n, 2, generator=g, dtype=torch.float64) - 0.5) * 0.1
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    scales = 0.15 + 0.05 * torch.rand(n, 3, generator=g, dtype=torch.float64)
    opacities = 0.45 + 0.1 * torch.rand(n, generator=g, dtype=torch.float64)
    opacities[5] = 0.9999  # clamped to 0.999
    colors = torch.rand(n, 3, generator=g, dtype=torch.float64)
    cams = orbit_cameras(3.0, 0.0, 0.0, 25.0, 10, 8)
    viewmats, Ks = cams.viewmats.double(), cams.K.double()
    params = [t.clone().requires_grad_() for t in (means, quats, scales, opacities, colors)]
    out = rasterize(*params, viewmats, Ks, 10, 8, tile_size=4)
    ref_params = [t.clone().requires_grad_() for t in (means, quats, scales, opacities, colors)]
    ref_rgb, ref_alpha, ref_depth = dense_reference(*ref_params, viewmats, Ks, 10, 8)
    assert (1 - ref_alpha).min() < 2e-4  # some pixels did terminate
    torch.testing.assert_close(out.rgb, ref_rgb, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out.alpha, ref_alpha, rtol=1e-9, atol=1e-9)
    weights = torch.rand(out.rgb.shape, generator=g, dtype=torch.float64)
    ((out.rgb * weights).sum() + (out.depth * out.alpha).sum()).backward()
    ((ref_rgb * weights).sum() + ref_depth.sum()).backward()
    for name, p, r in zip(("means", "quats", "scales", "opacities", "colors"), params, ref_params):
        torch.testing.assert_close(p.grad, r.grad, rtol=1e-7, atol=1e-9, msg=f"gradient of {name}")
