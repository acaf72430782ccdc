"""``fer-pipeline predict`` and ``Predictor``: new videos -> CSV, ABAW submission, timeline."""
from __future__ import annotations

import re
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

from fer_pipeline.labels import CLASSES
from tests.conftest import SHARED, TINY_SWIN, make_store

pytestmark = pytest.mark.slow
SAMPLE = SHARED / "assets" / "videos" / "d19.mp4"
SMALL_S2 = ["stage2.model.d_model=32", "stage2.model.ff=64", "stage2.model.heads=2",
            "stage2.model.layers=1", "stage2.data.clip_len=16", "stage2.train.batch_size=8",
            "stage2.train.epochs=2", "stage2.train.warmup_epochs=0"]


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "fer_pipeline", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def _encoder_run(path, overrides):
    """A stage-1 run dir as `stage1 train` leaves it: resolved config + safetensors weights."""
    import torch

    from fer_pipeline.checkpoint import save_checkpoint
    from fer_pipeline.config import load_config
    from stage1_image_encoder.model import build_encoder, encoder_key

    cfg = load_config(overrides=overrides)
    torch.manual_seed(123)
    model = build_encoder(cfg.stage1.model)
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(cfg.to_yaml())
    save_checkpoint(path / "checkpoint.safetensors", model, {"epoch": 0})
    return encoder_key(model, cfg.stage1.model), int(model.num_features)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A stage-2 run trained on a store of the encoder's key that records its stage-1 run, and
    three inputs: a short real face clip, a face-free clip, a text file named .mp4."""
    from fer_pipeline.store import EmbeddingStore
    from stage0_preprocess.decode import iter_frames
    from fer_pipeline.media import VideoWriter

    if not SAMPLE.is_file():
        pytest.skip(f"{SAMPLE} not available")
    root = tmp_path_factory.mktemp("predict")
    key, dim = _encoder_run(root / "s1", TINY_SWIN)
    store = make_store(root / "store", n_train=4, n_val=2, dim=dim, key=key)
    EmbeddingStore.open(store, mode="a").root.attrs["encoder_run"] = str(root / "s1")
    r = cli("stage2", "train", "--store", store, "--out", root / "run", *SMALL_S2)
    assert r.returncode == 0, r.stderr[-2000:]
    with VideoWriter(root / "in" / "face.mp4", 240, 240, 30) as w:
        for f in iter_frames(SAMPLE):
            if f.index >= 36:
                break
            w.write(cv2.resize(f.image, (240, 240), interpolation=cv2.INTER_AREA))
    with VideoWriter(root / "in" / "blank.mp4", 96, 64, 25) as w:
        for k in range(20):
            w.write(np.full((64, 96, 3), 90 + k, np.uint8))
    (root / "in" / "notes.mp4").write_text("not a video\n")
    return root


@pytest.fixture(scope="module")
def predicted(setup):
    out = setup / "out"
    r = cli("predict", setup / "in" / "face.mp4", setup / "in" / "blank.mp4",
            setup / "in" / "notes.mp4", "--run", setup / "run", "--out", out)
    return r, out


def test_predict_writes_csv_submission_and_timeline(predicted):
    r, out = predicted
    assert r.returncode == 1, r.stderr[-2000:]       # one input failed, the others are done
    assert "predict: 2 video(s) predicted, 1 failed" in r.stdout
    df = pd.read_csv(out / "face.csv")
    assert list(df.columns[:3]) == ["frame", "time_s", "has_face"]
    assert len(df) == 36 and df["frame"].tolist() == list(range(1, 37))
    assert np.allclose(np.diff(df["time_s"]), 1 / 30, atol=2e-3)
    assert df["has_face"].mean() > 0.9                     # a frontal face in every frame
    probs = df[[f"p_{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-3)
    assert (df["label"] == probs.argmax(1)).all()
    assert df["smoothed_label"].between(0, 7).all()
    sub = (out / "face_submission.txt").read_text().splitlines()
    assert sub[0] == "image_location," + ",".join(CLASSES)
    assert len(sub) == 37
    assert all(re.fullmatch(r"face/\d{5}\.jpg,[0-7]", ln) for ln in sub[1:])
    assert sub[5] == f"face/00005.jpg,{df['smoothed_label'][4]}"
    img = cv2.imread(str(out / "face_timeline.png"))
    assert img is not None and img.shape[1] > 600 and img.shape[0] > 300


def test_a_failed_input_is_reported_once(predicted):
    """The text file named .mp4 fails alone and its error reaches the user once (stage 0's line,
    as it happens); the summary line only counts it."""
    r, out = predicted
    both = r.stdout + r.stderr
    assert both.count("notes.mp4") == 1, both
    assert "notes.mp4" in r.stderr                    # stage 0's line, naming file and reason
    assert "1 failed (errors above" in r.stdout.splitlines()[-1]
    assert (out / "predict_summary.json").read_text().count("notes.mp4") == 1


def test_video_without_faces_gives_flagged_rows_and_a_warning(predicted):
    r, out = predicted
    df = pd.read_csv(out / "blank.csv")
    assert len(df) == 20 and not df["has_face"].any()
    assert "no face in any of its 20 frames" in r.stderr
    assert len((out / "blank_submission.txt").read_text().splitlines()) == 21
    assert cv2.imread(str(out / "blank_timeline.png")) is not None


def test_api_matches_the_command(setup, predicted):
    from fer_pipeline import Predictor

    _, out = predicted
    df = Predictor.from_run(setup / "run").predict_video(setup / "in" / "face.mp4")
    ref = pd.read_csv(out / "face.csv")
    assert list(df.columns) == list(ref.columns)
    np.testing.assert_allclose(df["p_Happiness"].to_numpy(), ref["p_Happiness"].to_numpy(), atol=1e-4)
    assert (df["smoothed_label"].to_numpy() == ref["smoothed_label"].to_numpy()).all()


def test_rerun_reuses_the_work_dir(setup, predicted):
    _, out = predicted
    r = cli("predict", setup / "in" / "face.mp4", "--run", setup / "run", "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "already complete" in r.stderr                  # stage 0 and the store skip it


def test_bad_runs_and_encoders_are_one_line_errors(setup, tmp_path):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(setup / "run", bare)
    (bare / "checkpoint.safetensors").unlink()
    r = cli("predict", setup / "in" / "face.mp4", "--run", bare, "--out", tmp_path / "o1")
    assert r.returncode == 2 and "no checkpoint.safetensors" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    # an encoder whose embeddings do not fit the model's input
    _encoder_run(tmp_path / "wide", [*TINY_SWIN, "stage1.model.embed_dim=48"])
    r = cli("predict", setup / "in" / "face.mp4", "--run", setup / "run", "--encoder-run",
            tmp_path / "wide", "--out", tmp_path / "o2")
    assert r.returncode == 2 and "96-dim embeddings, the model takes 64" in r.stderr
    r = cli("predict", setup / "in" / "face.mp4", "--run", tmp_path / "nowhere", "--out", tmp_path / "o3")
    assert r.returncode == 2 and "nowhere" in r.stderr
