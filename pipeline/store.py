"""The embedding store (stage 1 -> stage 2 contract, SPEC §4).

Zarr v3 directory, one per encoder::

    <store>/zarr.json                 attrs: encoder_key, encoder (model + preprocessing), dim,
                                      dtype, format
    <store>/videos/<video>/emb        (T, D) float16, no-face rows zero
    <store>/videos/<video>/label      (T,) int8, -1 = not annotated
    <store>/videos/<video>/face       (T,) bool
    <store>/videos/<video>/zarr.json  attrs: fps, split, source, n_frames, encoder_key, created,
                                      complete (written last: the completion marker)

A store never mixes encoders: opening it for writing with another key fails. A video whose
group lacks the completion marker (killed mid-write) is deleted and rewritten on the next run.
Readers load whole videos (or the whole store) at once; stage 2 never reads clips from Zarr.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from pipeline.errors import UsageError
from pipeline.labels import check_labels

log = logging.getLogger(__name__)
FORMAT = "fer-embeddings/1"
EMB_CHUNK_FRAMES = 4096


def chunk_rows(T: int, target: int = EMB_CHUNK_FRAMES) -> int:
    """Rows per ``emb`` chunk of a T-frame video: about ``target``, split evenly so the last
    chunk is (nearly) full. Zarr stores an edge chunk at full size, so ``min(T, 4096)`` would pad
    a 5 000-frame video to 8 192 rows; ``ceil(T / ceil(T / 4096))`` pads fewer rows than it
    has chunks."""
    T = max(int(T), 1)
    n = -(-T // target)
    return -(-T // n)


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
        """Open a store for writing; create it if absent. Refuses a store of another encoder."""
        path = Path(path)
        if (path / "zarr.json").exists():
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
        if path.exists() and any(path.iterdir()):
            raise UsageError(f"{path}: exists, is not empty and is not an embedding store")
        root = zarr.open_group(str(path), mode="w", zarr_format=3)
        root.attrs.update({"format": FORMAT, "encoder_key": encoder_key, "encoder": encoder_meta,
                           "dim": int(dim), "dtype": "float16",
                           "created": _dt.datetime.now().isoformat(timespec="seconds")})
        root.require_group("videos")
        return cls(path, root)

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> EmbeddingStore:
        path = Path(path)
        if not (path / "zarr.json").exists():
            raise UsageError(f"{path}: no embedding store here (run `fer-pipeline stage1 embed`)")
        root = zarr.open_group(str(path), mode=mode, zarr_format=3)
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
                    attrs: dict[str, Any]) -> None:
        """Write one video; any partial group of the same name is replaced. The completion
        marker is the last write."""
        T = len(label)
        label = check_labels(label, video)           # -1..7 only (ValueError names the frame)
        if emb.shape != (T, self.dim) or face.shape != (T,):
            raise ValueError(f"{video}: shapes emb {emb.shape}, label {label.shape}, "
                             f"face {face.shape} disagree (dim {self.dim})")
        self.delete_video(video)
        g = self._videos_group().create_group(video)
        g.create_array("emb", data=np.ascontiguousarray(emb, dtype=np.float16),
                       chunks=(chunk_rows(T), self.dim), compressors=None)
        g.create_array("label", data=np.asarray(label, dtype=np.int8))
        g.create_array("face", data=np.asarray(face, dtype=bool))
        g.attrs.update({**attrs, "n_frames": int(T), "encoder_key": self.encoder_key,
                        "created": _dt.datetime.now().isoformat(timespec="seconds")})
        g.attrs.update({"complete": True})

    def delete_video(self, video: str) -> None:
        vdir = self.path / "videos" / video
        if vdir.exists():
            shutil.rmtree(vdir)

    # ------------------------------------------------------------------ export
    def export_h5(self, path: str | Path) -> Path:
        """The complete videos as one HDF5 file with the same structure: root attributes,
        ``/videos/<video>/{emb, label, face}`` and their attributes. Written atomically."""
        import h5py

        from pipeline.io import atomic_path

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

    def load(self, videos: list[str] | None = None) -> LoadedStore:
        """Read the given (default: all complete) videos into one contiguous array."""
        names = self.videos() if videos is None else list(videos)
        missing = [v for v in names if not self.is_complete(v)]
        if missing:
            raise UsageError(f"{self.path}: {len(missing)} video(s) missing or incomplete in the "
                             f"store: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
        grp = self._videos_group()
        lengths = [int(grp[v].attrs["n_frames"]) for v in names]
        offsets = np.zeros(len(names) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        emb = np.empty((int(offsets[-1]), self.dim), dtype=np.float16)
        label = np.empty(int(offsets[-1]), dtype=np.int8)
        face = np.empty(int(offsets[-1]), dtype=bool)
        attrs = []
        for i, v in enumerate(names):
            g = grp[v]
            s, e = offsets[i], offsets[i + 1]
            emb[s:e] = g["emb"][:]
            label[s:e] = g["label"][:]
            face[s:e] = g["face"][:]
            attrs.append(g.attrs.asdict())
        return LoadedStore(names, offsets, emb, label, face, attrs, self.encoder_key, self.dim)


@dataclass
class LoadedStore:
    """A whole store in memory: frames of video i are rows ``offsets[i]:offsets[i+1]``."""
    videos: list[str]
    offsets: np.ndarray  # (V+1,) int64
    emb: np.ndarray      # (N, D) float16
    label: np.ndarray    # (N,) int8
    face: np.ndarray     # (N,) bool
    attrs: list[dict[str, Any]]
    encoder_key: str
    dim: int

    def __len__(self) -> int:
        return len(self.videos)

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def split_of(self, i: int) -> str:
        return self.attrs[i].get("split", "")

    def index(self, video: str) -> int:
        return self.videos.index(video)

    def select(self, indices: list[int]) -> LoadedStore:
        """The given videos only, as a new contiguous LoadedStore (copies their rows)."""
        spans = [slice(int(self.offsets[i]), int(self.offsets[i + 1])) for i in indices]

        def cat(a: np.ndarray) -> np.ndarray:
            return np.concatenate([a[s] for s in spans]) if spans else a[:0].copy()

        offsets = np.zeros(len(indices) + 1, dtype=np.int64)
        np.cumsum([s.stop - s.start for s in spans], out=offsets[1:])
        return LoadedStore([self.videos[i] for i in indices], offsets, cat(self.emb),
                           cat(self.label), cat(self.face), [self.attrs[i] for i in indices],
                           self.encoder_key, self.dim)
