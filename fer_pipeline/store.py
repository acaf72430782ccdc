"""The embedding store (stage 1 -> stage 2 contract, SPEC §4).

Zarr v3 directory, one per encoder::

    <store>/zarr.json                 attrs: encoder_key, encoder (model + preprocessing), dim,
                                      dtype, format
    <store>/videos/<video>/emb        (T, D) float16, no-face rows zero
    <store>/videos/<video>/label      (T,) int8, -1 = not annotated
    <store>/videos/<video>/face       (T,) bool
    <store>/videos/<video>/zarr.json  attrs: fps, split, source, n_frames, encoder_key, created,
                                      complete (written last: the completion marker)

A store never mixes encoders: opening it for writing with another key fails. Readers load
whole videos (or the whole store) at once; stage 2 never reads clips from Zarr: it picks its
split from ``index`` (the layout, no embeddings), fills one array video by video (``load`` /
``read_into``) or maps a consolidated copy (``fer_pipeline.embcache``, keyed by ``fingerprint``).

Several writers may share a store (ranks of one run, or separate runs): nothing a writer does
deletes what another owns. The store is created idempotently under a store lock
(``<store>/.locks/store.lock``, also taken for every root-attribute change); each video is
written, under its own lock, into ``<store>/.staging/<video>@<id>`` and renamed into
``videos/<video>`` complete with its marker, so a reader sees a video whole or not at all and a
killed writer leaves only staging debris (removed by the next writer of that video). A second
writer of a video that became complete meanwhile skips it (``write_video(replace=False)``).
Writers record the videos they were asked for (``expected_videos``), so ``incomplete_videos``
lists both groups without a marker (stores of older versions) and videos never finished.

Length: one on-disk contract, read and written here (layout, write path with its locks and
staging, checks on what a reader loads); splitting it would spread the format over modules.
"""
from __future__ import annotations

import datetime as _dt
import errno
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from fer_pipeline.errors import UsageError
from fer_pipeline.labels import check_labels

log = logging.getLogger(__name__)
FORMAT = "fer-embeddings/1"
EMB_CHUNK_FRAMES = 4096
LOCKS, STAGING = ".locks", ".staging"     # beside the Zarr hierarchy; never read as videos
READ_ROWS = 4096                          # rows per read when loading (one store chunk at most)
_FINITE_CHUNK = 1 << 13                   # rows per finiteness check (bounded temporary memory: 32 MiB of float32 at D=1024)


def chunk_rows(T: int, target: int = EMB_CHUNK_FRAMES) -> int:
    """Rows per ``emb`` chunk of a T-frame video: about ``target``, split evenly so the last
    chunk is (nearly) full. Zarr stores an edge chunk at full size, so ``min(T, 4096)`` would pad
    a 5 000-frame video to 8 192 rows; ``ceil(T / ceil(T / 4096))`` pads fewer rows than it
    has chunks."""
    T = max(int(T), 1)
    n = -(-T // target)
    return -(-T // n)


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


_F16_EXPONENT = 0x7C00                   # all exponent bits set: Inf or NaN, nothing else
_BITS_CHUNK = 1 << 10                    # rows per float16 bit test (fastest of 256..8192 measured)


def nonfinite_rows(emb) -> np.ndarray:
    """Indices of the rows of a (N, D) array holding a NaN or Inf, a chunk of rows at a time.
    float16 (the store's dtype) is tested on its bits: a value is non-finite exactly when its
    exponent bits are all set, 1,024 rows at a time (a 2 MiB temporary that stays in cache;
    ``python -m bench.stage2``, its 'NaN/Inf check' rows). Otherwise a float32 row sum is
    non-finite exactly then (finite float16 rows cannot overflow it)."""
    out = []
    bits = getattr(emb, "dtype", None) == np.float16        # numpy float16 (not a torch tensor)
    step = _BITS_CHUNK if bits else _FINITE_CHUNK
    for s in range(0, len(emb), step):
        chunk = emb[s:s + step]
        if hasattr(chunk, "detach"):          # a torch tensor (stage 2's cache), on any device
            rows = (~chunk.float().sum(1).isfinite()).nonzero().flatten().cpu().numpy()
        elif bits:
            exponent = np.bitwise_and(np.asarray(chunk).view(np.uint16), _F16_EXPONENT)
            rows = np.flatnonzero(exponent.max(axis=1) == _F16_EXPONENT)
        else:
            rows = np.flatnonzero(~np.isfinite(np.asarray(chunk).sum(axis=1, dtype=np.float32)))
        if rows.size:
            out.append(rows + s)
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def frame_ranges(frames: np.ndarray, limit: int = 4) -> str:
    """'31-240, 300' for sorted frame numbers (at most ``limit`` ranges, then '...')."""
    frames = np.asarray(frames)
    breaks = np.flatnonzero(np.diff(frames) != 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(frames) - 1]])
    spans = [f"{frames[a]}" if a == b else f"{frames[a]}-{frames[b]}" for a, b in zip(starts, ends)]
    return ", ".join(spans[:limit]) + (", ..." if len(spans) > limit else "")


