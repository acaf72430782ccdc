"""``--neighbours VIDEO:FRAME``: the query parsed against the store, a chunked cosine scan
for the most similar face frames (``--exclude-query-video``: in the other videos only), and the
thumbnail strip (query first, then the hits).
"""
from __future__ import annotations

import difflib
import logging
from pathlib import Path

import numpy as np

from fer_pipeline.errors import UsageError
from fer_pipeline.io import atomic_path
from fer_pipeline.progress import progress
from fer_pipeline.store import LoadedStore

log = logging.getLogger(__name__)

SIMILARITY_CHUNK = 32768       # rows converted to float32 at a time for the cosine scan
TILE = 112                     # thumbnail side (px) in the neighbour strip
CAPTION = 44                   # caption band under each thumbnail (px)
PAD = 4


def parse_query(spec: str, data: LoadedStore) -> int:
    """``VIDEO:FRAME`` -> row of the loaded store; every bad query is a UsageError."""
    video, sep, frame_s = spec.rpartition(":")
    if not sep or not video:
        raise UsageError(f"--neighbours {spec!r}: expected VIDEO:FRAME, e.g. "
                         f"{data.videos[0] if data.videos else 'video'}:0")
    try:
        frame = int(frame_s)
    except ValueError:
        raise UsageError(f"--neighbours {spec!r}: FRAME must be an integer (0-based row)") from None
    if video not in data.videos:
        close = difflib.get_close_matches(video, data.videos, n=3)
        hint = f"; close names: {', '.join(close)}" if close else f" ({len(data)} videos in the store)"
        raise UsageError(f"--neighbours: video {video!r} is not in the store{hint}")
    i = data.index(video)
    s, T = int(data.offsets[i]), int(data.lengths()[i])
    if not 0 <= frame < T:
        raise UsageError(f"--neighbours: frame {frame} is out of range for {video} "
                         f"(0..{T - 1}, 0-based)")
    if not data.face[s + frame]:
        faces = np.flatnonzero(data.face[s:s + T])
        if faces.size:
            near = faces[np.argsort(np.abs(faces - frame), kind="stable")[:2]]
            hint = f"; nearest face frames: {', '.join(map(str, sorted(near.tolist())))}"
        else:
            hint = "; this video has no face frame at all"
        raise UsageError(f"--neighbours: {video} frame {frame} has no face (no embedding){hint}")
    return s + frame


def video_rows(data: LoadedStore, row: int) -> tuple[int, int]:
    """[start, end) rows of the video that holds ``row``."""
    i = int(np.searchsorted(data.offsets, row, side="right") - 1)
    start = int(data.offsets[i])
    return start, start + int(data.lengths()[i])


def nearest(data: LoadedStore, row: int, k: int,
            exclude_video: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` face rows most cosine-similar to ``row`` (itself excluded): (rows, similarity),
    most similar first, ties by row. ``exclude_video``: leave out every frame of ``row``'s own
    video (similar frames in other videos only); fewer than ``k`` rows when fewer remain."""
    skip = video_rows(data, row) if exclude_video else (row, row + 1)
    q = data.emb[row].astype(np.float32)
    q /= max(float(np.linalg.norm(q)), 1e-12)
    cand_rows, cand_sims = [], []
    n = len(data.label)
    with progress(total=n, desc="neighbours", unit="frame") as bar:
        for s in range(0, n, SIMILARITY_CHUNK):
            e = min(n, s + SIMILARITY_CHUNK)
            x = data.emb[s:e].astype(np.float32)                      # (C, D)
            norms = np.linalg.norm(x, axis=1)
            sim = (x @ q) / np.maximum(norms, 1e-12)                  # (C,)
            sim[~data.face[s:e]] = -np.inf
            a, b = max(s, skip[0]), min(e, skip[1])
            if a < b:
                sim[a - s:b - s] = -np.inf
            keep = np.flatnonzero(np.isfinite(sim))
            if keep.size > k:
                keep = keep[np.argpartition(-sim[keep], k - 1)[:k]]
            cand_rows.append(keep + s)
            cand_sims.append(sim[keep])
            bar.update(e - s)
    rows, sims = np.concatenate(cand_rows), np.concatenate(cand_sims)
    order = np.lexsort((rows, -sims))[:k]
    return rows[order], sims[order]


def locate(data: LoadedStore, row: int) -> tuple[str, int]:
    """Row of the loaded store -> (video, 0-based frame)."""
    i = int(np.searchsorted(data.offsets, row, side="right") - 1)
    return data.videos[i], row - int(data.offsets[i])


def strip_size(n_tiles: int) -> tuple[int, int]:
    """(width, height) in px of a thumbnail strip of ``n_tiles`` frames."""
    return n_tiles * (TILE + PAD) + PAD, TILE + CAPTION + 2 * PAD


def thumbnail_strip(tiles: list[dict], path: Path) -> Path:
    """One row of thumbnails, the query first (blue frame), each captioned with video, frame,
    similarity and label; a frame without a crop is a grey placeholder saying so."""
    from PIL import Image, ImageDraw, ImageFont

    W, H = strip_size(len(tiles))
    img = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for j, t in enumerate(tiles):
        x0, y0 = PAD + j * (TILE + PAD), PAD
        thumb = None
        if t["crop"] is not None:
            try:
                with Image.open(t["crop"]) as im:
                    thumb = im.convert("RGB").resize((TILE, TILE), Image.BILINEAR)
            except OSError as e:
                log.warning("%s: unreadable crop (%s); drawn as a placeholder", t["crop"], e)
        if thumb is None:
            draw.rectangle([x0, y0, x0 + TILE - 1, y0 + TILE - 1], fill=(200, 200, 200))
            draw.text((x0 + 6, y0 + TILE // 2 - 6), "no crop found", fill=(80, 80, 80), font=font)
        else:
            img.paste(thumb, (x0, y0))
        if j == 0:
            draw.rectangle([x0, y0, x0 + TILE - 1, y0 + TILE - 1], outline=(30, 90, 220), width=3)
        head = "query" if j == 0 else f"#{j}  sim {t['similarity']:.4f}"
        caption = [head, f"{t['video']}:{t['frame']}", t["label"]]
        for li, text in enumerate(caption):
            draw.text((x0 + 2, y0 + TILE + 2 + 13 * li), _fit(draw, text, font), fill="black",
                      font=font)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path


def _fit(draw, text: str, font) -> str:
    """Shorten ``text`` with an ellipsis until it fits a tile's width."""
    while len(text) > 1 and draw.textlength(text, font=font) > TILE - 4:
        text = text[:-2] + "…"
    return text
