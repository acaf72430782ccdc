"""Consolidated copies of a store (fer_pipeline/embcache.py): the file format, the persistent mmap
cache (written once, reused, rebuilt when the store changed), one shared copy per node for the
local DDP ranks, and the /dev/shm-too-small fallback; train/val are index views, not copies."""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_pipeline import embcache
from fer_pipeline.distributed import free_port
from fer_pipeline.store import EmbeddingStore
from stage2_temporal.data import TemporalCache, gather_clips
from tests.conftest import ROOT, make_store


def test_consolidated_copy_maps_exactly_the_store(tmp_path):
    store = EmbeddingStore.open(make_store(tmp_path / "store"))
    index = store.index(["v03", "v00", "v07"])              # any subset, in any order
    path = embcache.write_consolidated(store, index, tmp_path / "copy", fingerprint="abc")
    got = embcache.open_consolidated(path)
    ref = store.load(["v03", "v00", "v07"])
    assert got.videos == ref.videos and list(got.offsets) == list(ref.offsets)
    for k in ("emb", "label", "face"):
        assert isinstance(getattr(got, k), np.memmap)
        np.testing.assert_array_equal(getattr(got, k), getattr(ref, k))
    assert got.attrs == ref.attrs and got.encoder_key == "synthkey"
    sizes = {p.name: p.stat().st_size for p in path.iterdir()}
    assert sizes["emb.f16"] == index.frames * store.dim * 2 and sizes["label.i8"] == index.frames
    assert not list(tmp_path.glob(".copy.tmp-*"))             # written under a temporary name
    (path / "label.i8").write_bytes(b"short")
    with pytest.raises(Exception, match="damaged cache"):
        embcache.open_consolidated(path)


def test_disk_cache_is_written_once_reused_and_rebuilt_when_the_store_changes(tmp_path, caplog):
    store = EmbeddingStore.open(make_store(tmp_path / "store"))
    cache_dir = tmp_path / "cache"
    caplog.set_level(logging.INFO, logger="fer_pipeline.embcache")
    first = embcache.disk_cache(store, cache_dir)
    (built,) = [p for p in cache_dir.iterdir()]
    assert built.name.startswith("synthkey-") and "writing the consolidated cache" in caplog.text
    inode = (built / "emb.f16").stat().st_ino
    caplog.clear()
    again = embcache.disk_cache(EmbeddingStore.open(tmp_path / "store"), cache_dir)
    assert (built / "emb.f16").stat().st_ino == inode                # reused, not rewritten
    assert "memory-mapped from the cache" in caplog.text and "writing" not in caplog.text
    np.testing.assert_array_equal(first.emb, again.emb)
    # the store changes: one video rewritten with other embeddings
    rec = store.read_video("v02")
    store.write_video("v02", (rec.emb + 1).astype(np.float16), rec.label, rec.face, {"split": "train"})
    caplog.clear()
    fresh = embcache.disk_cache(EmbeddingStore.open(tmp_path / "store"), cache_dir)
    assert "changed since its cache" in caplog.text and built.name in caplog.text
    (rebuilt,) = [p for p in cache_dir.iterdir()]
    assert rebuilt != built                                           # the stale copy is gone
    i = fresh.index("v02")
    np.testing.assert_array_equal(fresh.emb[fresh.offsets[i]:fresh.offsets[i + 1]],
                                  (rec.emb + 1).astype(np.float16))


