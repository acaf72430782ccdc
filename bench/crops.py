"""Stage-0 crops as stage 1 sees them, for docs/scaling.md: ``stage0 run`` over the sample videos
at each crop size, then

- bytes on disk: mean JPEG bytes per crop, manifest and detections parquet bytes per frame;
- the stage-1 loader's work per crop (``CropBatches`` items of 64 crops: read + JPEG decode +
  resize to the default encoder's 224 px) on one core, crops/s — how many cores keep one GPU fed.

    python -m bench.crops [--videos PATH...] [--sizes 112 224]

Writes bench/crops.json.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import pandas as pd
import torch

from bench.common import row, write_rows
from fer_pipeline.config import load_config

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "assets" / "videos"


def decode_rate(paths: list[str], repeat: int = 3) -> float:
    """Best-of-``repeat`` crops/s of ``CropBatches`` items (batches of 64) on one thread at the
    default img_size."""
    from stage1_image_encoder.loading import CropBatches

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    ds = CropBatches(paths, [list(range(s, min(s + 64, len(paths)))) for s in range(0, len(paths), 64)],
                     load_config().stage1.model)
    best = 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        for k in range(len(ds)):
            ds[k]
        best = max(best, len(paths) / (time.perf_counter() - t))
    return best


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", nargs="+", type=Path, default=[SHARED_VIDEOS])
    p.add_argument("--sizes", nargs="+", type=int, default=[112, 224])
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("crops.json"))
    args = p.parse_args(argv)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-crops-"))
    try:
        for size in args.sizes:
            out = tmp / str(size)
            cmd = [sys.executable, "-m", "fer_pipeline", "stage0", "run", "--videos", *map(str, args.videos),
                   "--out", str(out), "stage0.contact_sheet=false", f"stage0.align.size={size}"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"stage0 run failed:\n{proc.stderr[-3000:]}")
            m = pd.read_parquet(out / "manifest.parquet")
            crops = [out / c for c in m.crop_path.dropna()]
            info = {"frames": len(m), "crops": len(crops), "crop_size": size}
            rows.append(row(f"crops: stage0 JPEG crop at {size} px, kB/crop",
                            sum(c.stat().st_size for c in crops) / len(crops) / 1e3, "kB/crop",
                            lower_is_better=True, timing=False, **info))
            rows.append(row(f"crops: stage-1 loader item ({size} px JPEG -> 224 px) on one core, crops/s",
                            decode_rate([str(c) for c in crops]), "crops/s", **info))
            if size == args.sizes[0]:
                for name in ("manifest", "detections"):
                    rows.append(row(f"crops: stage0 {name}.parquet, bytes/frame",
                                    (out / f"{name}.parquet").stat().st_size / len(m), "bytes/frame",
                                    lower_is_better=True, timing=False, **info))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_rows(rows, args.out)
    return rows


if __name__ == "__main__":
    main()
