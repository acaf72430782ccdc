"""Stage 1 pretraining: dataset adapters in their official layouts, NLA loss, a tiny run."""
import json

import cv2
import numpy as np
import pytest
import torch

from fer_pipeline import labels as L
from fer_pipeline.config import DataSource, NLAConfig, load_config
from fer_pipeline.errors import UsageError
from stage1_image_encoder.sources import build_image_sets, folder, rafdb
from stage1_image_encoder.losses import nla_loss
from tests.conftest import CPU_RANKS, TINY_SWIN


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
    loss, w_mean = nla_loss(logits, target, 0.5, NLAConfig(form="weighted_ce"))
    from fer_pipeline.naw import naw_weight

    keep = target >= 0
    w = naw_weight(logits[keep].softmax(-1), target[keep], 0.5)
    ce = torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="none")
    torch.testing.assert_close(loss, ((1 + w) * ce).mean())
    assert float(w_mean) == pytest.approx(float(w.detach().mean()))
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[~keep].abs().sum() == 0


def test_nla_release_form_equals_the_official_formula_by_hand():
    """0.5 * mean(CE) + 0.5 * mean(w * CE) + 0.5 * JSD, with the official code's kernel
    (C = 1 / sqrt((2 pi)^2 |Sigma|), T kernel when p_GT is the max) and its JSD (mixture of the
    two logit vectors, KL summed over the batch), computed here with numpy from scratch."""
    import math

    a = np.array([[2.0, 0.5, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                  [0.1, 1.5, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0],
                  [0.0, 0.0, 0.0, 3.0, -2.0, 0.0, 0.0, 0.5]])
    b = a[:, ::-1].copy() * 0.5 + 0.1              # logits of the mirrored images
    y = np.array([0, 2, 3])
    progress = 0.25

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    p = softmax(a)
    ce = -np.log(p[np.arange(3), y])
    eps = 1 - math.exp(-15 * progress)
    t_cov = np.array([[0.8 ** 2 + 0.4 ** 2, (-0.8 ** 2 + 0.4 ** 2) * eps],
                      [(-0.8 ** 2 + 0.4 ** 2) * eps, 0.8 ** 2 + 0.4 ** 2]])
    f_major, f_minor = 0.91 ** 2 + (0.91 / 6) ** 2, 0.91 ** 2 - (0.91 / 6) ** 2
    f_cov = np.array([[f_major, f_minor], [f_minor, f_major]])

    def gau(x, mu, cov):
        d = x - mu
        return math.exp(-0.5 * d @ np.linalg.inv(cov) @ d) / math.sqrt((2 * math.pi) ** 2 * np.linalg.det(cov))

    w = []
    for i in range(3):
        p_gt = p[i, y[i]]
        top2 = np.sort(p[i])[::-1][:2]
        correct = top2[0] == p_gt
        p_nn = top2[1] if correct else top2[0]
        x = np.array([p_gt, p_nn])
        w.append(gau(x, [0.5, 0.5], t_cov) if correct else gau(x, [0.30, 0.15], f_cov))
    w = np.array(w)
    m = softmax(0.5 * (a + b))
    kl_a = (m * (np.log(m) - np.log(softmax(a)))).sum()
    kl_b = (m * (np.log(m) - np.log(softmax(b)))).sum()
    expected = 0.5 * ce.mean() + 0.5 * (w * ce).mean() + 0.5 * 0.5 * (kl_a + kl_b)

    logits = torch.tensor(a, requires_grad=True)
    loss, w_mean = nla_loss(logits, torch.tensor(y), progress, NLAConfig(), None, torch.tensor(b))
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(w_mean) == pytest.approx(w.mean(), rel=1e-6)
    # w carries gradient by default (as the official code); weight_grad=false freezes it
    loss.backward()
    g_live = logits.grad.clone()
    logits.grad = None
    frozen, _ = nla_loss(logits, torch.tensor(y), progress, NLAConfig(weight_grad=False), None,
                         torch.tensor(b))
    assert float(frozen) == pytest.approx(expected, rel=1e-6)
    frozen.backward()
    assert not torch.allclose(g_live, logits.grad)


@pytest.mark.slow
def test_pretrain_then_embed_with_the_run(tmp_path, affwild2_tree):
    """`stage1 train` writes a run dir whose encoder `stage1 embed --run` then uses."""
    import subprocess
    import sys

    raf = make_rafdb(tmp_path / "raf", n_train=3)
    run = tmp_path / "s1"
    common = TINY_SWIN + ["stage1.model.img_size=64", "stage1.model.window_size=4",
                          "stage1.data.workers=0", "stage1.train.batch_size=8"]
    proc = subprocess.run([sys.executable, "-m", "fer_pipeline", "stage1", "train", "--out", str(run),
                           f"stage1.data.sources=[{{format: rafdb, root: {raf}}}]",
                           "stage1.train.epochs=2", *common], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("config.yaml", "git_sha.txt", "metrics.jsonl", "checkpoint.safetensors",
                 "learning_curve.png", "result.json"):
        assert (run / name).is_file(), name
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1] and all("val_acc" in r for r in rows)
    assert "stage1 train: 21 images" in proc.stdout

    from stage0_preprocess import ingest_affwild2 as run_ingest

    _, manifest = run_ingest(affwild2_tree, tmp_path / "s0", load_config())
    emb = subprocess.run([sys.executable, "-m", "fer_pipeline", "stage1", "embed", "--manifest",
                          str(manifest), "--run", str(run), "--store", str(tmp_path / "store"),
                          "stage1.embed.workers=0"], capture_output=True, text=True)
    assert emb.returncode == 0, emb.stderr[-2000:]
    from fer_pipeline.store import EmbeddingStore
    from stage1_image_encoder import load_encoder as encoder_from
    from stage1_image_encoder.model import encoder_key

    model, mcfg = encoder_from(load_config(), run)
    assert mcfg.img_size == 64       # the run's own model config, not pipeline.yaml's
    assert EmbeddingStore.open(tmp_path / "store").encoder_key == encoder_key(model, mcfg)

    missing = subprocess.run([sys.executable, "-m", "fer_pipeline", "stage1", "embed", "--manifest",
                              str(manifest), "--run", str(tmp_path)], capture_output=True, text=True)
    assert missing.returncode == 2 and "no checkpoint.safetensors" in missing.stderr


def test_jsd_values():
    from stage1_image_encoder.losses import nla_jsd

    a = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    assert float(nla_jsd(a, a)) == pytest.approx(0.0, abs=1e-7)
    b = torch.tensor([[-1.0, 0.5, 2.0], [0.0, 1.0, 0.0]])
    assert float(nla_jsd(a, b)) == pytest.approx(float(nla_jsd(b, a)))
    assert float(nla_jsd(a, b)) > 0
    # sum over the batch (official) = batch size x the mean
    assert float(nla_jsd(a, b)) == pytest.approx(2 * float(nla_jsd(a, b, "mean")))


def test_nla_paper_form_is_lambda_weighted_ce_plus_consistency():
    """paper: lam * mean((1 + w) CE) + (1 - lam) * JSD(image, flip); at lam = 0.5 it is the
    release form's arithmetic with its default weights; without flipped logits it refuses."""
    from fer_pipeline.naw import naw_weight
    from stage1_image_encoder.losses import nla_jsd

    torch.manual_seed(2)
    logits = torch.randn(5, 8, requires_grad=True)
    flip = torch.randn(5, 8)
    target = torch.tensor([1, -1, 4, 4, 6])
    keep = target >= 0
    ce = torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="none")
    w = naw_weight(logits[keep].softmax(-1), target[keep], 0.6)
    jsd = nla_jsd(logits[keep], flip[keep])
    loss, _ = nla_loss(logits, target, 0.6, NLAConfig(form="paper", lam_paper=0.3), logits_flip=flip)
    torch.testing.assert_close(loss, 0.3 * ((1 + w) * ce).mean() + 0.7 * jsd)
    paper, _ = nla_loss(logits, target, 0.6, NLAConfig(form="paper"), logits_flip=flip)
    release, _ = nla_loss(logits, target, 0.6, NLAConfig(form="release"), logits_flip=flip)
    torch.testing.assert_close(paper, release)
    mean_jsd, _ = nla_loss(logits, target, 0.6, NLAConfig(form="paper", jsd_reduction="mean"),
                           logits_flip=flip)
    torch.testing.assert_close(mean_jsd, 0.5 * ((1 + w) * ce).mean() + 0.5 * jsd / 4)
    with pytest.raises(ValueError, match="flipped"):
        nla_loss(logits, target, 0.6, NLAConfig(form="paper"))
    # which forms the engine feeds a mirrored view
    assert NLAConfig(form="paper").needs_flip() and NLAConfig(form="release").needs_flip()
    assert not NLAConfig(form="weighted_ce").needs_flip()
    assert not NLAConfig(form="paper", lam_paper=1.0).needs_flip()
    assert not NLAConfig(form="release", lam_jsd=0.0).needs_flip()
    assert not NLAConfig(form="paper", enabled=False).needs_flip()


