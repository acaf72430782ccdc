"""Work split by frame count: the greedy longest-first partition and the three splits that use
it (stage-0 ``--shard K/N``, stage-1 embed ranks, stage-2 evaluation ranks)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fer_pipeline import distributed
from fer_pipeline.balance import affwild2_like_lengths, balanced_parts, imbalance


def test_parts_are_disjoint_covering_and_deterministic():
    w = [5, 1, 9, 3, 3, 7, 2, 8, 1, 4]
    parts = balanced_parts(w, 3)
    assert sorted(i for p in parts for i in p) == list(range(len(w)))
    assert all(p == sorted(p) for p in parts)
    assert balanced_parts(w, 3) == parts
    assert [sum(w[i] for i in p) for p in parts] == [15, 14, 14]
    assert balanced_parts([4, 4], 3) == [[0], [1], []]              # more parts than items
    with pytest.raises(ValueError):
        balanced_parts(w, 0)


@pytest.mark.parametrize("n", [2, 4, 8, 16, 32])
def test_largest_shard_within_1_1_of_the_mean_on_affwild2_like_lengths(n):
    lengths = affwild2_like_lengths()
    assert len(lengths) == 550 and lengths.sum() == 2_800_000
    assert lengths.max() > 10 * np.median(lengths)                    # a long tail, as in Aff-Wild2
    assert imbalance(lengths, balanced_parts(lengths, n)) <= 1.1
    # the name-order round robin it replaces is far off at these sizes
    if n >= 8:
        assert imbalance(lengths, [list(range(k, len(lengths), n)) for k in range(n)]) > 1.15


def test_distributed_shard_by_weight_covers_every_item_once():
    items = [f"v{i:03d}" for i in range(40)]
    weights = affwild2_like_lengths(40, 200_000, seed=3)
    shares = [distributed.shard(items, r, 4, weights=weights) for r in range(4)]
    assert sorted(x for s in shares for x in s) == items
    loads = [sum(weights[items.index(x)] for x in s) for s in shares]
    assert max(loads) / np.mean(loads) <= 1.1
    assert distributed.shard(items, 1, 4) == items[1::4]             # unweighted: round robin
    with pytest.raises(ValueError):
        distributed.shard(items, 0, 2, weights=[1, 2])


def test_stage0_shards_balance_frames():
    from stage0_preprocess.run import select_shard
    from stage0_preprocess.video import Track, VideoJob

    lengths = affwild2_like_lengths(120, 600_000, seed=1)
    jobs = [VideoJob(f"/v/{i:03d}.mp4", (Track(f"{i:03d}"),)) for i in range(120)]
    frames = {j.path: int(n) for j, n in zip(jobs, lengths)}
    shards = [select_shard(jobs[::-1], (k, 8), frames=frames.__getitem__) for k in range(1, 9)]
    assert sorted(j.path for s in shards for j in s) == sorted(frames)
    loads = [sum(frames[j.path] for j in s) for s in shards]
    assert max(loads) / np.mean(loads) <= 1.1
    assert select_shard(jobs, None) == jobs


def test_embed_ranks_and_eval_ranks_split_by_frames(monkeypatch):
    import torch

    from stage2_temporal.data import TemporalCache

    lengths = [900, 100, 100, 100, 100, 500, 400]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    N = int(offsets[-1])
    cache = TemporalCache(torch.zeros(N, 2, dtype=torch.float16), torch.zeros(N, dtype=torch.int8),
                          torch.ones(N, dtype=torch.bool), offsets, [f"v{i}" for i in range(7)])
    shares = [distributed.shard(range(7), r, 2, weights=cache.lengths()) for r in range(2)]
    assert [sum(lengths[i] for i in s) for s in shares] == [1100, 1100]
    # embed: the manifest's rows per video are the weights
    manifest = pd.DataFrame({"video": np.repeat([f"v{i}" for i in range(7)], lengths)})
    sizes = manifest.groupby("video").size().sort_index()
    got = [distributed.shard(list(sizes.index), r, 2, weights=sizes.to_numpy()) for r in range(2)]
    assert sorted(got[0] + got[1]) == list(sizes.index)
    assert {sum(sizes[v] for v in g) for g in got} == {1100}