class StoreKeyError(UsageError):
    """The store at this path was built by a different encoder."""


@dataclass
class VideoRecord:
    name: str
    emb: np.ndarray      # (T, D) float16
    label: np.ndarray    # (T,) int8
    face: np.ndarray     # (T,) bool
    attrs: dict[str, Any]


class EmbeddingStore:
    def __init__(self, path: str | Path, root: zarr.Group):
        self.path = Path(path)
        self.root = root

    # ------------------------------------------------------------------ open / create
    @classmethod
    def create_or_open(cls, path: str | Path, encoder_key: str, encoder_meta: dict[str, Any],
                       dim: int) -> EmbeddingStore:
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

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> EmbeddingStore:
        path = Path(path)
        if not (path / "zarr.json").exists():
            raise UsageError(f"{path}: no embedding store here (run `fer-pipeline stage1 embed`)")
        try:
            root = zarr.open_group(str(path), mode=mode, zarr_format=3)
        except (ValueError, OSError) as e:     # unreadable or corrupt zarr.json
            raise UsageError(f"{path}: not a readable embedding store ({e})") from None
        if root.attrs.get("format") != FORMAT:
            raise UsageError(f"{path}: not an embedding store (format {root.attrs.get('format')!r})")
        return cls(path, root)

    # ------------------------------------------------------------------ metadata
    @property
    def encoder_key(self) -> str:
        return self.root.attrs["encoder_key"]

    @property
    def dim(self) -> int:
        return int(self.root.attrs["dim"])

    @property
    def meta(self) -> dict[str, Any]:
        return self.root.attrs.asdict()

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

    def incomplete_videos(self) -> list[str]:
        """Videos of the store that are not complete, sorted: groups without the completion
        marker, and videos a writer was asked for (``expect_videos``) but did not finish
        (killed, or the video failed)."""
        fresh = zarr.open_group(str(self.path), mode="r", zarr_format=3)
        names = set(self.all_videos()) | set(fresh.attrs.get("expected_videos", []))
        return sorted(v for v in names if not self.is_complete(v))

    def require_complete(self, allow_partial: bool = False, flag: str = "--allow-partial") -> None:
        """``UsageError`` naming the incomplete videos (``incomplete_videos``), or, with
        ``allow_partial``, a warning saying how many are left out."""
        missing = self.incomplete_videos()
        if not missing:
            return
        names = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        complete = len(self.videos())
        if not allow_partial:
            raise UsageError(
                f"{self.path}: {len(missing)} video(s) incomplete or never finished in the store "
                f"({names}); finish them (re-run stage1 embed) or pass {flag} to use the "
                f"{complete} complete one(s)")
        log.warning("%s: %s: leaving out %d incomplete video(s) (%s); using the %d complete one(s)",
                    self.path, flag, len(missing), names, complete)

    def _videos_group(self) -> zarr.Group:
        return self.root["videos"]

    def all_videos(self) -> list[str]:
        return sorted(self._videos_group().group_keys())

    def is_complete(self, video: str) -> bool:
        try:
            g = self._videos_group()[video]
            return bool(g.attrs.get("complete", False))
        except (KeyError, ValueError, OSError):  # missing or half-written zarr.json
            return False

    def videos(self) -> list[str]:
        """Names of complete videos, sorted."""
        return [v for v in self.all_videos() if self.is_complete(v)]

    def video_attrs(self, video: str) -> dict[str, Any]:
        return self._videos_group()[video].attrs.asdict()

    # ------------------------------------------------------------------ write
    def write_video(self, video: str, emb: np.ndarray, label: np.ndarray, face: np.ndarray,
                    attrs: dict[str, Any], replace: bool = True) -> bool:
        """Write one video under its lock: into a staging group (completion marker last), then
        renamed into place, replacing any group of that name. With ``replace=False`` a video
        that is complete by the time the lock is held (another writer finished it) is left as
        it is. Returns whether this call wrote it. An ``OSError`` (disk full, read-only) leaves
        no trace of this video in the store."""
        T = len(label)
        label = check_labels(label, video)           # -1..7 only (ValueError names the frame)
        if emb.shape != (T, self.dim) or face.shape != (T,):
            raise ValueError(f"{video}: shapes emb {emb.shape}, label {label.shape}, "
                             f"face {face.shape} disagree (dim {self.dim})")
        with self._video_lock(video):
            if not replace and self.is_complete(video):
                return False
            self._clear_staging(video)
            tmp = self.path / STAGING / f"{video}@{uuid.uuid4().hex}"
            try:
                g = zarr.open_group(str(tmp), mode="w", zarr_format=3)
                g.create_array("emb", data=np.ascontiguousarray(emb, dtype=np.float16),
                               chunks=(chunk_rows(T), self.dim), compressors=None)
                g.create_array("label", data=np.asarray(label, dtype=np.int8))
                g.create_array("face", data=np.asarray(face, dtype=bool))
                g.attrs.update({**attrs, "n_frames": int(T), "encoder_key": self.encoder_key,
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

    # ------------------------------------------------------------------ checks
    def check_finite(self, loaded, bad_frames: str = "fail"):
        """Every embedding row of ``loaded`` (a ``LoadedStore``, or anything with ``emb``,
        ``face``, ``offsets`` and ``videos`` in load order: numpy arrays or torch tensors)
        finite. The rows found while the arrays were read (``loaded.nonfinite``: ``load``,
        consolidated copies) are taken as they are; without them every row is checked, per
        chunk of rows (vectorised).
        Non-finite rows are a ``UsageError`` naming each video and its frame ranges
        (``bad_frames="fail"``), or become no-face frames (zero rows, ``face=False``) with a
        warning counting them (``"mask"``). Returns ``loaded`` (masked in place, or a copy of its
        arrays when they are read-only)."""
        known = getattr(loaded, "nonfinite", None)      # found while the arrays were read
        bad = nonfinite_rows(loaded.emb) if known is None else np.asarray(known, np.int64)
        if not bad.size:
            return loaded
        owner = np.searchsorted(np.asarray(loaded.offsets), bad, side="right") - 1
        parts = []
        for v in np.unique(owner):
            frames = bad[owner == v] - int(loaded.offsets[v]) + 1
            parts.append(f"{loaded.videos[v]} frames {frame_ranges(frames)}")
        where = "; ".join(parts[:5]) + (f"; ... ({len(parts)} videos)" if len(parts) > 5 else "")
        if bad_frames != "mask":
            raise UsageError(
                f"{self.path}: {bad.size} frame(s) with non-finite embeddings (NaN/Inf) in "
                f"{len(parts)} video(s): {where}; re-embed those videos, or set "
                f"stage2.data.bad_frames=mask to treat them as no-face frames")
        for name in ("emb", "face"):      # read-only numpy arrays: mask a copy
            arr = getattr(loaded, name)
            if isinstance(arr, np.ndarray) and not arr.flags.writeable:
                setattr(loaded, name, np.array(arr))
        loaded.emb[bad] = 0
        loaded.face[bad] = False
        if known is not None:
            loaded.nonfinite = np.zeros(0, np.int64)
        log.warning("%s: stage2.data.bad_frames=mask: %d frame(s) with non-finite embeddings "
                    "treated as no-face frames (%s)", self.path, bad.size, where)
        return loaded

    # ------------------------------------------------------------------ export
    def export_h5(self, path: str | Path) -> Path:
        """The complete videos as one HDF5 file with the same structure: root attributes,
        ``/videos/<video>/{emb, label, face}`` and their attributes. Written atomically."""
        import h5py

        from fer_pipeline.io import atomic_path

        with atomic_path(path) as tmp:
            with h5py.File(tmp, "w") as f:
                for k, v in self.meta.items():
                    f.attrs[k] = v if isinstance(v, (str, int, float, bool)) else json.dumps(v)
                grp = f.create_group("videos")
                for name in self.videos():
                    rec = self.read_video(name)
                    g = grp.create_group(name)
                    g.create_dataset("emb", data=rec.emb, chunks=True)
                    g.create_dataset("label", data=rec.label)
                    g.create_dataset("face", data=rec.face)
                    for k, v in rec.attrs.items():
                        g.attrs[k] = v if isinstance(v, (str, int, float, bool)) else json.dumps(v)
        return Path(path)

    # ------------------------------------------------------------------ read
    def read_video(self, video: str) -> VideoRecord:
        if not self.is_complete(video):
            raise KeyError(f"{self.path}: video {video!r} is missing or incomplete")
        g = self._videos_group()[video]
        return VideoRecord(video, g["emb"][:], g["label"][:], g["face"][:], g.attrs.asdict())

    def index(self, videos: list[str] | None = None) -> StoreIndex:
        """The layout of the given (default: all complete) videos, in that order, without reading
        any embedding: names, row offsets, attributes. What splits are chosen from."""
        names = self.videos() if videos is None else list(videos)
        missing = [v for v in names if not self.is_complete(v)]
        if missing:
            raise UsageError(f"{self.path}: {len(missing)} video(s) missing or incomplete in the "
                             f"store: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
        grp = self._videos_group()
        attrs = [grp[v].attrs.asdict() for v in names]
        offsets = np.zeros(len(names) + 1, dtype=np.int64)
        np.cumsum([int(a["n_frames"]) for a in attrs], out=offsets[1:])
        return StoreIndex(names, offsets, attrs, self.encoder_key, self.dim)

    def read_into(self, index: StoreIndex, emb: np.ndarray, label: np.ndarray,
                  face: np.ndarray, row0: int = 0) -> np.ndarray:
        """Fill rows ``row0 + index.offsets[i] ...`` of ``emb`` / ``label`` / ``face`` (any
        array-likes taking slice assignment: RAM, a memory-mapped file, a device tensor, a
        sequential file writer) with the index's videos, in order, ``READ_ROWS`` rows at a time,
        so nothing but the destination grows with the store or its longest video.

        Returns the destination rows whose embedding holds a NaN or Inf, found block by block
        as it is read (so no later pass over the destination is needed: see ``check_finite``)."""
        grp = self._videos_group()
        bad = []
        for i, v in enumerate(index.videos):
            g = grp[v]
            s, e = row0 + int(index.offsets[i]), row0 + int(index.offsets[i + 1])
            if g["label"].shape[0] != e - s:
                raise UsageError(f"{self.path}: video {v} changed while it was being read "
                                 f"({g['label'].shape[0]} frames, {e - s} when listed); run again")
            for a in range(0, e - s, READ_ROWS):
                b = min(a + READ_ROWS, e - s)
                block = g["emb"][a:b]
                rows = nonfinite_rows(block)
                if rows.size:
                    bad.append(rows + (s + a))
                emb[s + a:s + b] = block
            label[s:e] = g["label"][:]
            face[s:e] = g["face"][:]
        return np.concatenate(bad) if bad else np.zeros(0, np.int64)

    def load(self, videos: list[str] | None = None) -> LoadedStore:
        """Read the given (default: all complete) videos into one contiguous array in RAM."""
        index = self.index(videos)
        N = index.frames
        emb = np.empty((N, self.dim), dtype=np.float16)
        label = np.empty(N, dtype=np.int8)
        face = np.empty(N, dtype=bool)
        bad = self.read_into(index, emb, label, face)
        return LoadedStore(index.videos, index.offsets, emb, label, face, index.attrs,
                           self.encoder_key, self.dim, nonfinite=bad)

    def fingerprint(self, videos: list[str] | None = None) -> str:
        """A hash of what the store holds for the given (default: all complete) videos, without
        reading the embeddings: every video's name and metadata (``zarr.json``, which holds its
        write time) and every array file's name, size and modification time. Rewriting or
        adding a video changes it; reading the store does not."""
        import hashlib

        h = hashlib.sha256(f"{FORMAT}|{self.encoder_key}|{self.dim}".encode())
        root = self.path / "videos"
        for v in (self.videos() if videos is None else list(videos)):
            vdir = root / v
            h.update(f"\0{v}\0".encode())
            for f in sorted(p for p in vdir.rglob("*") if p.is_file()):
                st = f.stat()
                rel = f.relative_to(vdir).as_posix()
                h.update(f"{rel}|{st.st_size}|{st.st_mtime_ns}\n".encode())
                if f.name == "zarr.json":
                    h.update(f.read_bytes())
        return h.hexdigest()


class _Layout:
    """Shared by :class:`StoreIndex` and :class:`LoadedStore`: video i's frames are rows
    ``offsets[i]:offsets[i+1]``."""
    videos: list[str]
    offsets: np.ndarray
    attrs: list[dict[str, Any]]
    dim: int

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def frames(self) -> int:
        return int(self.offsets[-1])

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def split_of(self, i: int) -> str:
        return self.attrs[i].get("split", "")

    def index(self, video: str) -> int:
        pos = self.__dict__.get("_pos")
        if pos is None or len(pos) != len(self.videos):
            pos = self.__dict__["_pos"] = {v: i for i, v in enumerate(self.videos)}
        try:
            return pos[video]
        except KeyError:
            raise ValueError(f"{video!r} is not in the store's loaded videos") from None

    def payload_bytes(self) -> int:
        """Bytes of the videos' arrays: fp16 embeddings + int8 labels + bool face flags."""
        return self.frames * (2 * int(self.dim) + 2)


@dataclass
class StoreIndex(_Layout):
    """A store's layout without its embeddings (``EmbeddingStore.index``)."""
    videos: list[str]
    offsets: np.ndarray  # (V+1,) int64
    attrs: list[dict[str, Any]]
    encoder_key: str
    dim: int


@dataclass
class LoadedStore(_Layout):
    """A whole store in memory (or memory-mapped): frames of video i are rows
    ``offsets[i]:offsets[i+1]``."""
    videos: list[str]
    offsets: np.ndarray  # (V+1,) int64
    emb: np.ndarray      # (N, D) float16
    label: np.ndarray    # (N,) int8
    face: np.ndarray     # (N,) bool
    attrs: list[dict[str, Any]]
    encoder_key: str
    dim: int
    nonfinite: np.ndarray | None = None   # rows holding NaN/Inf, when found while reading (None: not checked)

    def select(self, indices: list[int]) -> LoadedStore:
        """The given videos only, as a new contiguous LoadedStore (copies their rows; stage 2
        takes index views instead, ``TemporalCache.subset``)."""
        spans = [slice(int(self.offsets[i]), int(self.offsets[i + 1])) for i in indices]

        def cat(a: np.ndarray) -> np.ndarray:
            return np.concatenate([a[s] for s in spans]) if spans else a[:0].copy()

        offsets = np.zeros(len(indices) + 1, dtype=np.int64)
        np.cumsum([s.stop - s.start for s in spans], out=offsets[1:])
        return LoadedStore([self.videos[i] for i in indices], offsets, cat(self.emb),
                           cat(self.label), cat(self.face), [self.attrs[i] for i in indices],
                           self.encoder_key, self.dim)
