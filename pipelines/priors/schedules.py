"""Noise schedules and the three prediction parameterisations, in one variance-preserving frame.

Every prior here is fed ``x_t = alpha * x0 + sigma * eps`` (variance preserving). A DDPM model names its
noise level by a discrete timestep ``t`` with ``alpha = sqrt(abar_t)``, ``sigma = sqrt(1 - abar_t)``; an EDM
model (SVD, SV3D) names it by ``s`` with ``x_edm = x0 + s * eps``; the two meet at
``alpha = 1 / sqrt(1 + s^2)``, ``sigma = s / sqrt(1 + s^2)`` and ``x_t = alpha * x_edm`` (the EDM ``c_in``).
So one set of conversions between eps, v and x0 serves both, with ``v = alpha * eps - sigma * x0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

PARAMETERIZATIONS = ("epsilon", "v_prediction", "sample")


def _bcast(a: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``a`` [B] viewed as [B, 1, ..., 1] to broadcast against ``like`` [B, ...]."""
    a = torch.as_tensor(a, dtype=like.dtype, device=like.device)
    return a.reshape(a.shape + (1,) * (like.ndim - a.ndim))


def to_eps(pred: torch.Tensor, x_t: torch.Tensor, alpha, sigma, kind: str) -> torch.Tensor:
    """The noise eps implied by a model output ``pred`` of parameterisation ``kind``; alpha, sigma [B]."""
    alpha, sigma = _bcast(alpha, x_t), _bcast(sigma, x_t)
    if kind == "epsilon":
        return pred
    if kind == "v_prediction":
        return alpha * pred + sigma * x_t
    if kind == "sample":
        return (x_t - alpha * pred) / sigma
    raise ValueError(f"unknown parameterisation {kind!r}; expected one of {PARAMETERIZATIONS}")


def to_x0(pred: torch.Tensor, x_t: torch.Tensor, alpha, sigma, kind: str) -> torch.Tensor:
    """The clean sample x0 implied by ``pred``."""
    a, s = _bcast(alpha, x_t), _bcast(sigma, x_t)
    if kind == "epsilon":
        return (x_t - s * pred) / a
    if kind == "v_prediction":
        return a * x_t - s * pred
    if kind == "sample":
        return pred
    raise ValueError(f"unknown parameterisation {kind!r}; expected one of {PARAMETERIZATIONS}")


def to_v(pred: torch.Tensor, x_t: torch.Tensor, alpha, sigma, kind: str) -> torch.Tensor:
    """The velocity v = alpha * eps - sigma * x0 implied by ``pred``."""
    eps, x0 = to_eps(pred, x_t, alpha, sigma, kind), to_x0(pred, x_t, alpha, sigma, kind)
    return _bcast(alpha, x_t) * eps - _bcast(sigma, x_t) * x0


def convert(pred: torch.Tensor, x_t: torch.Tensor, alpha, sigma, source: str, target: str) -> torch.Tensor:
    """Re-express a prediction of parameterisation ``source`` as ``target``."""
    fn = {"epsilon": to_eps, "v_prediction": to_v, "sample": to_x0}[target]
    return fn(pred, x_t, alpha, sigma, source)


