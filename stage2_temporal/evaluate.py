"""Full-video evaluation: sliding windows over every frame (stride ``clip_len / 2`` by default),
overlapping probabilities averaged, macro-F1 over every annotated frame; optional
post-processing (no-face interpolation, centred smoothing) reported beside the raw numbers.
Class ids are taken from the (averaged, post-processed) probabilities by the model's decision
rule (``heads.decide``).

Under DDP each rank scores a disjoint share of the videos (balanced by frames) into buffers of
that share's size; the confusion counts are all-reduced (never per-rank F1) and the per-frame
probabilities gathered on the primary rank only, so 2 ranks give exactly the single-process
numbers.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from fer_pipeline import distributed, memory
from fer_pipeline.config import PostConfig
from fer_pipeline.labels import NUM_CLASSES
from fer_pipeline.metrics import F1Report, confusion
from fer_pipeline.postprocess import interpolate_no_face, smooth
from stage2_temporal.data import TemporalCache, gather_clips
from stage2_temporal.heads import decide


def window_starts(T: int, clip_len: int, stride: int) -> list[int]:
    """Window starts covering 0..T-1; the last window ends exactly at T when T > clip_len."""
    if T <= clip_len:
        return [0]
    starts = list(range(0, T - clip_len + 1, stride))
    if starts[-1] + clip_len < T:
        starts.append(T - clip_len)
    return starts


@torch.inference_mode()
def predict_probs(model: nn.Module, cache: TemporalCache, clip_len: int, stride: int,
                  batch_size: int = 64) -> torch.Tensor:
    """(N, 8) per-frame class probabilities (float32, CPU) of every frame of the cache view, in
    its frame order (a rank's share: ``cache.subset(videos)``, buffers of that share's size)."""
    param = next(model.parameters(), None)            # outputs where the model runs
    device = param.device if param is not None else cache.emb.device
    starts, lengths, shift = [], [], []          # array rows, frames, array row -> view frame
    for v in range(len(cache.videos)):
        s, T = int(cache.starts[v]), int(cache.offsets[v + 1] - cache.offsets[v])
        for a in window_starts(T, clip_len, stride):
            starts.append(s + a)
            lengths.append(min(clip_len, T - a))
            shift.append(int(cache.offsets[v]) - s)
    N = cache.frames
    sums = torch.zeros(N, NUM_CLASSES, device=device)
    counts = torch.zeros(N, device=device)
    was_training = model.training
    model.eval()
    starts_t = torch.as_tensor(starts, dtype=torch.long)
    lengths_t = torch.as_tensor(lengths, dtype=torch.long)
    shift_t = torch.as_tensor(shift, dtype=torch.long)
    steps = torch.arange(clip_len, device=device)
    for b in range(0, len(starts), batch_size):
        s, n = starts_t[b:b + batch_size], lengths_t[b:b + batch_size]
        batch = gather_clips(cache, s, n, clip_len, device=device)
        probs = model.probs(model(batch.x, batch.valid))                # (B, P, 8)
        first = (s + shift_t[b:b + batch_size]).to(device)               # view frame of each start
        rows = (first[:, None] + steps[None, :])[batch.inside]
        sums.index_add_(0, rows, probs[batch.inside].float())
        counts.index_add_(0, rows, torch.ones_like(rows, dtype=counts.dtype))
    model.train(was_training)
    return sums.div_(counts.clamp_min(1)[:, None]).cpu()


def postprocess(probs: np.ndarray, face: np.ndarray, post: PostConfig) -> np.ndarray:
    out = interpolate_no_face(probs, face) if post.interpolate else probs
    return smooth(out, post.smooth_window, post.moment_weight)


def post_active(post: PostConfig | None) -> bool:
    return post is not None and (post.interpolate or post.smooth_window > 1)


@dataclass
class EvalResult:
    report: F1Report                       # raw model output
    probs: np.ndarray | None               # (N, 8) raw probabilities, every frame (None: see evaluate)
    post_report: F1Report | None = None    # after the configured post-processing
    post_probs: np.ndarray | None = None
    labels: np.ndarray | None = None       # (N,) annotations (-1 = not scored)
    rule: str = "soft"                     # decision rule behind the reports
    extra: dict = field(default_factory=dict)

    def reports(self, rule: str) -> tuple[F1Report, F1Report | None]:
        """(raw, post-processed) reports of the same probabilities under another decision rule
        (where the per-frame probabilities are: the primary rank under DDP)."""
        if self.probs is None:
            raise RuntimeError("reports(rule) needs the per-frame probabilities: evaluate(..., "
                               "keep_probs=True), read on the primary rank")
        post = None if self.post_probs is None else F1Report(
            confusion(self.labels, decide(self.post_probs, rule)))
        return F1Report(confusion(self.labels, decide(self.probs, rule))), post


def evaluate(model: nn.Module, cache: TemporalCache, clip_len: int, stride: int,
             post: PostConfig | None = None, batch_size: int = 64, rule: str = "soft",
             keep_probs: bool = True) -> EvalResult:
    """Macro-F1 over every annotated frame of the cache (raw, and post-processed when ``post``
    asks for it), class ids by ``decide(probs, rule)``; distributed-aware: each rank scores its
    share of the videos into buffers of that share's size, and the confusion counts are summed.
    ``keep_probs``: the per-frame probabilities of every frame (and labels) are put together on
    the primary rank (``probs``, ``post_probs``, ``labels``; None on the other ranks);
    without it (per-epoch validation) only the reports are returned."""
    d = distributed.info()
    mine = distributed.shard(range(len(cache.videos)), weights=cache.lengths())
    share = cache.subset(mine)                     # this rank's videos, a view (alone: all)
    probs = predict_probs(model, share, clip_len, stride, batch_size).numpy()
    do_post = post_active(post)
    post_probs = np.empty_like(probs) if do_post else None
    cm = np.zeros((2, NUM_CLASSES, NUM_CLASSES), np.int64)
    labels, face = share.view_labels(), share.view_face()
    for k in range(len(mine)):
        sl = slice(int(share.offsets[k]), int(share.offsets[k + 1]))
        cm[0] += confusion(labels[sl], decide(probs[sl], rule))
        if do_post:
            post_probs[sl] = postprocess(probs[sl], face[sl], post)
            cm[1] += confusion(labels[sl], decide(post_probs[sl], rule))
    memory.trim()                       # the pass's freed batch buffers
    cm = distributed.all_reduce_sum(torch.from_numpy(cm)).numpy()
    reports = (F1Report(cm[0]), F1Report(cm[1]) if do_post else None)
    if not keep_probs:
        return EvalResult(reports[0], None, reports[1], None, rule=rule)
    if d.enabled:          # each rank's rows, in its share's order, put in place on the primary
        parts = distributed.gather_to_primary((mine, probs, post_probs))
        if not d.primary:
            return EvalResult(reports[0], None, reports[1], None, rule=rule)
        probs, post_probs = _in_view_order(cache, parts, do_post)
        labels = cache.view_labels()
    return EvalResult(reports[0], probs, reports[1], post_probs, labels=labels, rule=rule)


def _in_view_order(cache: TemporalCache, parts, do_post: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Full (N, 8) arrays in the view's frame order from ``(videos, probs, post_probs)`` parts
    (each part's rows: its videos' frames, concatenated in that order)."""
    probs = np.empty((cache.frames, NUM_CLASSES), np.float32)
    post_probs = np.empty_like(probs) if do_post else None
    for videos, p, q in parts:
        at = 0
        for v in videos:
            a, b = int(cache.offsets[v]), int(cache.offsets[v + 1])
            probs[a:b] = p[at:at + b - a]
            if do_post:
                post_probs[a:b] = q[at:at + b - a]
            at += b - a
    return probs, post_probs
