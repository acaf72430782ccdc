"""Work balance of the splits by frame count (``fer_pipeline.balance``: greedy, longest first), as
used by stage-0 ``--shard K/N``, stage-1 embed ranks and stage-2 evaluation ranks, on an
Aff-Wild2-like length distribution (``affwild2_like_lengths``: 550 log-normal video lengths,
2.8 M frames). Reported per split size: the largest shard's frames over the mean (target
<= 1.1), and the same for the round-robin-by-name split it replaced (no target).

    python -m bench.balance [--shards 8 32] [--videos 550] [--frames 2800000]

Writes bench/balance.json.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from bench.common import row, write_rows
from fer_pipeline.balance import affwild2_like_lengths, balanced_parts, imbalance


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", nargs="+", type=int, default=[8, 32])
    p.add_argument("--videos", type=int, default=550)
    p.add_argument("--frames", type=int, default=2_800_000)
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("balance.json"))
    args = p.parse_args(argv)
    lengths = affwild2_like_lengths(args.videos, args.frames)
    info = {"videos": args.videos, "frames": args.frames, "longest_video": int(lengths.max()),
            "median_video": int(sorted(lengths)[len(lengths) // 2])}
    rows = []
    for n in args.shards:
        rows.append(row(f"balance: largest / mean shard frames, {n} shards by frame count "
                        f"(Aff-Wild2-like lengths)", imbalance(lengths, balanced_parts(lengths, n)),
                        "x", target=1.1, lower_is_better=True, timing=False, shards=n, **info))
        rr = [list(range(k, len(lengths), n)) for k in range(n)]
        rows.append(row(f"balance: largest / mean shard frames, {n} shards round-robin by name "
                        f"(the split it replaced)", imbalance(lengths, rr), "x",
                        lower_is_better=True, timing=False, shards=n, **info))
    write_rows(rows, args.out)
    return rows


if __name__ == "__main__":
    main()
