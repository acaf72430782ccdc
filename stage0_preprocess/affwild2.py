"""Ingest the official Aff-Wild2 release (``cropped_aligned`` + EXPR annotations) into a
frame manifest, frame-exactly.

Expected under ROOT (the names the dataset ships with; searched a few levels deep)::

    <...>/EXPR_Recognition_Challenge/{Train_Set,Validation_Set}/<video>.txt
    <...>/cropped_aligned/<video>/{k:05d}.jpg        missing file = no face in frame k
    <...>/videos/<video>.{mp4,avi,...}               optional: exact frame count + timestamps

``<video>_left`` / ``<video>_right`` are two people of one raw video ``<video>.*``.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from fer_pipeline.config import Config
from fer_pipeline.errors import InputError, UsageError
from fer_pipeline.manifest import SPLITS, empty_rows
from fer_pipeline.media import VIDEO_EXTENSIONS, probe_video
from stage0_preprocess.annotations import parse_expr_annotation

log = logging.getLogger(__name__)
_CROP_RE = re.compile(r"^(\d{5})\.(jpg|jpeg|png)$", re.I)


@dataclass
class Layout:
    annotation_dirs: dict[str, Path]      # split name -> folder of <video>.txt
    crops_dir: Path
    videos: dict[str, Path] = field(default_factory=dict)  # raw video stem -> file


def _find_dirs(root: Path, pattern: str, max_depth: int = 4) -> list[Path]:
    found = []
    for depth in range(max_depth + 1):
        found += [p for p in root.glob("/".join(["*"] * depth + [pattern])) if p.is_dir()]
    return sorted(found)


def discover(root: str | Path) -> Layout:
    root = Path(root).resolve()
    if not root.is_dir():
        raise UsageError(f"Aff-Wild2 root not found: {root}")
    expr = [d for d in _find_dirs(root, "EXPR*") if any((d / s).is_dir() for s in SPLITS)]
    if not expr:
        raise UsageError(f"{root}: no EXPR*/{{Train_Set,Validation_Set}} annotation folder found")
    if len(expr) > 1:
        log.warning("several EXPR annotation folders under %s; using %s", root, expr[0])
    ann = {SPLITS[s]: expr[0] / s for s in SPLITS if (expr[0] / s).is_dir()}
    crops = _find_dirs(root, "cropped_aligned")
    if not crops:
        raise UsageError(f"{root}: no cropped_aligned folder found")
    videos = {}
    for vdir in _find_dirs(root, "videos") + _find_dirs(root, "raw_videos"):
        for f in sorted(vdir.rglob("*")):
            if f.suffix.lower() in VIDEO_EXTENSIONS and f.is_file():
                videos.setdefault(f.stem, f)
    return Layout(ann, crops[0], videos)


def raw_video_name(video: str) -> str:
    """``X_left`` / ``X_right`` annotate two people of the raw video ``X``."""
    return re.sub(r"_(left|right)$", "", video)


def _crop_frames(crop_dir: Path) -> dict[int, Path]:
    frames = {}
    for f in crop_dir.iterdir():
        m = _CROP_RE.match(f.name)
        if m:
            frames[int(m.group(1))] = f
    return frames


def ingest_video(ann_path: Path, split: str, layout: Layout, cfg: Config) -> pd.DataFrame:
    """Manifest rows of one annotated video; raises ``InputError`` for any inconsistency."""
    video = ann_path.stem
    labels = parse_expr_annotation(ann_path)
    n = len(labels)
    raw = layout.videos.get(raw_video_name(video))
    if raw is not None and cfg.stage0.ingest.check_frame_count:
        info = probe_video(raw)
        if info.n_frames != n:
            raise InputError(ann_path, f"{n} frame labels but video {raw.name} has "
                                       f"{info.n_frames} frames (not shifted; fix or drop it)")
        times = info.times
    else:
        times = np.arange(n) / cfg.stage0.ingest.default_fps
    crop_dir = layout.crops_dir / video
    if not crop_dir.is_dir():
        raise InputError(ann_path, f"no crop folder {crop_dir}")
    crops = _crop_frames(crop_dir)
    beyond = [k for k in crops if not 1 <= k <= n]
    if beyond:
        raise InputError(ann_path, f"{n} frame labels but {crop_dir} has crops up to frame "
                                   f"{max(crops)} ({len(beyond)} beyond the annotation)")
    rows = empty_rows(video, n, split, times)
    has = np.zeros(n, dtype=bool)
    has[[k - 1 for k in crops]] = True
    rows["has_face"] = has
    rows["crop_path"] = pd.array([str(crops[k + 1]) if has[k] else None for k in range(n)],
                                 dtype="string")
    rows["label"] = labels
    return rows


@dataclass
class IngestResult:
    frames: list[pd.DataFrame]
    summary: pd.DataFrame
    failures: list[str]


def ingest(root: str | Path | Layout, cfg: Config) -> IngestResult:
    layout = root if isinstance(root, Layout) else discover(root)
    where = next(iter(layout.annotation_dirs.values())).parent     # the EXPR* folder
    jobs = [(p, split) for split, d in layout.annotation_dirs.items() for p in sorted(d.glob("*.txt"))]
    if not jobs:
        raise UsageError(f"{where}: annotation folders contain no <video>.txt files")
    log.info("ingesting %d annotated videos from %s", len(jobs), where.parent)

    def run(path, split):
        try:
            return path, split, ingest_video(path, split, layout, cfg), None
        except InputError as e:
            return path, split, None, str(e)

    results = Parallel(n_jobs=cfg.stage0.parallel.jobs)(delayed(run)(p, s) for p, s in jobs)
    frames, rows, failures = [], [], []
    for path, split, df, err in results:
        if err:
            log.error("skipped %s", err)
            failures.append(err)
            rows.append({"video": path.stem, "split": split, "status": "failed", "error": err})
            continue
        frames.append(df)
        rows.append({"video": path.stem, "split": split, "status": "ok", "frames": len(df),
                     "face_frames": int(df.has_face.sum()),
                     "face_pct": round(100 * float(df.has_face.mean()), 2),
                     "labelled_frames": int((df.label >= 0).sum()), "error": ""})
    return IngestResult(frames, pd.DataFrame(rows), failures)
