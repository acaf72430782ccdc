"""Plots every run writes: learning curves from per-epoch metric rows (the runs' metrics.jsonl),
per-video timelines of class probabilities, and per-class F1 bars. One class-colour map
(``CLASS_COLORS``) so a class looks the same in every figure."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fer_pipeline.io import atomic_path
from fer_pipeline.labels import CLASSES, NUM_CLASSES

# index = class id (fer_pipeline.labels.CLASSES order)
CLASS_COLORS: tuple[str, ...] = (
    "#76b7b2",  # Neutral   teal
    "#e15759",  # Anger     red
    "#59a14f",  # Disgust   green
    "#b07aa1",  # Fear      purple
    "#edc948",  # Happiness yellow
    "#4e79a7",  # Sadness   blue
    "#f28e2b",  # Surprise  orange
    "#9c755f",  # Other     brown
)
CLASS_COLOR: dict[str, str] = dict(zip(CLASSES, CLASS_COLORS))
UNLABELLED_COLOR = "#d0d0d0"   # frames annotated -1
NO_FACE_COLOR = "#404040"      # shading of frames without a detected face


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path, dpi: int = 100, **kw) -> Path:
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", **kw)
    plt.close(fig)
    return Path(path)


def plot_curves(rows: list[dict], path: str | Path, title: str = "",
                loss_keys: tuple[str, ...] = ("train_loss",),
                score_keys: tuple[str, ...] = ("val_acc", "val_macro_f1"),
                marks: dict[str, float] | None = None) -> Path:
    """Two panels over epochs: losses (left) and validation scores (right), as PNG.
    ``marks``: labelled vertical lines at given epochs (e.g. where a loss term starts)."""
    plt = _pyplot()
    n_lines = max(sum(any(k in r for r in rows) for k in keys) for keys in (loss_keys, score_keys))
    many = n_lines > 6            # e.g. every sub-run of a k-fold: legends go under the panels
    fig, (ax_l, ax_s) = plt.subplots(1, 2, figsize=(10, 3.8 + (0.16 * n_lines if many else 0)))
    epochs = [r["epoch"] for r in rows]
    for k in loss_keys:
        if any(k in r for r in rows):
            ax_l.plot(epochs, [r.get(k) for r in rows], marker=".", label=k)
    for k in score_keys:
        if any(k in r for r in rows):
            ax_s.plot(epochs, [r.get(k) for r in rows], marker=".", label=k)
    ax_l.set_xlabel("epoch")
    ax_l.set_ylabel("loss")
    ax_s.set_xlabel("epoch")
    ax_s.set_ylabel("score")
    ax_s.set_ylim(0, 1)
    from matplotlib.ticker import MaxNLocator

    last = max(epochs) if epochs else 0
    for label, x in (marks or {}).items():
        for ax in (ax_l, ax_s):
            ax.axvline(x, color="grey", linestyle="--", linewidth=1)
        # the label sits on the side of the line with room for it (a mark at the last epoch
        # would otherwise run out of the frame)
        right = x <= (min(epochs) + last) / 2 if epochs else True
        ax_s.text(x, 0.98, f" {label} " if right else f"{label} ", va="top", fontsize=8,
                  color="grey", ha="left" if right else "right")
    for ax in (ax_l, ax_s):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # epochs are whole numbers
        if ax.get_legend_handles_labels()[0]:
            if many:
                ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2,
                          frameon=False)
            else:
                ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of every run of True in a 1-D bool array."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    d = np.flatnonzero(np.diff(m.astype(np.int8)))
    return [(int(a), int(b - a)) for a, b in zip(d[::2], d[1::2])]


def _band_rgb(ids: np.ndarray) -> np.ndarray:
    """(T,) class ids (-1 = none) -> (1, T, 3) RGB floats for an image band."""
    from matplotlib.colors import to_rgb

    palette = np.array([to_rgb(c) for c in CLASS_COLORS] + [to_rgb(UNLABELLED_COLOR)])
    ids = np.asarray(ids).astype(np.int64)
    return palette[np.where(ids < 0, NUM_CLASSES, ids)][None]


def _check_len(name: str, a: np.ndarray | None, T: int) -> np.ndarray | None:
    if a is None:
        return None
    a = np.asarray(a).ravel()
    if len(a) != T:
        raise ValueError(f"plot_timeline: {name} has {len(a)} frames, probs has {T}")
    return a


def plot_timeline(probs: np.ndarray, path: str | Path, *, fps: float | None = None,
                  pred: np.ndarray | None = None, truth: np.ndarray | None = None,
                  face: np.ndarray | None = None,
                  thumbnails: list[tuple[int, np.ndarray]] | None = None,
                  title: str = "", pred_name: str = "pred") -> Path:
    """One video's class probabilities over time, as PNG.

    ``probs`` (T, 8) per-frame probabilities, drawn stacked. Under them a band with the
    predicted class per frame (``pred``, default argmax) and, when given, one with the ground
    truth (``truth``; -1 = unannotated, drawn grey). Frames where ``face`` is False are shaded.
    ``pred_name`` labels the predicted band (say which label it shows). ``thumbnails``:
    (frame index, RGB uint8 image) pairs shown in a row above the plot at their frame times. Frame indices are rows of ``probs`` (0-based); the x axis is in seconds
    (index / ``fps``) when ``fps`` is given, else in frames.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != NUM_CLASSES or len(probs) == 0:
        raise ValueError(f"plot_timeline: probs must be (T>=1, {NUM_CLASSES}), got {probs.shape}")
    T = len(probs)
    pred = _check_len("pred", probs.argmax(1) if pred is None else pred, T)
    truth = _check_len("truth", truth, T)
    face = _check_len("face", face, T)
    if fps is not None and not fps > 0:
        raise ValueError(f"plot_timeline: fps must be > 0, got {fps}")
    thumbnails = list(thumbnails or [])
    for k, img in thumbnails:
        if not 0 <= int(k) < T:
            raise ValueError(f"plot_timeline: thumbnail frame {k} outside 0..{T - 1}")
        if np.asarray(img).ndim not in (2, 3):
            raise ValueError(f"plot_timeline: thumbnail of frame {k} is not an image")
    scale = 1.0 / fps if fps else 1.0
    edges = np.arange(T + 1) * scale                 # frame k covers [edges[k], edges[k+1])

    plt = _pyplot()
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage
    from matplotlib.patches import Patch

    rows = ((["thumbs"] if thumbnails else []) + ["probs", "pred"]
            + (["truth"] if truth is not None else []))
    heights = {"thumbs": 1.0, "probs": 2.6, "pred": 0.28, "truth": 0.28}
    fig, axes = plt.subplots(len(rows), 1, figsize=(12, sum(heights[r] for r in rows) + 1.1),
                             sharex=True, gridspec_kw={"height_ratios": [heights[r] for r in rows],
                                                       "hspace": 0.08})
    ax = dict(zip(rows, np.atleast_1d(axes)))

    # (T+1, 8): the last frame's row repeated so step='post' fills the last frame's interval
    stacked = np.concatenate([probs, probs[-1:]]).T
    ax["probs"].stackplot(edges, stacked, colors=CLASS_COLORS, step="post", linewidth=0)
    ax["probs"].set_ylim(0, max(1.0, float(probs.sum(1).max())))
    ax["probs"].set_ylabel("probability")
    ax["probs"].grid(alpha=0.3, axis="y")

    bands = [("pred", pred)] + ([("truth", truth)] if truth is not None else [])
    for name, ids in bands:
        a = ax[name]
        a.imshow(_band_rgb(ids), aspect="auto", interpolation="nearest",
                 extent=(edges[0], edges[-1], 0, 1))
        a.set_yticks([])
        a.set_ylabel(pred_name if name == "pred" else name, rotation=0, ha="right", va="center",
                     fontsize=9)
    legend = [Patch(color=c, label=n) for n, c in zip(CLASSES, CLASS_COLORS)]
    if (truth is not None and (truth < 0).any()) or (pred < 0).any():
        legend.append(Patch(color=UNLABELLED_COLOR, label="unannotated"))

    if face is not None and not face.astype(bool).all():
        spans = [(edges[a], edges[a + n] - edges[a]) for a, n in _runs(~face.astype(bool))]
        for name in ["probs"] + [b for b, _ in bands]:
            ax[name].broken_barh(spans, (0, 1), transform=ax[name].get_xaxis_transform(),
                                 facecolor=NO_FACE_COLOR, alpha=0.35, hatch="//",
                                 edgecolor="white", linewidth=0)
        legend.append(Patch(facecolor=NO_FACE_COLOR, alpha=0.35, hatch="//", edgecolor="white",
                            label="no face"))
    ax["probs"].legend(handles=legend, loc="upper left", bbox_to_anchor=(1.005, 1.0),
                       fontsize=8, frameon=False)

    if thumbnails:
        a = ax["thumbs"]
        a.set_ylim(0, 1)
        a.axis("off")
        size_pt = 0.72 * heights["thumbs"] * 72     # thumbnail height in points
        for k, img in sorted(thumbnails, key=lambda t: int(t[0])):
            img = np.asarray(img)
            x = (int(k) + 0.5) * scale
            box = OffsetImage(img, zoom=size_pt / img.shape[0],
                              cmap="gray" if img.ndim == 2 else None)
            a.add_artist(AnnotationBbox(box, (x, 0.58), xycoords=("data", "axes fraction"),
                                        frameon=True, pad=0.1, bboxprops={"edgecolor": "#888888"}))
            a.text(x, 0.0, f"{x - 0.5 * scale:.1f} s" if fps else f"frame {int(k)}",
                   ha="center", va="bottom", fontsize=7, transform=a.get_xaxis_transform())
            ax["probs"].axvline(x, color="black", linewidth=0.6, linestyle=":", alpha=0.6)

    last = ax[rows[-1]]
    last.set_xlim(edges[0], edges[-1])
    last.set_xlabel("time (s)" if fps else "frame")
    if title:
        fig.suptitle(title, fontsize=11)
    # the band labels sit left of the axes, right-aligned: wide enough for "label (15 f)"
    fig.subplots_adjust(left=0.085, right=0.88, top=0.92 if title else 0.97, bottom=0.12)
    return _save(fig, path)


