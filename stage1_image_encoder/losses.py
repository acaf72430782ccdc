"""NLA loss for encoder pretraining (Navigating Label Ambiguity; official code
github.com/jungyu0413/NLA, ``src/train.py`` and ``src/loss.py``).

- ``release`` form (default, the official code)::

      lam_ce * mean(CE) + lam_naw * mean(w * CE) + lam_jsd * JSD(logits, logits_flip)

  with ``lam_ce = lam_naw = lam_jsd = 0.5`` (the official ``lam_a``, ``lam_b``, ``lam_c``) and the
  official JSD: the mixture is taken of the two *logit* vectors, ``m = (a + b) / 2``, and
  ``JSD = 1/2 [KL(softmax(m) || softmax(a)) + KL(softmax(m) || softmax(b))]`` summed over the
  batch (``jsd_reduction: sum``; ``mean`` divides by the batch size). The flipped view is the
  horizontal mirror of the same augmented image.
- ``paper`` form, the NLA paper's total loss (Lee et al., "Navigating Label Ambiguity for Facial
  Expression Recognition in the Wild", AAAI 2025, arXiv 2502.09993: NLA = NAW + a consistency
  regulariser between an image and its flip)::

      lam_paper * mean((1 + w) * CE) + (1 - lam_paper) * JSD(logits, logits_flip)

  ``lam_paper = 0.5`` by default. The JSD is the official function above (the paper's own
  reduction could not be checked against its full text here; ``jsd_reduction`` chooses). At
  ``lam_paper = 0.5`` this is the release form's arithmetic with its default weights
  (0.5 CE + 0.5 wCE + 0.5 JSD), the official code's ``lam_a = lam_b = lam_c = 0.5``.
- ``weighted_ce`` form (a project variant, not NLA: no consistency term): ``mean((1 + w) * CE)``,
  the V-NAW paper's NAW-CE (its eq. 12) applied to images.

``w`` is the NAW kernel weight (``fer_pipeline.naw``) on (p_GT, p_NN) with the official kernel
normalisation C; it carries gradient (``weight_grad: true``, as the official code computes it)
unless ``weight_grad: false``. CE uses soft targets when given (FERPlus vote distributions), the
kernel the hard label.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fer_pipeline.config import NLAConfig
from fer_pipeline.labels import IGNORE
from fer_pipeline.naw import naw_weight


def nla_jsd(logits_a: torch.Tensor, logits_b: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """The official NLA ``jensen_shannon_divergence``: logits (B, K), (B, K) -> scalar."""
    a, b = logits_a.float(), logits_b.float()
    m = F.softmax(0.5 * (a + b), dim=1)
    kl_a = F.kl_div(F.log_softmax(a, dim=1), m, reduction="sum")
    kl_b = F.kl_div(F.log_softmax(b, dim=1), m, reduction="sum")
    out = 0.5 * (kl_a + kl_b)
    return out / max(1, a.shape[0]) if reduction == "mean" else out


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
    if not cfg.grad_through_weight():
        w = w.detach()
    if cfg.form == "weighted_ce":
        return ((1.0 + w) * ce).mean(), w.detach().mean()
    if cfg.form == "paper":
        loss = cfg.lam_paper * ((1.0 + w) * ce).mean()
    else:
        loss = cfg.lam_ce * ce.mean() + cfg.lam_naw * (w * ce).mean()
    lam_jsd = cfg.jsd_weight()
    if lam_jsd > 0:
        if logits_flip is None:
            raise ValueError(f"nla.form {cfg.form} needs the logits of the flipped images")
        loss = loss + lam_jsd * nla_jsd(logits, logits_flip[keep].float(), cfg.jsd_reduction)
    return loss, w.detach().mean()
