"""Stage 1 embedding into the store: alignment to the frame index, resume, bad crops, keys."""
import numpy as np
import pytest
import torch

from fer_pipeline.config import load_config
from fer_pipeline.errors import UsageError
from fer_pipeline.manifest import read_manifest
from fer_pipeline.store import EmbeddingStore, StoreKeyError
from stage0_preprocess import ingest_affwild2 as run_ingest
from stage1_image_encoder import embed_manifest as run_embed, load_encoder as encoder_from
from stage1_image_encoder.model import build_encoder, embed, encoder_key
from tests.conftest import CPU_RANKS, TINY_SWIN


@pytest.fixture
def tiny_cfg():
    return load_config(overrides=TINY_SWIN + ["stage1.embed.batch_size=32"])


def test_tiny_swin_embedding_shape(tiny_cfg):
    model = build_encoder(tiny_cfg.stage1.model).eval()
    with torch.inference_mode():
        out = embed(model, torch.randn(3, 3, 112, 112))
    assert out.shape == (3, model.num_features) == (3, 64)
    assert torch.isfinite(out).all()


def test_encoder_key_tracks_weights_and_preprocessing(tiny_cfg):
    m1, _ = encoder_from(tiny_cfg)
    m2, _ = encoder_from(tiny_cfg)
    assert encoder_key(m1, tiny_cfg.stage1.model) == encoder_key(m2, tiny_cfg.stage1.model)
    other_seed = load_config(overrides=TINY_SWIN + ["seed=1"])
    m3, _ = encoder_from(other_seed)
    assert encoder_key(m3, other_seed.stage1.model) != encoder_key(m1, tiny_cfg.stage1.model)
    resized = load_config(overrides=TINY_SWIN + ["stage1.model.mean=[0.5,0.5,0.5]"])
    assert encoder_key(m1, resized.stage1.model) != encoder_key(m1, tiny_cfg.stage1.model)


