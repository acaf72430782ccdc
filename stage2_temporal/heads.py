"""Output heads of the temporal model and how each turns logits into 8-class probabilities and
per-frame cross-entropy.

- ``flat``: 8 logits per frame.
- ``cfcsp`` / ``cfcsp_shared`` (CFC-SP, coarse-to-fine cascade; two networks, or two heads on
  one trunk): 5 coarse logits ``[Neutral, Happiness, Surprise, Other, Negative]`` then 4
  negative logits ``[Anger, Disgust, Fear, Sadness]``; the negative part is trained only on
  negative frames. Soft cascade: ``p8[neg k] = p5[Negative] * p4[k]``.

Class ids come from probabilities through ``decide`` (window averaging and smoothing act on
probabilities, so the decision is taken last): ``soft`` = argmax of the 8 probabilities;
``hard`` = the cascade's own rule, the coarse winner unless Negative, then the negative winner.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fer_pipeline import labels as L
from fer_pipeline.config import TemporalModelConfig

_TO_COARSE = torch.tensor(L.TO_COARSE)
_TO_NEG = torch.tensor(L.TO_NEGATIVE)
# p8 from (p5, p4): column sources
_COARSE_COLS = [L.NEUTRAL, L.HAPPINESS, L.SURPRISE, L.OTHER]          # p5[0..3] -> these ids
_NEG_COLS = list(L.NEGATIVE_TO_ID)                                    # p5[4] * p4[k] -> these ids


def out_dim(head: str) -> int:
    return L.NUM_CLASSES if head == "flat" else len(L.COARSE_CLASSES) + len(L.NEGATIVE_CLASSES)


def probs8(logits: torch.Tensor, head: str) -> torch.Tensor:
    """(..., out_dim) logits -> (..., 8) class probabilities (soft cascade for cfcsp)."""
    if head == "flat":
        return logits.float().softmax(-1)
    p5 = logits[..., :5].float().softmax(-1)
    p4 = logits[..., 5:].float().softmax(-1)
    p8 = logits.new_zeros(*logits.shape[:-1], L.NUM_CLASSES, dtype=torch.float32)
    p8[..., _COARSE_COLS] = p5[..., :4]
    p8[..., _NEG_COLS] = p5[..., 4:5] * p4
    return p8


DECISION_RULES = ("soft", "hard")


def decision_rule(model_cfg: TemporalModelConfig) -> str:
    """The rule a ``stage2.model`` config predicts with: its ``cascade`` for the CFC-SP heads,
    plain argmax (soft) for the flat head."""
    return model_cfg.cascade if model_cfg.head != "flat" else "soft"


def decide(probs8: np.ndarray, rule: str) -> np.ndarray:
    """(..., 8) class probabilities -> (...) int64 class ids.

    soft: argmax of the 8 probabilities. hard: argmax of the coarse scores
    ``[p_Neutral, p_Happiness, p_Surprise, p_Other, p_Anger + p_Disgust + p_Fear + p_Sadness]``,
    and when Negative wins, the argmax among the four negative classes. On one frame of the
    cfcsp head the coarse scores are p5 itself (the negative ones sum to p5[Negative]), so this
    is the coarse-head argmax refined by the negative-head argmax.
    """
    p = np.asarray(probs8)
    if rule == "soft":
        return p.argmax(-1)
    if rule != "hard":
        raise ValueError(f"unknown decision rule {rule!r}; known: {', '.join(DECISION_RULES)}")
    neg = p[..., _NEG_COLS]                                            # (..., 4)
    coarse = np.concatenate([p[..., _COARSE_COLS], neg.sum(-1, keepdims=True)], -1).argmax(-1)
    return np.where(coarse == L.COARSE_NEGATIVE, np.asarray(_NEG_COLS)[neg.argmax(-1)],
                    np.asarray(L.COARSE_TO_ID)[coarse])


def frame_ce(logits: torch.Tensor, label: torch.Tensor, head: str) -> torch.Tensor:
    """Per-frame cross-entropy (B, P); 0 where label == -1."""
    valid = label >= 0
    safe = label.clamp_min(0)
    if head == "flat":
        ce = F.cross_entropy(logits.float().flatten(0, -2), safe.flatten(), reduction="none")
        return ce.view(label.shape) * valid
    coarse_t = _TO_COARSE.to(label.device)[safe]
    neg_t = _TO_NEG.to(label.device)[safe]
    ce = F.cross_entropy(logits[..., :5].float().flatten(0, -2), coarse_t.flatten(),
                         reduction="none").view(label.shape)
    is_neg = valid & (neg_t >= 0)
    ce_neg = F.cross_entropy(logits[..., 5:].float().flatten(0, -2), neg_t.clamp_min(0).flatten(),
                             reduction="none").view(label.shape)
    return (ce + ce_neg * is_neg) * valid
