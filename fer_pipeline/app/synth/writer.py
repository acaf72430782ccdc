"""On-disk layout: Aff-Wild2 videos / annotations / cropped_aligned, RAF-DB stills, the
contact sheet and the summary."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
from joblib import Parallel, delayed

from fer_pipeline.config import SynthConfig
from fer_pipeline.io import write_text
from fer_pipeline.labels import CLASSES, ID_TO_RAFDB, NEUTRAL, NUM_CLASSES
from fer_pipeline.media import VideoWriter
from stage0_preprocess import align_face, write_expr_annotation
from fer_pipeline.app.synth.expression import AU, apex_vector
from fer_pipeline.app.synth.face import draw_face
from fer_pipeline.app.synth.identity import random_identity
from fer_pipeline.app.synth.paint import Pose
from fer_pipeline.app.synth.plan import NAME_PREFIX, STREAM_STILLS, VideoPlan, rng_for
from fer_pipeline.app.synth.scene import Scene, apply_lighting, draw_body, lighting_row, make_background
from fer_pipeline.app.synth.timeline import label_counts

logger = logging.getLogger(__name__)

ANNOTATION_DIR = Path("annotations") / "EXPR_Recognition_Challenge"
VIDEO_DIR = Path("videos")
CROP_DIR = Path("cropped_aligned")
RAFDB_DIR = Path("stills") / "rafdb" / "basic"
RAFDB_LIST = RAFDB_DIR / "EmoLabel" / "list_patition_label.txt"   # the dataset's own spelling
RAFDB_IMAGES = RAFDB_DIR / "Image" / "aligned"
CONTACT_SHEET = "contact_sheet.png"
SUMMARY = "synth.json"
JPEG = [cv2.IMWRITE_JPEG_QUALITY, 95]
_SHEET_PER_TRACK = 4     # contact-sheet candidates kept per class and person


def _imwrite(path: Path, img: np.ndarray) -> None:
    if not cv2.imwrite(str(path), img, JPEG):
        raise OSError(f"could not write {path}")


def clear_previous(out_dir: Path) -> None:
    """Remove what an earlier run wrote (only this generator's names), summary first, so a
    stale crop can never pass for a face frame and an unfinished run has no synth.json."""
    (out_dir / SUMMARY).unlink(missing_ok=True)
    (out_dir / CONTACT_SHEET).unlink(missing_ok=True)
    for pattern in (f"{VIDEO_DIR}/{NAME_PREFIX}*", f"{VIDEO_DIR}/.{NAME_PREFIX}*",
                    f"{ANNOTATION_DIR}/*/{NAME_PREFIX}*"):
        for p in out_dir.glob(pattern):
            p.unlink()
    for p in out_dir.glob(f"{CROP_DIR}/{NAME_PREFIX}*"):
        shutil.rmtree(p)
    if (out_dir / RAFDB_DIR).exists():
        shutil.rmtree(out_dir / RAFDB_DIR)


# ----------------------------------------------------------------------------------- videos
def _sheet_frames(track) -> dict[int, int]:
    """Frame -> class of frames worth showing on the contact sheet: near event apexes and in
    the middle of long neutral gaps, where the face is visible, unoccluded and eyes open."""
    tl = track.tl
    ok = tl.face & ~tl.occluded & (track.au[:, AU["blink"]] < 0.2)
    picks: dict[int, int] = {}
    per_class = np.zeros(NUM_CLASSES, int)
    for frac in (0.5, 0.25, 0.75):  # every event's apex middle first, then more of each
        for ev in tl.events:
            k = min(ev.apex_start + int(frac * ev.apex), tl.n_frames - 1)
            if ok[k] and k not in picks and per_class[ev.cls] < _SHEET_PER_TRACK:
                picks[k] = ev.cls
                per_class[ev.cls] += 1
    gap = np.flatnonzero(tl.event_of < 0)
    if gap.size:
        runs = np.split(gap, np.flatnonzero(np.diff(gap) > 1) + 1)
        for run in sorted(runs, key=len, reverse=True)[:_SHEET_PER_TRACK]:
            k = int(run[len(run) // 2])
            if len(run) >= 0.8 * tl.fps and ok[k]:
                picks[k] = NEUTRAL
    return picks


def write_video(vp: VideoPlan, cfg: SynthConfig, out_dir: Path) -> dict:
    """Render one video: mp4, annotation file(s) and aligned crops. Returns its summary
    entries and contact-sheet candidates."""
    scene = Scene(vp)
    crop_dirs = []
    for person in vp.persons:
        d = out_dir / CROP_DIR / person.track
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        crop_dirs.append(d)
    picks = [_sheet_frames(t) for t in scene.people]
    candidates = []
    n_crops = [0] * len(vp.persons)
    final = out_dir / VIDEO_DIR / f"{vp.name}.mp4"
    tmp = final.with_name(f".{vp.name}.partial.mp4")

    with VideoWriter(tmp, vp.width, vp.height, vp.fps) as writer:
        for k in range(vp.n_frames):
            frame, lms = scene.render(k)
            writer.write(frame)
            for j, lm in enumerate(lms):
                if lm is None:
                    continue
                crop = align_face(frame, lm, cfg.crop_size)
                _imwrite(crop_dirs[j] / f"{k + 1:05d}.jpg", crop)
                n_crops[j] += 1
                if k in picks[j]:
                    candidates.append((picks[j][k], vp.persons[j].track, k, crop))
    os.replace(tmp, final)

    entries = []
    for j, person in enumerate(vp.persons):
        tl = person.timeline
        write_expr_annotation(out_dir / ANNOTATION_DIR / vp.split / f"{person.track}.txt",
                              tl.annotated)
        if n_crops[j] != int(tl.face.sum()):
            raise RuntimeError(f"{person.track}: wrote {n_crops[j]} crops for "
                               f"{int(tl.face.sum())} face frames")
        entries.append(dict(
            name=person.track, video=vp.name, split=vp.split, fps=vp.fps, width=vp.width,
            height=vp.height, n_frames=vp.n_frames, n_face_frames=n_crops[j],
            n_occluded_frames=int(tl.occluded.sum()), n_events=len(tl.events),
            labels=label_counts(tl.annotated)))
    logger.debug("%s: %d frames @ %d fps, %dx%d, %d track(s)", vp.name, vp.n_frames, vp.fps,
                 vp.width, vp.height, len(vp.persons))
    return dict(entries=entries, candidates=candidates)


# ----------------------------------------------------------------------------------- stills
def render_still(rng: np.random.Generator, cls: int, size: int) -> np.ndarray:
    """One RAF-DB-style aligned still (size x size BGR): a new identity showing ``cls`` at
    intensity 0.6-1.0 with a small random pose and lighting."""
    canvas = 176
    # The backdrop only shows around the face: a half-resolution one is plenty.
    img = cv2.resize(make_background(rng, canvas // 2, canvas // 2), (canvas, canvas))
    idn = random_identity(rng)
    au = apex_vector(cls, int(rng.integers(8)), rng) * rng.uniform(0.6, 1.0)
    if cls == NEUTRAL:  # a neutral face is never perfectly still
        for name in ("brow_inner_up", "brow_outer_up", "lip_corner_pull", "lips_part"):
            au[AU[name]] = rng.uniform(0.0, 0.12)
    pose = Pose(canvas / 2 + rng.uniform(-4, 4), canvas * 0.5 + rng.uniform(-4, 4),
                rng.uniform(0.78, 0.9), roll=rng.uniform(-0.12, 0.12), yaw=rng.uniform(-0.3, 0.3),
                pitch=rng.uniform(-0.08, 0.08))
    side = int(rng.choice((-1, 1)))
    draw_body(img, idn, pose)
    lm = draw_face(img, idn, au, pose, side, (rng.uniform(-0.4, 0.4), rng.uniform(-0.3, 0.3)))
    gain, contrast = rng.uniform(0.8, 1.15), rng.uniform(0.8, 1.1)
    row = lighting_row(canvas, gain, rng.uniform(-0.3, 0.3), contrast,
                       rng.uniform(0.9, 1.1, 3).astype(np.float32))
    offset = np.full((canvas, canvas, 3), 128 * (1 - contrast) * gain, np.float32)
    img = apply_lighting(img, row, offset, rng.uniform(0.3, 0.8))
    crop = align_face(img, lm + rng.normal(0, 0.4, (5, 2)), size).astype(np.float32)
    crop += rng.standard_normal(crop.shape, dtype=np.float32) * rng.uniform(1.0, 4.0)
    return np.clip(crop, 0, 255).astype(np.uint8)


def _write_still_batch(items: list[tuple[str, int, int, int]], img_dir: Path, seed: int,
                       size: int) -> None:
    for name, cls, part_id, j in items:
        img = render_still(rng_for(seed, STREAM_STILLS, part_id, j), cls, size)
        _imwrite(img_dir / f"{name}_aligned.jpg", img)


def write_stills(cfg: SynthConfig, out_dir: Path, seed: int) -> dict:
    """RAF-DB basic layout: EmoLabel/list_patition_label.txt + Image/aligned/*_aligned.jpg.
    Each image has its own random stream, so batches can be rendered in parallel."""
    img_dir = out_dir / RAFDB_IMAGES
    img_dir.mkdir(parents=True, exist_ok=True)
    items, lines, counts = [], [], {}
    for part_id, (part, per_class, fmt) in enumerate((
            ("train", cfg.stills_train_per_class, "train_{:05d}"),
            ("test", cfg.stills_test_per_class, "test_{:04d}"))):
        ids = [c for c in sorted(ID_TO_RAFDB) for _ in range(per_class)]
        rng_for(seed, STREAM_STILLS, part_id).shuffle(ids)
        for j, cls in enumerate(ids, 1):
            name = fmt.format(j)
            items.append((name, cls, part_id + 1, j))
            lines.append(f"{name}.jpg {ID_TO_RAFDB[cls]}")
        counts[part] = len(ids)
    if cfg.jobs > 1:
        n_batches = cfg.jobs * 4
        Parallel(n_jobs=cfg.jobs)(
            delayed(_write_still_batch)(items[b::n_batches], img_dir, seed, cfg.still_size)
            for b in range(n_batches))
    else:
        _write_still_batch(items, img_dir, seed, cfg.still_size)
    write_text(out_dir / RAFDB_LIST, "\n".join(lines) + "\n")
    counts["per_class"] = {"train": cfg.stills_train_per_class, "test": cfg.stills_test_per_class}
    return counts


# ----------------------------------------------------------------------------------- sheet
def write_contact_sheet(candidates: list[tuple[int, str, int, np.ndarray]], path: Path,
                        cols: int = 8, cell: int = 112) -> None:
    """One row per class, crops from as many different people as possible (round-robin over
    tracks), class name on the left."""
    label_w, pad = 118, 2
    sheet = np.full((NUM_CLASSES * (cell + pad) + pad, label_w + cols * (cell + pad) + pad, 3), 235, np.uint8)
    for cls in range(NUM_CLASSES):
        by_track: dict[str, list[np.ndarray]] = {}
        for c, track, _k, crop in candidates:
            if c == cls:
                by_track.setdefault(track, []).append(crop)
        chosen = []
        while len(chosen) < cols and any(by_track.values()):
            for track in sorted(by_track):
                if by_track[track] and len(chosen) < cols:
                    chosen.append(by_track[track].pop(0))
        y = pad + cls * (cell + pad)
        cv2.putText(sheet, CLASSES[cls], (6, y + cell // 2 + 6), cv2.FONT_HERSHEY_SIMPLEX, 0.55,
                    (20, 20, 20), 1, cv2.LINE_AA)
        for i, crop in enumerate(chosen):
            x = label_w + pad + i * (cell + pad)
            sheet[y:y + cell, x:x + cell] = cv2.resize(crop, (cell, cell), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(path), sheet)


def write_summary(summary: dict, out_dir: Path) -> None:
    write_text(out_dir / SUMMARY, json.dumps(summary, indent=1) + "\n")
