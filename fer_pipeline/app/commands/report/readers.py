"""Reading what a run left behind: run.json, config.yaml, metrics.jsonl, the eval/ files,
the k-fold / ablation tables and sub-run folders, and (for the timelines) frame rates from the
store and face-crop thumbnails from the stage-0 manifest.

Every reader tolerates a missing or unreadable file: it returns nothing (an empty value or
``None``) and the section that asked turns that into a note in the page.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from fer_pipeline.errors import UsageError
from fer_pipeline.labels import CLASSES
from fer_pipeline.metrics import F1Report

log = logging.getLogger(__name__)

THUMBNAILS_PER_VIDEO = 8
THUMBNAIL_HEIGHT = 64
MAX_BAR_SERIES = 6          # runs compared in one per-class F1 chart of a folder of runs


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (ValueError, OSError) as e:
        log.warning("%s: unreadable (%s); left out of the report", path, e)
        return None
    return data if isinstance(data, dict) else None


def _read_metrics(path: Path) -> tuple[list[dict], int]:
    """Per-epoch rows of metrics.jsonl, and how many lines could not be read (a line cut short
    by a kill, say)."""
    if not path.is_file():
        return [], 0
    rows, bad = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(row, dict) and "epoch" in row:
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def _run_kind(run_dir: Path) -> str:
    if (run_dir / "stage2.json").is_file():
        return "stage2"
    if (run_dir / "kfold.csv").is_file():
        return "kfold"
    if (run_dir / "ablation_runs.csv").is_file():
        return "ablation"
    if any((run_dir / f).is_file() for f in ("run.json", "config.yaml", "metrics.jsonl")):
        run = _read_json(run_dir / "run.json") or {}
        return str(run.get("stage") or "run")
    if _subruns(run_dir, "runs"):
        return "runs"                        # e.g. artifacts/runs/stage2/, or an unfinished kfold
    raise UsageError(f"{run_dir}: not a run directory (no run.json, config.yaml, metrics.jsonl, "
                     f"stage2.json, kfold.csv or ablation_runs.csv)")


def _git_sha(run_dir: Path, run: dict) -> str:
    f = run_dir / "git_sha.txt"
    if f.is_file() and f.read_text().strip():
        return f.read_text().strip()
    return str(run.get("git_sha") or "unknown")


def _created(run_dir: Path, run: dict, *files: str) -> str:
    if run.get("created"):
        return str(run["created"])
    for name in files:
        if (run_dir / name).exists():
            ts = (run_dir / name).stat().st_mtime
            return _dt.datetime.fromtimestamp(ts).isoformat(timespec="seconds") + " (file time)"
    return "unknown"


def _config(run_dir: Path) -> tuple[str | None, dict]:
    f = run_dir / "config.yaml"
    if not f.is_file():
        return None, {}
    text = f.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    return text, data if isinstance(data, dict) else {}


def _get(d: dict, dotted: str, default=None):
    for k in dotted.split("."):
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _pct(x) -> str:
    return "—" if x is None else f"{100 * float(x):.2f}"


def _subruns(run_dir: Path, kind: str) -> list[Path]:
    """Stage-2 runs one or two levels down (kfold: <split>/, ablation: <row>/seed<k>/); k-fold
    splits in the order of kfold.csv (official first)."""
    found = sorted({p.parent for pattern in ("*/stage2.json", "*/*/stage2.json")
                    for p in run_dir.glob(pattern)})
    if kind == "kfold" and (run_dir / "kfold.csv").is_file():
        order = [str(v) for v in pd.read_csv(run_dir / "kfold.csv").get("val_set", [])]
        found.sort(key=lambda p: order.index(p.name) if p.name in order else len(order))
    return found


def _collection_f1(run_dir: Path, kind: str, subs: list[Path]) -> tuple[dict[str, list], str]:
    """Per-class F1 (%) series for a folder of runs, labelled with their macro-F1, and what one
    series is."""
    series: dict[str, list] = {}
    if kind == "kfold" and (run_dir / "kfold.csv").is_file():
        for r in pd.read_csv(run_dir / "kfold.csv").to_dict("records"):
            series[f"{r['val_set']} ({r['Avg']:.2f})"] = [float(r[c]) for c in CLASSES]
        return series, "validation set"
    if kind == "ablation" and (run_dir / "ablation_runs.csv").is_file():
        per_run = pd.read_csv(run_dir / "ablation_runs.csv")
        for name, g in per_run.groupby("row", sort=False):
            series[f"{name} ({g['Avg'].mean():.2f})"] = [float(g[c].mean()) for c in CLASSES]
        return series, "ablation row, mean over seeds"
    for s in subs[:MAX_BAR_SERIES]:
        f1 = _read_json(s / "eval" / "f1.json") or {}
        if isinstance(f1.get("f1"), dict):
            series[f"{s.relative_to(run_dir)} ({_pct(f1.get('macro_f1'))})"] = [
                100 * float(f1["f1"].get(c, 0.0)) for c in CLASSES]
    return series, "run"


def _f1_table(eval_dir: Path, report: dict) -> pd.DataFrame | None:
    if (eval_dir / "f1.csv").is_file():
        df = pd.read_csv(eval_dir / "f1.csv")
    elif report.get("confusion") is not None:
        df = F1Report(np.asarray(report["confusion"])).table()
    else:
        return None
    if (eval_dir / "f1_post.csv").is_file():
        post = pd.read_csv(eval_dir / "f1_post.csv")
        df = df.merge(post[["class", "f1_post"]], on="class", how="left")
        df.insert(2, "f1_post", df.pop("f1_post"))
    df = df.rename(columns={"f1": "F1 %", "f1_post": "F1 post %", "precision": "precision %",
                            "recall": "recall %"})
    absent = set(report.get("absent_classes") or [])
    df["class"] = [f"{c} (absent)" if c in absent else c for c in df["class"]]
    return df


def _video_fps(info: dict, videos: list[str]) -> dict[str, float]:
    """Frame rate per video from the run's store; empty when the store cannot be opened."""
    if not info.get("store"):
        return {}
    from fer_pipeline.store import EmbeddingStore

    try:
        store = EmbeddingStore.open(info["store"])
        out = {}
        for v in videos:
            fps = store.video_attrs(v).get("fps") if store.is_complete(v) else None
            if fps:
                out[v] = float(fps)
        return out
    except (UsageError, OSError, KeyError, ValueError) as e:
        log.warning("store %s: %s; timelines are drawn in frames", info["store"], e)
        return {}


def _thumbnails(manifest: pd.DataFrame | None, video: str,
                frames: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Up to THUMBNAILS_PER_VIDEO face crops spread over the video, as (row index, RGB)."""
    if manifest is None:
        return []
    from PIL import Image

    pos = {int(f): i for i, f in enumerate(frames)}
    rows = manifest[(manifest["video"] == video) & manifest["has_face"]
                    & manifest["crop_path"].notna() & manifest["frame"].isin(pos)]
    if rows.empty:
        return []
    spread = np.linspace(0, len(rows) - 1, THUMBNAILS_PER_VIDEO).round().astype(int)
    pick = rows.iloc[np.unique(spread)]
    out = []
    for frame, crop in zip(pick["frame"], pick["crop_path"]):
        try:
            with Image.open(crop) as im:
                im = im.convert("RGB")
                im.thumbnail((THUMBNAIL_HEIGHT * 2, THUMBNAIL_HEIGHT))
                out.append((pos[int(frame)], np.asarray(im)))
        except OSError as e:
            log.warning("%s: thumbnail left out (%s)", crop, e)
    return out
