"""Labelled still-image sets for encoder pretraining, in their official on-disk layouts, each
mapped to the 8 Aff-Wild2 ids by ``pipeline.labels``.

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

import csv
import hashlib
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.config import DataSource
from pipeline.errors import UsageError
from pipeline.labels import (FERPLUS_VOTE_COLUMNS, IGNORE, NUM_CLASSES, affectnet_to_id,
                             ferplus_majority, ferplus_plurality, ferplus_soft, ferplus_vote_sample,
                             folder_to_id, rafdb_to_id)

log = logging.getLogger(__name__)
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


# --------------------------------------------------------------------------------- CSV helpers
def _csv_rows(path: Path):
    """(line number, fields) for every non-blank row of a CSV file after its header, plus the
    stripped header itself as the first item."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        yield 1, [h.strip() for h in header] if header else []
        for row in reader:
            if row and any(v.strip() for v in row):
                yield reader.line_num, row


def _header_index(path: Path, header: list[str], expected: tuple[str, ...]) -> dict[str, int]:
    """Column positions of ``expected`` in ``header`` (any order, extra columns allowed)."""
    missing = [c for c in expected if c not in header]
    if missing:
        raise UsageError(f"{path}: line 1: header must have the columns {','.join(expected)}"
                         f" (missing {','.join(missing)}; got {','.join(header)[:120]!r})")
    return {c: header.index(c) for c in expected}


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise UsageError(f"{what}: {path} not found")
    return path


# ---------------------------------------------------------------------------------------- FERPlus
FER2013_COLUMNS = ("emotion", "pixels", "Usage")
FERPLUS_COLUMNS = ("Usage", "Image name") + FERPLUS_VOTE_COLUMNS
FER_USAGES = ("Training", "PublicTest", "PrivateTest")
FER_SPLIT_USAGE = {"train": "Training", "test": "PublicTest"}
FER_SIDE = 48
FER_CACHE_DIR = ".fer_pipeline_cache"
FER_CACHE_INDEX = "index.csv"          # written last: a cache folder without it is incomplete
# Folders written by FERPlus's generate_training_data.py, each with a label.csv.
FERPLUS_GENERATED = {"train": "FER2013Train", "test": "FER2013Valid"}


@dataclass
class _VoteRow:
    line: int
    usage: str
    name: str
    votes: np.ndarray     # (10,) in FERPLUS_VOTE_COLUMNS order


def _parse_votes(path: Path, line: int, values: list[str]) -> np.ndarray:
    try:
        votes = np.asarray([float(v) if v.strip() else 0.0 for v in values], np.float64)
    except ValueError:
        raise UsageError(f"{path}: line {line}: vote counts must be numbers, got {values}") from None
    if (votes < 0).any() or not np.isfinite(votes).all() or (votes != np.round(votes)).any():
        raise UsageError(f"{path}: line {line}: vote counts must be integers >= 0, got {values}")
    return votes


def _read_ferplus_votes(path: Path) -> list[_VoteRow]:
    """Every row of a fer2013new.csv-format file (including rows without an image name)."""
    rows = _csv_rows(path)
    _, header = next(rows)
    col = _header_index(path, header, FERPLUS_COLUMNS)
    out = []
    for line, row in rows:
        if len(row) < len(header):
            raise UsageError(f"{path}: line {line}: {len(row)} fields, expected {len(header)}")
        votes = _parse_votes(path, line, [row[col[c]] for c in FERPLUS_VOTE_COLUMNS])
        out.append(_VoteRow(line, row[col["Usage"]].strip(), row[col["Image name"]].strip(), votes))
    return out


