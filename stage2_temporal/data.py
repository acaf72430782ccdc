"""Clips from the in-memory embedding cache.

The whole store is loaded once (``EmbeddingStore.load``) into one ``(N_frames, D)`` tensor plus
per-video offsets; clips are gathered from it with index arithmetic — no per-item Zarr reads.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.labels import IGNORE
from pipeline.store import LoadedStore


@dataclass
class TemporalCache:
    emb: torch.Tensor      # (N, D) float16
    label: torch.Tensor    # (N,) int64, -1 = ignore
    face: torch.Tensor     # (N,) bool
    offsets: np.ndarray    # (V+1,) int64
    videos: list[str]

    @classmethod
    def from_store(cls, loaded: LoadedStore, device: torch.device | str = "cpu") -> TemporalCache:
        return cls(torch.from_numpy(loaded.emb).to(device),
                   torch.from_numpy(loaded.label.astype(np.int64)).to(device),
                   torch.from_numpy(loaded.face).to(device),
                   loaded.offsets.copy(), list(loaded.videos))

    @property
    def dim(self) -> int:
        return int(self.emb.shape[1])

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclass
class ClipBatch:
    x: torch.Tensor       # (B, P, D) float32
    label: torch.Tensor   # (B, P) int64, -1 where ignored or padding
    valid: torch.Tensor   # (B, P) bool: frame exists and shows a face (attention keys)
    inside: torch.Tensor  # (B, P) bool: frame exists (not padding past the video end)


def gather_clips(cache: TemporalCache, starts: torch.Tensor, lengths: torch.Tensor,
                 clip_len: int) -> ClipBatch:
    """Gather B clips of ``clip_len`` frames. Clip b covers global rows
    ``starts[b] : starts[b] + lengths[b]`` (lengths <= clip_len); the tail is padding."""
    device = cache.emb.device
    starts = starts.to(device)
    lengths = lengths.to(device)
    steps = torch.arange(clip_len, device=device)
    inside = steps[None, :] < lengths[:, None]                    # (B, P)
    rows = torch.where(inside, starts[:, None] + steps[None, :], 0)
    B = rows.shape[0]
    x = cache.emb.index_select(0, rows.view(-1)).view(B, clip_len, -1).float()  # (B, P, D)
    if not bool(inside.all()):
        x.masked_fill_(~inside[..., None], 0.0)
    face = cache.face[rows] & inside
    label = torch.where(inside, cache.label[rows], IGNORE)
    return ClipBatch(x, label, face, inside)


class ClipSampler:
    """Training clips for one epoch: every video is tiled by clips of ``clip_len`` frames from a
    random phase, so an epoch covers every frame about once (≈ N / clip_len clips) and clip
    boundaries move from epoch to epoch. A video shorter than a clip gives one padded clip.
    Yields (starts, lengths) index batches into the cache."""

    def __init__(self, cache: TemporalCache, clip_len: int, batch_size: int, seed: int = 0):
        self.offsets = cache.offsets
        self.clip_len = clip_len
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def clips(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        P = self.clip_len
        starts, lengths = [], []
        for v in range(len(self.offsets) - 1):
            s, e = int(self.offsets[v]), int(self.offsets[v + 1])
            T = e - s
            if T <= P:
                starts.append(s)
                lengths.append(T)
                continue
            # first clip starts at -phase (clipped to the video start) so boundaries move
            phase = int(rng.integers(0, P))
            for a in range(-phase, T, P):
                lo, hi = max(a, 0), min(a + P, T)
                if hi - lo < P // 4:   # tiny head/tail piece: take a full clip at that end
                    lo, hi = (0, P) if lo == 0 else (T - P, T)
                starts.append(s + lo)
                lengths.append(hi - lo)
        starts, lengths = np.asarray(starts, np.int64), np.asarray(lengths, np.int64)
        order = rng.permutation(len(starts))
        return starts[order], lengths[order]

    def __len__(self) -> int:
        return -(-len(self.clips()[0]) // self.batch_size)

    def __iter__(self):
        starts, lengths = self.clips()
        for b in range(0, len(starts), self.batch_size):
            yield torch.from_numpy(starts[b:b + self.batch_size]), torch.from_numpy(lengths[b:b + self.batch_size])
