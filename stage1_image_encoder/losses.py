"""NLA loss for encoder pretraining.

- paper form: ``mean((1 + w) * CE)``
- release form (the public NLA code): ``lam_ce * mean(CE) + lam_naw * mean(w * CE)
  + lam_jsd * JSD(p, p_flip)``, the last term a flip-consistency regulariser between the
  predictions for an image and its horizontal mirror.

``w`` is the NAW kernel weight (``pipeline.naw``) on (p_GT, p_NN); it is not detached. CE uses
soft targets when given (FERPlus vote distributions), the kernel the hard label.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.config import NLAConfig
from pipeline.labels import IGNORE
from pipeline.naw import naw_weight


def jsd(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Mean Jensen-Shannon divergence between the softmax distributions of two logit batches."""
    p, q = logits_a.float().softmax(-1), logits_b.float().softmax(-1)
    m = (0.5 * (p + q)).clamp_min(1e-12)
    kl_pm = (p * (p.clamp_min(1e-12).log() - m.log())).sum(-1)
    kl_qm = (q * (q.clamp_min(1e-12).log() - m.log())).sum(-1)
    return (0.5 * (kl_pm + kl_qm)).mean()


def nla_loss(logits: torch.Tensor, target: torch.Tensor, progress: float, cfg: NLAConfig,
             soft: torch.Tensor | None = None,
             logits_flip: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, K), target (B,) with -1 = ignore, optional soft targets (B, K) and logits of
    the flipped images (B, K) -> (loss, mean NAW weight).

    ``progress = epoch / epochs`` drives the T kernel's curriculum. ``cfg.enabled = False`` is
    plain cross-entropy (weight reported as 0)."""
    keep = target != IGNORE
    logits, target = logits[keep].float(), target[keep]
    if target.numel() == 0:
        zero = logits.sum() * 0.0
        return zero, zero.detach()
    ce = F.cross_entropy(logits, soft[keep].float() if soft is not None else target, reduction="none")
    if not cfg.enabled:
        return ce.mean(), torch.zeros((), device=logits.device)
    w = naw_weight(logits.softmax(-1), target, progress, **cfg.kernel_kwargs())
    if cfg.form == "paper":
        return ((1.0 + w) * ce).mean(), w.detach().mean()
    loss = cfg.lam_ce * ce.mean() + cfg.lam_naw * (w * ce).mean()
    if logits_flip is not None and cfg.lam_jsd > 0:
        loss = loss + cfg.lam_jsd * jsd(logits, logits_flip[keep])
    return loss, w.detach().mean()
