"""Speed of the bundled encoder against another stage-1 run (the encoder it replaced), side by
side in one process: the 8-way classifier's forward on this CPU (crops/s, all cores, a batch of
crops at each encoder's own input size) and ``fer-pipeline predict`` end to end on the sample
videos (decoded frames per second of wall time, detection and everything else included).

Every figure is bracketed (old, new, old, new, ..., old; each new run against the mean of the
old runs either side), so a drift of the machine's speed cancels; the rows are the median
ratios new / old, with each side's median rate.

    python -m bench.bundled_speed --old OLD_RUN --out /tmp/speed.json
    python -m bench.bundled_speed --old OLD_RUN --rounds 1 --videos ../shared/assets/videos/d0.mp4

Not part of CI (a predict round over the six videos takes about a minute on 2 cores); run it
alone on the machine: the record holds the load average it saw.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import bracketed, machine, ratio_row, row, timeit

ROOT = Path(__file__).resolve().parent.parent
VIDEOS = ROOT.parent / "shared" / "assets" / "videos"


def forward_rate(run: str, batch: int) -> tuple[callable, dict]:
    from stage1_image_encoder.api import load_classifier

    model, mcfg = load_classifier(run)
    x = torch.randn(batch, 3, mcfg.img_size, mcfg.img_size)

    @torch.inference_mode()
    def rate() -> float:
        return batch / timeit(lambda: model(x), repeat=3, warmup=1)

    return rate, {"model": mcfg.name, "img_size": mcfg.img_size,
                  "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 3)}


def predict_rate(run: str, videos: list[Path], frames: int) -> callable:
    def rate() -> float:
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, "-m", "fer_pipeline", "predict", *map(str, videos), "--out", out,
                   *([] if run == "bundled" else ["--run", run])]
            t = time.perf_counter()
            proc = subprocess.run(cmd, env={**os.environ, "FER_NO_PROGRESS": "1"},
                                  capture_output=True, text=True)
            wall = time.perf_counter() - t
        if proc.returncode:
            raise SystemExit(f"predict failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
        return frames / wall

    return rate


def count_frames(videos: list[Path]) -> int:
    from stage0_preprocess.decode import iter_frames

    return sum(1 for v in videos for _ in iter_frames(v))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, help="the stage-1 run to compare with (e.g. the previous bundled encoder)")
    ap.add_argument("--new", default="bundled", help="stage-1 run, or 'bundled' (default)")
    ap.add_argument("--videos", nargs="+", type=Path, help="videos for predict (default: the six samples)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--out", type=Path, help="JSON rows")
    args = ap.parse_args(argv)
    videos = args.videos or sorted(VIDEOS.glob("*.*"))
    if not videos:
        print(f"no videos in {VIDEOS}", file=sys.stderr)
        return 2
    torch.set_num_threads(os.cpu_count() or 1)
    load0 = os.getloadavg()[0]
    old_fw, old_info = forward_rate(args.old, args.batch)
    new_fw, new_info = forward_rate(args.new, args.batch)
    b, m, r = bracketed(old_fw, lambda k: new_fw(), max(3, args.rounds * 2))
    rows = [row("bundled encoder classifier forward, crops/s", np.median(m), "crops/s",
                old_crops_s=round(float(np.median(b)), 1), new=new_info, old=old_info,
                threads=torch.get_num_threads()),
            ratio_row("bundled encoder forward speed, new / old", r, target=None)]
    frames = count_frames(videos)
    b, m, r = bracketed(predict_rate(args.old, videos, frames),
                        lambda k: predict_rate(args.new, videos, frames)(), args.rounds)
    rows.append(ratio_row("predict end to end on the sample videos, new / old encoder", r, target=0.8,
                          new_frames_s=round(float(np.median(m)), 2),
                          old_frames_s=round(float(np.median(b)), 2), frames=frames,
                          videos=[v.name for v in videos]))
    for x in rows:
        x["load_start"] = round(load0, 2)
        x["load_end"] = round(os.getloadavg()[0], 2)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"{machine()}; load {load0:.2f} -> {os.getloadavg()[0]:.2f}")
    for x in rows:
        print(json.dumps(x))
    return 0


if __name__ == "__main__":
    sys.exit(main())
