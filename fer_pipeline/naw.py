"""Noise-aware adaptive weighting (NAW): the Gaussian kernel shared by NLA (stage 1, per image)
and V-NAW (stage 2, per clip).

For a prediction ``p`` (K,) and target ``y``: ``x = (p[y], max_{k != y} p[k])``. A sample the
model already classifies correctly (``argmax p == y``) is weighted by the **T** kernel, others by
the **F** kernel::

    w(x) = C * exp(-1/2 (x - mu)^T Sigma^-1 (x - mu))
    Sigma = [[s^2 + (s/r)^2, +-(s^2 - (s/r)^2)], ...]      (NLA's std/ratio form)
    Sigma_T off-diagonal = -(s_T^2 - (s_T/r_T)^2) * eps,    eps = 1 - exp(-slope * progress)
    C = (2 pi sqrt|Sigma|)^-1 when normalize (the official NLA code's 1/sqrt((2 pi)^2 |Sigma|)),
        else 1

With the defaults Sigma_T = [[0.8, -0.48 eps], [-0.48 eps, 0.8]], mu_T = (0.5, 0.5) and
Sigma_F = [[0.8511, 0.8051], [0.8051, 0.8511]], mu_F = (0.30, 0.15). The defaults are those of
``fer_pipeline.config.NAWKernelConfig`` (the one place they are written). The weight is
differentiable in ``probs`` (not detached), as in the official code; callers detach it when
their ``weight_grad`` switch says so.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from fer_pipeline.config import NAWKernelConfig


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


_DEFAULTS = NAWKernelConfig().kernel_kwargs()


def naw_weight(probs: torch.Tensor, target: torch.Tensor, progress: float, **kernel) -> torch.Tensor:
    """NAW weight per sample: probs (B, K) (rows sum to 1), target (B,) int -> (B,).

    ``kernel``: any of ``normalize, mu_t, mu_f, std_t, ratio_t, std_f, ratio_f, slope``; the rest
    take the ``NAWKernelConfig`` defaults."""
    unknown = set(kernel) - set(_DEFAULTS)
    if unknown:
        raise TypeError(f"naw_weight: unknown kernel parameter(s) {sorted(unknown)}")
    k = {**_DEFAULTS, **kernel}
    if probs.ndim != 2 or target.shape != probs.shape[:1]:
        raise ValueError(f"probs must be (B, K) and target (B,), got {tuple(probs.shape)} and "
                         f"{tuple(target.shape)}")
    p_gt, p_nn = naw_inputs(probs, target.long())
    x = torch.stack([p_gt, p_nn], dim=1)
    eps = curriculum(progress, k["slope"])
    var_t, cov_t = kernel_cov(k["std_t"], k["ratio_t"])
    var_f, cov_f = kernel_cov(k["std_f"], k["ratio_f"])
    w_t = _gaussian(x, k["mu_t"], var_t, -cov_t * eps, k["normalize"])
    w_f = _gaussian(x, k["mu_f"], var_f, cov_f, k["normalize"])
    correct = p_gt >= probs.max(dim=1).values      # ties count as correct, as the official code
    return torch.where(correct, w_t, w_f)