def test_release_form_and_soft_targets():
    from fer_pipeline.naw import naw_weight
    from stage1_image_encoder.losses import nla_jsd

    torch.manual_seed(1)
    logits = torch.randn(4, 8, requires_grad=True)
    flip = torch.randn(4, 8)
    target = torch.tensor([0, 3, -1, 7])
    cfg = NLAConfig(form="release")
    loss, _ = nla_loss(logits, target, 0.3, cfg, logits_flip=flip)
    keep = target >= 0
    ce = torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="none")
    w = naw_weight(logits[keep].softmax(-1), target[keep], 0.3)
    expected = 0.5 * ce.mean() + 0.5 * (w * ce).mean() + 0.5 * nla_jsd(logits[keep], flip[keep])
    torch.testing.assert_close(loss, expected)
    soft = torch.zeros(4, 8)
    soft[:, 0], soft[:, 1] = 0.75, 0.25
    s_loss, _ = nla_loss(logits, target, 0.3, NLAConfig(enabled=False), soft=soft)
    ref = -(soft[keep] * logits[keep].log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(s_loss, ref)


def _train(out, raf, *extra, launcher=None, timeout=600):
    import subprocess
    import sys

    cmd = (launcher or [sys.executable, "-m"]) + [
        "fer_pipeline", "stage1", "train", "--out", str(out),
        f"stage1.data.sources=[{{format: rafdb, root: {raf}}}]", *TINY_SWIN,
        "stage1.model.img_size=64", "stage1.model.window_size=4", "stage1.data.workers=0",
        "stage1.train.batch_size=8", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path):
    """Killed after an epoch and resumed == trained straight through (identical weights)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file

    raf = make_rafdb(tmp_path / "raf", n_train=3)
    args = ["stage1.train.epochs=3", "stage1.nla.form=release"]
    straight = tmp_path / "straight"
    r = _train(straight, raf, *args)
    assert r.returncode == 0, r.stderr[-2000:]
    part = tmp_path / "part"
    p = subprocess.Popen([sys.executable, "-m", "fer_pipeline", "stage1", "train", "--out", str(part),
                          f"stage1.data.sources=[{{format: rafdb, root: {raf}}}]", *TINY_SWIN,
                          "stage1.model.img_size=64", "stage1.model.window_size=4",
                          "stage1.data.workers=0", "stage1.train.batch_size=8", *args],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline and not (part / "train_state.pt").exists():
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    done = len((part / "metrics.jsonl").read_text().splitlines())
    assert 1 <= done < 3, "killed too late"
    r = subprocess.run([sys.executable, "-m", "fer_pipeline", "stage1", "train", "--out", str(part),
                        "--resume"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    a = load_file(str(straight / "checkpoint.safetensors"))
    b = load_file(str(part / "checkpoint.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    rows = [json.loads(x) for x in (part / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]


@pytest.mark.slow
def test_two_gloo_ranks_pretrain(tmp_path):
    raf = make_rafdb(tmp_path / "raf", n_train=4)
    from tests.conftest import TORCHRUN as torchrun
    r = _train(tmp_path / "ddp", raf, "stage1.train.epochs=2", *CPU_RANKS, launcher=torchrun)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("stage1 train:") == 1                        # rank 0 only
    rows = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in rows] == [0, 1]
    assert json.loads((tmp_path / "ddp" / "result.json").read_text())["ranks"] == 2
    # self-spawned ranks give the same run as torchrun-launched ones
    r2 = _train(tmp_path / "spawn", raf, "stage1.train.epochs=2", *CPU_RANKS, "--nproc", "2")
    assert r2.returncode == 0, r2.stderr[-3000:]
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "ddp" / "checkpoint.safetensors"))
    b = load_file(str(tmp_path / "spawn" / "checkpoint.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k])


@pytest.mark.parametrize("name", ["resnet18", "resnet10t", "convnext_atto"])
def test_any_timm_model_builds_cnns_without_img_size(name):
    """stage1.model.name takes any timm model: img_size goes only to models that take it."""
    from stage1_image_encoder.model import build_encoder, embed

    cfg = load_config(overrides=[f"stage1.model.name={name}", "stage1.model.img_size=48"]).stage1.model
    model = build_encoder(cfg).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 48, 48))
        feat = embed(model, torch.randn(2, 3, 48, 48))
    assert out.shape == (2, 8) and feat.shape == (2, model.num_features)


def test_eval_flip_scores_the_mean_softmax_of_each_image_and_its_mirror(tmp_path):
    """A model that reads left-bright faces as a weak class 0 and right-bright ones as a strong
    class 1: plain evaluation is right on left-bright images, test-time flip outvotes it."""
    from stage1_image_encoder.engine import evaluate_images
    from stage1_image_encoder.sources.common import ImageList

    paths = []
    for i in range(4):
        img = np.zeros((48, 48), np.uint8)
        img[:, :24] = 255
        paths.append(str(tmp_path / f"{i}.png"))
        cv2.imwrite(paths[-1], img)

    class LeftRight(torch.nn.Module):
        def forward(self, x):
            left = x[..., : x.shape[-1] // 2].mean((1, 2, 3)) > x[..., x.shape[-1] // 2:].mean((1, 2, 3))
            out = torch.zeros(len(x), 8)
            out[left, 0] = 1.0                # weak: p = 0.28 against 0.10 for the others
            out[~left, 1] = 6.0               # strong: p = 0.98
            return out

    cfg = load_config(overrides=["stage1.model.img_size=32", "stage1.model.grayscale=true",
                                 "stage1.data.workers=0"])
    images = ImageList(paths, np.zeros(4, np.int64), np.zeros(4, np.int64))
    plain = evaluate_images(LeftRight(), images, cfg, torch.device("cpu"))
    flipped = evaluate_images(LeftRight(), images, cfg, torch.device("cpu"), flip=True)
    assert plain.confusion[0, 0] == 4 and flipped.confusion[0, 1] == 4
