"""Which videos train and which validate (``stage2.data.split``), grouped by raw video so that
the two people of one video (``X_left`` / ``X_right``) always land on the same side:

- ``official``: the Aff-Wild2 Train_Set / Validation_Set of the annotations;
- ``kfold``: K disjoint folds of all annotated videos, balanced by frame count, that together
  hold every video exactly once; fold k validates, the other K - 1 train;
- ``random``: independent random draws holding out about ``val_ratio`` of the frames (the
  V-NAW paper's Table 1: 7:3 video splits, which may overlap from one draw to the next).

``select_ratio`` > 0 also carves a selection set out of the training videos: the kept
checkpoint, early stopping and the learning curve's selection score come from it, so the
reported validation F1 is never taken at an epoch chosen on the validation videos themselves.
"""
from __future__ import annotations

import re

import numpy as np

from fer_pipeline.config import Config
from fer_pipeline.store import LoadedStore, StoreIndex


def raw_name(video: str) -> str:
    return re.sub(r"_(left|right)$", "", video)


def _groups(videos: list[str], lengths: list[int]) -> tuple[list[str], dict[str, list[int]], dict[str, int]]:
    groups: dict[str, list[int]] = {}
    for i, v in enumerate(videos):
        groups.setdefault(raw_name(v), []).append(i)
    frames = {g: sum(lengths[i] for i in idx) for g, idx in groups.items()}
    return sorted(groups), groups, frames


def kfold_folds(videos: list[str], lengths: list[int], folds: int, seed: int) -> list[list[str]]:
    """K disjoint folds covering every video once: raw-video groups longest first (the seed
    orders groups of equal length), each into the fold with the fewest frames so far."""
    names, groups, frames = _groups(videos, lengths)
    if folds > len(names):
        raise ValueError(f"{folds} folds but only {len(names)} raw videos to spread over them")
    rng = np.random.default_rng([seed, 104729])
    order = [names[i] for i in rng.permutation(len(names))]
    order.sort(key=lambda g: -frames[g])                         # stable: ties keep the shuffle
    load = [0] * folds
    out: list[list[int]] = [[] for _ in range(folds)]
    for g in order:
        k = int(np.argmin(load))
        out[k] += groups[g]
        load[k] += frames[g]
    return [[videos[i] for i in sorted(f)] for f in out]


def random_split(videos: list[str], lengths: list[int], draw: int, val_ratio: float,
                 seed: int) -> tuple[list[str], list[str]]:
    """One random video-level split: about ``val_ratio`` of the frames held out."""
    names, groups, frames = _groups(videos, lengths)
    rng = np.random.default_rng([seed, 7919, draw])
    total = sum(lengths)
    val, held = [], 0
    for g in rng.permutation(len(names)):
        if held >= val_ratio * total:
            break
        val += groups[names[g]]
        held += frames[names[g]]
    val_set = set(val)
    return ([videos[i] for i in range(len(videos)) if i not in val_set],
            [videos[i] for i in sorted(val_set)])


def select_split(loaded: StoreIndex | LoadedStore, cfg: Config) -> tuple[list[int], list[int], list[int]]:
    """(train, val, selection) indices into the loaded store for ``stage2.data``; selection is
    empty unless ``select_ratio`` > 0 and something is chosen on it (``train.keep: best`` or
    early stopping); then it is carved out of the training videos."""
    d = cfg.stage2.data
    if d.split == "official":
        train = [i for i in range(len(loaded)) if loaded.split_of(i) == "train"]
        val = [i for i in range(len(loaded)) if loaded.split_of(i) == "val"]
    else:
        pool = [i for i in range(len(loaded)) if loaded.split_of(i) in ("train", "val")]
        names = [loaded.videos[i] for i in pool]
        lengths = [int(loaded.lengths()[i]) for i in pool]
        if d.split == "kfold":
            va = kfold_folds(names, lengths, d.folds, cfg.seed)[d.fold]
            tr = [v for v in names if v not in set(va)]
        else:
            tr, va = random_split(names, lengths, d.fold, d.val_ratio, cfg.seed)
        train = [loaded.index(v) for v in tr]
        val = [loaded.index(v) for v in va]
    select: list[int] = []
    t = cfg.stage2.train
    chooses = t.keep == "best" or t.early_stop > 0   # keep: last without early stopping chooses nothing
    if d.select_ratio > 0 and train and chooses:
        names = [loaded.videos[i] for i in train]
        keep, held = random_split(names, [int(loaded.lengths()[i]) for i in train], 0,
                                  d.select_ratio, cfg.seed + 1)
        if keep:                                   # never give every training video away
            train = [loaded.index(v) for v in keep]
            select = [loaded.index(v) for v in held]
    return train, val, select
