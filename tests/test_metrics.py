"""Macro-F1 from confusion counts, against hand-computed values."""
import numpy as np
import pytest

from fer_pipeline.metrics import F1Report, confusion, plot_confusion


def test_confusion_skips_ignored_frames():
    cm = confusion(np.array([0, 0, 1, -1, 7]), np.array([0, 1, 1, 5, 7]))
    assert cm.sum() == 4 and cm[0, 0] == 1 and cm[0, 1] == 1 and cm[1, 1] == 1 and cm[7, 7] == 1
    with pytest.raises(ValueError):
        confusion(np.array([8]), np.array([0]))


def test_f1_hand_values():
    # class 0: tp 2, fp 1, fn 1 -> p 2/3 r 2/3 f1 2/3 ; class 1: tp 1, fp 2, fn 1 -> p 1/3
    # r 1/2 f1 0.4
    # class 2: tp 0, fn 1, fp 0 -> 0 ; classes 3..7 absent -> 0
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 1, 1, 0, 1])
    r = F1Report(confusion(y, p))
    np.testing.assert_allclose(r.f1[:3], [2 / 3, 0.4, 0.0])
    assert r.macro_f1 == pytest.approx((2 / 3 + 0.4) / 8)
    assert r.absent == ["Fear", "Happiness", "Sadness", "Surprise", "Other"]
    assert r.accuracy == pytest.approx(3 / 6)
    table = r.table()
    assert list(table["class"])[-1] == "Avg" and table["f1"].iloc[-1] == pytest.approx(13.33, abs=0.01)
    assert "(absent)" in r.text() and "| Avg |" in r.markdown()


def test_matches_sklearn_macro_f1():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 8, 500)
    p = np.where(rng.random(500) < 0.6, y, rng.integers(0, 8, 500))
    ours = F1Report(confusion(y, p)).macro_f1
    assert ours == pytest.approx(f1_score(y, p, average="macro", labels=list(range(8))))


def test_confusion_png(tmp_path):
    cm = confusion(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 1]))
    out = plot_confusion(cm, tmp_path / "c.png", "t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
