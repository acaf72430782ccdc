"""Counts over an embedding store (frames, faces, labels, encoder) and one row per video:
computed from the loaded store, printed as a table, written as JSON by ``--json``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fer_pipeline.labels import CLASSES, IGNORE, NUM_CLASSES
from fer_pipeline.store import LoadedStore


def label_name(label: int) -> str:
    return CLASSES[label] if 0 <= label < NUM_CLASSES else "unlabelled"


def store_stats(data: LoadedStore, meta: dict) -> dict:
    """Counts over the whole store and one row per video."""
    n = len(data.label)
    counts = np.bincount(data.label.astype(np.int64) - IGNORE, minlength=NUM_CLASSES + 1)
    per_video = []
    for i, video in enumerate(data.videos):
        s, e = int(data.offsets[i]), int(data.offsets[i + 1])
        lab, face = data.label[s:e], data.face[s:e]
        annotated = lab[lab != IGNORE]
        top = int(np.bincount(annotated.astype(np.int64), minlength=NUM_CLASSES).argmax()) \
            if annotated.size else IGNORE
        T = e - s
        per_video.append({
            "video": video, "split": data.split_of(i), "frames": T,
            "fps": float(data.attrs[i].get("fps", 0.0) or 0.0),
            "face_pct": 100.0 * face.sum() / T if T else 0.0,
            "annotated_pct": 100.0 * annotated.size / T if T else 0.0,
            "top_label": label_name(top),
        })
    return {
        "videos": len(data), "frames": n, "dim": data.dim, "encoder_key": data.encoder_key,
        "encoder": (meta.get("encoder") or {}).get("name", ""),
        "dtype": str(meta.get("dtype", data.emb.dtype)),
        "labels": {**{c: int(counts[1 + i]) for i, c in enumerate(CLASSES)},
                   "ignored (-1)": int(counts[0])},
        "face_frames": int(data.face.sum()),
        "no_face_pct": 100.0 * (n - int(data.face.sum())) / n if n else 0.0,
        "per_video": per_video,
    }


def format_stats(stats: dict, store: Path) -> str:
    n = stats["frames"]
    lines = [f"store        {store}",
             f"videos       {stats['videos']}",
             f"frames       {n}  ({stats['face_frames']} with a face, "
             f"{stats['no_face_pct']:.1f}% no face)",
             f"embedding    dim {stats['dim']}, {stats['dtype']}",
             f"encoder key  {stats['encoder_key']}"
             + (f"  ({stats['encoder']})" if stats["encoder"] else ""),
             "", "labels (all frames):"]
    width = max(len(k) for k in stats["labels"])
    for name, count in stats["labels"].items():
        lines.append(f"  {name:<{width}}  {count:>9}  {100.0 * count / n if n else 0.0:5.1f}%")
    rows = stats["per_video"]
    vw = max([len("video")] + [len(r["video"]) for r in rows])
    sw = max([len("split")] + [len(r["split"]) for r in rows])
    lines += ["", f"{'video':<{vw}}  {'split':<{sw}}  {'frames':>7}  {'fps':>6}  {'face %':>6}  "
              f"{'annotated %':>11}  most frequent label"]
    for r in rows:
        lines.append(f"{r['video']:<{vw}}  {r['split']:<{sw}}  {r['frames']:>7}  {r['fps']:>6.2f}  "
                     f"{r['face_pct']:>6.1f}  {r['annotated_pct']:>11.1f}  {r['top_label']}")
    return "\n".join(lines)
