"""The Diffusion² matrix sampler against analytic denoisers: Eq. 5, the ODE solvers, rollback (Algorithm 1)."""

from __future__ import annotations

import math

import pytest
import torch

from pipelines.diffusion2.sampler import (
    SamplerSettings,
    composed_direction,
    initial_noise,
    karras_sigmas,
    per_view_weights,
    sample_matrix,
    step_noise,
)


def row_mean(x, sigma, index):
    """A 'video denoiser' that predicts every frame of a row as the row's mean: [R, F, ...]."""
    return x.mean(1, keepdim=True).expand_as(x)


def test_composition_matches_hand_computed_eq5():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])[..., None]  # [V=2, F=3, 1]
    # Rows: means 2 and 5; columns: means 2.5, 3.5, 4.5. sigma = 2, s = 0.25:
    # d[1, 2] = 0.25 (6 - 5) / 2 + 0.75 (6 - 4.5) / 2 = 0.6875; d[0, 0] = 0.25 (1 - 2) / 2 + 0.75 (1 - 2.5) / 2.
    for chunk in (1, 4):
        d = composed_direction(x, 2.0, row_mean, row_mean, 0.25, chunk=chunk)[..., 0]
        assert d[1, 2].item() == pytest.approx(0.6875)
        assert d[0, 0].item() == pytest.approx(-0.6875)
    d = composed_direction(x, 2.0, row_mean, row_mean, torch.tensor([0.25, 1.0]))[..., 0]
    assert d[1, 2].item() == pytest.approx(0.5)  # s = 1 on view 1: the video score alone
    assert d[0, 0].item() == pytest.approx(-0.6875)
    # With row 0 / column 0 known, the rest is unchanged (rows and columns still include their known element).
    d_known = composed_direction(x, 2.0, row_mean, row_mean, torch.tensor([0.25, 1.0]), skip_known=True)[..., 0]
    assert torch.equal(d_known[1:, 1:], d[1:, 1:]) and not d_known[0].any() and not d_known[:, 0].any()


def gaussian_denoisers(mu, c2):
    """Exact D(x; sigma) = E[x0 | x] for independent entries x0 ~ N(mu, c2), for rows and for columns."""
    def make(means):
        def denoise(x, sigma, index):
            m = means[index]
            return m + c2 / (c2 + sigma ** 2) * (x - m)
        return denoise
    return make(mu), make(mu.transpose(0, 1))


@pytest.mark.parametrize("solver,order", [("euler", 1), ("heun", 2)])
def test_solver_converges_to_the_exact_probability_flow(solver, order):
    """Gaussian data: the PF-ODE (Eq. 2) has the closed form x(0) = mu + (x_T - mu) c / sqrt(c^2 + sigma_max^2);
    Euler's error halves and Heun's quarters when the steps double; row 0 / column 0 stay the known ones."""
    V, F, c2 = 3, 4, 0.25
    mu = torch.linspace(-1, 1, V * F).reshape(V, F, 1)
    rows, cols = gaussian_denoisers(mu, c2)
    known = torch.full((V, F, 1), 0.5)
    x_T = initial_noise(5, known.shape) * 20.0
    exact = mu + (x_T - mu) * math.sqrt(c2) / math.sqrt(c2 + 20.0 ** 2)
    errors = []
    for steps in (20, 40, 80):
        settings = SamplerSettings(steps=steps, sigma_max=20.0, solver=solver, rollback_steps=0, chunk=2)
        out = sample_matrix(rows, cols, known, settings, s=0.3, seed=5)
        errors.append((out - exact)[1:, 1:].abs().max().item())
        assert torch.equal(out[0], known[0]) and torch.equal(out[:, 0], known[:, 0])
    assert errors[-1] < (0.04 if order == 1 else 0.002)
    for coarse, fine in zip(errors, errors[1:]):
        assert coarse / fine == pytest.approx(2 ** order, rel=0.15)


