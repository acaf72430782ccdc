"""ABAW expression metric: macro-F1 over the 8 classes, from a confusion matrix.

Everything is computed from confusion counts so that distributed evaluation can all-reduce
counts (never average per-rank F1). A class with no true and no predicted frames has F1 = 0
and is flagged as absent, the way the challenge's macro average treats it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:           # imported where a table is built: the CLI's --help must not pay it
    import pandas as pd

from fer_pipeline.labels import CLASSES, IGNORE, NUM_CLASSES


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """(K, K) int64 counts, rows = truth, cols = prediction; frames labelled -1 are skipped."""
    y_true = np.asarray(y_true).astype(np.int64).ravel()
    y_pred = np.asarray(y_pred).astype(np.int64).ravel()
    keep = y_true != IGNORE
    y_true, y_pred = y_true[keep], y_pred[keep]
    if y_true.size and (y_true.max() >= num_classes or y_true.min() < 0):
        raise ValueError(f"true labels must be in -1..{num_classes - 1}")
    if y_pred.size and (y_pred.max() >= num_classes or y_pred.min() < 0):
        raise ValueError(f"predictions must be in 0..{num_classes - 1}")
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes ** 2).reshape(
        num_classes, num_classes)


@dataclass
class F1Report:
    confusion: np.ndarray
    class_names: tuple[str, ...] = CLASSES
    f1: np.ndarray = field(init=False)
    precision: np.ndarray = field(init=False)
    recall: np.ndarray = field(init=False)

    def __post_init__(self):
        cm = self.confusion.astype(np.float64)
        tp = np.diag(cm)
        pred = cm.sum(0)
        true = cm.sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            self.precision = np.where(pred > 0, tp / pred, 0.0)
            self.recall = np.where(true > 0, tp / true, 0.0)
            denom = self.precision + self.recall
            self.f1 = np.where(denom > 0, 2 * self.precision * self.recall / denom, 0.0)

    @property
    def macro_f1(self) -> float:
        return float(self.f1.mean())

    @property
    def support(self) -> np.ndarray:
        return self.confusion.sum(1)

    @property
    def absent(self) -> list[str]:
        """Classes with no annotated frame in the evaluated set (their F1 is 0 by definition)."""
        return [c for c, n in zip(self.class_names, self.support) if n == 0]

    @property
    def accuracy(self) -> float:
        total = self.confusion.sum()
        return float(np.trace(self.confusion) / total) if total else 0.0

    def table(self) -> pd.DataFrame:
        """One row per class plus the macro average, F1 in %."""
        import pandas as pd

        df = pd.DataFrame({
            "class": list(self.class_names),
            "f1": np.round(100 * self.f1, 2),
            "precision": np.round(100 * self.precision, 2),
            "recall": np.round(100 * self.recall, 2),
            "support": self.support.astype(int),
        })
        avg = pd.DataFrame({"class": ["Avg"], "f1": [round(100 * self.macro_f1, 2)],
                            "precision": [round(100 * float(self.precision.mean()), 2)],
                            "recall": [round(100 * float(self.recall.mean()), 2)],
                            "support": [int(self.support.sum())]})
        return pd.concat([df, avg], ignore_index=True)

    def to_dict(self) -> dict:
        return {
            "macro_f1": self.macro_f1, "accuracy": self.accuracy,
            "f1": dict(zip(self.class_names, map(float, self.f1))),
            "support": dict(zip(self.class_names, map(int, self.support))),
            "absent_classes": self.absent,
            "confusion": self.confusion.tolist(),
        }

    def markdown(self) -> str:
        return to_markdown(self.table())

    def text(self) -> str:
        """Fixed-width table for terminals."""
        lines = [f"{'class':<10} {'F1 %':>7} {'prec %':>7} {'rec %':>7} {'support':>8}"]
        for row in self.table().itertuples(index=False):
            flag = "  (absent)" if row[0] in self.absent else ""
            if row[0] == "Avg":
                lines.append("-" * 43)
            lines.append(f"{row[0]:<10} {row[1]:>7.2f} {row[2]:>7.2f} {row[3]:>7.2f} {row[4]:>8d}{flag}")
        return "\n".join(lines)


def to_markdown(df: pd.DataFrame) -> str:
    """Markdown table without the optional ``tabulate`` dependency."""
    cols = [str(c) for c in df.columns]
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        out.append("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(out) + "\n"


def plot_confusion(cm: np.ndarray, path: str | Path, title: str = "",
                   class_names: tuple[str, ...] = CLASSES) -> Path:
    """Row-normalised confusion matrix with counts, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fer_pipeline.io import atomic_path

    cm = np.asarray(cm)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.where(cm.sum(1, keepdims=True) > 0, cm / cm.sum(1, keepdims=True), 0.0)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    k = len(class_names)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("annotated")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{norm[i, j]:.2f}\n{cm[i, j]}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of annotated row")
    ax.set_title(title or "confusion (row-normalised)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)
