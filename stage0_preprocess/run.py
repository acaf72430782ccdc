"""Stage 0 over a video collection: job list, sharding, parallel execution (joblib loky or a Dask
cluster), resume, and the merged manifest + detections + summary."""
from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from joblib import Parallel, delayed, parallel_config

from fer_pipeline.balance import balanced_part
from fer_pipeline.config import Config
from fer_pipeline.errors import UsageError, os_error_line, output_failure
from fer_pipeline.io import atomic_write, write_parquet
from fer_pipeline.manifest import normalise
from fer_pipeline.media import VIDEO_EXTENSIONS
from fer_pipeline.progress import progress
from stage0_preprocess.video import (OutputFailed, Track, TrackOutcome, VideoJob, is_complete,
                                     process_video, read_outcome)

log = logging.getLogger(__name__)


def find_videos(paths: list[str | Path]) -> list[Path]:
    """Video files among the given files and folders (folders searched recursively).

    A named file is taken whatever its extension or state: a missing, unreadable or non-video
    file then fails on its own as a bad input and the others go on."""
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            inside = sorted(f for f in p.rglob("*") if f.suffix.lower() in VIDEO_EXTENSIONS and f.is_file())
            if not inside:
                log.warning("%s: folder holds no video files (%s)", p, ", ".join(VIDEO_EXTENSIONS))
            found += inside
        else:
            found.append(p)
    return found


def jobs_for_videos(paths: list[Path]) -> list[VideoJob]:
    names: dict[str, Path] = {}
    for p in paths:
        if p.stem in names and names[p.stem] != p:
            raise UsageError(f"two videos share the name {p.stem!r}: {names[p.stem]} and {p}")
        names[p.stem] = p
    return [VideoJob(str(p), (Track(p.stem),)) for p in sorted(names.values(), key=lambda q: q.stem)]


