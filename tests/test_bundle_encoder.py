"""scripts/bundle_encoder.py, the maintainer script that packages a finished stage-1 run as the
bundled encoder: float16 weights whose SHA-256 the loader checks, the run's config, and a model
card whose figures are measured on the shipped weights (not copied from the run's log)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from fer_pipeline.config import DataSource, load_config
from stage1_image_encoder import pretrained
from stage1_image_encoder.api import evaluate
from tests.conftest import ROOT
from tests.test_stage1_datasets import make_ferplus


def _bundle_script():
    spec = importlib.util.spec_from_file_location("bundle_encoder", ROOT / "scripts" / "bundle_encoder.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _train(out, fer, *extra):
    cmd = [sys.executable, "-m", "fer_pipeline", "stage1", "train", "--out", str(out),
           f"stage1.data.sources=[{{format: ferplus, root: {fer}}}]", "stage1.model.name=resnet10t",
           "stage1.model.img_size=48", "stage1.model.grayscale=true", "stage1.data.workers=0",
           "stage1.train.batch_size=4", "stage1.train.epochs=1", "stage1.train.warmup_epochs=0", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.slow
def test_bundle_a_run_then_load_it_as_the_bundled_encoder(tmp_path, monkeypatch):
    fer = make_ferplus(tmp_path / "FERPlus")
    run = tmp_path / "run"
    _train(run, fer, "stage1.nla.enabled=true", "stage1.nla.form=release")
    monkeypatch.setattr(pretrained, "BUNDLED_DIR", tmp_path / "bundled")

    rc = _bundle_script().main([str(run), "--ferplus", str(fer), "--command", "fer-pipeline stage1 train X",
                                "--init", "the 48 px encoder, 8 epochs", "--data", "three test rows"])
    assert rc == 0
    out = tmp_path / "bundled" / pretrained.BUNDLED_NAME
    # float16 weights, the checksum the loader verifies, and the run's own architecture
    half = load_file(str(out / "checkpoint.safetensors"))
    full = load_file(str(run / "checkpoint.safetensors"))
    assert set(half) == set(full)
    assert all(v.dtype.itemsize == 2 for v in half.values() if v.is_floating_point())
    info = json.loads((out / "bundled.json").read_text())
    assert pretrained.verified_bundled_checkpoint() == out / "checkpoint.safetensors"
    assert info["sha256"] == pretrained.sha256(out / "checkpoint.safetensors")
    assert (info["model"], info["img_size"]) == ("resnet10t", 48)
    assert pretrained.bundled_model_config().grayscale is True

    # the card's figure is an evaluation of the shipped weights on FER2013Valid (2 images here)
    cfg = load_config([out / "config.yaml"], base=None)
    src = DataSource(format="ferplus", root=str(fer))
    cfg = cfg.model_copy(update={"stage1": cfg.stage1.model_copy(update={
        "data": cfg.stage1.data.model_copy(update={"sources": [src]})})})
    report = evaluate(cfg, out)
    assert int(report.confusion.sum()) == info["fer2013valid"]["n"] == 2
    assert info["fer2013valid"]["accuracy"] == pytest.approx(report.accuracy)
    card = (out / "MODEL_CARD.md").read_text()
    assert f"accuracy **{100 * report.accuracy:.2f} %**" in card
    assert "fine-tuned from the 48 px encoder, 8 epochs" in card and "three test rows" in card
    assert "NLA, release form" in card and "fer-pipeline stage1 train X" in card
    # per-class F1 only for the classes FER2013Valid has (Surprise and Anger in these rows)
    per_class = next(line for line in card.splitlines() if line.startswith("Per class"))
    assert "Surprise" in per_class and "Anger" in per_class and "Happiness" not in per_class
    assert "re-cropped by stage 0" not in card     # no --aligned, no aligned row
    assert "bundle_encoder.py RUN_DIR --ferplus ../shared/data/ferplus --command" in card
