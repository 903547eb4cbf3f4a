"""Parameterisation and schedule conversions, checked against diffusers' own schedulers."""

import pytest
import torch

from pipelines.priors.schedules import (
    DiscreteSchedule,
    EDMSchedule,
    convert,
    edm_sigma_to_vp,
    scaled_linear_alphas_cumprod,
    to_eps,
    to_v,
    to_x0,
)

KINDS = ("epsilon", "v_prediction", "sample")


@pytest.mark.parametrize("source", KINDS)
@pytest.mark.parametrize("target", KINDS)
def test_every_parameterisation_round_trips(source, target):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 5, 5, generator=g, dtype=torch.float64), torch.randn(3, 4, 5, 5, generator=g,
                                                                                       dtype=torch.float64)
    alpha, sigma = edm_sigma_to_vp(torch.tensor([0.1, 1.0, 30.0], dtype=torch.float64))
    a, s = alpha.reshape(-1, 1, 1, 1), sigma.reshape(-1, 1, 1, 1)
    x_t = a * x0 + s * eps
    truth = {"epsilon": eps, "sample": x0, "v_prediction": a * eps - s * x0}
    pred = truth[source]
    assert torch.allclose(convert(pred, x_t, alpha, sigma, source, target), truth[target], atol=1e-8)
    back = convert(convert(pred, x_t, alpha, sigma, source, target), x_t, alpha, sigma, target, source)
    assert torch.allclose(back, pred, atol=1e-8)
    assert torch.allclose(to_x0(pred, x_t, alpha, sigma, source), x0, atol=1e-8)
    assert torch.allclose(to_eps(pred, x_t, alpha, sigma, source), eps, atol=1e-8)
    assert torch.allclose(to_v(pred, x_t, alpha, sigma, source), truth["v_prediction"], atol=1e-8)


def test_unknown_parameterisation_is_named():
    with pytest.raises(ValueError, match="flow"):
        to_eps(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1), torch.ones(1), "flow")


def test_discrete_schedule_matches_diffusers_and_its_ddim_x0():
    from diffusers import DDIMScheduler

    for kind in ("epsilon", "v_prediction"):
        sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              prediction_type=kind, clip_sample=False, set_alpha_to_one=False)
        ours = DiscreteSchedule.from_scheduler_config(dict(sched.config))
        assert torch.allclose(ours.alphas_cumprod.float(), sched.alphas_cumprod, atol=1e-6)
        sched.set_timesteps(50)
        t = int(sched.timesteps[10])
        x_t, out = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
        expected = sched.step(out, t, x_t).pred_original_sample
        alpha, sigma = ours.alpha_sigma(torch.tensor([t]))
        assert torch.allclose(to_x0(out, x_t, alpha, sigma, kind), expected, atol=1e-4)


def test_timestep_and_edm_sigma_convert_both_ways():
    sched = DiscreteSchedule(scaled_linear_alphas_cumprod())
    t = torch.tensor([0.0, 1.0, 250.5, 999.0])
    s = sched.to_edm_sigma(t)
    assert torch.all(s[1:] > s[:-1])
    assert torch.allclose(sched.from_edm_sigma(s), t, atol=1e-3)
    # the VP pair of an EDM sigma is the DDPM pair at that timestep
    a, sg = edm_sigma_to_vp(s)
    a2, sg2 = sched.alpha_sigma(t)
    assert torch.allclose(a, a2, atol=1e-5) and torch.allclose(sg, sg2, atol=1e-5)


def test_edm_v_prediction_matches_diffusers_euler_formula():
    """SVD's scheduler: x0 = v * (-s / sqrt(s^2 + 1)) + x_edm / (s^2 + 1), with the UNet fed x_edm / sqrt(s^2+1)."""
    sched = EDMSchedule()
    s = torch.tensor([0.5, 4.0, 80.0])
    x_edm, v = torch.randn(3, 4, 6, 6), torch.randn(3, 4, 6, 6)
    sb = s.reshape(-1, 1, 1, 1)
    expected = v * (-sb / (sb ** 2 + 1).sqrt()) + x_edm / (sb ** 2 + 1)
    alpha, sigma = sched.alpha_sigma(s)
    x_vp = x_edm * alpha.reshape(-1, 1, 1, 1)
    assert torch.allclose(to_x0(v, x_vp, alpha, sigma, "v_prediction"), expected, atol=1e-5)
    assert torch.allclose(sched.model_timestep(s), 0.25 * s.log())
    ends = sched.level_at(torch.tensor([0.0, 1.0]))
    assert torch.allclose(ends, torch.tensor([sched.sigma_min, sched.sigma_max]), rtol=1e-4)


def test_annealed_noise_range_moves_linearly_from_start_to_end():
    from pipelines.priors.guidance import anneal_range, sds_weight

    assert anneal_range(0, 100, (0.02, 0.98), (0.02, 0.5)) == (0.02, 0.98)
    assert anneal_range(50, 100, (0.02, 0.98), (0.02, 0.5)) == pytest.approx((0.02, 0.74))
    assert anneal_range(500, 100, (0.02, 0.98), (0.02, 0.5)) == pytest.approx((0.02, 0.5))
    alpha, sigma = torch.tensor([0.6, 0.8]), torch.tensor([0.8, 0.6])
    assert torch.allclose(sds_weight(alpha, sigma), sigma ** 2)
    with pytest.raises(ValueError, match="'dreamtime'"):
        sds_weight(alpha, sigma, "dreamtime")
