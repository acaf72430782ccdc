"""V-NAW loss on clips.

Per clip i with annotated frames A_i (label >= 0, and in the loss mask):

    p_bar_i = mean_{p in A_i} softmax(logits_ip)            clip-level prediction (paper eq. 9)
    y_bar_i = majority label over A_i                       clip label
    w_i     = naw_weight(p_bar_i, y_bar_i, epoch / epochs)  T kernel if argmax p_bar == y_bar, else F
    CE_i    = mean_{p in A_i} CE(logits_ip, y_ip)           loss.target = frame
            | -log p_bar_i[y_bar_i]                         loss.target = clip (paper eq. 10)
    loss    = mean_i (1 + w_i) * CE_i                       (paper eq. 12)

``naw.form: paper`` is eqs. 9-12 as written: clip target, w with gradient (no stop-gradient in
the paper; both official codes compute w from the live softmax), C as NLA. ``frame_detached`` is
the frame target with w a per-clip constant. Clips without annotated frames do not count. ``naw.enabled = False`` gives w = 0 (plain CE).
Class weights, when given, weight each frame's CE by its class (frame target) or the clip's CE
by its majority class (clip target).
"""
from __future__ import annotations

import torch

from fer_pipeline.config import VNAWConfig
from fer_pipeline.labels import NUM_CLASSES
from fer_pipeline.naw import naw_weight
from stage2_temporal.heads import frame_ce, probs8


def clip_majority(label: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, P) labels, (B, P) bool frames that count -> (B,) majority label (ties: lowest id),
    -1 for clips with no counted annotated frame."""
    counted = mask & (label >= 0)
    onehot = torch.zeros(*label.shape, NUM_CLASSES, device=label.device)
    onehot.scatter_(-1, label.clamp_min(0)[..., None], 1.0)
    counts = (onehot * counted[..., None]).sum(1)                      # (B, 8)
    maj = counts.argmax(-1)
    return torch.where(counts.sum(-1) > 0, maj, torch.full_like(maj, -1))


def vnaw_loss(logits: torch.Tensor, label: torch.Tensor, mask: torch.Tensor, progress: float,
              naw: VNAWConfig, head: str = "flat", target: str = "clip",
              class_weights: torch.Tensor | None = None,
              weight_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, P, out), label (B, P) with -1, mask (B, P) bool frames allowed in the loss
    -> (scalar loss, mean clip weight w, detached). ``weight_grad=False`` detaches w."""
    counted = mask & (label >= 0)                                      # (B, P)
    n = counted.sum(1)                                                 # (B,)
    clips = n > 0
    if not clips.any():
        zero = logits.sum() * 0.0
        return zero, zero.detach()
    p = probs8(logits, head)                                           # (B, P, 8)
    p_bar = (p * counted[..., None]).sum(1) / n.clamp_min(1)[:, None]  # (B, 8)
    y_bar = clip_majority(label, counted)                              # (B,)
    p_bar, y_bar, logits_c, label_c, counted_c = (
        p_bar[clips], y_bar[clips], logits[clips], label[clips], counted[clips])
    if target == "frame":
        ce_f = frame_ce(logits_c, torch.where(counted_c, label_c, -1), head)   # (b, P)
        wts = counted_c.float()
        if class_weights is not None:
            wts = wts * class_weights.to(ce_f.device)[label_c.clamp_min(0)]
        ce = (ce_f * wts).sum(1) / wts.sum(1).clamp_min(1e-12)
    else:
        ce = -(p_bar.gather(1, y_bar[:, None]).squeeze(1).clamp_min(1e-12)).log()
        if class_weights is not None:
            ce = ce * class_weights.to(ce.device)[y_bar]
    if naw.enabled:
        w = naw_weight(p_bar, y_bar, progress, **naw.kernel_kwargs())
        if not weight_grad:
            w = w.detach()
    else:
        w = torch.zeros_like(ce)
    return ((1.0 + w) * ce).mean(), w.detach().mean()


def balanced_class_weights(labels: torch.Tensor) -> torch.Tensor:
    """Inverse-frequency weights over the 8 classes of annotated frames, mean 1 over the
    classes present (absent classes get 0)."""
    counts = torch.bincount(labels[labels >= 0].long(), minlength=NUM_CLASSES).float()
    w = torch.where(counts > 0, 1.0 / counts.clamp_min(1), torch.zeros_like(counts))
    present = counts > 0
    return w / w[present].mean() if present.any() else w
