"""Stage 0 on one raw video: decode -> detect (batched, padded retry) -> track the main face per
person track -> align -> JPEG crops + manifest rows + all detections + contact sheet.

Per track ``<name>`` the outputs are ``crops/<name>/{k:05d}.jpg``, ``parts/<name>.parquet``
(manifest rows), ``parts/<name>.detections.parquet``, ``contact_sheets/<name>.png`` and, written
last, the completion marker ``parts/<name>.done.json``. A track without its marker is redone
from scratch, so a killed run resumes to the same bytes.

A worker process (``--jobs N``) exits within ``PARENT_POLL_S`` of its parent's death, killing its
ffmpeg first (``watch_parent``), so a killed command leaves no process writing into ``--out``.
"""
from __future__ import annotations

import errno
import functools
import json
import logging
import os
import queue
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from fer_pipeline.config import Config, DetectorConfig
from fer_pipeline.errors import InputError, os_error_line
from fer_pipeline.io import write_json, write_parquet
from fer_pipeline.manifest import empty_rows, normalise
from fer_pipeline.media import probe_video
from stage0_preprocess.align import crop_face
from stage0_preprocess.annotations import parse_expr_annotation
from stage0_preprocess.decode import iter_frames, kill_decoders
from stage0_preprocess.track import MainFaceTracker, cut_score, thumbnail

log = logging.getLogger(__name__)
PARENT_POLL_S = 0.25
_watching: list[int] = []      # the parent this worker process watches (set once)


@dataclass(frozen=True)
class Track:
    """One person of a raw video: a manifest video name, which face to follow, its labels."""
    name: str
    side: str | None = None          # None | 'left' | 'right' (Aff-Wild2 two-person videos)
    annotation: str | None = None    # Aff-Wild2 EXPR file (labels), optional
    split: str = ""


@dataclass(frozen=True)
class VideoJob:
    path: str
    tracks: tuple[Track, ...]

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tracks]


@dataclass
class TrackOutcome:
    name: str
    video: str
    status: str                      # ok | failed | complete
    frames: int = 0
    face_frames: int = 0
    face_pct: float = 0.0
    mean_score: float = float("nan")
    seconds: float = 0.0
    error: str = ""
    split: str = ""
    extra: dict = field(default_factory=dict)


class OutputFailed(Exception):
    """Writing into ``--out`` failed (disk full, read-only, permissions): the run stops."""


_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def _is_output_error(e: OSError, out: Path) -> bool:
    """An OSError of the output location (its errno, or a file under ``out``), not of an input."""
    if e.errno in _OUTPUT_ERRNOS:
        return True
    name = str(e.filename or "")
    return bool(name) and os.path.abspath(name).startswith(os.path.abspath(out) + os.sep)


def marker_path(out: Path, name: str) -> Path:
    return out / "parts" / f"{name}.done.json"


def is_complete(out: Path, name: str) -> bool:
    return marker_path(out, name).is_file()


def read_outcome(out: Path, name: str) -> TrackOutcome:
    data = json.loads(marker_path(out, name).read_text())
    data["status"] = "complete"
    return TrackOutcome(**data)


def clear_track(out: Path, name: str) -> None:
    shutil.rmtree(out / "crops" / name, ignore_errors=True)
    for p in (out / "parts" / f"{name}.parquet", out / "parts" / f"{name}.detections.parquet",
              out / "contact_sheets" / f"{name}.png", marker_path(out, name)):
        p.unlink(missing_ok=True)


@functools.lru_cache(maxsize=2)
def _detector(cfg_json: str):
    from stage0_preprocess.detectors import build_detector

    return build_detector(DetectorConfig.model_validate_json(cfg_json))


def get_detector(cfg: DetectorConfig):
    """One detector per process (joblib workers reuse it across videos)."""
    return _detector(cfg.model_dump_json())


def watch_parent(parent: int) -> None:
    """In a worker process of ``parent`` (the stage-0 command): once the parent is gone (this
    process is re-parented), kill this worker's ffmpeg decoders and exit at once, so nothing
    keeps writing crops or completion markers into ``--out``. A no-op in the parent itself
    (``--jobs 1``). Dask workers watch their own parent (the nanny)."""
    if os.getpid() == parent or _watching:
        return
    ppid = os.getppid()
    if ppid == 1 and parent != 1:          # the parent died before this job started
        kill_decoders()
        os._exit(1)
    _watching.append(ppid)

    def watch():
        while os.getppid() == ppid:
            time.sleep(PARENT_POLL_S)
        kill_decoders()
        os._exit(1)

    threading.Thread(target=watch, name="stage0-parent-watch", daemon=True).start()


