"""Augmentation on cached tokens.

The cache makes pixel-space augmentation impossible, so V-NAW's two augmentations become:

- **frame skipping = token dropping**: per clip ``lambda ~ U[drop_min, drop_max]``; each frame
  is kept with probability ``1 - lambda``. With ``drop_mode: remove`` (default, the paper's
  frame skipping, eq. 3) a dropped frame is gone: ``drop_frames`` gathers the kept frames of a
  longer raw stretch into the clip (so it spans more time), and a dropped frame is not in the
  sequence the Transformer sees, not predicted, not in the loss or in the clip mean.
  ``drop_mode: key_mask`` only removes dropped frames from attention as keys: they are still
  predicted from their own embedding (and stay in the loss unless ``drop_loss: exclude``).
- **in-frame erasing = feature masking**: one random set of ``mask_ratio * D`` channels per
  clip, the same set on every frame of that clip, replaced by zeros or a learned mask token.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from fer_pipeline.config import TokenAugConfig
from fer_pipeline.labels import IGNORE


def drop_tokens(valid: torch.Tensor, drop_min: float, drop_max: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, P) bool valid -> (B, P) bool kept: valid and not dropped. ``lambda`` is drawn per clip."""
    B, P = valid.shape
    lam = drop_min + (drop_max - drop_min) * torch.rand(B, 1, generator=generator, device=valid.device)
    keep = torch.rand(B, P, generator=generator, device=valid.device) >= lam
    return valid & keep


def raw_span(clip_len: int, cfg: TokenAugConfig) -> int:
    """Raw frames a training clip reads so that, after removal, about ``clip_len`` are kept even
    at the highest drop rate: ``ceil(clip_len / (1 - drop_max))``."""
    if not (cfg.enabled and cfg.drop_mode == "remove" and cfg.drop_max > 0):
        return clip_len
    return int(math.ceil(clip_len / (1.0 - cfg.drop_max)))


def drop_frames(batch, clip_len: int, cfg: TokenAugConfig, generator: torch.Generator | None = None):
    """Frame skipping on a gathered batch (``ClipBatch`` of ``raw_span`` frames): per clip draw
    ``lambda``, keep each existing frame with probability ``1 - lambda``, and gather the first
    ``clip_len`` kept frames in order. Dropped and surplus frames become padding (not inside,
    not valid, label -1). Returns ``(batch, kept)`` where ``kept`` (B, raw) marks the raw
    frames that made it into the clip."""
    x, label, valid, inside = batch.x, batch.label, batch.valid, batch.inside
    B, R = inside.shape
    lam = cfg.drop_min + (cfg.drop_max - cfg.drop_min) * torch.rand(B, 1, generator=generator,
                                                                      device=inside.device)
    keep = inside & (torch.rand(B, R, generator=generator, device=inside.device) >= lam)
    keep &= keep.cumsum(1) <= clip_len                           # at most clip_len kept frames
    # stable order: kept frames first, in time order; everything else after them
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :clip_len]
    taken = keep.gather(1, order)                                # (B, P) real kept frames
    out = type(batch)(
        x=x.gather(1, order[..., None].expand(-1, -1, x.shape[2])) * taken[..., None],
        label=torch.where(taken, label.gather(1, order), IGNORE),
        valid=valid.gather(1, order) & taken,
        inside=taken)
    return out, keep


def channel_masks(batch: int, dim: int, ratio: float, device=None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, D) bool: exactly ``round(ratio * D)`` masked channels per clip, chosen at random."""
    n = int(round(ratio * dim))
    scores = torch.rand(batch, dim, generator=generator, device=device)
    idx = scores.topk(n, dim=1).indices if n else torch.zeros(batch, 0, dtype=torch.long, device=device)
    mask = torch.zeros(batch, dim, dtype=torch.bool, device=device)
    return mask.scatter_(1, idx, True)


class TokenAugment(nn.Module):
    """Both augmentations; active only in training mode and when ``cfg.enabled``."""

    def __init__(self, dim: int, cfg: TokenAugConfig):
        super().__init__()
        self.cfg = cfg
        self.mask_token = nn.Parameter(torch.zeros(dim)) if cfg.mask_token == "learned" else None

    def forward(self, x: torch.Tensor, valid: torch.Tensor,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, P, D), valid (B, P) -> (x', keys (B, P) bool: frames attention may use)."""
        if not (self.training and self.cfg.enabled):
            return x, valid
        keys = valid
        if self.cfg.drop_mode == "key_mask":      # remove mode drops frames before the model
            keys = drop_tokens(valid, self.cfg.drop_min, self.cfg.drop_max, generator)
        if self.cfg.mask_ratio > 0:
            m = channel_masks(x.shape[0], x.shape[2], self.cfg.mask_ratio, x.device, generator)
            m = m[:, None, :]                                           # (B, 1, D): all frames
            fill = self.mask_token.to(x.dtype) if self.mask_token is not None else x.new_zeros(())
            x = torch.where(m, fill, x)
        return x, keys
