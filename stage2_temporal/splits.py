"""Which videos train and which validate: the official Aff-Wild2 split, or random video-level
7:3 splits of all annotated videos (``X_left`` / ``X_right`` of one raw video stay together)."""
from __future__ import annotations

import re

import numpy as np

from pipeline.config import Config
from pipeline.store import LoadedStore


def _raw_name(video: str) -> str:
    return re.sub(r"_(left|right)$", "", video)


def kfold_split(videos: list[str], lengths: list[int], fold: int, val_ratio: float,
                seed: int) -> tuple[list[str], list[str]]:
    """One random video-level split: about ``val_ratio`` of the frames held out. The two people
    of a raw video (``X_left`` / ``X_right``) stay on the same side."""
    groups: dict[str, list[int]] = {}
    for i, v in enumerate(videos):
        groups.setdefault(_raw_name(v), []).append(i)
    names = sorted(groups)
    rng = np.random.default_rng([seed, 7919, fold])
    order = rng.permutation(len(names))
    total = sum(lengths)
    val, held = [], 0
    for g in order:
        if held >= val_ratio * total:
            break
        idx = groups[names[g]]
        val += idx
        held += sum(lengths[i] for i in idx)
    val_set = set(val)
    return ([videos[i] for i in range(len(videos)) if i not in val_set],
            [videos[i] for i in sorted(val_set)])


def select_split(loaded: LoadedStore, cfg: Config) -> tuple[list[int], list[int]]:
    """(train indices, val indices) into the loaded store for ``stage2.data.split``."""
    d = cfg.stage2.data
    if d.split == "official":
        train = [i for i in range(len(loaded)) if loaded.split_of(i) == "train"]
        val = [i for i in range(len(loaded)) if loaded.split_of(i) == "val"]
    else:
        pool = [i for i in range(len(loaded)) if loaded.split_of(i) in ("train", "val")]
        names = [loaded.videos[i] for i in pool]
        tr, va = kfold_split(names, [int(loaded.lengths()[i]) for i in pool], d.fold,
                             d.val_ratio, cfg.seed)
        train = [loaded.index(v) for v in tr]
        val = [loaded.index(v) for v in va]
    return train, val