def _prefetch(it, depth: int):
    """Run an iterator in a thread, ``depth`` items ahead (decode overlaps detection). When the
    consumer stops early (an error, a generator closed), the thread stops and closes the
    iterator, so a decoder's ffmpeg does not stay blocked on a full pipe."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    sentinel = object()
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def work():
        try:
            for item in it:
                if not put(item):
                    break
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            put(e)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
        put(sentinel)

    threading.Thread(target=work, daemon=True).start()
    try:
        while True:
            item = q.get()
            if item is sentinel:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def _batches(frames, size: int):
    batch = []
    for f in frames:
        batch.append(f)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def detect_batch(detector, images: list[np.ndarray], pad_retry: bool):
    """Detections per image; images with none are retried once padded by half their size."""
    dets = detector.detect(images)
    if not pad_retry:
        return dets
    miss = [i for i, d in enumerate(dets) if len(d) == 0]
    if miss:
        padded, pads = [], []
        for i in miss:
            h, w = images[i].shape[:2]
            py, px = h // 2, w // 2
            padded.append(cv2.copyMakeBorder(images[i], py, py, px, px, cv2.BORDER_CONSTANT, value=0))
            pads.append((px, py))
        for i, d, (px, py) in zip(miss, detector.detect(padded), pads):
            if len(d):
                h, w = images[i].shape[:2]
                # back to frame pixels; boxes clipped to the frame, landmarks kept as found
                d.boxes = np.clip(d.boxes - np.array([px, py, px, py], np.float32), 0,
                                  np.array([w, h, w, h], np.float32))
                d.kps = d.kps - np.array([px, py], np.float32)
                dets[i] = d
    return dets


def contact_sheet(crops: list[tuple[int, np.ndarray | None, float]], path: Path, title: str,
                  cols: int = 8) -> None:
    """Grid of sampled crops with frame number and score; no-face frames are grey."""
    tile = 112
    rows = -(-len(crops) // cols)
    sheet = np.full((rows * (tile + 18) + 28, cols * tile, 3), 235, np.uint8)
    cv2.putText(sheet, title, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (20, 20, 20), 1, cv2.LINE_AA)
    for i, (frame, img, score) in enumerate(crops):
        r, c = divmod(i, cols)
        y, x = 28 + r * (tile + 18), c * tile
        if img is None:
            sheet[y:y + tile, x:x + tile] = 160
            cv2.putText(sheet, "no face", (x + 22, y + 60), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (60, 60, 60), 1, cv2.LINE_AA)
            label = f"{frame}"
        else:
            sheet[y:y + tile, x:x + tile] = cv2.resize(img, (tile, tile))
            label = f"{frame} s={score:.2f}"
        cv2.putText(sheet, label, (x + 3, y + tile + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38,
                    (20, 20, 20), 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", sheet)
    write_bytes_atomic(path, buf.tobytes())


def write_file(path: Path, data: bytes) -> None:
    """``path.write_bytes(data)``; a failed write names the file (Python's does not)."""
    try:
        path.write_bytes(data)
    except OSError as e:
        if e.filename is None:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    from fer_pipeline.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _load_labels(track: Track, n_frames: int) -> np.ndarray:
    if not track.annotation:
        return np.full(n_frames, -1, np.int8)
    labels = parse_expr_annotation(track.annotation)
    if len(labels) != n_frames:
        raise InputError(track.annotation, f"{len(labels)} frame labels but the video has "
                                           f"{n_frames} frames (not shifted; fix or drop it)")
    return labels


def process_video(job: VideoJob, out: Path, cfg: Config, parent: int | None = None) -> list[TrackOutcome]:
    """Run stage 0 on one raw video for all of its tracks. Never raises for a bad input: the
    outcome says what failed. ``parent``: the pid of the command that dispatched it (a worker
    exits when that process dies, ``watch_parent``)."""
    if parent is not None:
        watch_parent(parent)
    t0 = time.time()
    video = Path(job.path).name
    try:
        return _process(job, out, cfg, t0)
    except InputError as e:
        msg = str(e)
    except OSError as e:
        if not _is_output_error(e, out):
            msg = f"{job.path}: {os_error_line(e)}"
        else:                   # the output location failed: stop the run, not just this video
            for t in job.tracks:
                try:
                    clear_track(out, t.name)
                except OSError:
                    pass
            raise OutputFailed(f"{os_error_line(e)} (while writing {video})") from None
    except Exception as e:  # noqa: BLE001 - one broken video must not stop the batch
        log.debug("stage0 failure on %s", job.path, exc_info=True)
        msg = f"{job.path}: {type(e).__name__}: {e}"
    for t in job.tracks:
        clear_track(out, t.name)
    return [TrackOutcome(t.name, video, "failed", error=msg, split=t.split,
                         seconds=round(time.time() - t0, 2)) for t in job.tracks]


def _process(job: VideoJob, out: Path, cfg: Config, t0: float) -> list[TrackOutcome]:
    s0 = cfg.stage0
    info = probe_video(job.path)
    labels = {t.name: _load_labels(t, info.n_frames) for t in job.tracks}
    for t in job.tracks:
        clear_track(out, t.name)
        (out / "crops" / t.name).mkdir(parents=True, exist_ok=True)
    detector = get_detector(s0.detector)
    trackers = {t.name: MainFaceTracker(s0.track, t.side, info.fps or 25.0) for t in job.tracks}
    n = info.n_frames
    state = {t.name: {"has": np.zeros(n, bool), "score": np.full(n, np.nan, np.float32),
                      "box": np.full((n, 4), np.nan, np.float32),
                      "lmk": np.full((n, 10), np.nan, np.float32), "dets": []}
             for t in job.tracks}
    times = np.full(n, np.nan)
    # frames for the contact sheet: ~24 evenly spaced
    sample_at = set(np.linspace(0, max(n - 1, 0), num=min(24, n), dtype=int).tolist())
    sheet: dict[str, list] = {t.name: [] for t in job.tracks}
    encode = [int(cv2.IMWRITE_JPEG_QUALITY), s0.jpeg_quality]
    decoded = 0
    prev_thumb = None
    cuts = 0
    for batch in _batches(_prefetch(iter_frames(job.path), depth=2 * s0.detector.batch_size),
                          s0.detector.batch_size):
        dets = detect_batch(detector, [f.image for f in batch], s0.detector.pad_retry)
        for f, d in zip(batch, dets):
            if f.index >= n:
                raise InputError(job.path, f"decoded more frames than the {n} coded ones")
            times[f.index] = f.time_s
            decoded += 1
            thumb = thumbnail(f.image)
            cut = cut_score(prev_thumb, thumb) > s0.track.cut_threshold
            cuts += cut
            prev_thumb = thumb
            for t in job.tracks:
                st = state[t.name]
                main = trackers[t.name].update(d.boxes, d.scores, cut, d.kps)
                for j in range(len(d)):
                    st["dets"].append((f.index + 1, j, float(d.scores[j]), *d.boxes[j].tolist(),
                                       d.kps[j].reshape(-1).tolist(), j == main))
                crop = None
                if main >= 0:
                    crop = crop_face(f.image, d.boxes[main], d.kps[main], s0.align)
                    ok, buf = cv2.imencode(".jpg", crop, encode)
                    write_file(out / "crops" / t.name / f"{f.index + 1:05d}.jpg", buf.tobytes())
                    st["has"][f.index] = True
                    st["score"][f.index] = d.scores[main]
                    st["box"][f.index] = d.boxes[main]
                    st["lmk"][f.index] = d.kps[main].reshape(-1)
                if f.index in sample_at:
                    sheet[t.name].append((f.index + 1, crop, float(st["score"][f.index])))
    if decoded != n:
        raise InputError(job.path, f"decoded {decoded} of {n} coded frames (truncated or corrupt)")
    outcomes = []
    elapsed = round(time.time() - t0, 2)
    for t in job.tracks:
        st = state[t.name]
        rows = empty_rows(t.name, n, t.split, times)
        rows["has_face"] = st["has"]
        rows["det_score"] = st["score"]
        rows[["x1", "y1", "x2", "y2"]] = st["box"]
        rows["lmk"] = [list(map(float, v)) for v in st["lmk"]]
        rows["crop_path"] = pd.array([f"crops/{t.name}/{k + 1:05d}.jpg" if h else None
                                      for k, h in enumerate(st["has"])], dtype="string")
        rows["label"] = labels[t.name]
        write_parquet(out / "parts" / f"{t.name}.parquet", normalise(rows))
        dets = pd.DataFrame(st["dets"], columns=["frame", "face", "score", "x1", "y1", "x2", "y2",
                                                 "lmk", "main"])
        dets.insert(0, "video", t.name)
        write_parquet(out / "parts" / f"{t.name}.detections.parquet", dets)
        if cfg.stage0.contact_sheet:
            contact_sheet(sheet[t.name], out / "contact_sheets" / f"{t.name}.png",
                          f"{t.name}: {int(st['has'].sum())}/{n} frames with a face")
        faces = int(st["has"].sum())
        outcome = TrackOutcome(
            t.name, Path(job.path).name, "ok", frames=n, face_frames=faces,
            face_pct=round(100 * faces / max(n, 1), 2),
            mean_score=round(float(np.nanmean(st["score"])) if faces else float("nan"), 4),
            seconds=elapsed, split=t.split,
            extra={"fps": round(n / max(elapsed, 1e-9), 1), "detections": len(dets), "cuts": cuts})
        write_json(marker_path(out, t.name), asdict(outcome))
        outcomes.append(outcome)
    return outcomes
