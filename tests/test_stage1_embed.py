"""Stage 1 embedding into the store: alignment to the frame index, resume, bad crops, keys."""
import numpy as np
import pytest
import torch

from pipeline.config import load_config
from pipeline.errors import UsageError
from pipeline.manifest import read_manifest
from pipeline.store import EmbeddingStore, StoreKeyError
from stage0_preprocess.main import run_ingest
from stage1_image_encoder.main import encoder_from, run_embed
from stage1_image_encoder.model import build_encoder, embed, encoder_key
from tests.conftest import TINY_SWIN


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


def test_missing_manifest_is_usage_error(tmp_path, tiny_cfg):
    with pytest.raises(UsageError, match="manifest not found"):
        run_embed(tmp_path / "nope.parquet", tiny_cfg, store=tmp_path / "s")
