"""Stage 2 at Aff-Wild2 scale on this machine: memory, disk and time over a store of ``--frames``
frames x ``--dim`` (default 2.8 M x 1024, the size of Aff-Wild2's EXPR frames through swin_base).

1. Generate the store (random fp16 around 8 class prototypes, label runs, ~5% no-face and ~5%
   unannotated frames, 3:1 train:val videos), written through ``EmbeddingStore.write_video``
   so it is the real on-disk format. Reported: write rate, size on disk / payload (target
   <= 1.05; payload = fp16 embeddings + int8 labels + face flags).
2. In a fresh process: ``EmbeddingStore.load()`` of the whole store. Reported: seconds, peak RSS.
3. ``fer-pipeline stage2 train`` for one epoch on CPU with a small temporal model (``SMALL``; the
   epoch covers every training frame once, then the val split is scored with sliding windows),
   ``preload: cpu``, as 1 process and as ``--ranks`` (4) ranks on this node (``--nproc``; once
   more started by torchrun for comparison), with the same global batch (``BATCH`` clips per
   step, split over the ranks). Reported:
   peak memory of the process tree / the fp16 embedding bytes (target <= 1.3 for both), epoch
   seconds, wall seconds; and the same runs on a store a tenth the size (at most 50,000 frames):
   the slope between the two, memory per extra embedding byte, is what grows with the store
   (1.0 per copy of the data; the rest of the peak is the processes' fixed cost: torch, batches,
   the torchrun agent). Memory = PSS summed over the tree (``/proc/<pid>/smaps_rollup``, so
   pages shared by the ranks count once), sampled every 0.2 s, with the node's /dev/shm copy
   counted whole by its tmpfs bytes (``Pss - Pss_Shmem + max(Pss_Shmem, /dev/shm growth)``):
   pages of it no rank has touched yet are memory too.
4. The same 1-process command with ``preload: mmap`` (the first run writes the cache, timed; a
   second reuses it; ``preload: cpu`` runs again right after it). Reported: epoch seconds mmap /
   RAM of those two adjacent runs (store in the page cache), cache write seconds.
5. ``preload: mmap`` inside a memory cgroup capped at half the embedding bytes (cgroup v2
   ``memory.max`` or v1 ``memory.limit_in_bytes``, made under this process's own cgroup; where no
   cgroup can be made, the cap is checked on the sampled anonymous + shmem PSS instead).
   Reported: completed under the cap (1 / 0, target >= 1), peak RSS, cgroup peak usage, epoch
   seconds. Skipped when the store is smaller than the smallest useful cap (1.5 GiB).

    python -m bench.scale_store [--frames 2800000] [--videos 550] [--dim 1024] [--ranks 4] [--dir DIR] [--keep]

The generated store and caches are deleted at the end unless ``--keep``; writes bench/scale_store.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import row, write_rows
from bench.memory import Measured, memory_cgroup, run_measured

GIB = 2**30
SMALL = ["stage2.model.d_model=64", "stage2.model.layers=1", "stage2.model.heads=1",
         "stage2.model.ff=128", "stage2.train.epochs=1", "stage2.train.warmup_epochs=0",
         "device=cpu"]
BATCH = 64   # clips per optimizer step in every run; ranks split it (same training as 1 process)
# Aff-Wild2-like label shares (Neutral and Other dominate, Fear/Disgust rare)
CLASS_SHARE = np.array([0.30, 0.05, 0.03, 0.03, 0.15, 0.10, 0.07, 0.27])


def generate(path: Path, frames: int, videos: int, dim: int, seed: int = 0, flip: bool = False) -> dict:
    """Write the synthetic store; returns write seconds (store calls only) and sizes. ``flip``:
    also ``emb_flip`` per video (the embedding plus a little noise)."""
    from fer_pipeline.store import EmbeddingStore

    rng = np.random.default_rng(seed)
    mean = frames / videos
    lengths = rng.integers(int(mean * 0.5), int(mean * 1.5) + 1, videos)
    lengths = np.maximum(1, np.round(lengths * frames / lengths.sum()).astype(np.int64))
    lengths[-1] += frames - lengths.sum()           # exactly ``frames`` in all
    protos = rng.standard_normal((8, dim), dtype=np.float32)
    store = EmbeddingStore.create_or_open(path, "scale-synthetic", {"name": "synthetic"}, dim)
    val = set(rng.choice(videos, size=max(1, videos // 4), replace=False).tolist())
    t_write = 0.0
    for i, T in enumerate(lengths.tolist()):
        runs = rng.integers(20, 200, T // 20 + 1)
        lab = np.repeat(rng.choice(8, size=len(runs), p=CLASS_SHARE), runs)[:T]
        face = rng.random(T) > 0.05
        emb = rng.standard_normal((T, dim), dtype=np.float32)
        emb += protos[lab]
        emb *= face[:, None]                          # no-face rows are zero in the store
        lab = lab.astype(np.int8)
        lab[rng.random(T) < 0.05] = -1
        emb16 = emb.astype(np.float16)
        flip16 = (((emb + 0.1 * rng.standard_normal((T, dim), dtype=np.float32)) * face[:, None])
                  .astype(np.float16) if flip else None)
        t = time.perf_counter()
        store.write_video(f"v{i:04d}", emb16, lab, face,
                          {"split": "val" if i in val else "train", "fps": 30.0}, emb_flip=flip16)
        t_write += time.perf_counter() - t
    disk = sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())
    return {"write_s": t_write, "disk_bytes": disk, "emb_bytes": frames * dim * 2,
            "payload_bytes": frames * (dim * 2 + 2), "videos": videos, "val_videos": len(val)}


def _load_child(store: str) -> None:
    """Child process of step 2: load the store, print seconds and frames as JSON."""
    from fer_pipeline.store import EmbeddingStore

    t = time.perf_counter()
    loaded = EmbeddingStore.open(store).load()
    print(json.dumps({"load_s": time.perf_counter() - t, "frames": int(loaded.offsets[-1]),
                      "bytes": int(loaded.emb.nbytes)}))


def measure_load(store: Path) -> tuple[Measured, dict]:
    m = run_measured([sys.executable, "-m", "bench.scale_store", "--load-child", str(store)])
    if m.rc != 0:
        raise RuntimeError(f"loading {store} failed:\n{m.stderr[-3000:]}")
    return m, json.loads(m.stdout.strip().splitlines()[-1])


def train_cmd(store: Path, run: Path, ranks: int, extra: list[str] = (), launcher: str = "nproc") -> list[str]:
    """``stage2 train`` as 1 process, or as ``ranks`` local ranks self-spawned (``--nproc``: the
    ranks fork from one server and share torch's pages) or started by torchrun (fresh
    interpreters); the global batch is ``BATCH`` clips either way."""
    torchrun = ["torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", "-m"]
    return [sys.executable, "-m", *(torchrun if ranks > 1 and launcher == "torchrun" else []),
            "fer_pipeline", "stage2", "train", "--store", str(store), "--out", str(run),
            *(["--nproc", str(ranks)] if ranks > 1 and launcher == "nproc" else []),
            *SMALL, f"stage2.train.batch_size={BATCH // ranks}", *extra]


def measure_train(store: Path, run: Path, ranks: int = 1, extra: list[str] = (), cgroup: Path | None = None,
                  check: bool = True, launcher: str = "nproc") -> tuple[Measured, dict | None]:
    m = run_measured(train_cmd(store, run, ranks, list(extra), launcher),
                     {**os.environ, "FER_NO_PROGRESS": "1"}, cgroup)
    if m.rc != 0:
        if check:
            raise RuntimeError(f"stage2 train on {store} failed:\n{m.stderr[-3000:]}")
        return m, None
    epoch = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    return m, epoch


def _cap_rows(store: Path, root: Path, mmap: list[str], emb_bytes: int, size: str, info: dict) -> list[dict]:
    """Step 5: training from the mmap cache under a memory cap of half the embedding bytes."""
    cap = emb_bytes // 2
    if cap < 1.5 * GIB:
        return []
    group = memory_cgroup(cap)
    try:
        m, epoch = measure_train(store, root / "run_cap", extra=mmap, cgroup=group, check=False)
    finally:
        if group is not None:
            try:
                group.rmdir()
            except OSError:
                pass
    how = "cgroup memory limit" if group is not None else "sampled anonymous + shmem PSS vs the cap (no cgroup)"
    ok = m.rc == 0 and (group is not None or m.unshared_peak <= cap)
    cap_info = {**info, "cap_gib": round(cap / GIB, 3), "store_gib": round(emb_bytes / GIB, 3),
                "method": how, "exit_code": m.rc}
    rows = [row(f"scale: stage2 train preload=mmap under a memory cap of half the store ({size}): "
                f"completed (1 = yes)", 1.0 if ok else 0.0, "yes", target=1.0, timing=False, **cap_info),
            row(f"scale: stage2 train preload=mmap under the cap ({size}), peak RSS, GiB",
                m.maxrss / GIB, "GiB", lower_is_better=True, timing=False, **cap_info),
            row(f"scale: stage2 train preload=mmap under the cap ({size}), peak anonymous + shmem "
                f"PSS / cap", m.unshared_peak / cap, "x", lower_is_better=True, timing=False, **cap_info)]
    if group is not None:
        rows.append(row(f"scale: stage2 train preload=mmap under the cap ({size}), cgroup peak "
                        f"usage incl. page cache / cap", m.cgroup_peak / cap, "x", timing=False, **cap_info))
    if epoch is not None:
        rows.append(row(f"scale: stage2 CPU training epoch, preload=mmap under the cap ({size}), s",
                        epoch["epoch_s"], "s", lower_is_better=True, **cap_info))
    return rows


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=2_800_000)
    p.add_argument("--videos", type=int, default=550)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--ranks", type=int, default=4, help="local ranks of the shared-copy run (0 = skip)")
    p.add_argument("--no-mmap", action="store_true", help="skip steps 4 and 5")
    p.add_argument("--dir", type=Path, help="where to write the store (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the generated store and caches")
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("scale_store.json"))
    p.add_argument("--load-child", metavar="STORE", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.load_child:
        _load_child(args.load_child)
        return []

    root = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=args.dir))
    N, D = args.frames, args.dim
    size = f"{N / 1e6:.2f}M x {D}"
    rows = []
    try:
        store = root / "store"
        gen = generate(store, N, args.videos, D)
        emb = gen["emb_bytes"]
        info = {"frames": N, "dim": D, "videos": gen["videos"], "val_videos": gen["val_videos"]}
        rows += [
            row(f"scale: store write through EmbeddingStore ({size}), MB/s",
                emb / gen["write_s"] / 1e6, "MB/s", **info),
            row(f"scale: store size on disk ({size}), GB", gen["disk_bytes"] / 1e9, "GB", timing=False,
                emb_fp16_gb=round(emb / 1e9, 3), **info),
            row(f"scale: store size on disk / payload ({size})", gen["disk_bytes"] / gen["payload_bytes"],
                "x", target=1.05, lower_is_better=True, timing=False, payload_gb=round(gen["payload_bytes"] / 1e9, 3),
                **info),
        ]
        m, res = measure_load(store)
        rows += [
            row(f"scale: store load into RAM ({size}), s", res["load_s"], "s", lower_is_better=True,
                page_cache="warm (store just written)", **info),
            row(f"scale: store load peak RSS ({size}), GiB", m.maxrss / GIB, "GiB",
                lower_is_better=True, timing=False, emb_gib=round(res["bytes"] / GIB, 3), **info),
        ]
        model = " ".join(a.split(".")[-1] for a in SMALL[:4])
        one, epoch_ram = measure_train(store, root / "run", ranks=1)
        rows += [
            row(f"scale: stage2 train peak memory (PSS) / fp16 embedding bytes, 1 process ({size})",
                one.pss_peak / emb, "x", target=1.3, lower_is_better=True, timing=False,
                pss_gib=round(one.pss_peak / GIB, 3), command="stage2 train, 1 epoch, " + model, **info),
            row(f"scale: stage2 train peak RSS, 1 process ({size}), GiB", one.maxrss / GIB, "GiB",
                target=24.0, lower_is_better=True, timing=False, command="stage2 train, 1 epoch, " + model, **info),
            row(f"scale: stage2 CPU training epoch, small model ({size}), s", epoch_ram["epoch_s"], "s",
                lower_is_better=True, model=model, **info),
            row(f"scale: stage2 train command wall time, 1 epoch + val ({size}), s", one.wall_s, "s",
                lower_is_better=True, model=model, **info),
        ]
        # how memory grows with the store: the same commands on a store a tenth the size (at most
        # 50,000 frames: enough clips that every rank trains on full batches); the slope between
        # the two is the memory each extra embedding byte costs (1 per copy of the data)
        M = max(2000, min(50_000, N // 10))
        small = root / "small_store"
        sgen = generate(small, M, max(4, args.videos * M // N), D, seed=2)
        d_emb = emb - sgen["emb_bytes"]
        small1, _ = measure_train(small, root / "run_small1", ranks=1)
        rows.append(row(f"scale: stage2 train memory per extra fp16 embedding byte, 1 process "
                        f"({M / 1e6:.2f}M -> {size})", (one.pss_peak - small1.pss_peak) / d_emb, "x",
                        lower_is_better=True, timing=False, small_store_peak_gib=round(small1.pss_peak / GIB, 3),
                        **info))
        if args.ranks > 1:
            many, _ = measure_train(store, root / "run_ranks", ranks=args.ranks)
            smalln, _ = measure_train(small, root / "run_small_ranks", ranks=args.ranks)
            rows.append(row(f"scale: stage2 train memory per extra fp16 embedding byte, "
                            f"{args.ranks} local ranks ({M / 1e6:.2f}M -> {size})",
                            (many.pss_peak - smalln.pss_peak) / d_emb, "x", lower_is_better=True, timing=False,
                            small_store_peak_gib=round(smalln.pss_peak / GIB, 3), ranks=args.ranks,
                            **info))
            rows += [
                row(f"scale: stage2 train peak memory (PSS summed over the tree) / fp16 embedding "
                    f"bytes, {args.ranks} local ranks ({size})", many.pss_peak / emb, "x", target=1.3,
                    lower_is_better=True, timing=False, pss_gib=round(many.pss_peak / GIB, 3),
                    rss_sum_gib=round(many.tree_peak / GIB, 3), ranks=args.ranks, **info),
                row(f"scale: stage2 train peak memory, {args.ranks} local ranks / 1 process ({size})",
                    many.pss_peak / one.pss_peak, "x", lower_is_better=True, timing=False, ranks=args.ranks, **info),
            ]
            # the same ranks started by torchrun: fresh interpreters, each with its own torch
            tr, _ = measure_train(store, root / "run_torchrun", ranks=args.ranks, launcher="torchrun")
            rows.append(row(f"scale: stage2 train peak memory (PSS summed over the tree) / fp16 "
                            f"embedding bytes, {args.ranks} local ranks started by torchrun ({size})",
                            tr.pss_peak / emb, "x", lower_is_better=True, timing=False,
                            pss_gib=round(tr.pss_peak / GIB, 3), ranks=args.ranks, launcher="torchrun", **info))
        if not args.no_mmap:
            mmap = ["stage2.data.preload=mmap", f"stage2.data.cache_dir={root / 'cache'}"]
            first, _ = measure_train(store, root / "run_mmap_build", extra=mmap)
            mm, epoch_mm = measure_train(store, root / "run_mmap", extra=mmap)
            _, epoch_ram2 = measure_train(store, root / "run_ram2")    # the cpu run next to it
            rows += [
                row(f"scale: stage2 epoch, preload=mmap / preload=cpu ({size}, store in the page cache)",
                    epoch_mm["epoch_s"] / epoch_ram2["epoch_s"], "x", lower_is_better=True,
                    mmap_epoch_s=epoch_mm["epoch_s"], ram_epoch_s=epoch_ram2["epoch_s"],
                    ram_epoch_s_first=epoch_ram["epoch_s"], **info),
                row(f"scale: mmap cache first use (write + train command) - reuse, s ({size})",
                    first.wall_s - mm.wall_s, "s", lower_is_better=True, **info),
                row(f"scale: stage2 train peak memory (PSS) / fp16 embedding bytes, preload=mmap "
                    f"({size})", mm.pss_peak / emb, "x", lower_is_better=True, timing=False,
                    note="file pages are page cache: reclaimable", **info),
            ]
            rows += _cap_rows(store, root, mmap, emb, size, info)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    write_rows(rows, args.out)
    return rows


if __name__ == "__main__":
    main()
