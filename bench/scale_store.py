"""Stage 2 at Aff-Wild2 scale on this machine: time and memory over a store of ``--frames``
frames x ``--dim`` (default 2.8 M x 1024, the size of Aff-Wild2's EXPR frames through swin_base).

1. Generate the store (random fp16 around 8 class prototypes, label runs, ~5% no-face and ~5%
   unannotated frames, 3:1 train:val videos), written through ``EmbeddingStore.write_video``
   so it is the real on-disk format. Reported: write rate, size on disk.
2. In a fresh process: ``EmbeddingStore.load()`` of the whole store (the step stage 2 starts
   with). Reported: seconds, peak RSS.
3. In a fresh process: ``fer-pipeline stage2 train`` for one epoch on CPU with a small temporal
   model (``SMALL``; the epoch covers every training frame once, then the val split is scored
   with sliding windows). Reported: epoch seconds (``metrics.jsonl`` ``epoch_s``), wall seconds of
   the whole command, peak RSS (kernel ``ru_maxrss`` of the process) and its ratio to the store.
4. ``--ddp-frames M``: the same command on an M-frame store as 1 process and as 2 torchrun
   ranks. Reported: peak RSS summed over the ranks (sampled every 0.1 s) vs one process.

    python -m bench.scale_store [--frames 2800000] [--videos 550] [--dim 1024] [--ddp-frames 500000]
                                [--dir DIR] [--keep]

The generated stores are deleted at the end unless ``--keep``. Writes bench/scale_store.json and
merges into bench/results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import row, write_rows

GIB = 2**30
SMALL = ["stage2.model.d_model=64", "stage2.model.layers=1", "stage2.model.heads=1",
         "stage2.model.ff=128", "stage2.train.epochs=1", "stage2.train.warmup_epochs=0",
         "device=cpu"]
# Aff-Wild2-like label shares (Neutral and Other dominate, Fear/Disgust rare)
CLASS_SHARE = np.array([0.30, 0.05, 0.03, 0.03, 0.15, 0.10, 0.07, 0.27])


def generate(path: Path, frames: int, videos: int, dim: int, seed: int = 0) -> dict:
    """Write the synthetic store; returns write seconds (store calls only) and sizes."""
    from pipeline.store import EmbeddingStore

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
        t = time.perf_counter()
        store.write_video(f"v{i:04d}", emb16, lab, face,
                          {"split": "val" if i in val else "train", "fps": 30.0})
        t_write += time.perf_counter() - t
    disk = sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())
    return {"write_s": t_write, "disk_bytes": disk, "emb_bytes": frames * dim * 2,
            "videos": videos, "val_videos": len(val)}


@dataclass
class Measured:
    rc: int
    wall_s: float
    maxrss: int        # bytes, kernel high-water mark of the largest single process in the tree
    tree_peak: int     # bytes, highest sampled RSS sum over the process and its descendants
    stdout: str
    stderr: str


def run_measured(cmd: list[str], env: dict | None = None) -> Measured:
    """Run ``cmd`` and record its peak memory (its own ru_maxrss, and the sampled tree sum)."""
    import psutil

    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
    peak = [0]
    done = threading.Event()

    def sample():
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            total = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.NoSuchProcess:
                        pass
            except psutil.NoSuchProcess:
                break
            peak[0] = max(peak[0], total)
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    err.seek(0)
    return Measured(proc.returncode, wall, usage.ru_maxrss * 1024, peak[0], out.read(), err.read())


def _load_child(store: str) -> None:
    """Child process of step 2: load the store, print seconds and frames as JSON."""
    from pipeline.store import EmbeddingStore

    t = time.perf_counter()
    loaded = EmbeddingStore.open(store).load()
    print(json.dumps({"load_s": time.perf_counter() - t, "frames": int(loaded.offsets[-1]),
                      "bytes": int(loaded.emb.nbytes)}))


def measure_load(store: Path) -> tuple[Measured, dict]:
    m = run_measured([sys.executable, "-m", "bench.scale_store", "--load-child", str(store)])
    if m.rc != 0:
        raise RuntimeError(f"loading {store} failed:\n{m.stderr[-3000:]}")
    return m, json.loads(m.stdout.strip().splitlines()[-1])


def train_cmd(store: Path, run: Path, ranks: int) -> list[str]:
    launcher = [sys.executable, "-m"] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", "-m"]
    return launcher + ["pipeline", "stage2", "train", "--store", str(store), "--out", str(run), *SMALL]


def measure_train(store: Path, run: Path, ranks: int = 1) -> tuple[Measured, dict]:
    env = {**os.environ, "FER_NO_PROGRESS": "1"}
    m = run_measured(train_cmd(store, run, ranks), env)
    if m.rc != 0:
        raise RuntimeError(f"stage2 train on {store} failed:\n{m.stderr[-3000:]}")
    epoch = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    return m, epoch


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=2_800_000)
    p.add_argument("--videos", type=int, default=550)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--ddp-frames", type=int, default=500_000,
                   help="store size for the 1-process vs 2-rank memory comparison (0 = skip)")
    p.add_argument("--dir", type=Path, help="where to write the stores (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the generated stores")
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
        info = {"frames": N, "dim": D, "videos": gen["videos"], "val_videos": gen["val_videos"]}
        rows += [
            row(f"scale: store write through EmbeddingStore ({size}), MB/s",
                gen["emb_bytes"] / gen["write_s"] / 1e6, "MB/s", **info),
            row(f"scale: store size on disk ({size}), GB", gen["disk_bytes"] / 1e9, "GB",
                emb_fp16_gb=round(gen["emb_bytes"] / 1e9, 3), **info),
        ]
        m, res = measure_load(store)
        rows += [
            row(f"scale: store load into RAM ({size}), s", res["load_s"], "s", lower_is_better=True,
                page_cache="warm (store just written)", **info),
            row(f"scale: store load peak RSS ({size}), GiB", m.maxrss / GIB, "GiB",
                lower_is_better=True, emb_gib=round(res["bytes"] / GIB, 3), **info),
        ]
        m, epoch = measure_train(store, root / "run", ranks=1)
        model = " ".join(a.split(".")[-1] for a in SMALL[:4])
        rows += [
            row(f"scale: stage2 train peak RSS, 1 process ({size}), GiB", m.maxrss / GIB, "GiB",
                target=24.0, lower_is_better=True, command="stage2 train, 1 epoch, " + model, **info),
            row(f"scale: stage2 train peak RSS / fp16 embedding bytes ({size})",
                m.maxrss / gen["emb_bytes"], "x", lower_is_better=True, **info),
            row(f"scale: stage2 CPU training epoch, small model ({size}), s", epoch["epoch_s"], "s",
                lower_is_better=True, model=model, **info),
            row(f"scale: stage2 train command wall time, 1 epoch + val ({size}), s", m.wall_s, "s",
                lower_is_better=True, model=model, **info),
        ]
        shutil.rmtree(store)
        if args.ddp_frames:
            M = args.ddp_frames
            small = root / "store_ddp"
            generate(small, M, max(2, args.videos * M // N), D, seed=1)
            one, _ = measure_train(small, root / "run1", ranks=1)
            two, _ = measure_train(small, root / "run2", ranks=2)
            dsize = f"{M / 1e6:.2f}M x {D}"
            rows += [
                row(f"scale: stage2 train peak RSS, 2 torchrun ranks summed ({dsize}), GiB",
                    two.tree_peak / GIB, "GiB", lower_is_better=True, frames=M, dim=D),
                row(f"scale: stage2 train peak RSS, 2 ranks / 1 process ({dsize})",
                    two.tree_peak / one.tree_peak, "x", lower_is_better=True, frames=M, dim=D,
                    one_process_gib=round(one.tree_peak / GIB, 3)),
            ]
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    write_rows(rows, args.out)
    return rows


if __name__ == "__main__":
    main()
