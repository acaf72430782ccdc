"""FERPlus: ``fer2013.csv`` + ``fer2013new.csv`` (decoded once into a PNG cache), or the
``FER2013Train`` / ``FER2013Valid`` folders of Microsoft's ``generate_training_data.py``, with the
FER+ paper's label modes."""
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

from fer_pipeline.errors import UsageError
from fer_pipeline.labels import (FERPLUS_VOTE_COLUMNS, IGNORE, NUM_CLASSES, ferplus_majority,
                             ferplus_plurality, ferplus_soft, ferplus_vote_sample)
from stage1_image_encoder.sources.common import SourceImages, csv_rows, header_index, require_file

log = logging.getLogger(__name__)


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
    rows = csv_rows(path)
    _, header = next(rows)
    col = header_index(path, header, FERPLUS_COLUMNS)
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
        rows = csv_rows(fer_csv)
        _, header = next(rows)
        col = header_index(fer_csv, header, FER2013_COLUMNS)
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
    fer_csv = require_file(root / "fer2013.csv", f"FERPlus source {root}")
    new_csv = require_file(root / "fer2013new.csv", f"FERPlus source {root}")
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
        label_csv = require_file(folder_dir / "label.csv", f"FERPlus source {root}")
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
