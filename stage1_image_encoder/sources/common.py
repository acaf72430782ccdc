"""Shared pieces of the image-set adapters: the lists they return and CSV helpers that name
the file and line of every problem."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer_pipeline.errors import UsageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class ImageList:
    paths: list[str]
    labels: np.ndarray        # (N,) int64 8-class ids
    source: np.ndarray        # (N,) int64 index of the source each image came from
    # (N, 8) float32 soft targets, each row summing to 1; sources without soft labels get the
    # one-hot row of their hard label. None when no configured source has soft labels.
    soft: np.ndarray | None = None
    # (N, 4) float32 face boxes x, y, w, h in pixels of the stored image, cropped before any
    # transform; a NaN row means "use the whole image". None when no source has boxes.
    boxes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class SourceImages:
    """One split of one source, as an adapter with extras returns it."""
    paths: list[str]
    labels: list[int]
    soft: np.ndarray | None = None     # (N, 8) float32, or None
    boxes: np.ndarray | None = None    # (N, 4) float32 x, y, w, h, or None
    skipped: int = 0                   # rows left out as data errors (named in the log)

    def __len__(self) -> int:
        return len(self.paths)



def csv_rows(path: Path):
    """(line number, fields) for every non-blank row of a CSV file after its header, plus the
    stripped header itself as the first item."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        yield 1, [h.strip() for h in header] if header else []
        for row in reader:
            if row and any(v.strip() for v in row):
                yield reader.line_num, row


def header_index(path: Path, header: list[str], expected: tuple[str, ...]) -> dict[str, int]:
    """Column positions of ``expected`` in ``header`` (any order, extra columns allowed)."""
    missing = [c for c in expected if c not in header]
    if missing:
        raise UsageError(f"{path}: line 1: header must have the columns {','.join(expected)}"
                         f" (missing {','.join(missing)}; got {','.join(header)[:120]!r})")
    return {c: header.index(c) for c in expected}


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise UsageError(f"{what}: {path} not found")
    return path
