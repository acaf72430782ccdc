"""The embedding store's layout: the on-disk format (stage 1 -> stage 2 contract, SPEC §4),
what a store is and which of its videos are complete, and the in-memory layouts readers fill.

Zarr v3 directory, one per encoder::

    <store>/zarr.json                 attrs: encoder_key, encoder (model + preprocessing), dim,
                                      dtype, format
    <store>/videos/<video>/emb        (T, D) float16, no-face rows zero
    <store>/videos/<video>/label      (T,) int8, -1 = not annotated
    <store>/videos/<video>/face       (T,) bool
    <store>/videos/<video>/emb_flip   (T, D) float16, optional (``stage1.embed.flip``): the
                                      embedding of each horizontally flipped crop; the video's
                                      attrs then hold ``flip: true``
    <store>/videos/<video>/zarr.json  attrs: fps, split, source, n_frames, encoder_key, created,
                                      complete (written last: the completion marker)
    <store>/.locks/, <store>/.staging/   writers' locks and half-written videos (``writer``)

A store never mixes encoders (its root holds the ``encoder_key``). A video counts only once its
completion marker is set; writers record the videos they were asked for (``expected_videos``),
so ``incomplete_videos`` lists both groups without a marker and videos never finished.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import zarr

from fer_pipeline.errors import UsageError

log = logging.getLogger("fer_pipeline.store")
S = TypeVar("S", bound="StoreBase")
FORMAT = "fer-embeddings/1"
EMB_CHUNK_FRAMES = 4096
LOCKS, STAGING = ".locks", ".staging"     # beside the Zarr hierarchy; never read as videos


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
    emb_flip: np.ndarray | None = None   # (T, D) float16 of the flipped crops, when stored


class StoreBase:
    """A store folder opened with Zarr: its root attributes and which videos it holds. The
    writer and the reader (``StoreWriter``, ``StoreReader``) build on it; ``EmbeddingStore``
    is both."""

    def __init__(self, path: str | Path, root: zarr.Group):
        self.path = Path(path)
        self.root = root

    @classmethod
    def open(cls: type[S], path: str | Path, mode: str = "r") -> S:
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

    def has_flip(self, video: str) -> bool:
        """Whether a complete video also holds the embeddings of its flipped crops."""
        try:
            g = self._videos_group()[video]
            return bool(g.attrs.get("complete", False) and g.attrs.get("flip", False))
        except (KeyError, ValueError, OSError):
            return False

    def videos(self) -> list[str]:
        """Names of complete videos, sorted."""
        return [v for v in self.all_videos() if self.is_complete(v)]

    def video_attrs(self, video: str) -> dict[str, Any]:
        return self._videos_group()[video].attrs.asdict()


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
