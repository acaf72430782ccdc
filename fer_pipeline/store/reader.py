"""Reading the embedding store: one video, a layout without embeddings, or many videos into
one destination (RAM, a memory-mapped file, a device tensor), with the checks on what was read.

Stage 2 never reads clips from Zarr: it picks its split from ``index`` (the layout, no
embeddings), fills one array video by video (``load`` / ``read_into``) or maps a consolidated
copy (``fer_pipeline.embcache``, keyed by ``fingerprint``). NaN/Inf rows are found block by
block while reading (``nonfinite_rows``) and reported or masked by ``check_finite``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fer_pipeline.errors import UsageError
from fer_pipeline.store.layout import FORMAT, LoadedStore, StoreBase, StoreIndex, VideoRecord, log

READ_ROWS = 4096                          # rows per read when loading (one store chunk at most)
_FINITE_CHUNK = 1 << 13                   # rows per finiteness check (bounded temporary memory: 32 MiB of float32 at D=1024)
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


class StoreReader(StoreBase):
    """Reads of a store's complete videos (see the module docstring)."""

    # ------------------------------------------------------------------ read
    def read_video(self, video: str) -> VideoRecord:
        if not self.is_complete(video):
            raise KeyError(f"{self.path}: video {video!r} is missing or incomplete")
        g = self._videos_group()[video]
        return VideoRecord(video, g["emb"][:], g["label"][:], g["face"][:], g.attrs.asdict(),
                           g["emb_flip"][:] if g.attrs.get("flip", False) else None)

    def read_flip_into(self, videos: list[str], out, row0: int = 0) -> np.ndarray:
        """Fill rows of ``out`` (as ``read_into``: any array-like taking slice assignment) with
        the flipped-crop embeddings of ``videos``, one after the other from ``row0``; a
        ``UsageError`` naming the videos without them. Returns the rows holding NaN/Inf."""
        lacking = [v for v in videos if not self.has_flip(v)]
        if lacking:
            raise UsageError(
                f"{self.path}: {len(lacking)} video(s) have no flipped-crop embeddings "
                f"({', '.join(lacking[:5])}{' ...' if len(lacking) > 5 else ''}); re-run "
                f"`fer-pipeline stage1 embed ... stage1.embed.flip=true` on this store (it adds "
                f"them to the videos already embedded)")
        grp = self._videos_group()
        bad, s = [], row0
        for v in videos:
            arr = grp[v]["emb_flip"]
            T = arr.shape[0]
            for a in range(0, T, READ_ROWS):
                block = arr[a:min(a + READ_ROWS, T)]
                rows = nonfinite_rows(block)
                if rows.size:
                    bad.append(rows + (s + a))
                out[s + a:s + a + len(block)] = block
            s += T
        return np.concatenate(bad) if bad else np.zeros(0, np.int64)

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
                    if rec.emb_flip is not None:
                        g.create_dataset("emb_flip", data=rec.emb_flip, chunks=True)
                    for k, v in rec.attrs.items():
                        g.attrs[k] = v if isinstance(v, (str, int, float, bool)) else json.dumps(v)
        return Path(path)
