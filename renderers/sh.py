"""Real spherical harmonics up to degree 3, in the ordering and sign convention of 3D Gaussian
Splatting (and gsplat), so coefficients read from or written to 3DGS PLY files mean the same colour.

    colors = sh_to_color(sh, dirs)      # sh [..., K, 3], dirs [..., 3] -> [..., 3], K = (degree + 1)^2
"""

from __future__ import annotations

import torch
from torch import Tensor

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


def num_sh_bases(degree: int) -> int:
    if degree not in (0, 1, 2, 3):
        raise ValueError(f"spherical-harmonic degree must be 0, 1, 2 or 3, got {degree}")
    return (degree + 1) ** 2


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """The real SH basis functions at unit directions ``[..., 3]`` -> ``[..., (degree + 1)^2]``."""
    num_sh_bases(degree)
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [SH_C2[0] * x * y, SH_C2[1] * y * z, SH_C2[2] * (2 * zz - xx - yy), SH_C2[3] * x * z,
                SH_C2[4] * (xx - yy)]
    if degree >= 3:
        out += [SH_C3[0] * y * (3 * xx - yy), SH_C3[1] * x * y * z, SH_C3[2] * y * (4 * zz - xx - yy),
                SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy), SH_C3[4] * x * (4 * zz - xx - yy),
                SH_C3[5] * z * (xx - yy), SH_C3[6] * x * (xx - 3 * yy)]
    return torch.stack(out, -1)


def sh_to_color(sh: Tensor, dirs: Tensor, degree: int | None = None) -> Tensor:
    """View-dependent colour from SH coefficients ``[..., K, 3]`` along directions ``[..., 3]``.

    Directions need not be normalised. Uses the first ``(degree + 1)^2`` coefficients (all by
    default). As in 3DGS the result is offset by 0.5 and clamped at 0 (not at 1): ``[..., 3]``.
    """
    if degree is None:
        degree = int(round(sh.shape[-2] ** 0.5)) - 1
    k = num_sh_bases(degree)
    if sh.shape[-2] < k:
        raise ValueError(f"degree {degree} needs {k} SH coefficients per colour, got {sh.shape[-2]}")
    dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    basis = sh_basis(degree, dirs)  # [..., K]
    return ((basis[..., None] * sh[..., :k, :]).sum(-2) + 0.5).clamp_min(0)
