"""Stage-2 data-path benchmark: clip-batch assembly from the in-memory cache vs a plain tensor
copy of the same bytes, measured side by side in one run.

    python -m bench.stage2 [--frames 600000] [--dim 1024] [--device cpu|cuda]

Writes bench/stage2.json and merges into bench/results.json.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bench.common import row, timeit, write_rows
from pipeline.store import LoadedStore
from stage2_temporal.data import ClipSampler, TemporalCache, gather_clips


def synthetic_cache(frames: int, dim: int, video_len: int, device: str) -> TemporalCache:
    rng = np.random.default_rng(0)
    lengths = np.full(frames // video_len, video_len)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n = int(offsets[-1])
    loaded = LoadedStore([f"v{i}" for i in range(len(lengths))], offsets,
                         rng.standard_normal((n, dim), dtype=np.float32).astype(np.float16),
                         rng.integers(-1, 8, n).astype(np.int8), rng.random(n) > 0.05,
                         [{}] * len(lengths), "bench", dim)
    return TemporalCache.from_store(loaded, device)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--frames", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--clip-len", type=int, default=100)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("stage2.json"))
    args = p.parse_args(argv)

    cache = synthetic_cache(args.frames, args.dim, 1500, args.device)
    sampler = ClipSampler(cache, args.clip_len, args.batch, seed=0)
    batches = list(sampler)[:20]

    def assemble():
        for starts, lengths in batches:
            gather_clips(cache, starts, lengths, args.clip_len)

    # the same bytes as one contiguous fp16 slice, copied and cast like the gather does
    n_rows = sum(int(l.sum()) for _, l in batches)
    src = cache.emb[:n_rows]

    def plain_copy():
        src.float()

    t_gather = timeit(assemble)
    t_copy = timeit(plain_copy)
    frames_s = n_rows / t_gather
    rows = [
        row("stage2 clip assembly, frames/s", frames_s, "frames/s", device=args.device,
            dim=args.dim),
        row("stage2 clip assembly / plain tensor copy of the same bytes", t_copy / t_gather, "x",
            target=0.5, device=args.device, dim=args.dim),
    ]
    write_rows(rows, args.out)
    return rows


if __name__ == "__main__":
    main()