def _fer_pixels(path: Path, line: int, text: str) -> np.ndarray:
    parts = text.split()
    if len(parts) != FER_SIDE * FER_SIDE:
        raise UsageError(f"{path}: line {line}: pixels has {len(parts)} values, expected"
                         f" {FER_SIDE * FER_SIDE} ({FER_SIDE}x{FER_SIDE} grey image)")
    try:
        px = np.asarray(parts, dtype=np.int64)
    except ValueError:
        raise UsageError(f"{path}: line {line}: pixels must be integers 0..255") from None
    if px.min() < 0 or px.max() > 255:
        raise UsageError(f"{path}: line {line}: pixels must be integers 0..255")
    return px.astype(np.uint8).reshape(FER_SIDE, FER_SIDE)


def _fer_cache_key(fer_csv: Path, new_csv: Path) -> str:
    """Changes whenever either CSV is replaced or edited (size + modification time)."""
    h = hashlib.sha1()
    for p in (fer_csv, new_csv):
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def _fer_cache_parents(root: Path) -> list[Path]:
    """Where FERPlus PNG caches may live: next to the CSVs, else (read-only dataset folder) in
    the user's cache directory, under a name derived from the dataset folder."""
    parents = [root / FER_CACHE_DIR]
    try:
        user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    except RuntimeError:                     # no home directory to be found
        return parents
    tag = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    return parents + [user / "fer_pipeline" / "ferplus" / tag]


