"""Aff-Wild2 EXPR annotation files.

Format: the first line is the class-name header (``Neutral,Anger,...,Other``), then one integer
per video frame; line k+1 is frame k (1-based), whose crop is ``cropped_aligned/<video>/
{k:05d}.jpg``. ``-1`` means not annotated.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fer_pipeline.errors import InputError
from fer_pipeline.labels import CLASSES, IGNORE, NUM_CLASSES


def parse_expr_annotation(path: str | Path) -> np.ndarray:
    """Per-frame labels (int8, -1..7) of one annotation file.

    Raises ``InputError`` naming the file and line for a missing header, a non-integer line or
    a label outside -1..7.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, f"cannot read annotation file ({e.__class__.__name__})") from None
    if not lines:
        raise InputError(path, "annotation file is empty")
    header = [h.strip().lower() for h in lines[0].split(",")]
    if header != [c.lower() for c in CLASSES]:
        raise InputError(path, f"line 1 must be the class header {','.join(CLASSES)!r}, "
                               f"got {lines[0][:60]!r}")
    values = []
    for lineno, raw in enumerate(lines[1:], start=2):
        text = raw.strip()
        if not text:
            if lineno == len(lines):  # tolerate one blank trailing line
                continue
            raise InputError(path, f"line {lineno} is empty")
        try:
            v = int(text)
        except ValueError:
            raise InputError(path, f"line {lineno}: {text[:30]!r} is not an integer label") from None
        if not IGNORE <= v < NUM_CLASSES:
            raise InputError(path, f"line {lineno}: label {v} is outside -1..{NUM_CLASSES - 1}")
        values.append(v)
    if not values:
        raise InputError(path, "annotation file has a header but no frame labels")
    return np.asarray(values, dtype=np.int8)


def write_expr_annotation(path: str | Path, labels: np.ndarray) -> None:
    """Inverse of :func:`parse_expr_annotation` (used for fixtures and exports)."""
    from fer_pipeline.io import write_text

    write_text(path, ",".join(CLASSES) + "\n" + "".join(f"{int(v)}\n" for v in labels))
