"""NLA loss (paper form): per image ``(1 + w) * CE`` with ``w`` the NAW kernel weight."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.config import NLAConfig
from pipeline.labels import IGNORE
from pipeline.naw import naw_weight


def nla_loss(logits: torch.Tensor, target: torch.Tensor, progress: float,
             cfg: NLAConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, K), target (B,) with -1 = ignore -> (loss, mean weight).

    ``progress = epoch / epochs`` drives the curriculum of the T kernel. With
    ``cfg.enabled = False`` this is plain cross-entropy (weight reported as 0)."""
    keep = target != IGNORE
    logits, target = logits[keep].float(), target[keep]
    if target.numel() == 0:
        zero = logits.sum() * 0.0
        return zero, zero.detach()
    ce = F.cross_entropy(logits, target, reduction="none")
    if not cfg.enabled:
        return ce.mean(), torch.zeros((), device=logits.device)
    w = naw_weight(logits.softmax(-1), target, progress, **cfg.kernel_kwargs())
    return ((1.0 + w) * ce).mean(), w.detach().mean()
