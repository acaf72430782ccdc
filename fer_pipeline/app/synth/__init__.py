"""Demo-data generator: procedurally drawn faces whose expressions change over time, written
as real mp4 videos with Aff-Wild2 (ABAW EXPR) annotations and aligned crops, plus a RAF-DB
still-image set, so the whole pipeline runs with no downloads.

    from fer_pipeline.app.synth import generate
    summary = generate(cfg.synth, Path("artifacts/synth"), seed=0)
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from joblib import Parallel, delayed
from fer_pipeline.progress import progress

from fer_pipeline.config import SynthConfig
from fer_pipeline.labels import CLASSES, IGNORE
from fer_pipeline.app.synth.plan import TRAIN, VAL, plan_videos
from fer_pipeline.app.synth.writer import (CONTACT_SHEET, clear_previous, write_contact_sheet,
                                   write_stills, write_summary, write_video)

__all__ = ["generate"]

logger = logging.getLogger(__name__)


def generate(cfg: SynthConfig, out_dir: Path, seed: int) -> dict:
    """Write the demo dataset under ``out_dir`` and return its summary (also ``synth.json``,
    written last: a directory without it holds an unfinished run).

    Output is a pure function of (cfg, seed): same seed, same bytes, whatever ``cfg.jobs``.
    """
    t0 = time.perf_counter()
    odd = [s for s in cfg.frame_sizes if s[0] % 2 or s[1] % 2 or min(s) < 64]
    if odd:
        raise ValueError(f"synth.frame_sizes {odd}: width and height must be even (H.264 4:2:0) "
                         "and at least 64 px")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clear_previous(out_dir)
    plans = plan_videos(cfg, seed)
    logger.info("synth: %d videos (%d frames) -> %s", len(plans), sum(p.n_frames for p in plans), out_dir)

    jobs = [delayed(write_video)(vp, cfg, out_dir) for vp in plans]
    if cfg.jobs > 1:
        stream = Parallel(n_jobs=cfg.jobs, return_as="generator")(jobs)
    else:
        stream = (fn(*args, **kw) for fn, args, kw in jobs)
    results = list(progress(stream, total=len(plans), desc="synth videos", unit="video"))

    stills = write_stills(cfg, out_dir, seed)
    candidates = [c for r in results for c in r["candidates"]]
    write_contact_sheet(candidates, out_dir / CONTACT_SHEET)

    entries = [e for r in results for e in r["entries"]]
    summary = dict(seed=int(seed), config=cfg.model_dump(mode="json"), videos=entries,
                   totals=_totals(entries, len(plans), stills["train"] + stills["test"]), stills=stills)
    write_summary(summary, out_dir)
    logger.info("synth: done in %.1f s (%d tracks, %d stills)", time.perf_counter() - t0,
                len(entries), stills["train"] + stills["test"])
    return summary


def _totals(entries: list[dict], n_videos: int, n_stills: int) -> dict:
    """Dataset-wide counts; ``frames`` counts mp4 frames (a two-person video once),
    ``track_frames`` annotation lines (it twice)."""
    keys = [str(IGNORE)] + list(CLASSES)
    per_video = {e["video"]: e["n_frames"] for e in entries}
    out = dict(videos=n_videos, tracks=len(entries), frames=sum(per_video.values()),
               track_frames=sum(e["n_frames"] for e in entries),
               face_frames=sum(e["n_face_frames"] for e in entries), stills=n_stills, labels={})
    for split in (TRAIN, VAL):
        sel = [e for e in entries if e["split"] == split]
        counts = {k: sum(e["labels"][k] for e in sel) for k in keys}
        labelled = max(1, sum(counts[c] for c in CLASSES))
        out["labels"][split] = dict(
            tracks=len(sel), counts=counts,
            fractions={c: round(counts[c] / labelled, 4) for c in CLASSES})
    return out
