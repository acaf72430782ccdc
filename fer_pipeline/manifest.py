"""The frame manifest (stage 0 -> stage 1 contract, SPEC §4).

One parquet row per decoded frame of every video, describing the main face:
``video, frame (1-based), time_s, has_face, det_score, x1, y1, x2, y2, lmk (10 floats),
crop_path, label (int8, -1 if none), split``. Frames without a face keep their row.
``crop_path`` is relative to the manifest's folder when the crop lives under it, else absolute.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fer_pipeline.errors import UsageError
from fer_pipeline.io import write_parquet

COLUMNS = ["video", "frame", "time_s", "has_face", "det_score", "x1", "y1", "x2", "y2", "lmk",
           "crop_path", "label", "split"]
DTYPES = {"video": "string", "frame": "int32", "time_s": "float64", "has_face": "bool",
          "det_score": "float32", "x1": "float32", "y1": "float32", "x2": "float32",
          "y2": "float32", "crop_path": "string", "label": "int8", "split": "string"}
SPLITS = {"Train_Set": "train", "Validation_Set": "val", "Test_Set": "test"}


def empty_rows(video: str, n_frames: int, split: str, times: np.ndarray) -> pd.DataFrame:
    """Manifest rows for a video with no face information yet."""
    nan = np.full(n_frames, np.nan, dtype=np.float32)
    return pd.DataFrame({
        "video": video, "frame": np.arange(1, n_frames + 1, dtype=np.int32),
        "time_s": np.asarray(times, dtype=np.float64), "has_face": np.zeros(n_frames, bool),
        "det_score": nan, "x1": nan, "y1": nan, "x2": nan, "y2": nan,
        "lmk": [[float("nan")] * 10 for _ in range(n_frames)],
        "crop_path": pd.array([None] * n_frames, dtype="string"),
        "label": np.full(n_frames, -1, dtype=np.int8), "split": split,
    })


def normalise(df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"manifest lacks columns {missing}")
    df = df[COLUMNS].astype(DTYPES)
    return df.sort_values(["video", "frame"], kind="stable").reset_index(drop=True)


def write_manifest(path: str | Path, frames: list[pd.DataFrame]) -> Path:
    df = normalise(pd.concat(frames, ignore_index=True)) if frames else normalise(
        empty_rows("", 0, "", np.zeros(0)))
    return write_parquet(path, df)


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read and validate a manifest; ``crop_path`` comes back absolute."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"manifest not found: {path} (run `fer-pipeline stage0 ...` first)")
    df = pd.read_parquet(path)
    try:
        df = normalise(df)
    except (ValueError, TypeError) as e:
        raise UsageError(f"{path}: not a frame manifest ({e})") from None
    base = path.parent.resolve()
    crop = df["crop_path"]
    rel = crop.notna() & ~crop.fillna("").str.startswith("/")
    df.loc[rel, "crop_path"] = [str(base / p) for p in crop[rel]]
    return df


def relative_to(path: str | Path, base: str | Path) -> str:
    """``path`` relative to ``base`` when inside it, else absolute."""
    path, base = Path(path).resolve(), Path(base).resolve()
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)
