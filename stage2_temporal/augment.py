"""Augmentation on cached tokens.

The cache makes pixel-space augmentation impossible, so V-NAW's two augmentations become:

- **frame skipping = token dropping**: per clip ``lambda ~ U[drop_min, drop_max]``; each frame
  is kept with probability ``1 - lambda``; dropped frames leave attention through the key
  padding mask (their outputs are still computed from the kept frames).
- **in-frame erasing = feature masking**: one random set of ``mask_ratio * D`` channels per
  clip, the same set on every frame of that clip, replaced by zeros or a learned mask token.
"""
from __future__ import annotations

import torch
from torch import nn

from pipeline.config import TokenAugConfig


def drop_tokens(valid: torch.Tensor, drop_min: float, drop_max: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, P) bool valid -> (B, P) bool kept: valid and not dropped. ``lambda`` is drawn per clip."""
    B, P = valid.shape
    lam = drop_min + (drop_max - drop_min) * torch.rand(B, 1, generator=generator, device=valid.device)
    keep = torch.rand(B, P, generator=generator, device=valid.device) >= lam
    return valid & keep


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
        keys = drop_tokens(valid, self.cfg.drop_min, self.cfg.drop_max, generator)
        if self.cfg.mask_ratio > 0:
            m = channel_masks(x.shape[0], x.shape[2], self.cfg.mask_ratio, x.device, generator)
            m = m[:, None, :]                                           # (B, 1, D): all frames
            fill = self.mask_token.to(x.dtype) if self.mask_token is not None else x.new_zeros(())
            x = torch.where(m, fill, x)
        return x, keys
