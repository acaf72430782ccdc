"""What ``stage1.embed.flip`` costs stage 2: memory and disk of the flipped-crop embeddings.

One synthetic store (``--frames`` x ``--dim`` fp16, written through ``EmbeddingStore.write_video``
with ``emb_flip``, as ``stage1.embed.flip: true`` writes it), then two one-epoch ``fer-pipeline
stage2 train`` runs of the same small model on it, one process each, ``preload: cpu``:

- ``naw.form: frame_detached`` (reads ``emb`` only), and
- ``naw.form: official`` (also reads ``emb_flip`` and runs the flipped clips).

Reported: size on disk per embedding copy, each run's peak memory (PSS of the process tree,
sampled as in ``bench.scale_store``) over the fp16 embedding bytes, and the difference of the two
over the embedding bytes: what the flip copy adds (1.0 = one more copy of the embeddings held
in RAM).

    python -m bench.flip_memory [--frames 1000000] [--dim 1024] [--dir DIR] [--out bench/flip_memory.json]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from bench.common import row, write_rows
from bench.scale_store import GIB, generate, measure_train

FLAT = ["stage2.model.head=flat", "stage2.loss.target=frame"]


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=1_000_000)
    p.add_argument("--videos", type=int, default=200)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--dir", type=Path, help="where to write the store (default: a temp dir)")
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("flip_memory.json"))
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-flip-", dir=args.dir))
    size = f"{args.frames / 1e6:.2f}M x {args.dim}"
    try:
        store = root / "store"
        gen = generate(store, args.frames, args.videos, args.dim, flip=True)
        emb = gen["emb_bytes"]
        info = {"frames": args.frames, "dim": args.dim, "videos": gen["videos"]}
        plain, _ = measure_train(store, root / "run_plain", extra=[*FLAT, "stage2.naw.form=frame_detached"])
        flip, _ = measure_train(store, root / "run_flip", extra=[*FLAT, "stage2.naw.form=official"])
        rows = [
            row(f"flip: store size on disk with emb_flip / fp16 embedding bytes ({size})",
                gen["disk_bytes"] / emb, "x", lower_is_better=True, timing=False,
                disk_gb=round(gen["disk_bytes"] / 1e9, 3), note="2.0 = two copies, no overhead", **info),
            row(f"flip: stage2 train peak memory (PSS) / fp16 embedding bytes, naw.form=frame_detached "
                f"(emb only) ({size})", plain.pss_peak / emb, "x", lower_is_better=True, timing=False,
                pss_gib=round(plain.pss_peak / GIB, 3), **info),
            row(f"flip: stage2 train peak memory (PSS) / fp16 embedding bytes, naw.form=official "
                f"(emb + emb_flip) ({size})", flip.pss_peak / emb, "x", lower_is_better=True, timing=False,
                pss_gib=round(flip.pss_peak / GIB, 3), **info),
            row(f"flip: memory the flip copy adds / fp16 embedding bytes ({size})",
                (flip.pss_peak - plain.pss_peak) / emb, "x", lower_is_better=True, timing=False,
                note="1.0 = one more copy in RAM", **info),
            row(f"flip: stage2 train command wall time, official / frame_detached ({size})",
                flip.wall_s / plain.wall_s, "x", lower_is_better=True,
                note="official runs every clip twice (plain and flipped)", **info),
        ]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    write_rows(rows, args.out)
    return rows


if __name__ == "__main__":
    main()
