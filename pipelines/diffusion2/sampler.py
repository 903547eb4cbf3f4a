"""Stage 1 of Diffusion²: sampling a V x F image matrix by composing a video and a multi-view score.

The matrix ``x`` ``[V, F, C, h, w]`` (latents) has views along its rows' index and frames along its
columns' index: row ``v`` is the video seen from view ``v``, column ``f`` the orbit at frame ``f``.
Row 0 (the reference view's video) and column 0 (the orbit at the reference frame) are *known*
(Eq. 6, the augmented matrix): they are given by the input or generated first, stay fixed, and
condition the denoising of the rest — each row on its first element, each column on its first
element (Sec. 3.2).

Everything here works in the EDM parameterisation (Karras et al. 2022): ``x = x0 + sigma * eps`` and a
denoiser ``D(x; sigma)`` returns its estimate of x0, so the score is ``(D(x; sigma) - x) / sigma^2``
(Sec. 3.1). The two denoisers are plain callables, so the same sampler runs the bundled prior, SVD +
SV3D, or an analytic Gaussian in the tests:

    video_denoise(rows [R, F, C, h, w], sigma, row_index [R]) -> x0 [R, F, C, h, w]
    multiview_denoise(cols [K, V, C, h, w], sigma, col_index [K]) -> x0 [K, V, C, h, w]

Composition (Eq. 5, Diffusion²): the score of entry (v, f) is
``s * score_video(row v) + (1 - s) * score_multiview(column f)``; as an ODE direction
``d = s (x - D_video) / sigma + (1 - s) (x - D_mv) / sigma`` (Algorithm 1, lines 5-10). Algorithm 1
writes the weights the other way round (``1 - s`` on the video term); the paper fixes ``s = 0.5``
(App. A.5) where the two readings agree, and we follow Eq. 5. ``s`` may vary per view and per step
(the "scale schedule" of App. A.5).

Variance-reducing rollback (Sec. 3.3, Algorithm 1 lines 2, 12-14): in the first ``rollback_steps``
steps, after stepping from sigma_i to sigma_{i+1}, the result is re-noised back to sigma_i with
``x_i <- x_{i+1} + (sigma_i - sigma_{i+1}) eps`` and the step is repeated once. The added standard
deviation ``sigma_i - sigma_{i+1}`` is smaller than the forward process's
``sqrt(sigma_i^2 - sigma_{i+1}^2)``: a latent of smaller variance presented at the higher noise level,
which is what lets the two denoisers' modes merge.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

Denoise = Callable[[Tensor, float, Tensor], Tensor]


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """The EDM noise ladder ``[steps + 1]`` from sigma_max down to sigma_min, then 0 (Karras et al. 2022, Eq. 5)."""
    if steps < 1:
        raise ValueError("the number of sampling steps must be at least 1")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def per_view_weights(views: int, near: float, far: float) -> Tensor:
    """Composition weight s per view ``[V]``: ``near`` at the reference view (azimuth 0), ``far`` opposite it,
    cosine in between; views close to the reference trust the video model, far ones the multi-view model."""
    az = 2 * math.pi * torch.arange(views, dtype=torch.float64) / views
    return (far + (near - far) * (1 + torch.cos(az)) / 2).float()


def step_noise(seed: int, step: int, repeat: int, shape, dtype=torch.float32) -> Tensor:
    """Gaussian noise for (step, repeat), drawn from its own stream so a resumed run draws the same."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + 7919 * (step + 1) + 104_729 * repeat) % (2 ** 63))
    return torch.randn(shape, generator=g, dtype=dtype)