def jobs_for_affwild2(root: str | Path) -> tuple[list[VideoJob], list[str]]:
    """Raw videos + EXPR annotations of an Aff-Wild2 tree: one job per raw video, one track per
    annotated person (``X_left`` / ``X_right`` follow the left / right face of video ``X``).
    Returns the jobs and the annotation files whose raw video is missing."""
    from stage0_preprocess.affwild2 import discover, raw_video_name

    layout = discover(root)
    by_raw: dict[str, list[Track]] = {}
    missing = []
    for split, d in layout.annotation_dirs.items():
        for ann in sorted(d.glob("*.txt")):
            raw = raw_video_name(ann.stem)
            if raw not in layout.videos:
                missing.append(f"{ann}: no raw video {raw}.* under {root}")
                continue
            side = m.group(1) if (m := re.search(r"_(left|right)$", ann.stem)) else None
            by_raw.setdefault(raw, []).append(Track(ann.stem, side, str(ann), split))
    jobs = [VideoJob(str(layout.videos[raw]), tuple(tracks)) for raw, tracks in sorted(by_raw.items())]
    return jobs, missing


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise UsageError(f"--shard must be K/N with 1 <= K <= N, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def frame_estimate(path: str | Path) -> int:
    """A video's frame count from its container header (cheap: no decoding); 1 when unreadable
    (such a video fails fast in its shard)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    finally:
        cap.release()
    return max(n, 1)


def select_shard(jobs: list[VideoJob], shard: tuple[int, int] | None,
                 frames=frame_estimate) -> list[VideoJob]:
    """Shard k of n of the jobs sorted by path, balanced by frame count (``fer_pipeline.balance``:
    longest first, each to the shard with the fewest frames): n batch jobs computing it from
    the same list split it with no overlap and near-equal work."""
    if shard is None:
        return jobs
    k, n = shard
    ordered = sorted(jobs, key=lambda j: j.path)
    return [ordered[i] for i in balanced_part([frames(j.path) for j in ordered], k - 1, n)]


@dataclass
class Stage0Result:
    outcomes: list[TrackOutcome]
    manifest: Path | None

    @property
    def failed(self) -> list[TrackOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def output_bytes(jobs: list[VideoJob]) -> int:
    """Free space one video's outputs need, about: crops at 112 px take about what the video
    file takes (twice that, at least 256 KiB)."""
    sizes = [os.path.getsize(j.path) for j in jobs if os.path.isfile(j.path)]
    return max(2 * max(sizes, default=0), 256 << 10)


@contextlib.contextmanager
def _backend(cfg: Config, n_pending: int):
    par = cfg.stage0.parallel
    if par.backend == "dask":
        from dask.distributed import Client, LocalCluster

        if par.scheduler_address:
            client = Client(par.scheduler_address)
        else:
            client = Client(LocalCluster(n_workers=par.jobs, threads_per_worker=1, processes=True,
                                         dashboard_address=None))
        try:
            with parallel_config(backend="dask"):
                yield -1
        finally:
            client.close()
    else:
        yield min(par.jobs, max(n_pending, 1))


def run_jobs(jobs: list[VideoJob], out: Path, cfg: Config, suffix: str = "") -> Stage0Result:
    """Process every job whose tracks are not all complete; then write ``manifest{suffix}.parquet``,
    ``detections{suffix}.parquet`` and ``summary{suffix}.csv`` over all the given jobs."""
    out.mkdir(parents=True, exist_ok=True)
    pending = [j for j in jobs if not all(is_complete(out, n) for n in j.names)]
    done = [read_outcome(out, n) for j in jobs if j not in pending for n in j.names]
    if done:
        log.info("stage0: %d track(s) already complete in %s, skipped", len(done), out)
    # split the cores between worker processes (each runs its own ONNX session)
    os.environ.setdefault("FER_ORT_THREADS", str(max(1, (os.cpu_count() or 1) // cfg.stage0.parallel.jobs)))
    outcomes = list(done)
    stopped = ""
    if pending:
        try:
            with _backend(cfg, len(pending)) as n_jobs:
                runs = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
                    delayed(process_video)(j, out, cfg, os.getpid()) for j in pending)
                for result in progress(runs, total=len(pending), desc="stage0 videos", unit="video"):
                    for o in result:
                        if o.status == "failed":
                            log.error("skipped %s", o.error)
                        else:
                            log.info("%s: %d/%d frames with a face (%.1f%%), %.1f s", o.name,
                                     o.face_frames, o.frames, o.face_pct, o.seconds)
                    outcomes.extend(result)
        except OutputFailed as e:      # disk full, read-only: later videos would fail the same way
            stopped = str(e)
    order = {n: i for i, n in enumerate(n for j in jobs for n in j.names)}
    outcomes.sort(key=lambda o: order.get(o.name, len(order)))
    complete = sum(o.status != "failed" for o in outcomes)
    try:
        manifest = merge_parts(out, [o.name for o in outcomes if o.status != "failed"], suffix)
        write_summary(out / f"summary{suffix}.csv", outcomes)
    except OSError as e:
        stopped = stopped or os_error_line(e)
    if stopped:
        raise output_failure(f"stage0 stopped: {stopped}; {complete} video(s) complete in {out}; "
                             f"fix the location and re-run (complete videos are skipped)",
                             complete > 0)
    return Stage0Result(outcomes, manifest)


def merge_parts(out: Path, names: list[str], suffix: str = "") -> Path | None:
    """Concatenate the per-track parts into the manifest and detections files (atomically)."""
    parts = [out / "parts" / f"{n}.parquet" for n in names]
    manifest = out / f"manifest{suffix}.parquet"
    frames = [pd.read_parquet(p) for p in parts if p.is_file()]
    if frames:
        write_parquet(manifest, normalise(pd.concat(frames, ignore_index=True)))
    dets = [pd.read_parquet(out / "parts" / f"{n}.detections.parquet") for n in names
            if (out / "parts" / f"{n}.detections.parquet").is_file()]
    if dets:
        write_parquet(out / f"detections{suffix}.parquet", pd.concat(dets, ignore_index=True))
    return manifest if frames else None


def complete_names(out: Path) -> list[str]:
    return sorted(p.name[: -len(".done.json")] for p in (out / "parts").glob("*.done.json"))


def merge_all(out: Path) -> Stage0Result:
    """Merge every complete track under ``out`` (after sharded runs) into one manifest."""
    names = complete_names(out)
    if not names:
        raise UsageError(f"{out}: no complete stage-0 videos to merge")
    outcomes = [read_outcome(out, n) for n in names]
    manifest = merge_parts(out, names)
    write_summary(out / "summary.csv", outcomes)
    return Stage0Result(outcomes, manifest)


def write_summary(path: Path, outcomes: list[TrackOutcome]) -> None:
    rows = []
    for o in outcomes:
        d = asdict(o)
        extra = d.pop("extra") or {}
        rows.append({**d, **{f"{k}": v for k, v in extra.items()}})
    df = pd.DataFrame(rows)
    atomic_write(path, lambda p: df.to_csv(p, index=False))
