"""The 8-class Aff-Wild2 / ABAW expression taxonomy and every mapping into it.

This module is the single source of label ids. ``IGNORE`` (-1) means "not annotated" and is
excluded from losses and metrics; it is never folded into ``Other``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

CLASSES: tuple[str, ...] = (
    "Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other",
)
NUM_CLASSES = len(CLASSES)
IGNORE = -1
NEUTRAL, ANGER, DISGUST, FEAR, HAPPINESS, SADNESS, SURPRISE, OTHER = range(NUM_CLASSES)

# Header line of Aff-Wild2 EXPR annotation files and of ABAW submission files.
AFFWILD2_HEADER = ",".join(CLASSES)
SUBMISSION_HEADER = "image_location," + AFFWILD2_HEADER


def class_id(name: str) -> int:
    """Class id of a class name (case-insensitive, accepts 'happy'/'sad'/'angry' spellings)."""
    key = name.strip().lower()
    if key in _NAME_TO_ID:
        return _NAME_TO_ID[key]
    raise KeyError(f"unknown expression class name {name!r}; known: {', '.join(CLASSES)}")


_NAME_TO_ID: dict[str, int] = {c.lower(): i for i, c in enumerate(CLASSES)}
_NAME_TO_ID.update({
    "happy": HAPPINESS, "sad": SADNESS, "angry": ANGER, "surprised": SURPRISE,
    "fearful": FEAR, "disgusted": DISGUST, "contempt": OTHER,
})


def check_labels(labels: np.ndarray, source: str) -> np.ndarray:
    """Validate an int array of frame labels: every value must be in -1..7.

    Raises ``ValueError`` naming ``source`` and the first offending position.
    """
    labels = np.asarray(labels)
    bad = np.flatnonzero((labels < IGNORE) | (labels >= NUM_CLASSES))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{source}: label {int(labels[i])} at position {i + 1} is outside -1..{NUM_CLASSES - 1}"
            f" ({bad.size} bad value(s))")
    return labels.astype(np.int8)


# ---------------------------------------------------------------------------------------------
# FERPlus: fer2013new.csv vote columns, in file order.
FERPLUS_VOTE_COLUMNS: tuple[str, ...] = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
    "unknown", "NF",
)
# Vote column -> 8-class id; unknown / NF (not a face) have no class.
FERPLUS_TO_ID: dict[str, int] = {
    "neutral": NEUTRAL, "happiness": HAPPINESS, "surprise": SURPRISE, "sadness": SADNESS,
    "anger": ANGER, "disgust": DISGUST, "fear": FEAR, "contempt": OTHER,
    "unknown": IGNORE, "NF": IGNORE,
}


def _vote_row(votes: Sequence[float]) -> np.ndarray:
    votes = np.asarray(votes, dtype=np.float64)
    if votes.shape != (len(FERPLUS_VOTE_COLUMNS),):
        raise ValueError(f"FERPlus vote row must have {len(FERPLUS_VOTE_COLUMNS)} values, got {votes.shape}")
    return votes


def ferplus_plurality(votes: Sequence[float]) -> int:
    """8-class id of the most voted FERPlus column; -1 (drop) when unknown/NF wins or no votes.

    Ties are broken by the column order of ``FERPLUS_VOTE_COLUMNS`` (first wins), which is what
    ``numpy.argmax`` does on the vote row.
    """
    votes = _vote_row(votes)
    if votes.sum() <= 0:
        return IGNORE
    return FERPLUS_TO_ID[FERPLUS_VOTE_COLUMNS[int(np.argmax(votes))]]


def ferplus_majority(votes: Sequence[float]) -> int:
    """The FER+ paper's majority rule (Barsoum et al. 2016; Microsoft's ``ferplus.py``
    ``_process_data(mode='majority')``): drop single votes, keep the image only when one column
    has more than half of the remaining votes, and drop it when that column is unknown or NF.
    Returns the 8-class id, or -1 (drop)."""
    votes = _vote_row(votes).copy()
    votes[votes <= 1.0] = 0.0                         # a single vote is an outlier
    total = votes.sum()
    if total <= 0 or votes.max() <= 0.5 * total:
        return IGNORE
    return FERPLUS_TO_ID[FERPLUS_VOTE_COLUMNS[int(np.argmax(votes))]]


def ferplus_vote_sample(votes: Sequence[float], rng: np.random.Generator) -> int:
    """One annotator's label: a class drawn with the probabilities of the emotion votes
    (unknown/NF votes left out, contempt -> Other); -1 when no vote lands on a class."""
    p = ferplus_soft(votes)
    if p.sum() <= 0:
        return IGNORE
    return int(rng.choice(NUM_CLASSES, p=p))


def ferplus_soft(votes: Sequence[float]) -> np.ndarray:
    """Soft 8-class target from a FERPlus vote row (unknown/NF votes discarded, contempt->Other).

    Returns an all-zero vector when no vote lands on a class.
    """
    votes = _vote_row(votes)
    soft = np.zeros(NUM_CLASSES)
    for col, v in zip(FERPLUS_VOTE_COLUMNS, votes):
        cid = FERPLUS_TO_ID[col]
        if cid != IGNORE:
            soft[cid] += v
    total = soft.sum()
    return soft / total if total > 0 else soft


# ---------------------------------------------------------------------------------------------
# RAF-DB basic: list_patition_label.txt ids 1..7.
RAFDB_NAMES: tuple[str, ...] = ("Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral")
RAFDB_TO_ID: dict[int, int] = {i + 1: CLASSES.index(n) for i, n in enumerate(RAFDB_NAMES)}
ID_TO_RAFDB: dict[int, int] = {v: k for k, v in RAFDB_TO_ID.items()}


def rafdb_to_id(raf_label: int) -> int:
    if raf_label not in RAFDB_TO_ID:
        raise ValueError(f"RAF-DB basic label must be 1..7, got {raf_label}")
    return RAFDB_TO_ID[raf_label]


# ---------------------------------------------------------------------------------------------
# AffectNet: expression 0..10.
# 0 Neutral, 1 Happy, 2 Sad, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger, 7 Contempt, 8 None,
# 9 Uncertain, 10 Non-Face
CONTEMPT_AFFECTNET, NONE_AFFECTNET, UNCERTAIN_AFFECTNET, NONFACE_AFFECTNET = 7, 8, 9, 10


def affectnet_to_id(expression: int, none_to_other: bool = True) -> int:
    """8-class id of an AffectNet expression code; -1 (drop) for Uncertain/Non-Face
    (and for None when ``none_to_other`` is False)."""
    table = {0: NEUTRAL, 1: HAPPINESS, 2: SADNESS, 3: SURPRISE, 4: FEAR, 5: DISGUST, 6: ANGER,
             CONTEMPT_AFFECTNET: OTHER, NONE_AFFECTNET: OTHER if none_to_other else IGNORE,
             UNCERTAIN_AFFECTNET: IGNORE, NONFACE_AFFECTNET: IGNORE}
    if expression not in table:
        raise ValueError(f"AffectNet expression must be 0..10, got {expression}")
    return table[expression]


# ---------------------------------------------------------------------------------------------
# Folder-per-class datasets: folder name -> id through a config table, else the class names.
def folder_to_id(folder: str, class_map: Mapping[str, int] | None = None) -> int:
    if class_map:
        if folder in class_map:
            cid = int(class_map[folder])
            if not IGNORE <= cid < NUM_CLASSES:
                raise ValueError(f"class_map[{folder!r}] = {cid} is outside -1..{NUM_CLASSES - 1}")
            return cid
        raise KeyError(f"folder {folder!r} not in class_map (keys: {sorted(class_map)})")
    return class_id(folder)


# ---------------------------------------------------------------------------------------------
# CFC-SP cascade: coarse 5-way and negative 4-way label spaces.
COARSE_CLASSES: tuple[str, ...] = ("Neutral", "Happiness", "Surprise", "Other", "Negative")
NEGATIVE_CLASSES: tuple[str, ...] = ("Anger", "Disgust", "Fear", "Sadness")
COARSE_NEGATIVE = COARSE_CLASSES.index("Negative")
# index = 8-class id
TO_COARSE: tuple[int, ...] = (0, 4, 4, 4, 1, 4, 2, 3)
TO_NEGATIVE: tuple[int, ...] = (-1, 0, 1, 2, -1, 3, -1, -1)
# Inverse maps used to assemble 8-way predictions from the two heads.
COARSE_TO_ID: tuple[int, ...] = (NEUTRAL, HAPPINESS, SURPRISE, OTHER, IGNORE)
NEGATIVE_TO_ID: tuple[int, ...] = (ANGER, DISGUST, FEAR, SADNESS)


def to_coarse(labels: np.ndarray) -> np.ndarray:
    """8-class ids (with -1) -> coarse 5-way ids (with -1 kept)."""
    labels = np.asarray(labels)
    return np.where(labels >= 0, np.asarray(TO_COARSE)[np.clip(labels, 0, None)], IGNORE)


def to_negative(labels: np.ndarray) -> np.ndarray:
    """8-class ids -> negative 4-way ids; -1 for every non-negative or ignored frame."""
    labels = np.asarray(labels)
    return np.where(labels >= 0, np.asarray(TO_NEGATIVE)[np.clip(labels, 0, None)], IGNORE)
