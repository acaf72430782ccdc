"""Work split by size, not by name: the one rule every parallel split of the pipeline uses
(stage-0 ``--shard K/N`` over videos, stage-1 embed ranks, stage-2 evaluation ranks).

Greedy longest-processing-time first: items sorted by weight (largest first; ties keep the
given order), each into the part holding the least weight so far (ties: the lowest part
number). Deterministic, so N independent batch jobs compute the same partition from the same
list. On a length distribution like Aff-Wild2's (hundreds of videos of a few hundred to tens of
thousands of frames) the largest part holds within a few percent of the mean
(``tests/test_balance.py``); a round-robin split by name can be off by tens of percent.
"""
from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np


def balanced_parts(weights: Sequence[float], n: int) -> list[list[int]]:
    """Indices of ``weights`` split into ``n`` parts of near-equal total weight; each part's
    indices in ascending order. Parts may be empty when there are fewer items than parts."""
    if n < 1:
        raise ValueError(f"need at least one part, got {n}")
    w = np.asarray(list(weights), dtype=np.float64)
    order = sorted(range(len(w)), key=lambda i: -w[i])          # stable: equal weights keep order
    heap = [(0.0, k) for k in range(n)]                          # (load, part): least load first
    parts: list[list[int]] = [[] for _ in range(n)]
    for i in order:
        load, k = heapq.heappop(heap)
        parts[k].append(i)
        heapq.heappush(heap, (load + float(w[i]), k))
    return [sorted(p) for p in parts]


def balanced_part(weights: Sequence[float], k: int, n: int) -> list[int]:
    """Part ``k`` (0-based) of :func:`balanced_parts`."""
    if not 0 <= k < n:
        raise ValueError(f"part {k} of {n} does not exist")
    return balanced_parts(weights, n)[k]


def imbalance(weights: Sequence[float], parts: list[list[int]]) -> float:
    """Largest part's weight over the mean part weight (1.0 = perfectly even)."""
    w = np.asarray(list(weights), dtype=np.float64)
    loads = np.array([w[p].sum() for p in parts])
    return float(loads.max() / loads.mean()) if loads.mean() > 0 else 1.0


def affwild2_like_lengths(n_videos: int = 550, total: int = 2_800_000, seed: int = 0) -> np.ndarray:
    """Synthetic video lengths shaped like Aff-Wild2's expression set: log-normal (a median of a
    few thousand frames, a long tail of long videos up to ~15x the median, a few clips of a few
    hundred frames), scaled to ``total`` frames. Used by the balance test and bench rows."""
    rng = np.random.default_rng([seed, 550])
    raw = np.clip(rng.lognormal(np.log(3500), 0.8, n_videos), 150, 50_000)
    lengths = np.maximum(1, np.round(raw * total / raw.sum())).astype(np.int64)
    lengths[np.argmax(lengths)] += total - int(lengths.sum())
    return lengths
