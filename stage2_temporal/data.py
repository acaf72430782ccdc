"""Clips from the loaded embedding cache.

The store is loaded once (``load_cache``) into one ``(N_frames, D)`` array plus per-video row
offsets — in this process's RAM, in one copy per node shared by the local ranks, memory-mapped
from a consolidated file on local disk, or on the training device (``stage2.data.preload``) —
and clips are gathered from it with index arithmetic: no per-item Zarr reads. Training,
validation and selection videos are index views of that one array (``TemporalCache.subset``),
never copies; evaluation after training reuses it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from fer_pipeline.config import Stage2DataConfig
from fer_pipeline.labels import IGNORE
from fer_pipeline.store import EmbeddingStore, LoadedStore, StoreIndex

log = logging.getLogger(__name__)


@dataclass
class TemporalCache:
    """Videos of a loaded store. ``emb``/``label``/``face`` are the loaded arrays (shared by
    every view of them); video v of this view is rows ``starts[v] : starts[v] + T_v`` of them,
    and frame f of it is number ``offsets[v] + f`` in the view's own concatenated frame order
    (evaluation outputs, predictions). ``starts`` None: the videos are the arrays' rows in
    order (``starts = offsets[:-1]``)."""
    emb: torch.Tensor      # (M, D) float16
    label: torch.Tensor    # (M,) int8 or int64, -1 = ignore
    face: torch.Tensor     # (M,) bool
    offsets: np.ndarray    # (V+1,) int64, the view's frame numbering
    videos: list[str]
    starts: np.ndarray | None = None   # (V,) int64 rows of the videos' first frames
    nonfinite: np.ndarray | None = None  # rows holding NaN/Inf, found while loading (None: not checked)
    flip: torch.Tensor | None = None     # (M, D) float16 embeddings of the flipped crops, row for
                                         # row with ``emb`` (``load_flip``; None: not loaded)

    def __post_init__(self):
        if self.starts is None:
            self.starts = np.asarray(self.offsets[:-1], dtype=np.int64).copy()

    @classmethod
    def from_store(cls, loaded: LoadedStore, device: torch.device | str = "cpu") -> TemporalCache:
        """The loaded store as is (no copy on the CPU: the tensors share its arrays)."""
        return cls(torch.from_numpy(loaded.emb).to(device), torch.from_numpy(loaded.label).to(device),
                   torch.from_numpy(loaded.face).to(device), loaded.offsets.copy(), list(loaded.videos),
                   nonfinite=loaded.nonfinite)

    def subset(self, indices: list[int]) -> TemporalCache:
        """The given videos (indices into this view) as a view of the same arrays."""
        lengths = self.lengths()[list(indices)]
        offsets = np.zeros(len(indices) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return TemporalCache(self.emb, self.label, self.face, offsets,
                             [self.videos[i] for i in indices],
                             self.starts[list(indices)].copy(), flip=self.flip)

    def subset_names(self, names: list[str]) -> TemporalCache:
        pos = {v: i for i, v in enumerate(self.videos)}
        missing = [v for v in names if v not in pos]
        if missing:
            raise KeyError(f"video(s) not loaded: {', '.join(missing[:10])}")
        return self.subset([pos[v] for v in names])

    @property
    def dim(self) -> int:
        return int(self.emb.shape[1])

    @property
    def frames(self) -> int:
        return int(self.offsets[-1])

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def rows(self) -> torch.Tensor:
        """(frames,) int64: the array row of every frame of the view, in view order."""
        lengths = torch.from_numpy(self.lengths())
        base = torch.from_numpy(self.starts - self.offsets[:-1])
        return torch.arange(self.frames) + torch.repeat_interleave(base, lengths)

    def view_labels(self) -> np.ndarray:
        """(frames,) int64 labels of the view's frames, in view order."""
        return self._take(self.label).astype(np.int64)

    def view_face(self) -> np.ndarray:
        return self._take(self.face).astype(bool)

    def _take(self, t: torch.Tensor) -> np.ndarray:
        if self.contiguous():
            return t[:self.frames].cpu().numpy()
        return t[self.rows().to(t.device)].cpu().numpy()

    def contiguous(self) -> bool:
        return bool(np.array_equal(self.starts, self.offsets[:-1]))

    def locate(self, row: int) -> tuple[int, int]:
        """(video index, 0-based frame) of an array row of this view's videos."""
        order = np.argsort(self.starts, kind="stable")
        k = int(np.searchsorted(self.starts[order], row, side="right") - 1)
        v = int(order[max(k, 0)])
        return v, int(row - self.starts[v])


