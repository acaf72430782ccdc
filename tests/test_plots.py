"""Plots: timelines of per-frame class probabilities (all optional inputs, edge cases) and the
shared class colours."""
import numpy as np
import pytest
from matplotlib.colors import to_rgb
from PIL import Image

from fer_pipeline.labels import CLASSES, NUM_CLASSES
from fer_pipeline.plots import CLASS_COLOR, CLASS_COLORS, plot_curves, plot_f1_bars, plot_timeline


def _probs(T, seed=0):
    rng = np.random.default_rng(seed)
    p = np.exp(rng.standard_normal((T, NUM_CLASSES)))
    return p / p.sum(1, keepdims=True)


def _png(path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _count(img: np.ndarray, color: str) -> int:
    rgb = np.round(np.asarray(to_rgb(color)) * 255)
    return int((np.abs(img.astype(int) - rgb).max(-1) <= 2).sum())


def test_class_colours_are_one_distinct_colour_per_class():
    assert len(CLASS_COLORS) == NUM_CLASSES == len(set(CLASS_COLORS))
    assert list(CLASS_COLOR) == list(CLASSES)
    assert CLASS_COLOR["Happiness"] == CLASS_COLORS[CLASSES.index("Happiness")]


@pytest.mark.parametrize("opts", [
    {},
    {"fps": 25.0},
    {"truth": "labels"},
    {"face": "mask"},
    {"thumbnails": True},
    {"fps": 30.0, "truth": "labels", "face": "mask", "thumbnails": True, "pred": "given",
     "title": "vid_x"},
])
def test_timeline_writes_a_png_with_every_combination_of_inputs(tmp_path, opts):
    T = 300
    rng = np.random.default_rng(1)
    kw = dict(opts)
    if kw.get("truth") == "labels":
        truth = rng.integers(-1, NUM_CLASSES, T)
        kw["truth"] = truth
    if kw.get("face") == "mask":
        kw["face"] = rng.random(T) > 0.2
    if kw.get("thumbnails"):
        kw["thumbnails"] = [(k, rng.integers(0, 255, (56, 48, 3), dtype=np.uint8))
                            for k in (0, 100, 299)]
    if kw.get("pred") == "given":
        kw["pred"] = rng.integers(0, NUM_CLASSES, T)
    out = plot_timeline(_probs(T), tmp_path / "sub" / "t.png", **kw)
    assert out == tmp_path / "sub" / "t.png"
    img = _png(out)
    h, w = img.shape[:2]
    assert 900 <= w <= 1600 and 250 <= h <= 900
    assert not list((tmp_path / "sub").glob(".*.tmp"))      # the temp file was renamed away


def test_optional_rows_make_the_figure_taller(tmp_path):
    T = 120
    p = _probs(T)
    base = _png(plot_timeline(p, tmp_path / "a.png")).shape[0]
    with_truth = _png(plot_timeline(p, tmp_path / "b.png", truth=p.argmax(1))).shape[0]
    thumbs = [(10, np.zeros((32, 32, 3), np.uint8))]
    with_thumbs = _png(plot_timeline(p, tmp_path / "c.png", thumbnails=thumbs)).shape[0]
    assert base < with_truth < with_thumbs


def test_bands_use_the_shared_class_colours(tmp_path):
    T = 200
    p = np.zeros((T, NUM_CLASSES))
    p[:, CLASSES.index("Anger")] = 1.0
    happy = CLASS_COLOR["Happiness"]
    # argmax band = Anger: Happiness only appears as the legend patch
    legend_only = _count(_png(plot_timeline(p, tmp_path / "a.png")), happy)
    pred = np.full(T, CLASSES.index("Happiness"))
    img = _png(plot_timeline(p, tmp_path / "b.png", pred=pred))
    assert _count(img, happy) > legend_only + 5000           # a ~1000 x 25 px band
    assert _count(img, CLASS_COLOR["Anger"]) > 100_000       # the stacked area


def test_no_face_stretches_are_shaded(tmp_path):
    T = 100
    p = np.zeros((T, NUM_CLASSES))
    p[:, 0] = 1.0
    neutral = CLASS_COLOR["Neutral"]
    face = np.ones(T, bool)
    plain = _count(_png(plot_timeline(p, tmp_path / "a.png", face=face)), neutral)
    face[20:70] = False
    shaded = _count(_png(plot_timeline(p, tmp_path / "b.png", face=face)), neutral)
    assert shaded < 0.7 * plain                               # half the span is covered


def test_single_frame_and_all_no_face(tmp_path):
    img = _png(plot_timeline(_probs(1), tmp_path / "one.png", fps=25, truth=np.array([-1]),
                             face=np.array([False]),
                             thumbnails=[(0, np.zeros((20, 20, 3), np.uint8))]))
    assert img.shape[1] > 900
    T = 50
    img = _png(plot_timeline(_probs(T), tmp_path / "noface.png", face=np.zeros(T, bool),
                             truth=np.full(T, -1)))
    assert img.shape[1] > 900


def test_bad_inputs_are_rejected_with_the_problem_named(tmp_path):
    with pytest.raises(ValueError, match="probs must be"):
        plot_timeline(np.zeros((0, NUM_CLASSES)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="probs must be"):
        plot_timeline(np.zeros((5, 7)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="truth has 4 frames"):
        plot_timeline(_probs(5), tmp_path / "x.png", truth=np.zeros(4))
    with pytest.raises(ValueError, match="thumbnail frame 5"):
        plot_timeline(_probs(5), tmp_path / "x.png", thumbnails=[(5, np.zeros((4, 4, 3)))])
    assert not (tmp_path / "x.png").exists()


def test_learning_curves_still_render(tmp_path):
    rows = [{"epoch": e, "train_loss": 2 - 0.3 * e, "val_macro_f1": 0.1 * e} for e in range(4)]
    img = _png(plot_curves(rows, tmp_path / "c.png", title="t"))
    assert img.shape[0] > 200 and img.shape[1] > 600


def test_f1_bars_one_bar_per_class_and_series(tmp_path):
    raw = np.linspace(0, 80, NUM_CLASSES)
    one = _png(plot_f1_bars({"raw": raw}, tmp_path / "a.png"))
    two = _png(plot_f1_bars({"raw (macro-F1 40.00)": raw, "post": raw[::-1]}, tmp_path / "b.png"))
    assert two.shape[1] > one.shape[1]                       # wider groups, plus a legend
    for c in CLASSES[1:]:                                    # every class with F1 > 0 is drawn
        assert _count(one, CLASS_COLOR[c]) > 50 and _count(two, CLASS_COLOR[c]) > 50
    with pytest.raises(ValueError, match="7 values per series"):
        plot_f1_bars({"raw": raw[:7]}, tmp_path / "c.png")