def test_nonfinite_rows_are_found_while_copying_and_not_scanned_again(tmp_path, monkeypatch):
    from fer_pipeline.store import reader as store_mod
    from fer_pipeline.config import load_config
    from fer_pipeline.errors import UsageError
    from stage2_temporal.data import load_checked

    store = EmbeddingStore.open(make_store(tmp_path / "store"))
    rec = store.read_video("v03")
    emb = rec.emb.copy()
    emb[2:5, 1], emb[9, 0] = np.nan, -np.inf
    store.write_video("v03", emb, rec.label, rec.face, {"split": "train"})
    index = store.index()
    row0 = int(index.offsets[index.videos.index("v03")])
    data = load_config(overrides=["stage2.data.preload=mmap",
                                  f"stage2.data.cache_dir={tmp_path / 'cache'}"]).stage2.data
    with pytest.raises(UsageError, match=r"4 frame\(s\) .* v03 frames 3-5, 10"):
        load_checked(store, index, data)                 # the user's path: writes the cache
    (copy,) = (tmp_path / "cache").iterdir()
    assert embcache.read_meta(copy)["nonfinite_runs"] == [[row0 + 2, row0 + 5], [row0 + 9, row0 + 10]]

    def scanned(emb):
        raise AssertionError("the mapped copy was read again to check it")

    monkeypatch.setattr(store_mod, "nonfinite_rows", scanned)
    with pytest.raises(UsageError, match=r"v03 frames 3-5, 10"):
        load_checked(store, index, data)                 # reused: the recorded rows, no scan
    masked = load_checked(store, index, data.model_copy(update={"bad_frames": "mask"}))
    assert not masked.face[row0 + 2:row0 + 5].any() and torch.isfinite(masked.emb.float()).all()
    on_disk = np.fromfile(copy / "emb.f16", np.float16).reshape(-1, store.dim)
    assert np.isnan(on_disk[row0 + 2, 1])                # masked in private pages, not in the file
    monkeypatch.undo()
    meta = embcache.read_meta(copy)                      # a copy written before rows were recorded
    del meta["nonfinite_runs"]
    (copy / "index.json").write_text(json.dumps({**meta, "nonfinite": [row0 + 2, row0 + 9]}))
    np.testing.assert_array_equal(embcache.open_consolidated(copy).nonfinite, [row0 + 2, row0 + 9])
    (copy / "index.json").write_text(json.dumps(meta))   # the earlier format's plain list ^
    assert embcache.open_consolidated(copy).nonfinite is None
    with pytest.raises(UsageError, match=r"v03 frames 3-5, 10"):
        load_checked(store, index, data)                 # checked by reading it, once:
    assert embcache.read_meta(copy)["nonfinite_runs"] == [[row0 + 2, row0 + 5], [row0 + 9, row0 + 10]]


@pytest.mark.parametrize("rows", [[], [7], [0, 1, 2, 5, 6, 9], list(range(10**6))])
def test_row_runs_round_trip(rows):
    runs = embcache.row_runs(np.array(rows, np.int64))
    assert len(runs) <= 3
    back = embcache._recorded_nonfinite({"nonfinite_runs": json.loads(json.dumps(runs))})
    np.testing.assert_array_equal(back, rows)


def test_splits_are_index_views_of_one_array(tmp_path):
    loaded = EmbeddingStore.open(make_store(tmp_path / "store")).load()
    cache = TemporalCache.from_store(loaded)
    assert cache.emb.data_ptr() == loaded.emb.ctypes.data             # no copy when wrapped
    val = cache.subset([7, 2])
    assert val.emb.data_ptr() == cache.emb.data_ptr() and val.videos == ["v07", "v02"]
    assert list(val.offsets) == [0, loaded.lengths()[7], loaded.lengths()[7] + loaded.lengths()[2]]
    s = int(loaded.offsets[2])                                        # clip from v02's frame 5
    batch = gather_clips(val, torch.tensor([s + 5]), torch.tensor([10]), 10)
    torch.testing.assert_close(batch.x[0], torch.from_numpy(loaded.emb[s + 5:s + 15]).float())
    np.testing.assert_array_equal(val.view_labels()[: loaded.lengths()[7]],
                                  loaded.label[loaded.offsets[7]:loaded.offsets[8]])
    assert val.locate(s + 5) == (1, 5)


