"""``--project``: a 2-D map of the face frames (UMAP when installed, else PCA with fixed axis
signs), drawn as a scatter coloured by label in the project's class colours
(``fer_pipeline.plots.CLASS_COLORS``, the colours of the timelines and F1 bars).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fer_pipeline.io import atomic_path
from fer_pipeline.labels import CLASSES, IGNORE, NUM_CLASSES
from fer_pipeline.plots import CLASS_COLORS, UNLABELLED_COLOR

PROJECTION_SIZE_IN, PROJECTION_DPI = (8.0, 7.0), 100   # -> 800 x 700 px


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) -> (N, 2) scores on the first two principal axes, and their explained-variance
    ratios. Axis signs are fixed (largest loading positive) so reruns give the same picture."""
    x = x.astype(np.float64)
    x = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    axes = vt[:2]                                                   # (2, D)
    axes *= np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])[:, None]
    var = s ** 2
    ratio = var[:2] / var.sum() if var.sum() > 0 else np.zeros(2)
    coords = x @ axes.T
    if coords.shape[1] < 2:                                         # D == 1 or N == 1
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
        ratio = np.pad(ratio, (0, 2 - len(ratio)))
    return coords, ratio


def project(x: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, str, str]:
    """(coords (N, 2), method used, axis note)."""
    if method in ("auto", "umap"):
        try:
            import umap
        except ImportError:
            pass
        else:
            reducer = umap.UMAP(n_components=2, metric="cosine", random_state=seed)
            return reducer.fit_transform(x.astype(np.float32)), "umap", ""
    coords, ratio = pca_2d(x)
    return coords, "pca", f"PC1 {100 * ratio[0]:.1f}%, PC2 {100 * ratio[1]:.1f}% of variance"


def plot_projection(coords: np.ndarray, labels: np.ndarray, path: Path, title: str,
                    axis_note: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=PROJECTION_SIZE_IN)
    groups = [(IGNORE, "unlabelled (-1)", UNLABELLED_COLOR)] + \
        [(c, CLASSES[c], CLASS_COLORS[c]) for c in range(NUM_CLASSES)]
    size = max(2.0, min(12.0, 6000.0 / max(len(coords), 1)))
    for cid, name, colour in groups:
        m = labels == cid
        if m.any():
            ax.scatter(coords[m, 0], coords[m, 1], s=size, color=colour, alpha=0.6,
                       linewidths=0, label=f"{name} ({int(m.sum())})")
    ax.set_title(title)
    ax.set_xlabel("dim 1" + (f"  ({axis_note})" if axis_note else ""))
    ax.set_ylabel("dim 2")
    ax.legend(loc="best", fontsize=8, markerscale=max(1.0, 20.0 / size) ** 0.5)
    ax.grid(alpha=0.2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=PROJECTION_DPI, format="png")
    plt.close(fig)
    return path
