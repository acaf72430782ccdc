"""Embedding store layout (SPEC §4), completion markers, key checks, loading."""
import json

import numpy as np
import pytest
import zarr

from fer_pipeline.errors import UsageError
from fer_pipeline.store import EmbeddingStore, StoreKeyError


def _video(T, D, seed=0):
    rng = np.random.default_rng(seed)
    face = rng.random(T) > 0.2
    emb = (rng.standard_normal((T, D)) * face[:, None]).astype(np.float16)
    label = rng.integers(-1, 8, T).astype(np.int8)
    return emb, label, face


def test_layout_on_disk(tmp_path):
    path = tmp_path / "emb" / "abc123"
    store = EmbeddingStore.create_or_open(path, "abc123", {"name": "m"}, dim=6)
    emb, label, face = _video(10, 6)
    store.write_video("v1", emb, label, face, {"fps": 25.0, "split": "train", "source": "v1"})
    root = json.loads((path / "zarr.json").read_text())
    assert root["zarr_format"] == 3
    assert root["attributes"]["encoder_key"] == "abc123" and root["attributes"]["dim"] == 6
    g = zarr.open_group(str(path / "videos" / "v1"), mode="r")
    assert g["emb"].dtype == np.float16 and g["emb"].shape == (10, 6)
    assert g["label"].dtype == np.int8 and g["face"].dtype == bool
    attrs = g.attrs.asdict()
    assert attrs["complete"] is True and attrs["n_frames"] == 10 and attrs["fps"] == 25.0
    assert attrs["encoder_key"] == "abc123" and attrs["split"] == "train"
    np.testing.assert_array_equal(g["emb"][:], emb)
    np.testing.assert_array_equal(g["label"][:], label)


def test_incomplete_video_is_not_listed_and_is_rewritten(tmp_path):
    store = EmbeddingStore.create_or_open(tmp_path / "s", "k", {}, dim=4)
    emb, label, face = _video(8, 4)
    store.write_video("done", emb, label, face, {})
    # a killed writer leaves arrays but no completion marker
    g = store.root["videos"].create_group("partial")
    g.create_array("emb", data=np.zeros((3, 4), np.float16))
    assert store.videos() == ["done"]
    assert store.all_videos() == ["done", "partial"]
    assert not store.is_complete("partial")
    store.write_video("partial", emb, label, face, {})
    assert store.videos() == ["done", "partial"]
    np.testing.assert_array_equal(store.read_video("partial").emb, emb)
    # a corrupt group file also reads as incomplete
    (tmp_path / "s" / "videos" / "done" / "zarr.json").write_text("{not json")
    assert not EmbeddingStore.open(tmp_path / "s").is_complete("done")


def test_refuses_other_encoder_and_names_a_new_path(tmp_path):
    EmbeddingStore.create_or_open(tmp_path / "s", "key_a", {}, dim=4)
    with pytest.raises(StoreKeyError) as e:
        EmbeddingStore.create_or_open(tmp_path / "s", "key_b", {}, dim=4)
    msg = str(e.value)
    assert "key_a" in msg and "key_b" in msg and str(tmp_path / "key_b") in msg
    with pytest.raises(StoreKeyError, match="dim"):
        EmbeddingStore.create_or_open(tmp_path / "s", "key_a", {}, dim=5)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    with pytest.raises(UsageError, match="not empty"):
        EmbeddingStore.create_or_open(tmp_path / "junk", "key_a", {}, dim=4)
    with pytest.raises(UsageError, match="no embedding store"):
        EmbeddingStore.open(tmp_path / "nothing")


