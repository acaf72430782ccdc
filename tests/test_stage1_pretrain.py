"""Stage 1 pretraining: dataset adapters in their official layouts, NLA loss, a tiny run."""
import json

import cv2
import numpy as np
import pytest
import torch

from pipeline import labels as L
from pipeline.config import DataSource, NLAConfig, load_config
from pipeline.errors import UsageError
from stage1_image_encoder.datasets import build_image_sets, folder, rafdb
from stage1_image_encoder.losses import nla_loss
from tests.conftest import TINY_SWIN


def _img(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((100, 100, 3), value, np.uint8))


def make_rafdb(root, n_train=2, n_test=1):
    """RAF-DB basic layout: EmoLabel/list_patition_label.txt + Image/aligned/*_aligned.jpg."""
    lines, k_tr, k_te = [], 0, 0
    for raf in range(1, 8):
        for _ in range(n_train):
            k_tr += 1
            lines.append(f"train_{k_tr:05d}.jpg {raf}")
            _img(root / "basic/Image/aligned" / f"train_{k_tr:05d}_aligned.jpg", 30 * raf)
        for _ in range(n_test):
            k_te += 1
            lines.append(f"test_{k_te:04d}.jpg {raf}")
            _img(root / "basic/Image/aligned" / f"test_{k_te:04d}_aligned.jpg", 30 * raf)
    (root / "basic/EmoLabel").mkdir(parents=True, exist_ok=True)
    (root / "basic/EmoLabel/list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


def test_rafdb_adapter_reads_official_layout(tmp_path):
    root = make_rafdb(tmp_path / "RAF-DB")
    paths, labels = rafdb(root, "train")
    assert len(paths) == 14 and all(p.endswith("_aligned.jpg") for p in paths)
    assert paths[0].endswith("basic/Image/aligned/train_00001_aligned.jpg")
    assert labels[:2] == [L.SURPRISE, L.SURPRISE] and labels[-1] == L.NEUTRAL
    tpaths, tlabels = rafdb(root, "test")
    assert len(tpaths) == 7 and sorted(tlabels) == sorted(L.RAFDB_TO_ID.values())
    bad = root / "basic/EmoLabel/list_patition_label.txt"
    bad.write_text("train_00001.jpg 9\n")
    with pytest.raises(UsageError, match="line 1: RAF-DB basic label must be 1..7"):
        rafdb(root, "train")


def test_folder_adapter_and_mixing_weights(tmp_path):
    for split, n in (("train", 3), ("test", 1)):
        for name in ("happy", "sad", "contempt"):
            for i in range(n):
                _img(tmp_path / "fold" / split / name / f"{i}.jpg", 80)
    paths, labels = folder(tmp_path / "fold", "train", None)
    assert sorted(set(labels)) == [L.HAPPINESS, L.SADNESS, L.OTHER] and len(paths) == 9
    raf = make_rafdb(tmp_path / "raf", n_train=1)
    train, test, w = build_image_sets([
        DataSource(format="folder", root=str(tmp_path / "fold"), weight=2.0),
        DataSource(format="rafdb", root=str(raf), weight=1.0)])
    assert len(train) == 9 + 7 and len(test) == 3 + 7
    # a source's total sampling mass equals its weight share, whatever its size
    assert w[train.source == 0].sum() == pytest.approx(2.0)
    assert w[train.source == 1].sum() == pytest.approx(1.0)
    with pytest.raises(UsageError, match="not found"):
        build_image_sets([DataSource(format="rafdb", root=str(tmp_path / "missing"))])
    with pytest.raises(UsageError, match="empty"):
        build_image_sets([])


def test_nla_loss_forms():
    torch.manual_seed(0)
    logits = torch.randn(6, 8, requires_grad=True)
    target = torch.tensor([0, 1, 2, 3, -1, 7])
    ce_only, w0 = nla_loss(logits, target, 0.5, NLAConfig(enabled=False))
    ref = torch.nn.functional.cross_entropy(logits[target >= 0], target[target >= 0])
    torch.testing.assert_close(ce_only, ref)
    assert float(w0) == 0.0
    loss, w_mean = nla_loss(logits, target, 0.5, NLAConfig())
    from pipeline.naw import naw_weight

    keep = target >= 0
    w = naw_weight(logits[keep].softmax(-1), target[keep], 0.5)
    ce = torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="none")
    torch.testing.assert_close(loss, ((1 + w) * ce).mean())
    assert float(w_mean) == pytest.approx(float(w.detach().mean()))
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[~keep].abs().sum() == 0


@pytest.mark.slow
def test_pretrain_then_embed_with_the_run(tmp_path, affwild2_tree):
    """`stage1 train` writes a run dir whose encoder `stage1 embed --run` then uses."""
    import subprocess
    import sys

    raf = make_rafdb(tmp_path / "raf", n_train=3)
    run = tmp_path / "s1"
    common = TINY_SWIN + ["stage1.model.img_size=64", "stage1.model.window_size=4",
                          "stage1.data.workers=0", "stage1.train.batch_size=8"]
    proc = subprocess.run([sys.executable, "-m", "pipeline", "stage1", "train", "--out", str(run),
                           f"stage1.data.sources=[{{format: rafdb, root: {raf}}}]",
                           "stage1.train.epochs=2", *common], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("config.yaml", "git_sha.txt", "metrics.jsonl", "checkpoint.safetensors",
                 "learning_curve.png", "result.json"):
        assert (run / name).is_file(), name
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1] and all("val_acc" in r for r in rows)
    assert "stage1 train: 21 images" in proc.stdout

    from stage0_preprocess.main import run_ingest

    _, manifest = run_ingest(affwild2_tree, tmp_path / "s0", load_config())
    emb = subprocess.run([sys.executable, "-m", "pipeline", "stage1", "embed", "--manifest",
                          str(manifest), "--run", str(run), "--store", str(tmp_path / "store"),
                          "stage1.embed.workers=0"], capture_output=True, text=True)
    assert emb.returncode == 0, emb.stderr[-2000:]
    from pipeline.store import EmbeddingStore
    from stage1_image_encoder.main import encoder_from
    from stage1_image_encoder.model import encoder_key

    model, mcfg = encoder_from(load_config(), run)
    assert mcfg.img_size == 64       # the run's own model config, not pipeline.yaml's
    assert EmbeddingStore.open(tmp_path / "store").encoder_key == encoder_key(model, mcfg)

    missing = subprocess.run([sys.executable, "-m", "pipeline", "stage1", "embed", "--manifest",
                              str(manifest), "--run", str(tmp_path)], capture_output=True, text=True)
    assert missing.returncode == 2 and "no checkpoint.safetensors" in missing.stderr
