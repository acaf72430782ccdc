"""Contact sheets of videos: one tile every N frames, each the face box of a ``predict`` CSV (or
the whole frame where it found no face), captioned with the frame number and time.

They are for annotating expressions by eye (tests/data/video_segments.csv was made with them),
so by default the tiles carry no prediction; ``--labels`` adds the predicted label under each
tile to look at a model's output instead.

    fer-pipeline predict ../shared/assets/videos/* --out /tmp/pred
    python scripts/contact_sheets.py ../shared/assets/videos/* --pred /tmp/pred --out /tmp/sheets
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stage0_preprocess.decode import iter_frames  # noqa: E402

TILE = 160
CAPTION = 18


def tile(frame: np.ndarray, row: pd.Series | None, text: str, below: str = "") -> np.ndarray:
    if row is not None and bool(row.get("has_face", False)):
        x1, y1, x2, y2 = (int(round(row[k])) for k in ("x1", "y1", "x2", "y2"))
        h, w = frame.shape[:2]
        crop = frame[max(0, y1):min(h, y2), max(0, x1):min(w, x2)]
    else:
        crop, text = frame, text + " (no face)"
    if crop.size == 0:
        crop = frame
    s = TILE / max(crop.shape[:2])
    crop = cv2.resize(crop, (max(1, int(crop.shape[1] * s)), max(1, int(crop.shape[0] * s))))
    out = np.full((TILE + CAPTION * (2 if below else 1), TILE, 3), 255, np.uint8)
    out[:crop.shape[0], :crop.shape[1]] = crop
    for i, t in enumerate([text, below] if below else [text]):
        cv2.putText(out, t, (2, TILE + CAPTION * (i + 1) - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return out


def sheet(video: Path, pred: pd.DataFrame | None, every: int, cols: int, labels: bool) -> np.ndarray:
    rows = pred.set_index("frame") if pred is not None else None
    tiles = []
    for f in iter_frames(video):
        frame = f.index + 1
        if (frame - 1) % every:
            continue
        row = rows.loc[frame] if rows is not None and frame in rows.index else None
        below = str(row["smoothed_label_name"]) if labels and row is not None else ""
        tiles.append(tile(f.image, row, f"{frame}  {f.time_s:.2f}s", below))
    if not tiles:
        raise SystemExit(f"{video}: no frames decoded")
    while len(tiles) % cols:
        tiles.append(np.full_like(tiles[0], 255))
    return np.vstack([np.hstack(tiles[i:i + cols]) for i in range(0, len(tiles), cols)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="+", type=Path)
    ap.add_argument("--pred", type=Path, help="folder of `fer-pipeline predict` CSVs (face boxes)")
    ap.add_argument("--out", type=Path, required=True, help="folder for <video>.png")
    ap.add_argument("--every", type=int, default=10, help="one tile every N frames")
    ap.add_argument("--cols", type=int, default=10)
    ap.add_argument("--labels", action="store_true", help="caption each tile with its predicted label")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for video in args.videos:
        csv = args.pred / f"{video.stem}.csv" if args.pred else None
        pred = pd.read_csv(csv) if csv is not None and csv.is_file() else None
        if args.labels and pred is None:
            raise SystemExit(f"--labels needs {csv}")
        png = args.out / f"{video.stem}.png"
        cv2.imwrite(str(png), sheet(video, pred, args.every, args.cols, args.labels))
        print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
