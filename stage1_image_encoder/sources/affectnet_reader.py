"""AffectNet (manually annotated part) with its face boxes."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fer_pipeline.errors import UsageError
from fer_pipeline.labels import IGNORE, affectnet_to_id
from stage1_image_encoder.sources.common import SourceImages, csv_rows, header_index, require_file

log = logging.getLogger(__name__)


AFFECTNET_COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
                     "facial_landmarks", "expression", "valence", "arousal")
AFFECTNET_LISTS = {"train": "training.csv", "test": "validation.csv"}
AFFECTNET_BOX = ("face_x", "face_y", "face_width", "face_height")


def affectnet(root: Path, split: str, none_to_other: bool = True) -> SourceImages:
    """AffectNet (manually annotated part): ``Manually_Annotated_file_lists/{training,
    validation}.csv`` with images under ``Manually_Annotated_Images/<subDirectory_filePath>``.

    Expression 0..10 is mapped by ``affectnet_to_id`` (Contempt -> Other; None -> Other, or
    dropped with ``none_to_other=False``; Uncertain / Non-Face dropped). Each image comes with
    its face box (face_x, face_y, face_width, face_height), cropped by the loader before any
    resize or augmentation. Train = training.csv, test = validation.csv."""
    if split not in AFFECTNET_LISTS:
        raise ValueError(f"split must be train or test, got {split!r}")
    path = require_file(root / "Manually_Annotated_file_lists" / AFFECTNET_LISTS[split],
                         f"AffectNet source {root}")
    images = root / "Manually_Annotated_Images"
    rows = csv_rows(path)
    _, header = next(rows)
    col = header_index(path, header, AFFECTNET_COLUMNS)
    need = max(col[c] for c in ("subDirectory_filePath", "expression", *AFFECTNET_BOX)) + 1
    paths, labels, boxes = [], [], []
    dropped = 0
    for line, row in rows:
        if len(row) < need:
            raise UsageError(f"{path}: line {line}: {len(row)} fields, expected {len(header)}")
        raw = row[col["expression"]].strip()
        try:
            expr = int(raw)
        except ValueError:
            raise UsageError(f"{path}: line {line}: expression {raw!r} is not an integer 0..10") from None
        if not 0 <= expr <= 10:
            raise UsageError(f"{path}: line {line}: expression {expr} is outside 0..10")
        cid = affectnet_to_id(expr, none_to_other)
        if cid == IGNORE:
            dropped += 1
            continue
        try:
            box = [float(row[col[c]]) for c in AFFECTNET_BOX]
        except ValueError:
            raise UsageError(f"{path}: line {line}: face box"
                             f" {','.join(row[col[c]] for c in AFFECTNET_BOX)!r} is not numeric") from None
        paths.append(str(images / row[col["subDirectory_filePath"]].strip()))
        labels.append(cid)
        boxes.append(box)
    if dropped:
        log.info("AffectNet %s: %d images dropped (Uncertain / Non-Face%s)", path.name, dropped,
                 "" if none_to_other else " / None")
    return SourceImages(paths, labels, boxes=np.asarray(boxes, np.float32).reshape(-1, 4))