def test_load_concatenates_in_order(tmp_path):
    store = EmbeddingStore.create_or_open(tmp_path / "s", "k", {}, dim=3)
    vids = {"b": _video(5, 3, 1), "a": _video(7, 3, 2), "c": _video(1, 3, 3)}
    for name, (e, l, f) in vids.items():
        store.write_video(name, e, l, f, {"split": "val" if name == "c" else "train"})
    loaded = store.load()
    assert loaded.videos == ["a", "b", "c"]
    np.testing.assert_array_equal(loaded.offsets, [0, 7, 12, 13])
    for i, name in enumerate(loaded.videos):
        s, e = loaded.offsets[i], loaded.offsets[i + 1]
        np.testing.assert_array_equal(loaded.emb[s:e], vids[name][0])
        np.testing.assert_array_equal(loaded.label[s:e], vids[name][1])
        np.testing.assert_array_equal(loaded.face[s:e], vids[name][2])
    sub = loaded.select([2, 0])
    assert sub.videos == ["c", "a"] and list(sub.offsets) == [0, 1, 8]
    np.testing.assert_array_equal(sub.emb[1:], vids["a"][0])
    assert [sub.split_of(i) for i in range(2)] == ["val", "train"]
    with pytest.raises(UsageError, match="1 video\\(s\\) missing or incomplete.*zzz"):
        store.load(["a", "zzz"])



def test_atomic_writes_get_the_mode_plain_open_would_give(tmp_path):
    import os

    from fer_pipeline.io import write_text

    write_text(tmp_path / "a.txt", "x")
    with open(tmp_path / "b.txt", "w") as f:
        f.write("x")
    assert (tmp_path / "a.txt").read_text() == "x"
    assert os.stat(tmp_path / "a.txt").st_mode & 0o777 == os.stat(tmp_path / "b.txt").st_mode & 0o777
    assert not list(tmp_path.glob(".a.txt.*"))       # no temporary left behind