def load_cache(store: EmbeddingStore, index: StoreIndex, data: Stage2DataConfig,
               device: torch.device | str = "cpu") -> TemporalCache:
    """``index``'s videos (``preload: mmap``: every complete video of the store) loaded as
    ``stage2.data.preload`` says:

    - ``cpu``: in RAM, one copy per node (local DDP ranks map one copy in ``shm_dir``);
    - ``mmap``: memory-mapped from the consolidated cache in ``cache_dir`` (written once per
      store version; for stores bigger than RAM);
    - ``device``: on ``device``, copied there video by video (no whole-store host array).
    """
    from fer_pipeline import embcache

    if data.preload == "device" and torch.device(device).type != "cpu":
        return _load_to_device(store, index, torch.device(device))
    if data.preload == "mmap":
        loaded = embcache.disk_cache(store, data.cache_dir)
    else:
        loaded = embcache.node_shared(store, index, data.shm_dir or "/dev/shm")
    return TemporalCache.from_store(loaded)


def load_checked(store: EmbeddingStore, index: StoreIndex, data: Stage2DataConfig,
                 device: torch.device | str = "cpu") -> TemporalCache:
    """``load_cache``, then non-finite embeddings refused or masked (``data.bad_frames``); the
    heap memory the reading freed goes back to the system (``memory.trim``)."""
    from fer_pipeline import memory

    cache = store.check_finite(load_cache(store, index, data, device), data.bad_frames)
    memory.trim()
    return cache


class _DeviceRows:
    """A device tensor that takes numpy row blocks by slice assignment (``read_into``)."""

    def __init__(self, t: torch.Tensor):
        self.t = t

    def __setitem__(self, sl, a):
        self.t[sl] = torch.from_numpy(np.ascontiguousarray(a)).to(self.t.device)


def _load_to_device(store: EmbeddingStore, index: StoreIndex, device: torch.device) -> TemporalCache:
    N = index.frames
    emb = torch.empty((N, index.dim), dtype=torch.float16, device=device)
    label = torch.empty(N, dtype=torch.int8, device=device)
    face = torch.empty(N, dtype=torch.bool, device=device)

    bad = store.read_into(index, _DeviceRows(emb), _DeviceRows(label), _DeviceRows(face))
    return TemporalCache(emb, label, face, index.offsets.copy(), list(index.videos), nonfinite=bad)


def load_flip(store: EmbeddingStore, cache: TemporalCache) -> TemporalCache:
    """Add the flipped-crop embeddings (``stage1.embed.flip``) of ``cache``'s videos, row for row
    with its embeddings, where they live (host RAM, or the device for ``preload: device``; a
    second (N, D) float16 array: the embeddings' memory twice). ``cache`` must be a whole loaded
    store (its videos its rows in order). A ``UsageError`` names videos without them or with
    NaN/Inf in them."""
    if not cache.contiguous():
        raise ValueError("load_flip needs the loaded store itself, not a view of it")
    flip = torch.empty(cache.emb.shape, dtype=torch.float16, device=cache.emb.device)
    bad = store.read_flip_into(cache.videos, flip.numpy() if flip.device.type == "cpu"
                               else _DeviceRows(flip))
    if bad.size:
        owner = np.searchsorted(cache.offsets, bad, side="right") - 1
        names = sorted({cache.videos[v] for v in owner})
        from fer_pipeline.errors import UsageError

        raise UsageError(f"{store.path}: {bad.size} flipped-crop embedding(s) hold NaN/Inf in "
                         f"{', '.join(names[:5])}; re-embed those videos")
    cache.flip = flip
    return cache