def test_rollback_renoises_by_sigma_difference_as_algorithm_1():
    """With D(x) = x the ODE direction is 0, so all that moves x is the rollback noise of Algorithm 1,
    lines 12-14: x_i <- x_{i+1} + (sigma_i - sigma_{i+1}) eps, once in each of the first N_r steps."""
    calls = []

    def identity(x, sigma, index):
        calls.append(sigma)
        return x
    V, F = 3, 4
    settings = SamplerSettings(steps=10, sigma_max=5.0, rollback_steps=3, chunk=8)
    out = sample_matrix(identity, identity, torch.zeros(V, F, 2), settings, seed=2)
    sig = settings.sigmas().tolist()
    expected = initial_noise(2, (V, F, 2)) * sig[0]
    for i in range(3):
        expected = expected + (sig[i] - sig[i + 1]) * step_noise(2, i, 0, (V, F, 2))
    assert torch.allclose(out[1:, 1:], expected[1:, 1:], atol=1e-5)
    # N + N_r passes, each one call per denoiser (the chunk holds the whole matrix): 2 (10 + 3).
    assert len(calls) == 2 * settings.evaluations == 2 * 13
    assert calls[:4] == [sig[0]] * 4 and calls[8] == sig[2] and calls[-1] == sig[9]


def test_rollback_noise_has_less_variance_than_the_forward_process():
    sig = karras_sigmas(20, 0.002, 80.0).tolist()

    def identity(x, sigma, index):
        return x
    settings = SamplerSettings(steps=20, sigma_max=80.0, rollback_steps=5)
    start = initial_noise(3, (64, 64, 4)) * sig[0]
    out = sample_matrix(identity, identity, torch.zeros(64, 64, 4), settings, seed=3)
    std = (out - start)[1:, 1:].std().item()
    vrs = math.sqrt(sum((sig[i] - sig[i + 1]) ** 2 for i in range(5)))
    forward = math.sqrt(sig[0] ** 2 - sig[5] ** 2)
    assert std == pytest.approx(vrs, rel=0.03) and vrs < 0.7 * forward


def test_resume_repeats_the_uninterrupted_run():
    mu = torch.randn(3, 3, 2, generator=torch.Generator().manual_seed(1))
    rows, cols = gaussian_denoisers(mu, 0.2)
    settings = SamplerSettings(steps=8, sigma_max=10.0, rollback_steps=3, solver="heun")
    saved = {}

    def keep(step, x, x0):
        saved[step] = x.clone()
    full = sample_matrix(rows, cols, torch.ones(3, 3, 2), settings, seed=4, callback=keep)
    resumed = sample_matrix(rows, cols, torch.ones(3, 3, 2), settings, seed=4, x=saved[2], start_step=2)
    assert torch.equal(full, resumed)


def test_per_view_weights_and_settings_checks():
    w = per_view_weights(4, near=0.8, far=0.2)
    assert w.tolist() == pytest.approx([0.8, 0.5, 0.2, 0.5])
    with pytest.raises(ValueError, match="solver"):
        SamplerSettings(solver="dpm")
    assert karras_sigmas(5, 0.002, 80.0)[0].item() == pytest.approx(80.0)
    assert karras_sigmas(5, 0.002, 80.0)[-2].item() == pytest.approx(0.002)


def _sample_in_process(rank, world, init_file, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        out, calls = _shared_problem()
        torch.save({"out": out, "calls": calls}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _shared_problem():
    mu = torch.randn(5, 4, 3, generator=torch.Generator().manual_seed(7))
    rows, cols = gaussian_denoisers(mu, 0.3)
    calls = []

    def counted(fn):
        def call(x, sigma, index):
            calls.append(index.tolist())
            return fn(x, sigma, index)
        return call
    settings = SamplerSettings(steps=6, sigma_max=10.0, rollback_steps=2, solver="heun", chunk=2)
    return sample_matrix(counted(rows), counted(cols), torch.ones(5, 4, 3), settings, s=0.4, seed=9), calls


def test_two_gloo_processes_sample_the_same_matrix_as_one(tmp_path):
    import torch.multiprocessing as mp

    single, single_calls = _shared_problem()
    mp.spawn(_sample_in_process, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for r in results:
        assert torch.equal(r["out"], single)
    # Each process denoised only its share of rows and columns (r, r + 2, ...).
    seen = [sorted({i for call in r["calls"] for i in call}) for r in results]
    assert seen[0] == [1, 3] and seen[1] == [2, 4]  # row 0 / column 0 are known: never denoised
    assert sum(len(r["calls"]) for r in results) < 2 * len(single_calls)
