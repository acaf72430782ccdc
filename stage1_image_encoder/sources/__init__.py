"""Labelled still-image sets for encoder pretraining, in their official on-disk layouts, each
mapped to the 8 Aff-Wild2 ids by ``fer_pipeline.labels``.

An adapter reads one split (``train`` or ``test``) of one source and returns ``(paths, labels)``
or, when it has more to say, a ``SourceImages`` with soft targets and/or face boxes.
``build_image_sets`` mixes the configured sources with per-source sampling weights.

Splits per format:

- ``rafdb``: the ``train_*`` / ``test_*`` rows of ``list_patition_label.txt``.
- ``folder``: ``<root>/train`` / ``<root>/test`` (or ``val``, ``validation``).
- ``ferplus``: FER2013 ``Training`` / ``PublicTest``. ``PrivateTest`` is never read here: it is
  left untouched for final testing.
- ``affectnet``: ``training.csv`` / ``validation.csv`` (AffectNet's test set is not public).

Images labelled "no class" (FERPlus unknown / not-a-face majority, AffectNet Uncertain /
Non-Face, and None with ``none_to_other: false``) are left out of the lists altogether.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fer_pipeline.config import DataSource
from fer_pipeline.errors import UsageError
from fer_pipeline.labels import NUM_CLASSES
from stage1_image_encoder.sources.affectnet_reader import affectnet
from stage1_image_encoder.sources.common import IMAGE_EXTENSIONS, ImageList, SourceImages
from stage1_image_encoder.sources.ferplus_reader import FER_CACHE_DIR, FER_CACHE_INDEX, ferplus
from stage1_image_encoder.sources.rafdb_reader import folder, rafdb

log = logging.getLogger(__name__)

__all__ = ["ImageList", "SourceImages", "IMAGE_EXTENSIONS", "build_image_sets", "read_source",
           "rafdb", "folder", "ferplus", "affectnet", "FER_CACHE_DIR", "FER_CACHE_INDEX"]


def read_source(src: DataSource, split: str) -> SourceImages:
    root = Path(src.root)
    if not root.is_dir():
        raise UsageError(f"stage1 data source not found: {root}")
    if src.format == "rafdb":
        out = rafdb(root, split)
    elif src.format == "ferplus":
        out = ferplus(root, split, src.label_mode if split == "train" else "majority",
                      src.sample_seed)
    elif src.format == "affectnet":
        out = affectnet(root, split, src.none_to_other)
    else:
        out = folder(root, split, src.class_map)
    return out if isinstance(out, SourceImages) else SourceImages(*out)


def _mix(parts: list[SourceImages]) -> ImageList:
    paths = [p for part in parts for p in part.paths]
    labels = np.asarray([y for part in parts for y in part.labels], np.int64)
    owner = np.concatenate([np.full(len(part), i, np.int64) for i, part in enumerate(parts)]
                           or [np.zeros(0, np.int64)])
    soft = boxes = None
    if any(part.soft is not None for part in parts):
        blocks = []
        for part in parts:
            if part.soft is not None:
                blocks.append(np.asarray(part.soft, np.float32).reshape(len(part), NUM_CLASSES))
            else:
                blocks.append(np.eye(NUM_CLASSES, dtype=np.float32)[np.asarray(part.labels, np.int64)]
                              .reshape(len(part), NUM_CLASSES))
        soft = np.concatenate(blocks)
    if any(part.boxes is not None for part in parts):
        boxes = np.concatenate([
            np.asarray(part.boxes, np.float32).reshape(len(part), 4) if part.boxes is not None
            else np.full((len(part), 4), np.nan, np.float32) for part in parts])
    return ImageList(paths, labels, owner, soft, boxes)


def build_image_sets(sources: list[DataSource]) -> tuple[ImageList, ImageList, np.ndarray]:
    """(train list, test list, per-image sampling weights of the train list).

    A source's weight is spread over its images, so with weights (2, 1) two thirds of the
    draws come from the first source whatever the sizes. ``soft`` / ``boxes`` are filled when
    at least one source provides them (one-hot rows / NaN boxes for the others)."""
    if not sources:
        raise UsageError("stage1.data.sources is empty: configure at least one image set")
    lists = {}
    for split in ("train", "test"):
        parts = []
        for i, src in enumerate(sources):
            part = read_source(src, split)
            log.info("source %d (%s, %s): %d %s images", i, src.format, src.root, len(part), split)
            parts.append(part)
        lists[split] = _mix(parts)
    train = lists["train"]
    if not len(train):
        raise UsageError("stage1: the configured sources hold no training images")
    counts = np.bincount(train.source, minlength=len(sources))
    weights = np.asarray([sources[s].weight / counts[s] for s in train.source], np.float64)
    return train, lists["test"], weights
