"""Temporal model: token augmentation (training only), projection D -> d, Transformer encoder
over the clip, per-frame head (flat 8-way, or the CFC-SP coarse + negative cascade, as two
networks or as two heads on one shared trunk).

Defaults follow the V-NAW release (4 layers, d 512, 1 head, ff 512, dropout 0.6, no positional
encoding); all of it is configurable.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from fer_pipeline.config import TemporalModelConfig, TokenAugConfig
from fer_pipeline.labels import COARSE_CLASSES, NEGATIVE_CLASSES
from stage2_temporal.augment import TokenAugment
from stage2_temporal.heads import out_dim, probs8


class SinePositions(nn.Module):
    def __init__(self, d_model: int, max_len: int = 4096):
        super().__init__()
        pos = torch.arange(max_len)[:, None]
        div = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)[:, : d_model // 2]
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[: x.shape[1]]


class LearnedPositions(nn.Module):
    def __init__(self, d_model: int, max_len: int = 1024):
        super().__init__()
        self.pe = nn.Parameter(torch.zeros(max_len, d_model))
        nn.init.trunc_normal_(self.pe, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.pe.shape[0]:
            raise ValueError(f"clip of {x.shape[1]} frames exceeds learned positions ({self.pe.shape[0]})")
        return x + self.pe[: x.shape[1]]


class TemporalTransformer(nn.Module):
    """One temporal network: projection, Transformer encoder, per-frame linear head with
    ``n_out`` outputs (default: what ``cfg.head`` needs; the shared-trunk CFC-SP head has 5 + 4)."""

    def __init__(self, in_dim: int, cfg: TemporalModelConfig, aug: TokenAugConfig | None = None,
                 max_len: int = 1024, n_out: int | None = None):
        super().__init__()
        self.in_dim = in_dim
        self.head_kind = cfg.head
        # the augmentation lives in the model so a learned mask token is saved with it;
        # the engine calls it explicitly (it also returns which frames attention may use)
        self.augment = TokenAugment(in_dim, aug or TokenAugConfig(enabled=False))
        self.proj = nn.Linear(in_dim, cfg.d_model)
        if cfg.pos == "sine":
            self.pos = SinePositions(cfg.d_model, max(max_len, 4096))
        elif cfg.pos == "learned":
            self.pos = LearnedPositions(cfg.d_model, max_len)
        else:
            self.pos = nn.Identity()
        layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.heads, cfg.ff, cfg.dropout,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.head = nn.Linear(cfg.d_model, n_out or out_dim(cfg.head))

    def forward_features(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """(B, P, D) embeddings, (B, P) bool valid keys -> (B, P, d) temporal features.

        Invalid frames (no face, dropped, padding) are removed from attention as keys; their
        own outputs still exist (they read the valid frames), so every frame gets a prediction.
        A clip with no valid frame at all attends to everything rather than to nothing (NaN).
        """
        h = self.pos(self.proj(x))
        mask = None
        if valid is not None:
            valid = valid | ~valid.any(dim=1, keepdim=True)
            mask = ~valid
        return self.encoder(h, src_key_padding_mask=mask)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None,
                return_keys: bool = False):
        """(B, P, D) -> (B, P, out) logits (8 for flat, 5 + 4 for cfcsp). In training mode the
        token augmentation runs first; ``return_keys`` also returns the (B, P) frames attention
        could use (valid and not dropped)."""
        keys = valid
        if valid is not None:
            x, keys = self.augment(x, valid)
        logits = self.head(self.forward_features(x, keys))
        return (logits, keys) if return_keys else logits

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, P, out) logits -> (B, P, 8) class probabilities."""
        return probs8(logits, self.head_kind)


class CascadeTransformer(nn.Module):
    """CFC-SP as its source describes it: two temporal networks, a coarse 5-way one
    ``[Neutral, Happiness, Surprise, Other, Negative]`` trained on every frame and a negative
    4-way one ``[Anger, Disgust, Fear, Sadness]`` trained on the negative frames (the loss masks
    the others, ``heads.frame_ce``). They share nothing but the (augmented) input; their logits
    are concatenated (5 + 4) so the cascade's probabilities and decision rules are those of the
    shared-trunk head (``model.head: cfcsp_shared``)."""

    def __init__(self, in_dim: int, cfg: TemporalModelConfig, aug: TokenAugConfig | None = None,
                 max_len: int = 1024):
        super().__init__()
        self.in_dim = in_dim
        self.head_kind = cfg.head
        self.augment = TokenAugment(in_dim, aug or TokenAugConfig(enabled=False))
        self.coarse = TemporalTransformer(in_dim, cfg, None, max_len, n_out=len(COARSE_CLASSES))
        self.negative = TemporalTransformer(in_dim, cfg, None, max_len, n_out=len(NEGATIVE_CLASSES))

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None,
                return_keys: bool = False):
        """(B, P, D) -> (B, P, 9) logits: 5 coarse, then 4 negative."""
        keys = valid
        if valid is not None:
            x, keys = self.augment(x, valid)
        logits = torch.cat([self.coarse(x, keys), self.negative(x, keys)], dim=-1)
        return (logits, keys) if return_keys else logits

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, P, 9) logits -> (B, P, 8) class probabilities (soft cascade)."""
        return probs8(logits, self.head_kind)
