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
                 clip_len: int, rates: torch.Tensor | None = None) -> ClipBatch:
    """Gather B clips of ``clip_len`` tokens. Clip b reads global rows ``starts[b] + floor(k *
    rates[b])`` for k < clip_len (rate 1: consecutive frames), as long as the offset is below
    ``lengths[b]`` (the raw frames it may read, within its video); the rest is padding."""
    device = cache.emb.device
    starts = starts.to(device)
    lengths = lengths.to(device)
    steps = torch.arange(clip_len, device=device)
    offs = steps[None, :].expand(len(starts), -1)
    if rates is not None:
        offs = (steps[None, :].float() * rates.to(device)[:, None]).floor().long()
    inside = offs < lengths[:, None]                                   # (B, P)
    rows = torch.where(inside, starts[:, None] + offs, 0)
    B = rows.shape[0]
    x = cache.emb.index_select(0, rows.reshape(-1)).view(B, clip_len, -1).float()  # (B, P, D)
    if not bool(inside.all()):
        x.masked_fill_(~inside[..., None], 0.0)
    face = cache.face[rows] & inside
    label = torch.where(inside, cache.label[rows], IGNORE)
    return ClipBatch(x, label, face, inside)


class ClipSampler:
    """Training clips for one epoch: every video is tiled by clips of ``clip_len`` frames from a
    random phase, so an epoch covers every frame about once (≈ N / clip_len clips) and clip
    boundaries move from epoch to epoch. A video shorter than a clip gives one padded clip.

    Options: ``span`` > ``clip_len`` lets each clip read that many raw frames (frame skipping
    then keeps about ``clip_len`` of them); ``speed_jitter`` j reads each clip at a random rate
    in [1 - j, 1 + j];
    ``class_balanced`` resamples the clips (same count, with replacement) by the mean inverse
    frequency of their frames' labels. Under DDP every rank draws the same list for an epoch
    and takes every world-th clip (padded so all ranks run the same number of steps).
    Yields (starts, lengths, rates) batches; rates is None without speed jitter."""

    def __init__(self, cache: TemporalCache, clip_len: int, batch_size: int, seed: int = 0,
                 speed_jitter: float = 0.0, class_balanced: bool = False, rank: int = 0,
                 world: int = 1, span: int | None = None):
        self.offsets = cache.offsets
        self.clip_len = clip_len
        self.span = max(span or clip_len, clip_len)
        self.batch_size = batch_size
        self.seed = seed
        self.speed_jitter = speed_jitter
        self.rank, self.world = rank, world
        self.epoch = 0
        self.frame_weight = None
        if class_balanced:
            lab = cache.label.cpu().numpy()
            counts = np.bincount(lab[lab >= 0], minlength=8).astype(np.float64)
            inv = np.where(counts > 0, counts.sum() / np.maximum(counts, 1), 0.0)
            self.frame_weight = np.where(lab >= 0, inv[np.clip(lab, 0, None)], 0.0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def clips(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """This rank's (starts, lengths, rates) for the epoch, in training order."""
        rng = np.random.default_rng([self.seed, self.epoch])
        P = self.clip_len
        starts, lengths, ends = [], [], []
        for v in range(len(self.offsets) - 1):
            s, e = int(self.offsets[v]), int(self.offsets[v + 1])
            T = e - s
            if T <= P:
                starts.append(s)
                lengths.append(T)
                ends.append(e)
                continue
            # first clip starts at -phase (clipped to the video start) so boundaries move
            phase = int(rng.integers(0, P))
            for a in range(-phase, T, P):
                lo, hi = max(a, 0), min(a + P, T)
                if hi - lo < P // 4:   # tiny head/tail piece: take a full clip at that end
                    lo, hi = (0, P) if lo == 0 else (T - P, T)
                starts.append(s + lo)
                lengths.append(hi - lo)
                ends.append(e)
        starts, lengths, ends = (np.asarray(a, np.int64) for a in (starts, lengths, ends))
        if self.frame_weight is not None:
            w = np.array([self.frame_weight[a:a + n].mean() for a, n in zip(starts, lengths)])
            w = w + 1e-9
            pick = rng.choice(len(starts), size=len(starts), replace=True, p=w / w.sum())
            starts, lengths, ends = starts[pick], lengths[pick], ends[pick]
        rates = None
        if self.span > P:     # frame skipping reads a longer stretch, up to the video's end
            lengths = np.minimum(np.maximum(lengths, self.span), ends - starts)
        if self.speed_jitter > 0:
            rates = rng.uniform(1 - self.speed_jitter, 1 + self.speed_jitter, len(starts))
            # a faster clip reads further, up to its video's end
            lengths = np.minimum(np.ceil(self.span * rates).astype(np.int64), ends - starts)
        order = rng.permutation(len(starts))
        if self.world > 1:
            per_rank = -(-len(order) // self.world)
            order = np.resize(order, per_rank * self.world)[self.rank::self.world]
        return starts[order], lengths[order], None if rates is None else rates[order]

    def __len__(self) -> int:
        return -(-len(self.clips()[0]) // self.batch_size)

    def __iter__(self):
        starts, lengths, rates = self.clips()
        for b in range(0, len(starts), self.batch_size):
            sl = slice(b, b + self.batch_size)
            yield (torch.from_numpy(starts[sl]), torch.from_numpy(lengths[sl]),
                   None if rates is None else torch.from_numpy(rates[sl]).float())
