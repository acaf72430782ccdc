"""Labelled still-image sets for encoder pretraining, in their official on-disk layouts, each
mapped to the 8 Aff-Wild2 ids by ``pipeline.labels``.

An adapter returns ``(paths, labels)`` for a split; ``build_image_sets`` mixes the configured
sources with per-source sampling weights.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import DataSource
from pipeline.errors import UsageError
from pipeline.labels import IGNORE, folder_to_id, rafdb_to_id

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class ImageList:
    paths: list[str]
    labels: np.ndarray        # (N,) int64 8-class ids
    source: np.ndarray        # (N,) int64 index of the source each image came from

    def __len__(self) -> int:
        return len(self.paths)


def rafdb(root: Path, split: str) -> tuple[list[str], list[int]]:
    """RAF-DB basic: ``basic/EmoLabel/list_patition_label.txt`` (``train_00001.jpg 5``, ids 1..7)
    with aligned images ``basic/Image/aligned/train_00001_aligned.jpg``."""
    base = root / "basic" if (root / "basic").is_dir() else root
    listing = base / "EmoLabel" / "list_patition_label.txt"
    if not listing.is_file():
        raise UsageError(f"RAF-DB source {root}: {listing} not found")
    prefix = "train" if split == "train" else "test"
    paths, labels = [], []
    for lineno, line in enumerate(listing.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit():
            raise UsageError(f"{listing}: line {lineno} is not '<image> <label 1..7>': {line[:60]!r}")
        name, raf = parts
        if not name.startswith(prefix):
            continue
        try:
            cid = rafdb_to_id(int(raf))
        except ValueError as e:
            raise UsageError(f"{listing}: line {lineno}: {e}") from None
        stem = Path(name).stem
        paths.append(str(base / "Image" / "aligned" / f"{stem}_aligned.jpg"))
        labels.append(cid)
    return paths, labels


def folder(root: Path, split: str, class_map: dict[str, int] | None) -> tuple[list[str], list[int]]:
    """``<root>/<split>/<class>/*.jpg`` (split ``test`` also found as ``val``)."""
    names = ["train"] if split == "train" else ["test", "val", "validation"]
    split_dir = next((root / n for n in names if (root / n).is_dir()), None)
    if split_dir is None:
        raise UsageError(f"folder source {root}: no {'/'.join(names)} sub-folder")
    paths, labels = [], []
    for cls_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        try:
            cid = folder_to_id(cls_dir.name, class_map)
        except (KeyError, ValueError) as e:
            raise UsageError(f"folder source {cls_dir}: {e}") from None
        if cid == IGNORE:
            continue
        for f in sorted(cls_dir.iterdir()):
            if f.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(str(f))
                labels.append(cid)
    return paths, labels


def read_source(src: DataSource, split: str) -> tuple[list[str], list[int]]:
    root = Path(src.root)
    if not root.is_dir():
        raise UsageError(f"stage1 data source not found: {root}")
    if src.format == "rafdb":
        return rafdb(root, split)
    return folder(root, split, src.class_map)


def build_image_sets(sources: list[DataSource]) -> tuple[ImageList, ImageList, np.ndarray]:
    """(train list, test list, per-image sampling weights of the train list).

    A source's weight is spread over its images, so with weights (2, 1) two thirds of the
    draws come from the first source whatever the sizes."""
    if not sources:
        raise UsageError("stage1.data.sources is empty: configure at least one image set")
    lists = {}
    for split in ("train", "test"):
        paths, labels, owner = [], [], []
        for i, src in enumerate(sources):
            p, y = read_source(src, split)
            log.info("source %d (%s, %s): %d %s images", i, src.format, src.root, len(p), split)
            paths += p
            labels += y
            owner += [i] * len(p)
        lists[split] = ImageList(paths, np.asarray(labels, np.int64), np.asarray(owner, np.int64))
    train = lists["train"]
    if not len(train):
        raise UsageError("stage1: the configured sources hold no training images")
    counts = np.bincount(train.source, minlength=len(sources))
    weights = np.asarray([sources[s].weight / counts[s] for s in train.source], np.float64)
    return train, lists["test"], weights