@dataclass
class ClipBatch:
    x: torch.Tensor       # (B, P, D) float32
    label: torch.Tensor   # (B, P) int64, -1 where ignored or padding
    valid: torch.Tensor   # (B, P) bool: frame exists and shows a face (attention keys)
    inside: torch.Tensor  # (B, P) bool: frame exists (not padding past the video end)


def gather_clips(cache: TemporalCache, starts: torch.Tensor, lengths: torch.Tensor,
                 clip_len: int, rates: torch.Tensor | None = None,
                 device: torch.device | str | None = None, with_flip: bool = False) -> ClipBatch:
    """Gather B clips of ``clip_len`` tokens. Clip b reads array rows ``starts[b] + floor(k *
    rates[b])`` for k < clip_len (rate 1: consecutive frames: one contiguous range of the array,
    and of the file when it is memory-mapped), as long as the offset is below ``lengths[b]``
    (the raw frames it may read, within its video); the rest is padding. The batch is built
    where the cache lives and moved to ``device`` (the model's) when that differs.
    ``with_flip``: ``x`` is (B, P, 2D), each frame's embedding then its flipped crop's
    (``cache.flip``), so frame skipping keeps the two halves of a frame together."""
    out_device = torch.device(device) if device is not None else cache.emb.device
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
    if with_flip:
        if cache.flip is None:
            raise ValueError("with_flip: the cache holds no flipped-crop embeddings (load_flip)")
        x = torch.cat([x, cache.flip.index_select(0, rows.reshape(-1)).view(B, clip_len, -1).float()], -1)
    if not bool(inside.all()):
        x.masked_fill_(~inside[..., None], 0.0)
    face = cache.face[rows] & inside
    label = torch.where(inside, cache.label[rows].long(), IGNORE)
    if out_device != device:
        nb = out_device.type == "cuda"
        return ClipBatch(*(t.to(out_device, non_blocking=nb) for t in (x, label, face, inside)))
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
        self.starts = np.asarray(cache.starts, np.int64)       # array row of each video's frame 0
        self.lengths = cache.lengths().astype(np.int64)
        self.view_starts = np.asarray(cache.offsets[:-1], np.int64)  # the same in view numbering
        self.clip_len = clip_len
        self.span = max(span or clip_len, clip_len)
        self.batch_size = batch_size
        self.seed = seed
        self.speed_jitter = speed_jitter
        self.rank, self.world = rank, world
        self.epoch = 0
        self.frame_weight = None
        if class_balanced:
            lab = cache.view_labels()
            counts = np.bincount(lab[lab >= 0], minlength=8).astype(np.float64)
            inv = np.where(counts > 0, counts.sum() / np.maximum(counts, 1), 0.0)
            self.frame_weight = np.where(lab >= 0, inv[np.clip(lab, 0, None)], 0.0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def clips(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """This rank's (starts, lengths, rates) for the epoch, in training order."""
        rng = np.random.default_rng([self.seed, self.epoch])
        P = self.clip_len
        starts, lengths, ends, owner = [], [], [], []
        for v in range(len(self.starts)):
            s, T = int(self.starts[v]), int(self.lengths[v])
            e = s + T
            n0 = len(starts)
            if T <= P:
                starts.append(s)
                lengths.append(T)
                ends.append(e)
                owner.append(v)
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
            owner += [v] * (len(starts) - n0)
        starts, lengths, ends, owner = (np.asarray(a, np.int64) for a in (starts, lengths, ends, owner))
        if self.frame_weight is not None:     # frame_weight is in view numbering
            local = starts - (self.starts - self.view_starts)[owner]
            w = np.array([self.frame_weight[a:a + n].mean() for a, n in zip(local, lengths)])
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