def test_embed_manifest_aligned_resumable(affwild2_tree, tmp_path, tiny_cfg):
    _, manifest_path = run_ingest(affwild2_tree, tmp_path / "s0", tiny_cfg)
    manifest = read_manifest(manifest_path)
    # one truncated JPEG: that frame must become face=False, the run goes on
    victim = manifest[manifest.has_face & (manifest.video == "vid_b")].iloc[4]
    data = open(victim.crop_path, "rb").read()
    open(victim.crop_path, "wb").write(data[: len(data) // 2])

    store_path = tmp_path / "store"
    res = run_embed(manifest_path, tiny_cfg, store=store_path)
    assert sorted(res.written) == sorted(manifest.video.unique()) and not res.failures
    store = EmbeddingStore.open(store_path)
    assert store.encoder_key == res.encoder_key and store.dim == 64
    for video, g in manifest.groupby("video"):
        rec = store.read_video(video)
        assert rec.emb.shape == (len(g), 64)
        np.testing.assert_array_equal(rec.label, g.label.to_numpy())
        expected_face = g.has_face.to_numpy().copy()
        if video == "vid_b":
            expected_face[victim.frame - 1] = False
        np.testing.assert_array_equal(rec.face, expected_face)
        assert not np.abs(rec.emb[~rec.face].astype(np.float32)).any()      # no-face rows zero
        assert np.abs(rec.emb[rec.face].astype(np.float32)).sum(1).min() > 0
        assert rec.attrs["split"] == ("val" if video == "vid_d" else "train")
        assert rec.attrs["fps"] == pytest.approx(25.0, abs=0.01)

    # a second run skips every complete video; a deleted marker makes one video redo
    before = store.read_video("vid_a").emb.copy()
    again = run_embed(manifest_path, tiny_cfg, store=store_path)
    assert again.written == [] and len(again.skipped) == 5
    EmbeddingStore.open(store_path, mode="a").root["videos"]["vid_a"].attrs.update({"complete": False})
    third = run_embed(manifest_path, tiny_cfg, store=store_path)
    assert third.written == ["vid_a"]
    np.testing.assert_array_equal(EmbeddingStore.open(store_path).read_video("vid_a").emb, before)

    # the same store path with another encoder is refused
    other = load_config(overrides=TINY_SWIN + ["seed=3"])
    with pytest.raises(StoreKeyError):
        run_embed(manifest_path, other, store=store_path)


def test_stored_embeddings_are_the_encoder_on_each_crop(ingested, tmp_path):
    """Every stored row is the encoder's output on that frame's crop alone, normalised the plain
    way: batches of 5 leave a short last batch in each video, so the reused CPU input buffer is
    written at several lengths."""
    from stage1_image_encoder.loading import BatchNormalizer, crop_tensor, read_image

    from fer_pipeline.runs import resolve_device
    from stage1_image_encoder.model import for_inference

    cfg = load_config(overrides=TINY_SWIN + ["stage1.embed.batch_size=5"])
    res = run_embed(ingested, cfg, store=tmp_path / "store")
    assert res.written and not res.failures
    model, mcfg = encoder_from(cfg)
    device = resolve_device(cfg)
    model, dtype = for_inference(model, device)      # as the run ran it (bf16 on a GPU)
    norm = BatchNormalizer(mcfg)
    store = EmbeddingStore.open(tmp_path / "store")
    manifest = read_manifest(ingested)
    checked, sizes = 0, set()
    for video, g in manifest.groupby("video"):
        rec = store.read_video(video)
        g = g.sort_values("frame")
        for frame, path in zip(g.frame[g.has_face], g.crop_path[g.has_face]):
            x = crop_tensor(read_image(path), mcfg.img_size, mcfg.grayscale)[None]
            with torch.inference_mode():
                want = embed(model, norm(x.to(device)).to(dtype))[0].float().cpu().numpy()
            np.testing.assert_allclose(rec.emb[frame - 1].astype(np.float32), want, rtol=1e-2, atol=2e-3)
            checked += 1
        sizes.add(int(g.has_face.sum()) % 5)
    assert checked > 20 and sizes - {0}


def test_normaliser_moves_its_constants_to_the_batch_device_once(monkeypatch):
    """On a GPU, copying the mean and std from host memory for every batch waits for every
    kernel already queued (the forward pass of the batch before): they move once."""
    from stage1_image_encoder.loading import BatchNormalizer

    norm = BatchNormalizer(load_config().stage1.model)
    x = torch.zeros(2, 8, 8, 3, dtype=torch.uint8, device="meta")     # (B, S, S, 3) as loaded
    assert norm(x).shape == (2, 3, 8, 8)
    assert norm.mean.device.type == "meta" and norm.std.device.type == "meta"
    moved, real = [], torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: moved.append(a) or real(self, *a, **k))
    norm(x)
    norm(x)
    assert moved == []


@pytest.mark.parametrize("grayscale", [False, True])
def test_crop_batches_hold_the_per_crop_decode(tmp_path, grayscale):
    """Each row of a ``CropBatches`` item is what ``crop_tensor(read_image(path))`` gives that
    crop (resized when its size differs, grey when asked), channels-last; unreadable, truncated,
    empty or missing files are zero rows with ok False. Reused buffers, the reading thread of
    ``prefetched`` and a DataLoader worker give the same items, and the normaliser takes either layout to the same floats."""
    import cv2
    from torch.utils.data import DataLoader

    from stage1_image_encoder.embed import prefetched
    from stage1_image_encoder.loading import BatchNormalizer, CropBatches, crop_tensor, read_image

    rng = np.random.default_rng(0)
    paths = []
    for k, (h, w) in enumerate([(48, 48), (48, 48), (64, 70), (30, 41), (48, 48), (100, 90)]):
        img = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (5, 5), 1)
        cv2.imwrite(str(tmp_path / f"{k}.jpg"), img)
        paths.append(str(tmp_path / f"{k}.jpg"))
    whole = (tmp_path / "0.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole[:len(whole) // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    paths[1:1] = [str(tmp_path / n) for n in ("cut.jpg", "missing.jpg", "empty.jpg", "junk.jpg")] + [""]
    batches = [[0, 1, 2], [3, 4, 5, 6, 7, 8], [9, 10]]
    mcfg = load_config(overrides=TINY_SWIN).stage1.model.model_copy(
        update={"img_size": 48, "grayscale": grayscale})

    want_img, want_ok = [], []
    for q in paths:
        img = read_image(q)
        want_ok.append(img is not None)
        want_img.append(torch.zeros(48, 48, 3, dtype=torch.uint8) if img is None
                        else crop_tensor(img, 48, grayscale).permute(1, 2, 0))
    assert want_ok == [True, False, False, False, False, False, True, True, True, True, True]

    def check(k, item):
        idx, images, ok = item
        assert idx.tolist() == batches[k]
        assert images.shape == (len(batches[k]), 48, 48, 3) and images.dtype == torch.uint8
        assert ok.tolist() == [want_ok[i] for i in batches[k]]
        for row, i in zip(images, batches[k]):
            assert torch.equal(row, want_img[i]), paths[i]

    for buffers in (0, 1, 2):
        ds = CropBatches(paths, batches, mcfg, buffers=buffers)
        assert len(ds) == 3
        for k in range(3):
            check(k, ds[k])
    for k, item in enumerate(prefetched(CropBatches(paths, batches, mcfg, buffers=2))):
        check(k, item)
    for k, item in enumerate(DataLoader(CropBatches(paths, batches, mcfg), batch_size=None, num_workers=1)):
        check(k, item)

    norm = BatchNormalizer(mcfg)
    images = CropBatches(paths, batches, mcfg)[1][1]
    plain = norm(images.permute(0, 3, 1, 2).contiguous())
    assert torch.equal(norm(images), plain)
    assert torch.equal(norm(images, out=torch.empty(6, 3, 48, 48)), plain)
    if grayscale:
        assert torch.equal(images[..., 0], images[..., 2])


def test_prefetched_reads_ahead_in_order_and_stops_its_thread():
    """``prefetched`` yields the items in order, reads item k + 1 while the caller holds item k
    (never further), passes a reading error on, and leaves no thread behind when the caller
    stops early."""
    import threading

    from stage1_image_encoder.embed import prefetched

    class Items:
        def __init__(self, n, fail_at=None):
            self.n, self.fail_at, self.asked = n, fail_at, []

        def __len__(self):
            return self.n

        def __getitem__(self, k):
            if k == self.fail_at:
                raise OSError(f"item {k}")
            self.asked.append(k)
            return k * 10

    def readers():
        return [t for t in threading.enumerate() if t.name.startswith("embed-reader")]

    items = Items(5)
    got = []
    for k, item in enumerate(prefetched(items)):
        got.append(item)
        assert max(items.asked) <= k + 1
    assert got == [0, 10, 20, 30, 40] and items.asked == [0, 1, 2, 3, 4]
    assert not readers()
    assert list(prefetched(Items(0))) == []

    gen = prefetched(Items(100))
    assert next(gen) == 0
    gen.close()
    assert not readers()

    with pytest.raises(OSError, match="item 2"):
        list(prefetched(Items(5, fail_at=2)))
    assert not readers()


def test_missing_manifest_is_usage_error(tmp_path, tiny_cfg):
    with pytest.raises(UsageError, match="manifest not found"):
        run_embed(tmp_path / "nope.parquet", tiny_cfg, store=tmp_path / "s")


def test_flip_stores_the_mirrored_crops_embedding_beside_the_plain_one(ingested, tmp_path):
    """``stage1.embed.flip``: each frame's second embedding is the encoder on its crop mirrored
    left-right, in the same store entry; a store embedded without it gains it on a re-run
    (plain rows unchanged), and a further re-run skips every video."""
    from stage1_image_encoder.loading import BatchNormalizer, crop_tensor, read_image

    from fer_pipeline.runs import resolve_device
    from stage1_image_encoder.model import for_inference

    cfg = load_config(overrides=TINY_SWIN + ["stage1.embed.batch_size=8"])
    flip_cfg = load_config(overrides=TINY_SWIN + ["stage1.embed.batch_size=8", "stage1.embed.flip=true"])
    res = run_embed(ingested, cfg, store=tmp_path / "store")
    assert res.written and not res.failures
    store = EmbeddingStore.open(tmp_path / "store")
    plain = _store_arrays(tmp_path / "store")
    assert not any(store.has_flip(v) for v in store.videos())
    with pytest.raises(UsageError, match="no flipped-crop embeddings.*stage1.embed.flip=true"):
        store.read_flip_into(store.videos(), np.zeros((10_000, store.dim), np.float16))

    again = run_embed(ingested, flip_cfg, store=tmp_path / "store")      # adds the flipped rows
    assert sorted(again.written) == sorted(plain) and not again.skipped
    store = EmbeddingStore.open(tmp_path / "store")
    for v, arrays in plain.items():
        rec = store.read_video(v)
        for x, y in zip((rec.emb, rec.label, rec.face), arrays):
            np.testing.assert_array_equal(x, y)
        assert store.has_flip(v) and rec.emb_flip.shape == rec.emb.shape
        assert not rec.emb_flip[~rec.face].any()                      # no-face rows stay zero

    model, mcfg = encoder_from(flip_cfg)
    model, dtype = for_inference(model, resolve_device(flip_cfg))
    norm = BatchNormalizer(mcfg)
    manifest = read_manifest(ingested)
    video, g = next(iter(manifest.groupby("video")))
    g = g.sort_values("frame")
    rec = store.read_video(video)
    for frame, path in list(zip(g.frame[g.has_face], g.crop_path[g.has_face]))[:6]:
        x = crop_tensor(read_image(path), mcfg.img_size, mcfg.grayscale)[None]
        with torch.inference_mode():
            want = embed(model, norm(x.flip(-1)).to(dtype))[0].float().numpy()
        np.testing.assert_allclose(rec.emb_flip[frame - 1].astype(np.float32), want, rtol=1e-2, atol=2e-3)
        assert not np.allclose(rec.emb_flip[frame - 1], rec.emb[frame - 1], atol=2e-3)

    third = run_embed(ingested, flip_cfg, store=tmp_path / "store")      # resume: nothing to do
    assert not third.written and sorted(third.skipped) == sorted(plain)


def _store_arrays(path):
    store = EmbeddingStore.open(path)
    return {v: (r.emb, r.label, r.face) for v in store.videos() for r in [store.read_video(v)]}


def _assert_same_store(a, b):
    A, B = _store_arrays(a), _store_arrays(b)
    assert sorted(A) == sorted(B)
    for v in A:
        for x, y in zip(A[v], B[v]):
            np.testing.assert_array_equal(x, y)


def _cli(*args, timeout=600, launcher=None):
    import subprocess
    import sys

    cmd = (launcher or [sys.executable, "-m"]) + ["fer_pipeline", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def ingested(affwild2_tree, tmp_path):
    _, manifest = run_ingest(affwild2_tree, tmp_path / "s0", load_config())
    return manifest


@pytest.mark.slow
def test_two_gloo_ranks_write_the_same_store_as_one(ingested, tmp_path):
    one = tmp_path / "one"
    r = _cli("stage1", "embed", "--manifest", ingested, "--store", one, *TINY_SWIN, *CPU_RANKS)
    assert r.returncode == 0, r.stderr[-2000:]
    two = tmp_path / "two"
    from tests.conftest import TORCHRUN as torchrun
    r2 = _cli("stage1", "embed", "--manifest", ingested, "--store", two, "--export-h5",
              tmp_path / "two.h5", *TINY_SWIN, *CPU_RANKS, launcher=torchrun)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "on 2 ranks" in r2.stdout and r2.stdout.count("stage1 embed:") == 1
    _assert_same_store(one, two)
    # the HDF5 export holds the same arrays and attributes
    import h5py

    with h5py.File(tmp_path / "two.h5") as f:
        store = EmbeddingStore.open(two)
        assert f.attrs["encoder_key"] == store.encoder_key
        assert sorted(f["videos"]) == store.videos()
        for v in store.videos():
            rec = store.read_video(v)
            np.testing.assert_array_equal(f["videos"][v]["emb"][:], rec.emb)
            np.testing.assert_array_equal(f["videos"][v]["label"][:], rec.label)
            assert f["videos"][v].attrs["split"] == rec.attrs["split"]


@pytest.mark.slow
def test_nproc_2_writes_the_same_store_as_one(ingested, tmp_path):
    """``stage1 embed --nproc 2`` self-spawns 2 ranks (it was rejected before issue 15)."""
    one, two = tmp_path / "one", tmp_path / "two"
    assert _cli("stage1", "embed", "--manifest", ingested, "--store", one, *TINY_SWIN, *CPU_RANKS).returncode == 0
    r = _cli("stage1", "embed", "--manifest", ingested, "--store", two, "--nproc", "2", *TINY_SWIN, *CPU_RANKS)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("stage1 embed:") == 1 and "on 2 ranks" in r.stdout
    _assert_same_store(one, two)
    # a failed video on one rank: exit 1 from the spawning process too
    manifest = read_manifest(ingested)
    for p in manifest[manifest.has_face & (manifest.video == "vid_b")].crop_path:
        open(p, "wb").write(b"")
    r = _cli("stage1", "embed", "--manifest", ingested, "--store", tmp_path / "three", "--nproc", "2",
             *TINY_SWIN, *CPU_RANKS)
    assert r.returncode == 1 and "1 failed" in r.stdout, r.stderr[-3000:]


@pytest.mark.slow
def test_sigkill_during_embedding_then_rerun_gives_the_same_arrays(ingested, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    ref = tmp_path / "ref"
    assert _cli("stage1", "embed", "--manifest", ingested, "--store", ref, *TINY_SWIN,
                "stage1.embed.batch_size=8").returncode == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "fer_pipeline", "stage1", "embed", "--manifest",
                             str(ingested), "--store", str(out), *TINY_SWIN,
                             "stage1.embed.batch_size=8"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        done = [p for p in (out / "videos").glob("*") if (p / "zarr.json").exists()] \
            if (out / "videos").is_dir() else []
        if len(done) >= 2:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(EmbeddingStore.open(out).videos()) < 5, "killed too late"
    r = _cli("stage1", "embed", "--manifest", ingested, "--store", out, *TINY_SWIN,
             "stage1.embed.batch_size=8")
    assert r.returncode == 0, r.stderr[-2000:]
    _assert_same_store(ref, out)


def test_nan_embeddings_reject_the_video_and_leave_the_store_clean(ingested, tmp_path, tiny_cfg,
                                                                   monkeypatch):
    import stage1_image_encoder.embed as E

    manifest = read_manifest(ingested)
    bad = manifest[manifest.has_face & (manifest.video == "vid_b")]
    import cv2

    for p in bad.crop_path:                       # mark vid_b's crops: flat black images
        cv2.imwrite(p, np.zeros((112, 112, 3), np.uint8))
    real = E.embed

    def poisoned(model, images):
        out = real(model, images)
        flat = images.flatten(2).std(2).amax(1) < 1e-6   # a flat image -> NaN, like a broken encoder
        out[flat] = float("nan")
        return out

    monkeypatch.setattr(E, "embed", poisoned)
    res = run_embed(ingested, tiny_cfg, store=tmp_path / "store")
    assert len(res.failures) == 1 and "vid_b" in res.failures[0] and "NaN" in res.failures[0]
    store = EmbeddingStore.open(tmp_path / "store")
    assert "vid_b" not in store.all_videos()
    assert sorted(store.videos()) == sorted(set(manifest.video) - {"vid_b"})


def test_checkpoint_that_is_not_a_state_dict_is_refused(tmp_path, tiny_cfg):
    import pickle

    from stage1_image_encoder.model import load_weights

    model = build_encoder(tiny_cfg.stage1.model)

    class Payload:
        def __reduce__(self):
            return (print, ("this would run on load",))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"model": Payload()}))
    with pytest.raises(UsageError, match="not a weights-only state dict"):
        load_weights(model, tmp_path / "evil.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(UsageError, match="not a state dict of tensors"):
        load_weights(model, tmp_path / "list.pth")
    torch.save({"other.weight": torch.zeros(3)}, tmp_path / "wrong.pth")
    with pytest.raises(UsageError, match="do not fit"):
        load_weights(model, tmp_path / "wrong.pth")
    torch.save(model.state_dict(), tmp_path / "ok.pth")
    load_weights(model, tmp_path / "ok.pth")


def test_a_video_with_unreadable_crops_fails_and_is_redone_once_fixed(ingested, tmp_path, tiny_cfg):
    """Issue 15, defect 3: a video whose face crops are all unreadable was stored complete (0
    faces, '0 failed', rc 0) and skipped by every re-run. More than stage1.embed.max_bad_crops
    unreadable now fails the video, named, and leaves it out of the store until fixed."""
    manifest = read_manifest(ingested)
    crops = manifest[manifest.has_face & (manifest.video == "vid_b")].crop_path.tolist()
    saved = {p: open(p, "rb").read() for p in crops}
    for p in crops:
        open(p, "wb").write(b"not a jpeg")
    store_path = tmp_path / "store"
    res = run_embed(ingested, tiny_cfg, store=store_path)
    assert len(res.failures) == 1 and "vid_b" in res.failures[0]
    assert f"{len(crops)} of {len(crops)} face crops unreadable" in res.failures[0]
    store = EmbeddingStore.open(store_path)
    assert "vid_b" not in store.videos() and store.incomplete_videos() == ["vid_b"]
    for p, data in saved.items():
        open(p, "wb").write(data)
    again = run_embed(ingested, tiny_cfg, store=store_path)
    assert again.written == ["vid_b"] and not again.failures
    assert EmbeddingStore.open(store_path).read_video("vid_b").face.sum() == len(crops)
    # a few bad crops (<= 5 %) are counted and the video is written with them as no-face frames
    for p in crops[:2]:
        open(p, "wb").write(b"")
    cfg = load_config(overrides=TINY_SWIN + ["stage1.embed.batch_size=32"])
    third = run_embed(ingested, cfg, store=tmp_path / "store3")
    assert not third.failures and third.bad_crops == 2
    assert EmbeddingStore.open(tmp_path / "store3").read_video("vid_b").face.sum() == len(crops) - 2


def test_auto_workers_read_on_a_thread_on_a_cpu_and_an_int_or_auto_is_all_it_takes(tmp_path, monkeypatch):
    """``stage1.embed.workers: auto`` (the default) embeds without worker processes on a CPU, with
    the same rows as 2 workers; the key takes a count >= 0 or auto, nothing else."""
    from bench.stage1 import make_manifest
    from fer_pipeline.errors import ConfigError
    from stage1_image_encoder import embed as embed_mod
    from stage1_image_encoder.embed import embed_manifest

    assert load_config().stage1.embed.workers == "auto"
    for bad in ("-1", "many"):
        with pytest.raises(ConfigError):
            load_config(overrides=[f"stage1.embed.workers={bad}"])
    df = read_manifest(make_manifest(tmp_path, 50, per_video=25))
    cpu = torch.device("cpu")
    two = load_config(overrides=TINY_SWIN + ["stage1.embed.workers=2", "stage1.embed.batch_size=16"])
    model, _ = encoder_from(two)
    embed_manifest(df, model, two, tmp_path / "two", cpu)
    auto = load_config(overrides=TINY_SWIN + ["stage1.embed.workers=auto", "stage1.embed.batch_size=16"])
    monkeypatch.setattr(embed_mod, "DataLoader", lambda *a, **k: pytest.fail("a worker process on a CPU"))
    res = embed_manifest(df, model, auto, tmp_path / "auto", cpu)
    assert sorted(res.written) == ["v000", "v001"]
    a, b = EmbeddingStore.open(tmp_path / "auto"), EmbeddingStore.open(tmp_path / "two")
    for v in a.videos():
        np.testing.assert_array_equal(a.read_video(v).emb, b.read_video(v).emb)


def test_for_inference_casts_a_copy_and_leaves_the_callers_model_alone(tiny_cfg):
    """The embed path's bf16 model (on a GPU) is a copy: the caller's encoder keeps its float32
    weights, so its classifier head still takes float32 embeddings (predict's frame-level path
    classifies with the same encoder it embedded with) and its store key stays the same from one
    embed call to the next."""
    from stage1_image_encoder.model import for_inference

    model, mcfg = encoder_from(tiny_cfg)
    key = encoder_key(model, mcfg)
    cpu = torch.device("cpu")
    same, dtype = for_inference(model, cpu)
    assert same is model and dtype == torch.float32
    half, dtype = for_inference(model, cpu, torch.bfloat16)      # what a GPU gets
    assert dtype == torch.bfloat16 and half is not model
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert encoder_key(model, mcfg) == key
    assert for_inference(half, cpu, torch.bfloat16)[0] is half    # already bf16: no second copy
    x = torch.randn(4, 3, mcfg.img_size, mcfg.img_size)
    with torch.inference_mode():
        e = embed(half, x.to(torch.bfloat16)).float()
        assert model.get_classifier()(e).shape == (4, 8)
        assert torch.nn.functional.cosine_similarity(e, embed(model, x)).min() > 0.99
