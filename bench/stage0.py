"""Stage-0 throughput, measured side by side in one run on the same frames of the longest of
the given videos (by coded frames):

- decode only (ffmpeg -> BGR frames), frames/s
- detector only (frames already in memory), frames/s
- the full stage on the same video (decode + detect + track + align + JPEG + manifest), frames/s
  and its ratio to detector-only (target >= 0.8: decode/crop/write hide behind detection): the
  median over rounds, each full run against the mean of the detector-only runs just before and
  just after it (as in bench.stage1: a shared machine's speed drifts within a minute, and two
  single runs taken a minute apart compare two states of the machine, not two code paths)
- ``stage0.parallel.jobs`` 2 vs 1 over several videos (wall-clock speedup)

    python -m bench.stage0 [--videos PATH...] [--detector retinaface|scrfd|yunet] [--repeat 5]

Writes bench/stage0.json.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import bracketed, ratio_row, row, write_rows
from fer_pipeline.config import load_config

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "assets" / "videos"


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--videos", nargs="+", type=Path,
                   default=sorted(SHARED_VIDEOS.glob("*.mp4")) if SHARED_VIDEOS.is_dir() else [])
    p.add_argument("--detector", default="retinaface")
    p.add_argument("--repeat", type=int, default=5,
                   help="rounds: full-stage runs, each between two detector-only runs")
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("stage0.json"))
    args = p.parse_args(argv)
    if not args.videos:
        raise SystemExit("no videos: pass --videos")
    cores = os.cpu_count() or 1
    os.environ["FER_ORT_THREADS"] = str(cores)      # single-process measurements use every core

    from stage0_preprocess.decode import iter_frames
    from stage0_preprocess.run import jobs_for_videos, run_jobs
    from stage0_preprocess.video import detect_batch, get_detector, process_video

    cfg = load_config(overrides=[f"stage0.detector.name={args.detector}", "stage0.contact_sheet=false"])
    det = get_detector(cfg.stage0.detector)
    bs = cfg.stage0.detector.batch_size
    # The per-stage figures use the longest video (most coded frames): a stage's rate over a
    # video of a few dozen frames is mostly its per-video set-up (probe, ffmpeg start, parquet
    # and marker writes), which a video of Aff-Wild2's thousands of frames does not feel.
    from fer_pipeline.media import probe_video
    video = max(args.videos, key=lambda v: probe_video(v).n_frames)

    t = time.perf_counter()
    frames = [f.image for f in iter_frames(video)]
    decode_fps = len(frames) / (time.perf_counter() - t)

    def detect() -> float:
        t = time.perf_counter()
        for i in range(0, len(frames), bs):
            detect_batch(det, frames[i:i + bs], cfg.stage0.detector.pad_retry)
        return len(frames) / (time.perf_counter() - t)

    detect_batch(det, frames[:bs], cfg.stage0.detector.pad_retry)   # warm-up

    tmp = Path(tempfile.mkdtemp(prefix="bench-stage0-"))
    try:
        job = jobs_for_videos([video])[0]

        def full(k: int) -> float:
            t = time.perf_counter()
            outcome = process_video(job, tmp / f"full{k}", cfg)[0]
            assert outcome.status == "ok", outcome.error
            return outcome.frames / (time.perf_counter() - t)

        detect_fps, full_fps, ratios = bracketed(detect, full, args.repeat)

        jobs = jobs_for_videos(list(args.videos))
        t = time.perf_counter()
        run_jobs(jobs, tmp / "j1", cfg.model_copy(deep=True))
        t_one = time.perf_counter() - t
        os.environ["FER_ORT_THREADS"] = str(max(1, cores // 2))     # fresh loky workers read it
        cfg2 = load_config(overrides=[f"stage0.detector.name={args.detector}",
                                      "stage0.contact_sheet=false", "stage0.parallel.jobs=2"])
        t = time.perf_counter()
        run_jobs(jobs, tmp / "j2", cfg2)
        t_two = time.perf_counter() - t
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    info = {"video": video.name, "frames": len(frames), "detector": args.detector,
            "rounds": args.repeat}
    rows = [
        row("stage0 decode only, frames/s", decode_fps, "frames/s", **info),
        row("stage0 detector only, frames/s", np.median(detect_fps), "frames/s", **info),
        row("stage0 full stage, frames/s", np.median(full_fps), "frames/s", **info),
        ratio_row("stage0 full stage / detector only", ratios, 0.8, **info),
        row("stage0 jobs=2 vs jobs=1 speedup", t_one / t_two, "x", videos=len(jobs),
            detector=args.detector),
    ]
    write_rows(rows, args.out)
    return rows


if __name__ == "__main__":
    main()
