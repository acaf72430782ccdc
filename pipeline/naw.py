"""Noise-aware adaptive weighting (NAW): the Gaussian kernel shared by NLA (stage 1, per image)
and V-NAW (stage 2, per clip).

For a prediction ``p`` (K,) and target ``y``: ``x = (p[y], max_{k != y} p[k])``. A sample the
model already classifies correctly (``argmax p == y``) is weighted by the **T** kernel, others by
the **F** kernel::

    w(x) = C * exp(-1/2 (x - mu)^T Sigma^-1 (x - mu))
    Sigma = [[s^2 + (s/r)^2, +-(s^2 - (s/r)^2)], ...]      (NLA's std/ratio form)
    Sigma_T off-diagonal = -(s_T^2 - (s_T/r_T)^2) * eps,    eps = 1 - exp(-slope * progress)
    C = (2 pi sqrt|Sigma|)^-1 when normalize else 1

With the defaults Sigma_T = [[0.8, -0.48 eps], [-0.48 eps, 0.8]], mu_T = (0.5, 0.5) and
Sigma_F = [[0.8511, 0.8051], [0.8051, 0.8511]], mu_F = (0.30, 0.15). The weight is
differentiable in ``probs`` (not detached), as in the reference formulation.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def kernel_cov(std: float, ratio: float) -> tuple[float, float]:
    """(diagonal, |off-diagonal|) of the 2x2 covariance from NLA's std/ratio parameters."""
    major, minor = std ** 2, (std / ratio) ** 2
    return major + minor, major - minor


def curriculum(progress: float, slope: float = 15.0) -> float:
    """eps = 1 - exp(-slope * progress), progress = epoch / epochs in [0, 1]."""
    return 1.0 - math.exp(-slope * float(progress))


def _gaussian(x: torch.Tensor, mu: Sequence[float], var: float, cov: float,
              normalize: bool) -> torch.Tensor:
    """Bivariate Gaussian with covariance [[var, cov], [cov, var]] at x (B, 2) -> (B,)."""
    det = var * var - cov * cov
    d = x - torch.as_tensor(mu, dtype=x.dtype, device=x.device)
    # inverse of [[a, b], [b, a]] is [[a, -b], [-b, a]] / det
    maha = (var * d[:, 0] ** 2 - 2 * cov * d[:, 0] * d[:, 1] + var * d[:, 1] ** 2) / det
    w = torch.exp(-0.5 * maha)
    if normalize:
        w = w / (2 * math.pi * math.sqrt(det))
    return w


def naw_inputs(probs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(p_GT, p_NN) per sample: probability of the target and the largest other probability."""
    p_gt = probs.gather(1, target[:, None]).squeeze(1)
    others = probs.scatter(1, target[:, None], float("-inf"))
    return p_gt, others.max(dim=1).values


def naw_weight(probs: torch.Tensor, target: torch.Tensor, progress: float, *,
               normalize: bool = False, mu_t: Sequence[float] = (0.5, 0.5),
               mu_f: Sequence[float] = (0.30, 0.15), std_t: float = 0.8, ratio_t: float = 2.0,
               std_f: float = 0.91, ratio_f: float = 6.0, slope: float = 15.0) -> torch.Tensor:
    """NAW weight per sample: probs (B, K) (rows sum to 1), target (B,) int -> (B,)."""
    if probs.ndim != 2 or target.shape != probs.shape[:1]:
        raise ValueError(f"probs must be (B, K) and target (B,), got {tuple(probs.shape)} and "
                         f"{tuple(target.shape)}")
    p_gt, p_nn = naw_inputs(probs, target.long())
    x = torch.stack([p_gt, p_nn], dim=1)
    eps = curriculum(progress, slope)
    var_t, cov_t = kernel_cov(std_t, ratio_t)
    var_f, cov_f = kernel_cov(std_f, ratio_f)
    w_t = _gaussian(x, mu_t, var_t, -cov_t * eps, normalize)
    w_f = _gaussian(x, mu_f, var_f, cov_f, normalize)
    correct = probs.argmax(dim=1) == target
    return torch.where(correct, w_t, w_f)
