"""Writing the embedding store: creating it, and writing each video whole or not at all.

Several writers may share a store (ranks of one run, or separate runs): nothing a writer does
deletes what another owns. The store is created idempotently under a store lock
(``<store>/.locks/store.lock``, also taken for every root-attribute change); each video is
written, under its own lock, into ``<store>/.staging/<video>@<id>`` and renamed into
``videos/<video>`` complete with its marker, so a reader sees a video whole or not at all and a
killed writer leaves only staging debris (removed by the next writer of that video). A second
writer of a video that became complete meanwhile skips it (``write_video(replace=False)``).
"""
from __future__ import annotations

import datetime as _dt
import errno
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from fer_pipeline.errors import UsageError
from fer_pipeline.labels import check_labels
from fer_pipeline.store.layout import (FORMAT, LOCKS, STAGING, S, StoreBase, StoreKeyError,
                                       chunk_rows)


def _store_lock(path: Path):
    """The store lock (creation, root-attribute changes); a per-video lock guards each write."""
    from filelock import FileLock

    (path / LOCKS).mkdir(parents=True, exist_ok=True)
    return FileLock(path / LOCKS / "store.lock")


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``), so a reader never finds
    a rewritten video missing; False where the system or file system cannot."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


class StoreWriter(StoreBase):
    """Creation, root attributes and per-video writes of a store (see the module docstring)."""

    @classmethod
    def create_or_open(cls: type[S], path: str | Path, encoder_key: str, encoder_meta: dict[str, Any],
                       dim: int) -> S:
        """Open a store for writing; create it if absent (idempotent, under the store lock, so
        concurrent writers meet one store). Refuses a store of another encoder, a path that is a
        file, and a non-empty folder that is not a store."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise UsageError(f"{path}: is a file, not a store folder (pass a folder to --store)")

        def foreign() -> bool:    # hidden entries: locks, staging, other writers' probe files
            return not (path / "zarr.json").exists() and path.is_dir() and \
                any(p.name != "videos" and not p.name.startswith(".") for p in path.iterdir())

        if foreign():
            raise UsageError(f"{path}: exists, is not empty and is not an embedding store")
        with _store_lock(path):   # again under the lock: another writer may be creating it
            if foreign():
                raise UsageError(f"{path}: exists, is not empty and is not an embedding store")
            if not (path / "zarr.json").exists():    # videos/ first: root zarr.json says "ready"
                zarr.open_group(str(path / "videos"), mode="a", zarr_format=3)
                zarr.open_group(str(path), mode="a", zarr_format=3, attributes={
                    "format": FORMAT, "encoder_key": encoder_key, "encoder": encoder_meta,
                    "dim": int(dim), "dtype": "float16",
                    "created": _dt.datetime.now().isoformat(timespec="seconds")})
        store = cls.open(path, mode="a")
        have = store.encoder_key
        if have != encoder_key:
            raise StoreKeyError(
                f"{path}: store was built by encoder key {have}, this encoder has key "
                f"{encoder_key}; stores never mix encoders — pass a new --store path "
                f"(e.g. {path.parent / encoder_key})")
        if store.dim != dim:
            raise StoreKeyError(f"{path}: store has dim {store.dim}, encoder gives {dim}")
        return store

    def update_attrs(self, **attrs: Any) -> None:
        """Change root attributes under the store lock (re-read first: other writers' changes
        are kept)."""
        with _store_lock(self.path):
            root = zarr.open_group(str(self.path), mode="a", zarr_format=3)
            root.attrs.update(attrs)
        self.root = zarr.open_group(str(self.path), mode="a", zarr_format=3)

    def expect_videos(self, videos: list[str]) -> None:
        """Record that these videos belong in the store (a writer is about to write them): until
        each is complete, ``incomplete_videos`` lists it."""
        with _store_lock(self.path):
            root = zarr.open_group(str(self.path), mode="a", zarr_format=3)
            have = set(root.attrs.get("expected_videos", []))
            if not set(videos) <= have:
                root.attrs.update({"expected_videos": sorted(have | set(videos))})
        self.root = zarr.open_group(str(self.path), mode="a", zarr_format=3)

    # ------------------------------------------------------------------ write
    def write_video(self, video: str, emb: np.ndarray, label: np.ndarray, face: np.ndarray,
                    attrs: dict[str, Any], replace: bool = True,
                    emb_flip: np.ndarray | None = None) -> bool:
        """Write one video under its lock: into a staging group (completion marker last), then
        renamed into place, replacing any group of that name. With ``replace=False`` a video
        that is complete by the time the lock is held (another writer finished it) is left as
        it is. Returns whether this call wrote it. An ``OSError`` (disk full, read-only) leaves
        no trace of this video in the store. ``emb_flip``: the embeddings of the horizontally
        flipped crops, written beside ``emb`` in the same group (attrs ``flip: true``)."""
        T = len(label)
        label = check_labels(label, video)           # -1..7 only (ValueError names the frame)
        if emb.shape != (T, self.dim) or face.shape != (T,) or (
                emb_flip is not None and emb_flip.shape != emb.shape):
            raise ValueError(f"{video}: shapes emb {emb.shape}, label {label.shape}, "
                             f"face {face.shape}"
                             f"{'' if emb_flip is None else f', emb_flip {emb_flip.shape}'} "
                             f"disagree (dim {self.dim})")
        with self._video_lock(video):
            if not replace and self.is_complete(video):
                return False
            self._clear_staging(video)
            tmp = self.path / STAGING / f"{video}@{uuid.uuid4().hex}"
            try:
                g = zarr.open_group(str(tmp), mode="w", zarr_format=3)
                g.create_array("emb", data=np.ascontiguousarray(emb, dtype=np.float16),
                               chunks=(chunk_rows(T), self.dim), compressors=None)
                if emb_flip is not None:
                    g.create_array("emb_flip", data=np.ascontiguousarray(emb_flip, dtype=np.float16),
                                   chunks=(chunk_rows(T), self.dim), compressors=None)
                g.create_array("label", data=np.asarray(label, dtype=np.int8))
                g.create_array("face", data=np.asarray(face, dtype=bool))
                g.attrs.update({**attrs, "n_frames": int(T), "encoder_key": self.encoder_key,
                                "flip": emb_flip is not None,
                                "created": _dt.datetime.now().isoformat(timespec="seconds")})
                g.attrs.update({"complete": True})
                final = self.path / "videos" / video
                if not (final.exists() and _exchange(tmp, final)):   # tmp now holds the old
                    self._remove_group(video)
                    os.rename(tmp, final)
            except OSError as e:      # a failed write names no file: name the video's group
                if e.filename is None:
                    where = str(self.path / "videos" / video)
                    raise OSError(e.errno, e.strerror or str(e), where) from None
                raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return True

    def delete_video(self, video: str) -> None:
        with self._video_lock(video):
            self._remove_group(video)

    def _remove_group(self, video: str) -> None:
        """Move ``videos/<video>`` out of the hierarchy in one rename, then delete it (caller
        holds the video's lock)."""
        vdir = self.path / "videos" / video
        if vdir.exists():
            trash = self.path / STAGING / f"{video}@old-{uuid.uuid4().hex}"
            trash.parent.mkdir(exist_ok=True)
            os.rename(vdir, trash)
            shutil.rmtree(trash, ignore_errors=True)

    def _clear_staging(self, video: str) -> None:
        """Remove staging debris of ``video`` left by killed writers (caller holds its lock)."""
        staging = self.path / STAGING
        staging.mkdir(exist_ok=True)
        for p in staging.iterdir():
            if p.name.rpartition("@")[0] == video:
                shutil.rmtree(p, ignore_errors=True)

    def _video_lock(self, video: str):
        from filelock import FileLock

        d = self.path / LOCKS / "videos"
        d.mkdir(parents=True, exist_ok=True)
        return FileLock(d / f"{video}.lock")
