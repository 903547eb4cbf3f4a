"""A set of 3D Gaussians in the standard 3D Gaussian Splatting parameterisation.

Stored exactly as 3DGS PLY files store them (log-scales, opacity logits, quaternions, SH
coefficients), so export is lossless; activations are applied by the accessors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from renderers.rotations import quat_to_matrix

SH_C0 = 0.28209479177387814  # Y_0^0: colour = SH_C0 * f_dc + 0.5


@dataclass
class GaussianSet:
    """N Gaussians.

    Attributes:
        means: ``[N, 3]`` world positions.
        quats: ``[N, 4]`` rotations (wxyz, not necessarily normalised).
        log_scales: ``[N, 3]``.
        opacity_logits: ``[N]``.
        sh: ``[N, K, 3]`` spherical-harmonic coefficients, K = (degree + 1)^2, K in {1, 4, 9, 16};
            ``sh[:, 0]`` is the DC term.
    """

    means: Tensor
    quats: Tensor
    log_scales: Tensor
    opacity_logits: Tensor
    sh: Tensor

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        expected = {"means": (n, 3), "quats": (n, 4), "log_scales": (n, 3), "opacity_logits": (n,)}
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"GaussianSet.{name} must be {list(shape)}, got {list(getattr(self, name).shape)}")
        if self.sh.ndim != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3 or self.sh.shape[1] not in (1, 4, 9, 16):
            raise ValueError(f"GaussianSet.sh must be [N, K, 3] with K in 1, 4, 9, 16, got {list(self.sh.shape)}")

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        return int(round(self.sh.shape[1] ** 0.5)) - 1

    @property
    def scales(self) -> Tensor:
        return self.log_scales.exp()

    @property
    def opacities(self) -> Tensor:
        return torch.sigmoid(self.opacity_logits)

    @property
    def base_colors(self) -> Tensor:
        """View-independent colour ``[N, 3]`` in [0, 1] from the DC term."""
        return (SH_C0 * self.sh[:, 0] + 0.5).clamp(0, 1)

    def covariances(self) -> Tensor:
        """World covariance matrices ``[N, 3, 3]`` = R S S^T R^T."""
        R = quat_to_matrix(self.quats)
        M = R * self.scales[:, None, :]
        return M @ M.transpose(1, 2)

    def detach(self) -> GaussianSet:
        return GaussianSet(*(t.detach() for t in (self.means, self.quats, self.log_scales, self.opacity_logits,
                                                  self.sh)))

    def to(self, device) -> GaussianSet:
        return GaussianSet(*(t.to(device) for t in (self.means, self.quats, self.log_scales, self.opacity_logits,
                                                    self.sh)))


def rgb_to_sh_dc(rgb: Tensor) -> Tensor:
    """Colour in [0, 1] -> DC coefficient (inverse of :attr:`GaussianSet.base_colors`)."""
    return (rgb - 0.5) / SH_C0
