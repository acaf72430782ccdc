"""The real-face encoder shipped in the package: loading it (``pretrained: bundled``), its
checksum, ``stage1 eval`` on real FERPlus faces, and ``predict`` without a run on real videos
(smiles read as Happiness), plus timm's own pretrained weights through a fake offline cache."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fer_pipeline.config import load_config
from fer_pipeline.errors import UsageError
from tests.conftest import SHARED

FERPLUS = SHARED / "data" / "ferplus"
VIDEOS = SHARED / "assets" / "videos"


def cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "fer_pipeline", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def test_bundled_encoder_loads_with_its_own_architecture_and_checksum():
    import stage1_image_encoder as stage1
    from stage1_image_encoder.pretrained import sha256

    run = stage1.bundled_run()
    card = (run / "MODEL_CARD.md").read_text()
    info = json.loads((run / "bundled.json").read_text())
    assert info["sha256"] == sha256(run / "checkpoint.safetensors") and info["sha256"] in card
    assert (run / "checkpoint.safetensors").stat().st_size <= 20e6
    # pretrained: bundled replaces the architecture / preprocessing of stage1.model
    cfg = load_config(overrides=["stage1.model.pretrained=bundled"])
    model, mcfg = stage1.load_encoder(cfg)
    assert mcfg.name == info["model"] and mcfg.img_size == info["img_size"] and mcfg.grayscale
    assert stage1.encoder_key(model, mcfg) == info["encoder_key"]
    same, _ = stage1.load_encoder(load_config(), "bundled")
    for (k, a), b in zip(model.state_dict().items(), same.state_dict().values()):
        assert torch.equal(a, b), k


def test_corrupted_bundled_weights_name_the_file_and_the_expected_checksum(tmp_path, monkeypatch):
    import stage1_image_encoder as stage1
    from stage1_image_encoder import pretrained

    copy = tmp_path / "bundled" / pretrained.BUNDLED_NAME
    shutil.copytree(stage1.bundled_run(), copy)
    data = bytearray((copy / "checkpoint.safetensors").read_bytes())
    data[-100] ^= 0xFF
    (copy / "checkpoint.safetensors").write_bytes(bytes(data))
    monkeypatch.setattr(pretrained, "BUNDLED_DIR", tmp_path / "bundled")
    expected = json.loads((copy / "bundled.json").read_text())["sha256"]
    with pytest.raises(UsageError, match=rf"{copy / 'checkpoint.safetensors'}: corrupted bundled "
                                         rf"weights .* expected {expected}"):
        stage1.load_encoder(load_config(overrides=["stage1.model.pretrained=bundled"]))


@pytest.mark.skipif(not (FERPLUS / "FER2013Valid" / "label.csv").is_file(),
                    reason="../shared/data/ferplus not found")
def test_stage1_eval_on_real_ferplus_faces(tmp_path):
    """``stage1 eval --run bundled`` through the FERPlus adapter on 200 real validation faces
    (the bundled encoder never trained on FER2013Valid)."""
    root = tmp_path / "ferplus"
    (root / "FER2013Train").mkdir(parents=True)
    (root / "FER2013Valid").mkdir()
    for split, n in (("FER2013Train", 10), ("FER2013Valid", 200)):
        lines = (FERPLUS / split / "label.csv").read_text().splitlines()[:n]
        (root / split / "label.csv").write_text("\n".join(lines) + "\n")
        for line in lines:
            name = line.split(",")[0]
            shutil.copy(FERPLUS / split / name, root / split / name)
    out = tmp_path / "eval"
    r = cli("stage1", "eval", "--run", "bundled", "--out", out,
            f"stage1.data.sources=[{{format: ferplus, root: {root}}}]", "stage1.data.workers=0")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "stage1_eval.json").read_text())
    assert set(res) >= {"accuracy", "macro_f1", "n", "per_class"}
    assert 150 <= res["n"] <= 200                        # majority rule leaves some images out
    assert res["accuracy"] > 0.5                         # chance is far below (8 classes)
    assert sum(c["support"] for c in res["per_class"].values()) == res["n"]
    assert "Happiness" in r.stdout and r.stdout.splitlines()[-1].startswith("stage1 eval: accuracy")
    # not a run: one line, exit 2
    bad = cli("stage1", "eval", "--run", tmp_path, "--out", out)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not a stage-1 run" in bad.stderr


@pytest.mark.slow
@pytest.mark.skipif(not VIDEOS.is_dir(), reason="../shared/assets/videos not found")
def test_predict_without_a_run_reads_smiles_and_relaxed_faces_as_annotated(tmp_path):
    """A fresh install's first command: ``fer-pipeline predict VIDEO`` with no run at all."""
    from fer_pipeline.labels import CLASSES

    out = tmp_path / "pred"
    r = cli("predict", VIDEOS / "d19.mp4", VIDEOS / "face_noface.mov", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    # scored against the by-eye segments (tests/data/video_segments.md): every smile and every
    # relaxed face of the two videos reads as such
    from bench.video_segments import load_segments, score

    got = score(load_segments(), out)
    easy = got[got.expression.isin(["Happiness", "Neutral"])]
    assert set(got.video) == {"d19", "face_noface"} and len(easy) == 10
    assert easy.hit.all(), easy[~easy.hit.astype(bool)].to_dict("records")
    for video in ("d19", "face_noface"):
        df = pd.read_csv(out / f"{video}.csv")
        assert {"x1", "y1", "x2", "y2", "det_score", "label", "label_name", "smoothed_label",
                "smoothed_label_name"} <= set(df.columns)
        assert (df.label_name == [CLASSES[i] for i in df.label]).all()
        assert (df.smoothed_label_name == [CLASSES[i] for i in df.smoothed_label]).all()
        sub = (out / f"{video}_submission.txt").read_text().splitlines()
        assert [int(x.split(",")[1]) for x in sub[1:]] == df.smoothed_label.tolist()
        assert (out / f"{video}_timeline.png").is_file()
    # the same frames through the Python API
    from fer_pipeline import Predictor

    api = Predictor.default().predict_video(VIDEOS / "face_noface.mov")
    cli_df = pd.read_csv(out / "face_noface.csv")
    np.testing.assert_array_equal(api.smoothed_label.to_numpy(), cli_df.smoothed_label.to_numpy())


@pytest.mark.slow
@pytest.mark.skipif(not VIDEOS.is_dir(), reason="../shared/assets/videos not found")
def test_predict_with_a_stage1_run_and_without_a_classifier_head(tmp_path):
    import stage1_image_encoder as stage1
    from safetensors.torch import load_file, save_file

    run = tmp_path / "s1"
    shutil.copytree(stage1.bundled_run(), run)
    r = cli("predict", VIDEOS / "d0.mp4", "--run", run, "--out", tmp_path / "p1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(pd.read_csv(tmp_path / "p1" / "d0.csv")) == 78
    # a stage-1 run whose checkpoint has no classifier weights: one line, exit 2
    state = load_file(str(run / "checkpoint.safetensors"))
    save_file({k: v for k, v in state.items() if not k.startswith("fc.")}, str(run / "checkpoint.safetensors"))
    bad = cli("predict", VIDEOS / "d0.mp4", "--run", run, "--out", tmp_path / "p2")
    assert bad.returncode == 2, bad.stderr[-2000:]
    assert bad.stderr.strip().count("\n") == 0 and "no trained classifier head" in bad.stderr


def _fake_hf_cache(home: Path, hub_id: str, state: dict) -> Path:
    """The layout huggingface_hub reads offline: refs/main -> snapshots/<commit>/file."""
    from safetensors.torch import save_file

    repo = home / "hub" / ("models--" + hub_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    save_file(state, str(snap / "model.safetensors"))
    return snap / "model.safetensors"


def test_timm_pretrained_weights_through_the_offline_hub_cache(tmp_path, monkeypatch):
    import timm

    from stage1_image_encoder.model import build_encoder

    name = "resnet10t"
    hub_id = timm.models.get_pretrained_cfg(name).hf_hub_id
    torch.manual_seed(5)
    imagenet = {k: v.contiguous() for k, v in timm.create_model(name, pretrained=False).state_dict().items()}
    import huggingface_hub.constants as hc

    # what HF_HUB_OFFLINE=1 / HF_HOME=... in the environment of a new process give
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty" / "hub"))
    cfg = load_config(overrides=[f"stage1.model.name={name}", "stage1.model.img_size=48",
                                 "stage1.model.pretrained=timm"])
    with pytest.raises(UsageError) as e:
        build_encoder(cfg.stage1.model)
    msg = str(e.value)
    assert "\n" not in msg and "model.safetensors" in msg and hub_id in msg and "HF_HOME" in msg
    assert "HF_HUB_OFFLINE=1" in msg
    # the same file placed where the message says: timm loads it (ImageNet head dropped)
    home = tmp_path / "hf"
    _fake_hf_cache(home, hub_id, imagenet)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(home / "hub"))
    model = build_encoder(cfg.stage1.model)
    assert torch.equal(model.state_dict()["conv1.0.weight"], imagenet["conv1.0.weight"])
    assert model.get_classifier().out_features == 8
    # a local file still works as before
    from safetensors.torch import save_file

    save_file({k: v for k, v in imagenet.items() if not k.startswith("fc.")}, str(tmp_path / "w.safetensors"))
    local = build_encoder(cfg.stage1.model.model_copy(update={"pretrained": str(tmp_path / "w.safetensors")}))
    assert torch.equal(local.state_dict()["conv1.0.weight"], imagenet["conv1.0.weight"])
