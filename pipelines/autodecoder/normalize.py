"""Robust normalisation of the autodecoder's latent volumes (Sec. 3.3 and App. B.2, Fig. 9).

The latent features are long-tailed, so mean / standard deviation are dominated by outliers. The paper
centres on the median m and scales by the normalised interquartile range of a normal distribution,
s = 0.7413 x IQR (for Gaussian data s equals the standard deviation), and trains diffusion on
(F - m) / s; samples are de-normalised with F = F_hat x s + m before the rest of the decoder (G_2).

    norm = RobustNormalizer.fit(latents)              # latents [N, C, R, R, R] of the training set
    z = norm.normalize(latents); back = norm.denormalize(z)
    norm.state_dict() / RobustNormalizer.from_state_dict(...)   # stored with the model

``per_channel=True`` computes one (m, s) per feature channel; the paper's Fig. 9 shows one pooled
distribution, which is the default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

NORMAL_IQR_SCALE = 0.7413  # 1 / (2 * Phi^-1(0.75)): the IQR of N(0, 1) is 1.349


@dataclass
class RobustNormalizer:
    """``median`` and ``scale`` (= 0.7413 IQR) with shape ``[C, 1, 1, 1]`` (per channel) or ``[1, 1, 1, 1]``."""

    median: Tensor
    scale: Tensor

    @classmethod
    def fit(cls, latents: Tensor, per_channel: bool = False) -> RobustNormalizer:
        """Statistics of ``latents`` ``[N, C, *spatial]`` over every sample and voxel (and channel unless
        ``per_channel``). Quantiles are computed in float64 with numpy (no size limit, linear interpolation)."""
        x = latents.detach().double().cpu()
        C = x.shape[1]
        rows = x.transpose(0, 1).reshape(C, -1).numpy() if per_channel else x.reshape(1, -1).numpy()
        q25, q50, q75 = np.quantile(rows, [0.25, 0.5, 0.75], axis=1)
        iqr = q75 - q25
        if np.any(iqr <= 0):
            raise ValueError("the latents have a zero interquartile range (constant features); train the "
                             "autodecoder first.")
        shape = (-1, 1, 1, 1)
        return cls(torch.as_tensor(q50, dtype=torch.float32).reshape(shape),
                   torch.as_tensor(NORMAL_IQR_SCALE * iqr, dtype=torch.float32).reshape(shape))

    def normalize(self, latents: Tensor) -> Tensor:
        """F_hat = (F - m) / s for ``[N, C, *spatial]``."""
        return (latents - self.median.to(latents)) / self.scale.to(latents)

    def denormalize(self, normalized: Tensor) -> Tensor:
        """F = F_hat x s + m."""
        return normalized * self.scale.to(normalized) + self.median.to(normalized)

    def state_dict(self, prefix: str = "normalizer.") -> dict[str, Tensor]:
        return {prefix + "median": self.median.contiguous(), prefix + "scale": self.scale.contiguous()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor], prefix: str = "normalizer.") -> RobustNormalizer:
        return cls(state[prefix + "median"].float(), state[prefix + "scale"].float())
