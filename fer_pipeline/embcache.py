"""Consolidated copies of an embedding store for training: one contiguous file per array, mapped
into memory instead of read into each process.

A consolidated copy is a directory::

    <dir>/emb.f16      (N, D) float16, the videos' rows one after the other (C order)
    <dir>/label.i8     (N,) int8
    <dir>/face.u8      (N,) bool
    <dir>/index.json   videos, row offsets, attributes, encoder key, store fingerprint, the
                       rows holding NaN/Inf found while writing (so no process that maps the
                       copy reads it all again to check it); written last: a directory
                       without it is incomplete

It is written once, video by video (nothing but the files grows with the store), under a
temporary name renamed into place, and opened with ``np.memmap`` (copy-on-write, never written),
so every process that opens it shares the same page-cache / tmpfs pages. Two uses:

- :func:`node_shared` (``stage2.data.preload: cpu`` under DDP): the lowest rank of each node
  writes the copy into ``shm_dir`` (``/dev/shm``), every local rank maps it, then the file is
  unlinked (the mappings keep it alive until the ranks exit): one copy of the embeddings per
  node. A ``shm_dir`` too small for it is one warning line with the size needed, and each rank
  then loads its own copy.
- :func:`disk_cache` (``stage2.data.preload: mmap``): a persistent copy on local disk
  (``cache_dir``), named ``<encoder key>-<store fingerprint>``, reused by later runs on the same
  store and rebuilt (with a log line) when the store changed. Training reads each clip as one
  contiguous range of the file; the kernel keeps what fits in RAM, so a store larger than RAM
  trains.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

import numpy as np

from fer_pipeline import distributed
from fer_pipeline.errors import UsageError
from fer_pipeline.store import EmbeddingStore, LoadedStore, StoreIndex

log = logging.getLogger(__name__)
FORMAT = "fer-embeddings-consolidated/1"
FILES = {"emb": ("emb.f16", np.float16), "label": ("label.i8", np.int8), "face": ("face.u8", np.bool_)}
GIB = 2**30


def gib(n: int | float) -> str:
    return f"{n / GIB:.2f} GiB"


def default_cache_dir() -> Path:
    """``$TMPDIR/fer-emb-cache`` (the node's local scratch on most clusters)."""
    return Path(tempfile.gettempdir()) / "fer-emb-cache"


def is_complete(path: Path) -> bool:
    return (Path(path) / "index.json").is_file()


class _Appender:
    """A file that takes ``store.read_into``'s row blocks in order (``f[a:b] = rows``) and
    writes them straight through: no buffer beyond the block being written."""

    def __init__(self, path: Path, dtype):
        self.f, self.dtype, self.next = open(path, "wb"), np.dtype(dtype), 0

    def __setitem__(self, rows: slice, a) -> None:
        if rows.start != self.next:
            raise ValueError(f"rows {rows.start}: written out of order (expected {self.next})")
        self.f.write(memoryview(np.ascontiguousarray(a, self.dtype)).cast("B"))
        self.next = rows.stop

    def close(self) -> None:
        self.f.close()


def write_consolidated(store: EmbeddingStore, index: StoreIndex, path: str | Path,
                       fingerprint: str = "") -> Path:
    """Write ``index``'s videos of ``store`` as a consolidated copy at ``path`` (atomically: a
    temporary sibling renamed into place; when another writer got there first, its copy is
    kept)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        files = {k: _Appender(tmp / name, dtype) for k, (name, dtype) in FILES.items()}
        try:
            bad = store.read_into(index, files["emb"], files["label"], files["face"])
        finally:
            for f in files.values():
                f.close()
        meta = {"format": FORMAT, "encoder_key": index.encoder_key, "dim": int(index.dim),
                "frames": index.frames, "fingerprint": fingerprint,
                "store": str(Path(store.path).resolve()), "videos": index.videos,
                "offsets": index.offsets.tolist(), "attrs": index.attrs,
                "nonfinite_runs": row_runs(bad),
                "created": _dt.datetime.now().isoformat(timespec="seconds")}
        (tmp / "index.json").write_text(json.dumps(meta))
        try:
            os.rename(tmp, path)
        except OSError:
            if not is_complete(path):
                raise
            shutil.rmtree(tmp, ignore_errors=True)     # another writer finished first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_meta(path: str | Path) -> dict:
    return json.loads((Path(path) / "index.json").read_text())


def open_consolidated(path: str | Path) -> LoadedStore:
    """Map a consolidated copy (copy-on-write, so the arrays are writable for torch but never
    written: every process shares the same pages)."""
    path = Path(path)
    meta = read_meta(path)
    if meta.get("format") != FORMAT:
        raise UsageError(f"{path}: not a consolidated embedding cache")
    N, D = int(meta["frames"]), int(meta["dim"])
    arrays = {}
    for k, (name, dtype) in FILES.items():
        shape = (N, D) if k == "emb" else (N,)
        if N == 0:
            arrays[k] = np.zeros(shape, dtype)
            continue
        expect = int(np.prod(shape)) * np.dtype(dtype).itemsize
        size = (path / name).stat().st_size
        if size != expect:
            raise UsageError(f"{path / name}: {size} bytes, expected {expect} (a damaged cache: "
                             f"delete {path})")
        arrays[k] = np.memmap(path / name, dtype=dtype, mode="c", shape=shape)
    return LoadedStore(list(meta["videos"]), np.asarray(meta["offsets"], np.int64), arrays["emb"],
                       arrays["label"], arrays["face"], list(meta["attrs"]), meta["encoder_key"], D,
                       nonfinite=_recorded_nonfinite(meta))


def row_runs(rows: np.ndarray) -> list[list[int]]:
    """Sorted row numbers as ``[start, stop)`` runs: a whole damaged video is one pair, so the
    index stays small whatever the number of rows."""
    rows = np.asarray(rows, np.int64)
    if not rows.size:
        return []
    cut = np.flatnonzero(np.diff(rows) != 1) + 1
    return np.stack([rows[np.r_[0, cut]], rows[np.r_[cut - 1, rows.size - 1]] + 1], 1).tolist()


def _recorded_nonfinite(meta: dict) -> np.ndarray | None:
    """The non-finite rows found while the copy was written; None for a copy written before
    they were recorded. (``nonfinite``: the plain list of rows of an earlier format.)"""
    if "nonfinite_runs" in meta:
        runs = meta["nonfinite_runs"]
        return (np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in runs]) if runs
                else np.zeros(0, np.int64))
    if "nonfinite" in meta:
        return np.asarray(meta["nonfinite"], np.int64)
    return None


def _record_nonfinite(path: Path) -> None:
    """A copy written before non-finite rows were recorded: find them once (one read of the
    file) and add them to its index, so later runs do not read it again to check it."""
    meta = read_meta(path)
    if _recorded_nonfinite(meta) is not None:
        return
    from fer_pipeline.io import write_text
    from fer_pipeline.store import nonfinite_rows

    meta["nonfinite_runs"] = row_runs(nonfinite_rows(open_consolidated(path).emb))
    try:
        write_text(path / "index.json", json.dumps(meta))
    except OSError as e:            # a read-only cache: every run checks it by reading it
        log.info("%s: cannot record its non-finite rows (%s)", path, e.strerror or e)


def _free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def _agree(status: str | None) -> None:
    """Raise on every rank when any rank's ``status`` is an error message (so no rank is left
    waiting for the others at a barrier)."""
    errors = [s for s in distributed.all_gather_objects(status) if s]
    if errors:
        raise UsageError(errors[0])


def node_shared(store: EmbeddingStore, index: StoreIndex, shm_dir: str | Path = "/dev/shm") -> LoadedStore:
    """``index``'s videos in memory, one copy per node: under DDP with several ranks on a node,
    the node's lowest rank writes a consolidated copy into ``shm_dir`` and every local rank maps
    it; alone on its node a rank reads the store into its own memory. Collective under DDP."""
    if not distributed.info().enabled:
        return store.load(index.videos)
    leader, n_local, key = distributed.node_peers()
    if n_local == 1:
        return store.load(index.videos)
    token = distributed.broadcast_object(uuid.uuid4().hex[:12])
    shm_dir = Path(shm_dir)
    path = shm_dir / f"fer-emb-{index.encoder_key}-{token}-{re.sub(r'[^A-Za-z0-9_.-]', '_', key)}"
    need = index.payload_bytes()
    problem = None
    if leader:
        try:
            free = _free_bytes(shm_dir)
        except OSError as e:
            free, problem = 0, f"{shm_dir}: {e.strerror or e}"
        if problem is None and free < need:
            problem = f"{shm_dir} has {gib(free)} free"
        if problem is None:
            try:
                write_consolidated(store, index, path)
            except OSError as e:
                problem = f"writing {path} failed ({e.strerror or e})"
        if problem is not None:
            log.warning("stage2.data.preload=cpu: the node's shared copy of the embeddings needs "
                        "%s but %s: each of the %d local ranks loads its own copy instead (%s "
                        "each); set stage2.data.preload=mmap, or stage2.data.shm_dir to a larger "
                        "tmpfs", gib(need), problem, n_local, gib(need))
    try:
        statuses = distributed.all_gather_objects((key, leader, problem))
        shared = next(p for k, lead, p in statuses if k == key and lead) is None
        loaded = open_consolidated(path) if shared else store.load(index.videos)
        distributed.barrier()                   # every local rank has mapped it
    finally:                                    # also when a rank failed: never leave it in RAM
        if leader:
            shutil.rmtree(path, ignore_errors=True)  # freed when the last rank unmaps it
    if leader and shared:
        log.info("one copy of the embeddings (%s) shared by the %d ranks of this node", gib(need),
                 n_local)
    return loaded


def _same_store(cache: Path, store_path: str) -> bool:
    try:
        return read_meta(cache).get("store") == store_path
    except (OSError, ValueError):
        return False


def disk_cache(store: EmbeddingStore, cache_dir: str | Path | None = None) -> LoadedStore:
    """Every complete video of ``store`` as a memory-mapped consolidated copy in ``cache_dir``
    (default :func:`default_cache_dir`), named by the store's encoder key and fingerprint:
    written on first use by the lowest rank of each node, reused while the store is unchanged,
    rebuilt with a log line when it changed. Collective under DDP."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    fingerprint = distributed.broadcast_object(store.fingerprint() if distributed.is_primary() else None)
    path = cache_dir / f"{store.encoder_key}-{fingerprint[:16]}"
    leader, _, _ = distributed.node_peers()
    problem = None
    if leader:
        try:
            problem = _ensure_disk_cache(store, cache_dir, path, fingerprint)
        except (OSError, UsageError) as e:
            problem = f"stage2.data.preload=mmap: cannot write the cache {path}: {e}"
    _agree(problem)
    return open_consolidated(path)


def _ensure_disk_cache(store: EmbeddingStore, cache_dir: Path, path: Path, fingerprint: str) -> str | None:
    me = str(Path(store.path).resolve())
    if is_complete(path) and read_meta(path).get("fingerprint") == fingerprint:
        log.info("stage2: embeddings memory-mapped from the cache %s", path)
        _record_nonfinite(path)
        return None
    cache_dir.mkdir(parents=True, exist_ok=True)
    stale = [d for d in cache_dir.glob(f"{store.encoder_key}-*")
             if d != path and d.is_dir() and _same_store(d, me)]
    index = store.index()
    need = index.payload_bytes()
    free = _free_bytes(cache_dir)
    if free < need:
        return (f"stage2.data.cache_dir={cache_dir}: {gib(free)} free, the consolidated cache of "
                f"{store.path} needs {gib(need)}")
    if stale:
        log.warning("%s changed since its cache %s was written: rebuilding it as %s (%s)",
                    store.path, stale[0].name, path.name, gib(need))
    else:
        log.info("stage2: writing the consolidated cache %s (%s, once per store version)", path,
                 gib(need))
    write_consolidated(store, index, path, fingerprint)
    for d in stale:
        shutil.rmtree(d, ignore_errors=True)
    return None
