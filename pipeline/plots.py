"""Learning-curve plots from per-epoch metric rows (the runs' metrics.jsonl)."""
from __future__ import annotations

from pathlib import Path

from pipeline.io import atomic_path


def plot_curves(rows: list[dict], path: str | Path, title: str = "",
                loss_keys: tuple[str, ...] = ("train_loss",),
                score_keys: tuple[str, ...] = ("val_acc", "val_macro_f1"),
                marks: dict[str, float] | None = None) -> Path:
    """Two panels over epochs: losses (left) and validation scores (right), as PNG.
    ``marks``: labelled vertical lines at given epochs (e.g. where a loss term starts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_l, ax_s) = plt.subplots(1, 2, figsize=(10, 3.8))
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
    for label, x in (marks or {}).items():
        for ax in (ax_l, ax_s):
            ax.axvline(x, color="grey", linestyle="--", linewidth=1)
        ax_s.text(x, 0.98, f" {label}", va="top", fontsize=8, color="grey")
    for ax in (ax_l, ax_s):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)