def _materialise_fer2013(fer_csv: Path, new_csv: Path, final: Path) -> None:
    """Decode every named FER2013 image into ``final/<Usage>/<Image name>`` (PNG), with an
    ``index.csv`` (fer2013new.csv columns, Usage taken from fer2013.csv) written last.

    Everything is written into a private temporary folder that is renamed into place when
    complete, so an interrupted build is never mistaken for a cache."""
    new_rows = _read_ferplus_votes(new_csv)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{final.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for usage in FER_USAGES:
            (tmp / usage).mkdir()
        index = []
        rows = _csv_rows(fer_csv)
        _, header = next(rows)
        col = _header_index(fer_csv, header, FER2013_COLUMNS)
        k = 0
        for line, row in rows:
            if k >= len(new_rows):
                extra = 1 + sum(1 for _ in rows)
                raise UsageError(
                    f"{fer_csv} has {k + extra} image rows but {new_csv} has {len(new_rows)}:"
                    f" the two files must list the same FER2013 images in the same order")
            vote = new_rows[k]
            k += 1
            if len(row) < len(header):
                raise UsageError(f"{fer_csv}: line {line}: {len(row)} fields, expected {len(header)}")
            usage = row[col["Usage"]].strip()
            if usage not in FER_USAGES:
                raise UsageError(f"{fer_csv}: line {line}: Usage {usage!r} is not one of"
                                 f" {', '.join(FER_USAGES)}")
            if vote.usage and vote.usage != usage:
                raise UsageError(
                    f"{new_csv}: line {vote.line}: Usage {vote.usage!r} but {fer_csv} line {line}"
                    f" says {usage!r}: the two files are not in the same row order")
            pixels = _fer_pixels(fer_csv, line, row[col["pixels"]])
            if not vote.name:
                continue                     # FERPlus dropped this image
            if Path(vote.name).name != vote.name:
                raise UsageError(f"{new_csv}: line {vote.line}: image name {vote.name!r} is not a"
                                 f" plain file name")
            out = tmp / usage / vote.name
            if not cv2.imwrite(str(out), pixels):
                raise UsageError(f"cannot write {out} (FERPlus image cache)")
            index.append([usage, vote.name] + [f"{v:g}" for v in vote.votes])
        if k != len(new_rows):
            raise UsageError(
                f"{fer_csv} has {k} image rows but {new_csv} has {len(new_rows)}: the two files"
                f" must list the same FER2013 images in the same order")
        with open(tmp / FER_CACHE_INDEX, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(FERPLUS_COLUMNS)
            w.writerows(index)
        if final.exists():                   # an incomplete cache from an interrupted build
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / FER_CACHE_INDEX).is_file():   # not a concurrent build that won
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def fer2013_cache(root: Path) -> Path:
    """Folder holding ``<Usage>/<Image name>`` PNGs decoded from ``fer2013.csv`` and the
    ``index.csv`` vote table, built on first use and reused while both CSVs are unchanged."""
    fer_csv = _require_file(root / "fer2013.csv", f"FERPlus source {root}")
    new_csv = _require_file(root / "fer2013new.csv", f"FERPlus source {root}")
    key = _fer_cache_key(fer_csv, new_csv)
    parents = _fer_cache_parents(root)
    for parent in parents:
        if (parent / key / FER_CACHE_INDEX).is_file():
            return parent / key
    for parent in parents:
        try:
            parent.mkdir(parents=True, exist_ok=True)
            if not os.access(parent, os.W_OK):
                continue
        except OSError:
            continue
        log.info("FERPlus: decoding %s into PNGs under %s (once)", fer_csv, parent / key)
        _materialise_fer2013(fer_csv, new_csv, parent / key)
        return parent / key
    raise UsageError(f"FERPlus source {root}: no writable folder for the image cache"
                     f" (tried {', '.join(str(p) for p in parents)})")


def _read_generated_labels(path: Path) -> list[_VoteRow]:
    """label.csv of a generate_training_data.py folder: ``name,votes x10`` as the script writes
    it, or ``name,"(0, 0, 48, 48)",votes x10`` as shipped in the FERPlus repository."""
    out = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        for row in reader:
            if not row or not any(v.strip() for v in row):
                continue
            n = len(FERPLUS_VOTE_COLUMNS)
            boxed = len(row) > 1 and row[1].strip().startswith("(")
            if len(row) != (n + 2 if boxed else n + 1) or not row[0].strip():
                raise UsageError(f"{path}: line {reader.line_num}: expected '<image>.png,"
                                 f"[face box,]{','.join(FERPLUS_VOTE_COLUMNS)}', got {len(row)} fields")
            out.append(_VoteRow(reader.line_num, "", row[0].strip(),
                                _parse_votes(path, reader.line_num, row[-n:])))
    return out


FERPLUS_LABEL_MODES = ("majority", "plurality", "soft", "vote_sample")


def _ferplus_label(votes: np.ndarray, mode: str, rng: np.random.Generator) -> int:
    """Hard label of one vote row under a label mode (-1 = leave the image out)."""
    if mode == "majority":
        return ferplus_majority(votes)
    if mode in ("plurality", "soft"):
        return ferplus_plurality(votes)
    # vote_sample: the images the majority rule keeps, each with one label drawn from its votes
    return ferplus_vote_sample(votes, rng) if ferplus_majority(votes) != IGNORE else IGNORE


def _ferplus_select(rows: list[_VoteRow], folder_of, label_mode: str = "majority",
                    sample_seed: int = 0, source: Path | None = None) -> SourceImages:
    """Images and labels of one split under ``label_mode`` (see ``ferplus``). Rows whose votes
    sum to 0 and rows whose image file is missing are data errors: skipped, counted, and the
    first few named with their file and line."""
    if label_mode not in FERPLUS_LABEL_MODES:
        raise ValueError(f"label_mode must be one of {FERPLUS_LABEL_MODES}, got {label_mode!r}")
    rng = np.random.default_rng(sample_seed)
    paths, labels, soft = [], [], []
    dropped, bad = 0, []
    for r in rows:
        if r.votes.sum() <= 0:
            bad.append(f"line {r.line}: {r.name or '?'} has no votes (they sum to 0)")
            continue
        cid = _ferplus_label(r.votes, label_mode, rng)
        if cid == IGNORE:
            dropped += 1
            continue
        path = folder_of(r) / r.name
        if not path.is_file():
            bad.append(f"line {r.line}: image {path} not found")
            continue
        paths.append(str(path))
        labels.append(cid)
        if label_mode == "soft":
            soft.append(ferplus_soft(r.votes))
    where = f"{source}: " if source else ""
    for msg in bad[:5]:
        log.warning("FERPlus: %s%s (skipped)", where, msg)
    if bad:
        log.warning("FERPlus: %s%d row(s) skipped (no votes or missing image)", where, len(bad))
    if dropped:
        log.info("FERPlus: %d images left out by the %s rule (no clear label, or unknown / "
                 "not-a-face)", dropped, "majority" if label_mode == "vote_sample" else label_mode)
    return SourceImages(paths, labels,
                        np.asarray(soft, np.float32).reshape(-1, NUM_CLASSES)
                        if label_mode == "soft" else None, skipped=len(bad))


def ferplus(root: Path, split: str, label_mode: str = "majority", sample_seed: int = 0) -> SourceImages:
    """FERPlus: the original ``fer2013.csv`` (48x48 grey pixels as text) with Microsoft's
    ``fer2013new.csv`` (10 annotator votes per image, same row order).

    Labels (contempt -> Other everywhere):

    - ``majority`` (default): the FER+ paper's rule; single votes dropped, an image kept only
      when one column has more than half of the remaining votes, unknown / not-a-face dropped;
    - ``plurality``: the most voted column (ties: the earlier column), unknown / NF dropped;
    - ``soft``: the plurality images, with the vote distribution over the 8 classes as target;
    - ``vote_sample``: the majority images, each labelled with one class drawn (seeded by
      ``sample_seed``) from its own votes: real annotator noise.

    The test split is always labelled by the majority rule, whatever ``label_mode`` says.
    Train = ``Training``, test = ``PublicTest``; ``PrivateTest`` is kept out for final testing.

    The pixels are decoded once into PNGs (see ``fer2013_cache``). Without the two CSVs, the
    folders written by FERPlus's ``generate_training_data.py`` are read instead:
    ``<root>/FER2013Train`` and ``<root>/FER2013Valid``, each with its ``label.csv``.
    """
    if split not in FER_SPLIT_USAGE:
        raise ValueError(f"split must be train or test, got {split!r}")
    if not (root / "fer2013.csv").is_file() and (root / FERPLUS_GENERATED["train"] / "label.csv").is_file():
        folder_dir = root / FERPLUS_GENERATED[split]
        label_csv = _require_file(folder_dir / "label.csv", f"FERPlus source {root}")
        rows = _read_generated_labels(label_csv)
        out = _ferplus_select(rows, lambda r: folder_dir, label_mode, sample_seed, label_csv)
        if rows and not out.paths and out.skipped:
            raise UsageError(f"FERPlus source {root}: {folder_dir} has a label.csv but not its PNGs;"
                             f" run FERPlus's generate_training_data.py, or put fer2013.csv and"
                             f" fer2013new.csv in {root}")
        return out
    if not (root / "fer2013.csv").is_file():
        raise UsageError(f"FERPlus source {root}: {root / 'fer2013.csv'} not found (expected"
                         f" fer2013.csv + fer2013new.csv, or FER2013Train/label.csv with its PNGs)")
    cache = fer2013_cache(root)
    usage = FER_SPLIT_USAGE[split]
    rows = [r for r in _read_ferplus_votes(cache / FER_CACHE_INDEX) if r.usage == usage and r.name]
    return _ferplus_select(rows, lambda r: cache / r.usage, label_mode, sample_seed,
                           cache / FER_CACHE_INDEX)


# -------------------------------------------------------------------------------------- AffectNet
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
    path = _require_file(root / "Manually_Annotated_file_lists" / AFFECTNET_LISTS[split],
                         f"AffectNet source {root}")
    images = root / "Manually_Annotated_Images"
    rows = _csv_rows(path)
    _, header = next(rows)
    col = _header_index(path, header, AFFECTNET_COLUMNS)
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


# ----------------------------------------------------------------------------------------- mixing
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
