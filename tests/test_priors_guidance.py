"""Score distillation against a denoiser whose answer is known: Gaussian data, exact posterior mean."""

import pytest
import torch

from pipelines.priors.denoiser import Conditioning, Denoiser
from pipelines.priors.guidance import GuidanceOutput, emphasise_motion, sds_loss
from pipelines.priors.schedules import DiscreteSchedule, EDMSchedule, scaled_linear_alphas_cumprod


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Element-sized tensors: a second thread only adds OpenMP barriers that stall when the other core is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class GaussianOracle(Denoiser):
    """The exact denoiser for data x0 ~ N(mu, tau^2) per element, answering in a chosen parameterisation.

    E[x0 | x_t] = mu + alpha tau^2 (x_t - alpha mu) / (alpha^2 tau^2 + sigma^2). Conditioning text [B, 1, 1]
    shifts mu (so that guidance has something to amplify); the unconditional mean is ``mu``.
    """

    def __init__(self, schedule, parameterization, mu=1.5, tau=0.3):
        super().__init__()
        self.schedule, self.parameterization, self.mu, self.tau = schedule, parameterization, mu, tau
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the module a device and dtype

    def forward(self, x_t, level, cond):
        alpha, sigma = self.schedule.alpha_sigma(level)
        a, s = alpha.reshape(-1, 1, 1, 1, 1, 1), sigma.reshape(-1, 1, 1, 1, 1, 1)
        mu = self.mu + cond.text.reshape(-1, 1, 1, 1, 1, 1)
        x0 = mu + a * self.tau ** 2 * (x_t - a * mu) / (a ** 2 * self.tau ** 2 + s ** 2)
        eps = (x_t - a * x0) / s
        return {"epsilon": eps, "v_prediction": a * eps - s * x0, "sample": x0}[self.parameterization]


@pytest.mark.parametrize(("schedule", "kind"), [
    (DiscreteSchedule(scaled_linear_alphas_cumprod()), "epsilon"),
    (DiscreteSchedule(scaled_linear_alphas_cumprod()), "v_prediction"),
    (EDMSchedule(0.002, 80.0), "v_prediction"),
    (EDMSchedule(0.002, 80.0), "sample"),
])
def test_sds_descent_moves_latents_to_the_data_mode(schedule, kind):
    oracle = GaussianOracle(schedule, kind)
    cond = Conditioning(text=torch.zeros(2, 1, 1))
    latents = torch.full((2, 1, 2, 4, 3, 3), -2.0, requires_grad=True)
    opt = torch.optim.SGD([latents], lr=0.5)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        opt.zero_grad()
        sds_loss(oracle, latents, cond, guidance_scale=1.0, t_range=(0.02, 0.98), generator=g).loss.backward()
        opt.step()
    assert latents.mean().item() == pytest.approx(oracle.mu, abs=0.15)


def test_guidance_scale_pushes_past_the_conditional_mode():
    """CFG extrapolates from the unconditional mean (mu) through the conditional one (mu + 1)."""
    oracle = GaussianOracle(DiscreteSchedule(scaled_linear_alphas_cumprod()), "epsilon", mu=0.0)
    cond = Conditioning(text=torch.ones(1, 1, 1))
    uncond = Conditioning(text=torch.zeros(1, 1, 1))
    results = []
    for scale in (1.0, 3.0):
        latents = torch.zeros(1, 1, 1, 4, 3, 3, requires_grad=True)
        opt = torch.optim.SGD([latents], lr=0.5)
        g = torch.Generator().manual_seed(0)
        for _ in range(150):
            opt.zero_grad()
            sds_loss(oracle, latents, cond, guidance_scale=scale, uncond=uncond, generator=g).loss.backward()
            opt.step()
        results.append(latents.mean().item())
    assert results[0] == pytest.approx(1.0, abs=0.15)
    assert results[1] > results[0] + 0.5


def test_motion_emphasis_scales_only_what_changes_between_frames():
    latents = torch.randn(1, 1, 4, 3, 2, 2, requires_grad=True)
    shared, motion = torch.randn(1, 1, 1, 3, 2, 2), torch.randn(1, 1, 4, 3, 2, 2)
    motion = motion - motion.mean(2, keepdim=True)
    out = GuidanceOutput(torch.tensor(0.0), shared + motion, torch.tensor([500]))
    for strength in (0.0, 1.0, 3.0):
        emphasised = emphasise_motion(out, latents, strength)
        assert torch.allclose(emphasised.grad, shared + strength * motion, atol=1e-6)
        latents.grad = None
        emphasised.loss.backward()
        assert torch.allclose(latents.grad, emphasised.grad, atol=1e-5)  # the loss descends along that gradient


def test_shared_noise_leaves_only_the_prediction_to_differ_between_frames():
    """A still clip (every frame the same) under an element-wise oracle: with one noise for all frames their
    gradients are equal, with independent noise they are not (that difference is the noise drawn, not motion)."""
    oracle = GaussianOracle(DiscreteSchedule(scaled_linear_alphas_cumprod()), "epsilon")
    cond = Conditioning(text=torch.zeros(2, 1, 1))
    still = torch.randn(2, 1, 1, 2, 3, 3).expand(2, 1, 4, 2, 3, 3).clone().requires_grad_(True)

    def spread(sharing: float) -> float:
        grad = sds_loss(oracle, still, cond, guidance_scale=1.0, generator=torch.Generator().manual_seed(0),
                        noise_sharing=sharing).grad
        return float((grad - grad.mean(2, keepdim=True)).abs().max())

    assert spread(1.0) < 1e-6 and spread(0.0) > 1e-2