def test_store_on_disk_is_within_5_percent_of_its_payload(tmp_path):
    """Edge chunks are stored at full size: chunk rows are chosen so they are (nearly) full."""
    from fer_pipeline.store import EmbeddingStore, chunk_rows

    assert chunk_rows(5000) == 2500 and chunk_rows(4096) == 4096 and chunk_rows(10) == 10
    assert all(-(-T // chunk_rows(T)) * chunk_rows(T) - T < -(-T // 4096) for T in range(1, 20000, 37))
    s = EmbeddingStore.create_or_open(tmp_path / "s", "k", {}, 64)
    lengths = [5000, 4097, 123, 8193, 12000]
    for i, T in enumerate(lengths):
        s.write_video(f"v{i}", np.ones((T, 64), np.float16), np.zeros(T, np.int8), np.ones(T, bool), {})
    emb_bytes = sum(p.stat().st_size for p in (tmp_path / "s").rglob("*")
                    if p.is_file() and "/emb/" in str(p))
    assert emb_bytes <= 1.05 * sum(lengths) * 64 * 2


def _concurrent_writer(path, names, seed, replace, errors):
    """One of several processes writing the same videos into one store (issue 15, defect 2)."""
    try:
        store = EmbeddingStore.create_or_open(path, "k", {"name": "m"}, 8)
        order = list(names)
        np.random.default_rng(seed).shuffle(order)
        for v in order:
            emb, label, face = _video(40, 8, seed=int(v[1:]))
            store.write_video(v, emb, label, face, {"split": "train"}, **replace)
    except BaseException as e:  # noqa: BLE001 - reported to the test
        errors.put(f"writer {seed}: {type(e).__name__}: {e}")


def _concurrent_reader(path, stop, errors):
    """Reads every complete video while the writers run: none may vanish or read wrong."""
    import time

    seen: set[str] = set()
    while not stop.is_set():
        try:
            if not (path / "zarr.json").exists():
                time.sleep(0.005)
                continue
            store = EmbeddingStore.open(path)
            for v in store.videos():
                rec = store.read_video(v)
                np.testing.assert_array_equal(rec.emb, _video(40, 8, seed=int(v[1:]))[0])
                seen.add(v)
            lost = seen - set(store.videos())
            if lost:
                errors.put(f"reader: complete video(s) vanished: {sorted(lost)}")
        except BaseException as e:  # noqa: BLE001 - reported to the test
            errors.put(f"reader: {type(e).__name__}: {e}")
            return


@pytest.mark.parametrize("replace", [{}, {"replace": False}], ids=["rewrite", "skip-complete"])
def test_concurrent_writers_and_a_reader_never_lose_or_break_a_video(tmp_path, replace):
    """Two processes create one store and write the same videos at once, repeatedly, while a
    third reads it: no process fails, no complete video ever disappears or reads wrong, and the
    store ends complete (before issue 15 the store was re-created under the other writer and
    groups were deleted and rewritten in place)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    names = [f"v{i:02d}" for i in range(12)]
    for trial in range(3):
        path = tmp_path / f"s{trial}"
        errors, stop = ctx.Queue(), ctx.Event()
        reader = ctx.Process(target=_concurrent_reader, args=(path, stop, errors))
        reader.start()
        writers = [ctx.Process(target=_concurrent_writer, args=(path, names, 10 * trial + w,
                                                                replace, errors))
                   for w in range(2)]
        for p in writers:
            p.start()
        for p in writers:
            p.join(120)
        stop.set()
        reader.join(60)
        found = []
        while not errors.empty():
            found.append(errors.get())
        assert not found, found
        assert [p.exitcode for p in writers] == [0, 0]
        store = EmbeddingStore.open(path)
        assert store.videos() == names and store.incomplete_videos() == []
        for v in names:
            np.testing.assert_array_equal(store.read_video(v).emb, _video(40, 8, seed=int(v[1:]))[0])
        assert not [p for p in (path / ".staging").iterdir()]      # no debris after clean runs


def test_a_failed_write_leaves_no_trace_and_the_old_video_stays(tmp_path, monkeypatch):
    """An OSError while a video is written (disk full) leaves the store as it was."""
    import errno

    store = EmbeddingStore.create_or_open(tmp_path / "s", "k", {}, 4)
    emb, label, face = _video(8, 4)
    store.write_video("a", emb, label, face, {})
    real = zarr.Group.create_array

    def full(self, name, *a, **k):
        if name == "label":
            raise OSError(errno.ENOSPC, "No space left on device", "label/c/0")
        return real(self, name, *a, **k)

    monkeypatch.setattr(zarr.Group, "create_array", full)
    with pytest.raises(OSError):
        store.write_video("a", emb * 2, label, face, {})
    with pytest.raises(OSError):
        store.write_video("b", emb, label, face, {})
    monkeypatch.undo()
    assert store.videos() == ["a"] and store.all_videos() == ["a"]
    np.testing.assert_array_equal(store.read_video("a").emb, emb)
    assert not list((tmp_path / "s" / ".staging").iterdir())


def test_expected_videos_that_never_finished_are_incomplete(tmp_path):
    store = EmbeddingStore.create_or_open(tmp_path / "s", "k", {}, 4)
    emb, label, face = _video(8, 4)
    store.expect_videos(["a", "b", "c"])
    store.write_video("a", emb, label, face, {})
    g = store.root["videos"].create_group("c")                 # a group without its marker
    g.create_array("emb", data=np.zeros((3, 4), np.float16))
    assert store.incomplete_videos() == ["b", "c"]
    with pytest.raises(UsageError, match=r"2 video\(s\) incomplete .*\(b, c\).*--allow-partial"):
        store.require_complete()
    store.require_complete(allow_partial=True)                  # a warning only
    assert store.videos() == ["a"]


def test_check_finite_names_video_and_frames_or_masks_them(tmp_path):
    store = EmbeddingStore.create_or_open(tmp_path / "s", "k", {}, 4)
    emb, label, face = _video(300, 4)
    emb = emb.copy()
    emb[30:240, 1] = np.nan
    emb[250] = np.inf
    store.write_video("bad", emb, label, face, {})
    store.write_video("good", *_video(20, 4, seed=1), {})
    loaded = store.load()
    np.testing.assert_array_equal(loaded.nonfinite, np.r_[30:240, 250])   # found while reading
    with pytest.raises(UsageError) as e:
        store.check_finite(loaded)
    msg = str(e.value)
    loaded.nonfinite = None                                   # not known: every row is checked
    with pytest.raises(UsageError) as scanned:
        store.check_finite(loaded)
    assert str(scanned.value) == msg
    assert "\n" not in msg and "211 frame(s)" in msg and "bad frames 31-240, 251" in msg
    assert "good" not in msg and "stage2.data.bad_frames=mask" in msg
    masked = store.check_finite(store.load(), "mask")
    assert np.isfinite(masked.emb.astype(np.float32)).all()
    assert not masked.face[30:240].any() and not masked.face[250]
    np.testing.assert_array_equal(masked.face[:30], face[:30])