def test_device_preload_copies_video_by_video(tmp_path):
    from fer_pipeline.config import load_config
    from stage2_temporal.data import _load_to_device, load_cache

    store = EmbeddingStore.open(make_store(tmp_path / "store"))
    index = store.index(["v05", "v01"])
    cache = _load_to_device(store, index, torch.device("cpu"))   # the CUDA path, on the CPU
    ref = store.load(["v05", "v01"])
    assert cache.videos == ["v05", "v01"] and list(cache.offsets) == list(ref.offsets)
    assert torch.equal(cache.emb, torch.from_numpy(ref.emb)) and cache.label.dtype == torch.int8
    np.testing.assert_array_equal(cache.view_labels(), ref.label.astype(np.int64))
    # preload=cpu in one process: the store's own arrays, no copy
    same = load_cache(store, index, load_config().stage2.data)
    assert torch.equal(same.emb, cache.emb) and same.face.dtype == torch.bool


def _probe(tmp_path, *extra):
    store = make_store(tmp_path / "store")
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else tmp_path
    shm = base / f"fer-test-{uuid.uuid4().hex[:8]}"
    shm.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    try:
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                            "--nproc_per_node=2", str(ROOT / "tests" / "rank_probe.py"), str(store),
                            str(shm), str(out), *extra], capture_output=True, text=True, timeout=300,
                           env={**__import__("os").environ, "MASTER_PORT": str(free_port())})
        assert r.returncode == 0, r.stderr[-3000:]
        return shm, [json.loads((out / f"rank{k}.json").read_text()) for k in (0, 1)], r
    finally:
        shutil.rmtree(shm, ignore_errors=True)


@pytest.mark.slow
def test_two_local_ranks_map_one_shared_file_not_two_copies(tmp_path):
    shm, ranks, _ = _probe(tmp_path)
    a, b = (r["mapping"] for r in ranks)
    # both ranks' arrays are the same file (same inode) in the shm dir, unlinked once mapped
    assert a["inode"] == b["inode"] != 0
    assert a["path"].startswith(str(shm)) and a["path"].endswith("emb.f16 (deleted)")
    assert all(r["equal"] and r["memmap"] and r["tensor_shares_array"] for r in ranks)
    assert ranks[0]["shm_left"] == [] and ranks[1]["shm_left"] == []


@pytest.mark.slow
def test_shm_too_small_says_the_size_needed_and_each_rank_loads_its_own(tmp_path):
    _, ranks, r = _probe(tmp_path, "--tiny-shm")
    warnings = [ln for ln in r.stderr.splitlines() if "shared copy of the embeddings needs" in ln]
    assert len(warnings) == 1                                        # one line, from the node leader
    assert "GiB but" in warnings[0] and "stage2.data.preload=mmap" in warnings[0]
    a, b = (x["mapping"] for x in ranks)
    assert a["inode"] == 0 and b["inode"] == 0                       # private anonymous memory
    assert all(x["equal"] and not x["memmap"] for x in ranks)


def test_a_video_rewritten_while_copying_is_an_error_not_a_torn_copy(tmp_path, monkeypatch):
    """The copy reads the store in blocks of ``READ_ROWS`` rows; a video whose length changed
    after the index was taken stops it with a UsageError naming the video, and no copy is left."""
    from fer_pipeline.store import reader as store_mod
    from fer_pipeline.errors import UsageError

    monkeypatch.setattr(store_mod, "READ_ROWS", 16)          # several blocks per video
    store = EmbeddingStore.open(make_store(tmp_path / "store"))
    index = store.index()
    path = embcache.write_consolidated(store, index, tmp_path / "copy")
    np.testing.assert_array_equal(embcache.open_consolidated(path).emb, store.load().emb)
    T = int(index.offsets[2] - index.offsets[1])
    rec = store.read_video("v01")
    store.write_video("v01", rec.emb[:T - 5], rec.label[:T - 5], rec.face[:T - 5], rec.attrs)
    with pytest.raises(UsageError, match="v01 changed while it was being read"):
        embcache.write_consolidated(store, index, tmp_path / "copy2")
    assert not (tmp_path / "copy2").exists() and not list(tmp_path.glob(".copy2.tmp-*"))