def initial_noise(seed: int, shape, dtype=torch.float32) -> Tensor:
    """Unit Gaussian noise ``shape`` for the start of sampling (stream 0 of ``seed``)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed * 1_000_003 % (2 ** 63)), dtype=dtype)


def _shard() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed group when one is running, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _in_chunks(fn: Denoise, x: Tensor, sigma: float, chunk: int, offset: int = 0) -> Tensor:
    """``fn`` over the leading axis of ``x`` ``chunk`` items at a time: memory follows the chunk, not V x F.

    Under ``torch.distributed`` (gloo on CPU, NCCL on GPUs) process r of W denoises items r, r + W, ...
    and one all-reduce of the zero-padded results gives every process the whole answer; each entry comes
    from exactly one process, so the sum is exact and 1 or N processes sample the same matrix.
    """
    rank, world = _shard()
    index = torch.arange(x.shape[0]) + offset  # the denoisers see matrix row / column numbers
    if world == 1:
        return torch.cat([fn(x[i:i + chunk], sigma, index[i:i + chunk]) for i in range(0, x.shape[0], chunk)])
    import torch.distributed as dist

    out = torch.zeros_like(x)
    mine = torch.arange(x.shape[0])[rank::world]
    for i in range(0, len(mine), chunk):
        part = mine[i:i + chunk]
        out[part.to(x.device)] = fn(x[part.to(x.device)], sigma, index[part])
    dist.all_reduce(out)
    return out


def composed_direction(x: Tensor, sigma: float, video_denoise: Denoise, multiview_denoise: Denoise,
                       s: Tensor | float, chunk: int = 4, skip_known: bool = False) -> Tensor:
    """The ODE direction ``dx / dsigma`` ``[V, F, ...]`` of the matrix ``x`` ``[V, F, ...]`` at ``sigma``.

    ``s``: scalar or ``[V]`` weight of the video (row) score. Eq. 5, Diffusion²; Algorithm 1 lines 4-10.
    ``skip_known``: row 0 and column 0 are known, so their own rows / columns are not denoised (their
    direction is left 0); every other row and column still sees its known first element.
    """
    s = torch.as_tensor(s, dtype=x.dtype, device=x.device)
    s = s.reshape(-1, *([1] * (x.ndim - 1))) if s.ndim == 1 else s
    k = 1 if skip_known else 0
    rows = x[k:]                                                                          # [V - k, F, ...]
    d_video = (rows - _in_chunks(video_denoise, rows, sigma, chunk, k)) / sigma
    cols = x.transpose(0, 1)[k:]                                                          # [F - k, V, ...]
    d_mv = ((cols - _in_chunks(multiview_denoise, cols, sigma, chunk, k)) / sigma).transpose(0, 1)
    s_rows = s[k:] if s.ndim > 0 else s
    d = torch.zeros_like(x)
    d[k:, k:] = s_rows * d_video[:, k:] + (1 - s_rows) * d_mv[k:]
    return d


@dataclass
class SamplerSettings:
    """``solver`` "euler" (Algorithm 1) or "heun" (EDM's 2nd-order correction); ``rollback_steps`` N_r."""

    steps: int = 50
    sigma_min: float = 0.002
    sigma_max: float = 700.0
    rho: float = 7.0
    solver: str = "euler"
    rollback_steps: int = 5
    chunk: int = 4

    def __post_init__(self) -> None:
        if self.solver not in ("euler", "heun"):
            raise ValueError(f"unknown solver {self.solver!r}; use 'euler' or 'heun'")
        if not 0 <= self.rollback_steps <= self.steps:
            raise ValueError("rollback_steps must be between 0 and the number of steps")

    def sigmas(self) -> Tensor:
        return karras_sigmas(self.steps, self.sigma_min, self.sigma_max, self.rho)

    @property
    def evaluations(self) -> int:
        """Denoising passes over the matrix (rollback repeats N_r of them; Heun doubles all but the last)."""
        per_step = [2 if self.solver == "heun" and i < self.steps - 1 else 1 for i in range(self.steps)]
        return sum(per_step) + sum(per_step[: self.rollback_steps])


def iterate_matrix(video_denoise: Denoise, multiview_denoise: Denoise, known: Tensor, settings: SamplerSettings,
                   s: Tensor | float = 0.5, seed: int = 0, x: Tensor | None = None,
                   start_step: int = 0) -> Iterator[tuple[int, Tensor, Tensor]]:
    """Algorithm 1 one step at a time: yields ``(steps_done, x, x0_estimate)`` after every step, where ``x``
    ``[V, F, ...]`` is the state to resume from (pass it back with ``start_step=steps_done``) and
    ``x0_estimate`` the current guess of the clean matrix (for previews). The last ``x`` is the sample.
    Arguments as :func:`sample_matrix`."""
    if known.ndim < 3:
        raise ValueError(f"the matrix must be [V, F, ...], got shape {list(known.shape)}")
    sigmas = settings.sigmas().tolist()
    mask = torch.zeros(known.shape[:2], dtype=torch.bool, device=known.device)
    mask[0, :] = True
    mask[:, 0] = True
    m = mask.reshape(*mask.shape, *([1] * (known.ndim - 2)))
    ref_noise = initial_noise(seed + 1, known.shape, known.dtype).to(known.device)
    if x is None:
        x = initial_noise(seed, known.shape, known.dtype).to(known.device) * sigmas[0]
    s_all = torch.as_tensor(s, dtype=known.dtype)
    for i in range(start_step, settings.steps):
        s_i = s_all[i] if s_all.ndim == 2 else s_all
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        repeats = 2 if i < settings.rollback_steps else 1                       # Algorithm 1, line 2
        for j in range(repeats):
            x_in = torch.where(m, known + sigma * ref_noise, x)
            d = composed_direction(x_in, sigma, video_denoise, multiview_denoise, s_i, settings.chunk, True)
            x_next = x_in + (sigma_next - sigma) * d                             # line 11 (Euler)
            if settings.solver == "heun" and sigma_next > 0:
                x_mid = torch.where(m, known + sigma_next * ref_noise, x_next)
                d_next = composed_direction(x_mid, sigma_next, video_denoise, multiview_denoise, s_i, settings.chunk,
                                            True)
                x_next = x_in + (sigma_next - sigma) * (d + d_next) / 2
            x0 = x_in - sigma * d
            if j < repeats - 1:                                                  # lines 12-14: rollback
                x = x_next + (sigma - sigma_next) * step_noise(seed, i, j, x.shape, x.dtype).to(x.device)
            else:
                x = x_next
        x = torch.where(m, known + sigma_next * ref_noise, x)
        yield i + 1, x, torch.where(m, known, x0)


def sample_matrix(video_denoise: Denoise, multiview_denoise: Denoise, known: Tensor, settings: SamplerSettings,
                  s: Tensor | float = 0.5, seed: int = 0, x: Tensor | None = None, start_step: int = 0,
                  callback: Callable[[int, Tensor, Tensor], None] | None = None) -> Tensor:
    """Sample the matrix ``[V, F, C, h, w]`` whose row 0 and column 0 are ``known`` (Algorithm 1, Diffusion²).

    Args:
        known: ``[V, F, C, h, w]``; only ``known[0]`` (the reference view's video) and ``known[:, 0]`` (the
            orbit at the reference frame) are read. They are the clean conditioning of Eq. 6; during
            sampling they are shown to the denoisers noised to the current sigma with one fixed noise
            draw (inpainting), and the result holds them exactly.
        s: composition weight of the video score: a float, ``[V]`` per view, or ``[steps, V]`` per step and view.
        seed: every random draw (start noise, rollback noise) comes from a stream of this seed and the
            step, so a run resumed with ``x`` and ``start_step`` repeats the uninterrupted one exactly.
        x: the state after ``start_step`` steps (resume), None to start from noise.
        callback: ``callback(steps_done, x, x0_estimate)`` after every step (progress, previews, checkpoints).
    """
    for step, state, x0 in iterate_matrix(video_denoise, multiview_denoise, known, settings, s, seed, x, start_step):
        x = state
        if callback is not None:
            callback(step, x, x0)
    mask = torch.zeros(known.shape[:2], dtype=torch.bool, device=known.device)
    mask[0, :] = True
    mask[:, 0] = True
    return torch.where(mask.reshape(*mask.shape, *([1] * (known.ndim - 2))), known, x)


def sample_sequence(denoise: Denoise, known: Tensor, length: int, settings: SamplerSettings, seed: int = 0) -> Tensor:
    """One clip or orbit ``[L, C, h, w]`` whose element 0 is ``known`` ``[C, h, w]``, with a single prior
    (the reference video and orbit of Fig. 2 (i), Diffusion²; same solver and rollback as the matrix)."""
    sigmas = settings.sigmas().tolist()
    shape = (1, length, *known.shape)
    ref = known.expand(shape)
    mask = torch.zeros(length, dtype=torch.bool, device=known.device).reshape(1, length, *([1] * known.ndim))
    mask[:, 0] = True
    ref_noise = initial_noise(seed + 1, shape, known.dtype).to(known.device)
    x = initial_noise(seed, shape, known.dtype).to(known.device) * sigmas[0]
    index = torch.zeros(1, dtype=torch.long)

    def direction(x_in: Tensor, sigma: float) -> Tensor:
        return (x_in - denoise(x_in, sigma, index)) / sigma
    for i in range(settings.steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        repeats = 2 if i < settings.rollback_steps else 1
        for j in range(repeats):
            x_in = torch.where(mask, ref + sigma * ref_noise, x)
            d = direction(x_in, sigma)
            x_next = x_in + (sigma_next - sigma) * d
            if settings.solver == "heun" and sigma_next > 0:
                d_next = direction(torch.where(mask, ref + sigma_next * ref_noise, x_next), sigma_next)
                x_next = x_in + (sigma_next - sigma) * (d + d_next) / 2
            x = x_next
            if j < repeats - 1:
                x = x + (sigma - sigma_next) * step_noise(seed, i, j, x.shape, x.dtype).to(x.device)
    return torch.where(mask, ref, x)[0]