_HATCHES = ("", "//", "..", "xx", "\\\\", "oo", "--", "++")


def plot_f1_bars(series: dict[str, list[float]], path: str | Path, title: str = "",
                 class_names: tuple[str, ...] = CLASSES) -> Path:
    """Per-class F1 (in %) as grouped bars, one group per class in its class colour and one bar
    per series (e.g. raw / post-processed, or one per validation split), told apart by hatching.
    Series labels go to the legend as given (put the macro average there)."""
    plt = _pyplot()
    from matplotlib.patches import Patch

    names = list(series)
    if not names:
        raise ValueError("plot_f1_bars: no series")
    values = np.asarray([np.asarray(series[n], dtype=np.float64) for n in names])   # (S, K)
    if values.shape[1] != len(class_names):
        raise ValueError(f"plot_f1_bars: {values.shape[1]} values per series, "
                         f"{len(class_names)} classes")
    S, K = values.shape
    width = 0.8 / S
    fig, ax = plt.subplots(figsize=(2.5 + K * (0.6 + 0.25 * S), 4.0))
    x = np.arange(K)
    colors = [CLASS_COLOR.get(c, "#888888") for c in class_names]
    for s, name in enumerate(names):
        pos = x - 0.4 + width * (s + 0.5)
        ax.bar(pos, values[s], width * 0.95, color=colors, hatch=_HATCHES[s % len(_HATCHES)],
               edgecolor="#333333", linewidth=0.6)
        if S <= 3:
            for xp, v in zip(pos, values[s]):
                ax.text(xp, v + 1, f"{v:.1f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, class_names, rotation=0 if K <= 8 else 45)
    ax.set_ylabel("F1 (%)")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3, axis="y")
    if S > 1:
        ax.legend(handles=[Patch(facecolor="white", edgecolor="#333333",
                                 hatch=_HATCHES[s % len(_HATCHES)], label=n)
                           for s, n in enumerate(names)], fontsize=8, loc="upper left",
                  bbox_to_anchor=(1.005, 1.0), frameon=False)
    ax.set_title(title or "per-class F1")
    fig.tight_layout()
    return _save(fig, path, bbox_inches="tight")
