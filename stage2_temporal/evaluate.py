"""Full-video evaluation: sliding windows over every frame, overlapping probabilities averaged,
macro-F1 over every annotated frame."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.labels import NUM_CLASSES
from pipeline.metrics import F1Report, confusion
from stage2_temporal.data import TemporalCache, gather_clips


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
    """(N, 8) per-frame class probabilities for every frame of the cache (float32, on CPU)."""
    device = cache.emb.device
    starts, lengths = [], []
    for v in range(len(cache.videos)):
        s, T = int(cache.offsets[v]), int(cache.offsets[v + 1] - cache.offsets[v])
        for a in window_starts(T, clip_len, stride):
            starts.append(s + a)
            lengths.append(min(clip_len, T - a))
    N = int(cache.offsets[-1])
    sums = torch.zeros(N, NUM_CLASSES, device=device)
    counts = torch.zeros(N, device=device)
    was_training = model.training
    model.eval()
    starts_t = torch.as_tensor(starts, dtype=torch.long)
    lengths_t = torch.as_tensor(lengths, dtype=torch.long)
    steps = torch.arange(clip_len, device=device)
    for b in range(0, len(starts), batch_size):
        s, n = starts_t[b:b + batch_size].to(device), lengths_t[b:b + batch_size].to(device)
        batch = gather_clips(cache, s, n, clip_len)
        probs = model(batch.x, batch.valid).float().softmax(-1)      # (B, P, 8)
        rows = (s[:, None] + steps[None, :])[batch.inside]
        sums.index_add_(0, rows, probs[batch.inside])
        counts.index_add_(0, rows, torch.ones_like(rows, dtype=counts.dtype))
    model.train(was_training)
    return (sums / counts.clamp_min(1)[:, None]).cpu()


def evaluate(model: nn.Module, cache: TemporalCache, clip_len: int, stride: int,
             batch_size: int = 64) -> tuple[F1Report, torch.Tensor]:
    """F1 report over every annotated frame of the cache, and the (N, 8) probabilities."""
    probs = predict_probs(model, cache, clip_len, stride, batch_size)
    labels = cache.label.cpu().numpy()
    pred = probs.argmax(-1).numpy()
    return F1Report(confusion(labels, pred)), probs


def per_video_predictions(cache: TemporalCache, probs: torch.Tensor) -> dict[str, np.ndarray]:
    pred = probs.argmax(-1).numpy()
    return {v: pred[cache.offsets[i]:cache.offsets[i + 1]] for i, v in enumerate(cache.videos)}