def edm_sigma_to_vp(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """EDM sigma [B] -> variance-preserving (alpha, sigma)."""
    s = torch.as_tensor(s)
    s = s if s.is_floating_point() else s.float()
    scale = torch.rsqrt(1 + s * s)
    return scale, s * scale


def vp_to_edm_sigma(alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(sigma) / torch.as_tensor(alpha)


def scaled_linear_alphas_cumprod(steps: int = 1000, beta_start: float = 0.00085,
                                 beta_end: float = 0.012) -> torch.Tensor:
    """Stable Diffusion's ``scaled_linear`` beta schedule as cumulative alphas [steps] (float64)."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


@dataclass
class DiscreteSchedule:
    """A DDPM schedule: noise level = timestep ``t`` in [0, T-1], fractional values interpolate.

    ``alphas_cumprod`` [T] (as in a diffusers scheduler's config).
    """

    alphas_cumprod: torch.Tensor
    kind = "ddpm"

    @classmethod
    def from_scheduler_config(cls, config: dict) -> DiscreteSchedule:
        """From a diffusers DDPM/DDIM/Euler scheduler config (``scheduler/scheduler_config.json``)."""
        steps = int(config.get("num_train_timesteps", 1000))
        start, end = float(config.get("beta_start", 0.00085)), float(config.get("beta_end", 0.012))
        kind = config.get("beta_schedule", "scaled_linear")
        if kind == "scaled_linear":
            return cls(scaled_linear_alphas_cumprod(steps, start, end))
        if kind == "linear":
            return cls(torch.cumprod(1 - torch.linspace(start, end, steps, dtype=torch.float64), 0))
        raise ValueError(f"beta schedule {kind!r} is not supported; expected 'scaled_linear' or 'linear'")

    @property
    def num_steps(self) -> int:
        return self.alphas_cumprod.shape[0]

    def _abar(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64).clamp(0, self.num_steps - 1)
        lo = t.floor().long()
        hi = (lo + 1).clamp(max=self.num_steps - 1)
        w = t - lo
        log_ab = self.alphas_cumprod.log()
        return torch.exp(log_ab[lo] * (1 - w) + log_ab[hi] * w)

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Timesteps [B] -> (alpha, sigma) [B] float32."""
        abar = self._abar(t)
        return abar.sqrt().float(), (1 - abar).sqrt().float()

    def to_edm_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Timesteps [B] -> Karras/EDM sigma sqrt((1 - abar) / abar) [B]."""
        abar = self._abar(t)
        return ((1 - abar) / abar).sqrt().float()

    def from_edm_sigma(self, s: torch.Tensor) -> torch.Tensor:
        """EDM sigma [B] -> fractional timestep [B], by interpolating log sigma over the table."""
        table = ((1 - self.alphas_cumprod) / self.alphas_cumprod).sqrt().log()  # increasing in t
        log_s = torch.as_tensor(s, dtype=torch.float64).log().clamp(table[0], table[-1])
        hi = torch.searchsorted(table, log_s).clamp(1, self.num_steps - 1)
        lo = hi - 1
        w = (log_s - table[lo]) / (table[hi] - table[lo])
        return (lo + w).float()

    def level_at(self, fraction: torch.Tensor) -> torch.Tensor:
        """Fraction in [0, 1] of the noise ladder -> timestep (threestudio's min/max step ratios)."""
        return torch.as_tensor(fraction, dtype=torch.float32) * (self.num_steps - 1)

    def model_timestep(self, t: torch.Tensor) -> torch.Tensor:
        """What the UNet's timestep input receives."""
        return torch.as_tensor(t, dtype=torch.float32)


@dataclass
class EDMSchedule:
    """An EDM/Karras schedule (SVD, SV3D): noise level = sigma; the UNet sees ``c_noise = log(sigma) / 4``."""

    sigma_min: float = 0.002
    sigma_max: float = 700.0
    kind = "edm"

    def alpha_sigma(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return edm_sigma_to_vp(s)

    def to_edm_sigma(self, s: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(s, dtype=torch.float32)

    def from_edm_sigma(self, s: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(s, dtype=torch.float32)

    def level_at(self, fraction: torch.Tensor) -> torch.Tensor:
        """Fraction in [0, 1] -> sigma, log-uniform between sigma_min and sigma_max."""
        f = torch.as_tensor(fraction, dtype=torch.float32)
        return torch.exp(math.log(self.sigma_min) + f * (math.log(self.sigma_max) - math.log(self.sigma_min)))

    def model_timestep(self, s: torch.Tensor) -> torch.Tensor:
        return 0.25 * torch.as_tensor(s, dtype=torch.float32).log()


Schedule = DiscreteSchedule | EDMSchedule
