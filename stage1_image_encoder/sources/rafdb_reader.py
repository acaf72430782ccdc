"""RAF-DB basic and a generic folder-per-class layout."""
from __future__ import annotations

from pathlib import Path

from fer_pipeline.errors import UsageError
from fer_pipeline.labels import IGNORE, folder_to_id, rafdb_to_id
from stage1_image_encoder.sources.common import IMAGE_EXTENSIONS


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
