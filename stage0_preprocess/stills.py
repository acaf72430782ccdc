"""Still-image face sets re-framed by stage 0: FERPlus re-cropped through the video path's own
detector and 5-point alignment, so the encoder trains on the framing it is fed at inference.

FER2013's 48 x 48 faces are cut by a Haar detector, loosely; stage 0 hands the encoder
ArcFace-template crops (eyes and mouth at fixed places, upright). ``recrop_ferplus`` runs each
image through stage 0's detector (upscaled ``upscale`` x and padded by ``pad`` of its side, since
RetinaFace wants a face with context and more than 48 pixels) and ``crop_face`` with stage 0's
``stage0.align`` settings, and writes a FERPlus folder in the layout of Microsoft's
``generate_training_data.py``, which the ``ferplus`` adapter reads like the original:

    OUT/FER2013Train/ferNNNNNNN.png + label.csv   OUT/FER2013Valid/...
    OUT/recrop.csv     one row per image: split, name, framing (aligned | original | unreadable), score
    OUT/recrop.json    the key (settings + detector weights + label files) and the counts

An image in which no face is found keeps its original framing (resized) and is counted; an
unreadable image is named in the log, counted and left out of ``label.csv``. A split is built
in a private folder renamed into place when complete, so an interrupted run is never taken for a
finished one and re-running skips the finished splits; ``OUT`` made with other settings is an
error, not silently mixed.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fer_pipeline.config import Config
from fer_pipeline.errors import UsageError
from fer_pipeline.io import file_sha256
from fer_pipeline.progress import progress
from stage0_preprocess.align import crop_face
from stage0_preprocess.video import detect_batch, get_detector

log = logging.getLogger(__name__)

FERPLUS_SPLITS = ("FER2013Train", "FER2013Valid")
N_VOTES = 10                 # FERPlus label.csv: name, [box,] 10 vote counts
FORMAT_VERSION = 1


@dataclass
class RecropResult:
    out: Path
    counts: dict[str, dict[str, int]]     # split -> framing -> images
    built: list[str]                      # splits made by this call (the others were complete)


def _label_rows(path: Path) -> list[tuple[str, list[str]]]:
    """(image name, its 10 vote fields) per row of a FERPlus label.csv."""
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        for row in reader:
            if not row or not any(v.strip() for v in row):
                continue
            if len(row) < N_VOTES + 1 or not row[0].strip():
                raise UsageError(f"{path}: line {reader.line_num}: expected '<image>.png,[face box,]"
                                 f"{N_VOTES} vote counts', got {len(row)} fields")
            rows.append((row[0].strip(), [v.strip() for v in row[-N_VOTES:]]))
    return rows


def recrop_key(cfg: Config, label_files: list[Path], upscale: int, pad: float) -> dict:
    """Everything the re-cropped pixels depend on; its hash names the artifact."""
    det = cfg.stage0.detector
    path = getattr(get_detector(det), "path", None)      # the weights file actually loaded
    weights = file_sha256(Path(path)) if path and Path(path).is_file() else None
    spec = {"format": FORMAT_VERSION, "detector": det.model_dump(mode="json"), "weights_sha256": weights,
            "align": cfg.stage0.align.model_dump(mode="json"), "upscale": upscale, "pad": pad,
            "labels": {p.parent.name: file_sha256(p) for p in label_files}}
    spec["key"] = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return spec


def prepare(img: np.ndarray, upscale: int, pad: float) -> tuple[np.ndarray, int]:
    """The detector's view of a small face image: upscaled, then padded (replicated border)."""
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    up = cv2.resize(img, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
    p = int(round(pad * up.shape[0]))
    return cv2.copyMakeBorder(up, p, p, p, p, cv2.BORDER_REPLICATE), p


def main_face(dets, shape) -> int | None:
    """The detection of the image's own face: highest score x area, centre inside the middle half."""
    if not len(dets):
        return None
    h, w = shape[:2]
    cx = (dets.boxes[:, 0] + dets.boxes[:, 2]) / 2
    cy = (dets.boxes[:, 1] + dets.boxes[:, 3]) / 2
    central = (np.abs(cx - w / 2) < w / 4) & (np.abs(cy - h / 2) < h / 4)
    if not central.any():
        return None
    area = (dets.boxes[:, 2] - dets.boxes[:, 0]) * (dets.boxes[:, 3] - dets.boxes[:, 1])
    return int(np.argmax(np.where(central, dets.scores * area, -1.0)))


def recrop_images(images: list[np.ndarray], cfg: Config, upscale: int, pad: float):
    """(crop, framing, score) per BGR image: stage 0's aligned crop, or the original resized."""
    size = cfg.stage0.align.size
    views = [prepare(im, upscale, pad)[0] for im in images]
    dets = detect_batch(get_detector(cfg.stage0.detector), views, cfg.stage0.detector.pad_retry)
    out = []
    for im, view, d in zip(images, views, dets):
        k = main_face(d, view.shape)
        if k is None:
            bgr = im if im.ndim == 3 else cv2.cvtColor(im, cv2.COLOR_GRAY2BGR)
            out.append((cv2.resize(bgr, (size, size), interpolation=cv2.INTER_CUBIC), "original", 0.0))
        else:
            out.append((crop_face(view, d.boxes[k], d.kps[k], cfg.stage0.align), "aligned",
                        float(d.scores[k])))
    return out


def _build_split(src: Path, dst: Path, cfg: Config, upscale: int, pad: float, batch: int) -> list[dict]:
    rows = _label_rows(src / "label.csv")
    tmp = dst.parent / f"{dst.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    size = cfg.stage0.align.size
    records, kept = [], []
    try:
        for i in progress(range(0, len(rows), batch), desc=f"re-crop {src.name}", unit="batch"):
            chunk, images = [], []
            for name, votes in rows[i:i + batch]:
                img = cv2.imread(str(src / name), cv2.IMREAD_COLOR)
                if img is None:
                    log.warning("%s: unreadable image, left out", src / name)
                    records.append({"split": src.name, "name": name, "framing": "unreadable", "score": 0.0})
                    continue
                chunk.append((name, votes))
                images.append(img)
            for (name, votes), (crop, framing, score) in zip(chunk, recrop_images(images, cfg, upscale, pad)):
                if not cv2.imwrite(str(tmp / name), cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)):
                    raise OSError(f"could not write {tmp / name}")
                kept.append([name, f"(0, 0, {size}, {size})", *votes])
                records.append({"split": src.name, "name": name, "framing": framing, "score": round(score, 4)})
        with open(tmp / "label.csv", "w", newline="") as f:
            csv.writer(f).writerows(kept)
        if dst.exists():
            shutil.rmtree(dst)
        tmp.rename(dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return records


def recrop_ferplus(root: str | Path, out: str | Path, cfg: Config, *, upscale: int = 4,
                   pad: float = 0.25, batch: int = 32) -> RecropResult:
    """Re-crop a FERPlus folder (``FER2013Train`` / ``FER2013Valid`` with ``label.csv``) into
    ``out`` through stage 0's detector and alignment; finished splits are kept."""
    root, out = Path(root), Path(out)
    splits = [s for s in FERPLUS_SPLITS if (root / s / "label.csv").is_file()]
    if not splits:
        raise UsageError(f"FERPlus root {root}: no {' or '.join(f'{s}/label.csv' for s in FERPLUS_SPLITS)}"
                         f" (the layout of FERPlus's generate_training_data.py)")
    spec = recrop_key(cfg, [root / s / "label.csv" for s in splits], upscale, pad)
    spec_path = out / "recrop.json"
    if spec_path.is_file():
        old = json.loads(spec_path.read_text())
        if old.get("key") != spec["key"]:
            raise UsageError(f"{out} holds a re-crop made with other settings (key {old.get('key')},"
                             f" these give {spec['key']}): choose another --out or delete it")
    out.mkdir(parents=True, exist_ok=True)
    table_path = out / "recrop.csv"
    done = [s for s in splits if (out / s / "label.csv").is_file() and spec_path.is_file()
            and s in json.loads(spec_path.read_text()).get("counts", {})]
    records = []
    if table_path.is_file() and done:
        with open(table_path, newline="") as f:
            records = [r for r in csv.DictReader(f) if r["split"] in done]
    built = []
    for s in splits:
        if s in done:
            log.info("%s: complete, skipped", out / s)
            continue
        records += _build_split(root / s, out / s, cfg, upscale, pad, batch)
        built.append(s)
        counts = _counts(records)
        _write_table(table_path, records)
        spec_path.write_text(json.dumps({**spec, "counts": counts}, indent=1) + "\n")
        c = counts[s]
        log.info("%s: %d aligned by stage 0, %d kept their original framing (no face found),"
                 " %d unreadable", s, c.get("aligned", 0), c.get("original", 0), c.get("unreadable", 0))
    return RecropResult(out, _counts(records), built)


def _counts(records: list[dict]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for r in records:
        c = counts.setdefault(r["split"], {"aligned": 0, "original": 0, "unreadable": 0})
        c[r["framing"]] += 1
    return counts


def _write_table(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["split", "name", "framing", "score"])
        w.writeheader()
        w.writerows(records)
    tmp.replace(path)
