"""Building each section of the report from what the readers found: the header and
configuration, learning curves, evaluation (headline numbers, per-class F1, confusion), per-video
timelines, a stage-1 result, and the page of a folder of runs (``stage2 kfold`` / ``ablate``).

Each builder appends blocks to a ``Page``; a missing piece becomes a ``Note``, never an error.
"""
from __future__ import annotations

import datetime as _dt
import shlex
from pathlib import Path

import numpy as np
import pandas as pd

from fer_pipeline.app.commands.report.page import Details, Facts, Figure, Note, Page, Para, Table
from fer_pipeline.app.commands.report.readers import (_collection_f1, _config, _created, _f1_table,
                                                  _get, _git_sha, _pct, _read_json, _read_metrics,
                                                  _subruns, _thumbnails, _video_fps)
from fer_pipeline.labels import CLASSES, IGNORE
from fer_pipeline.metrics import plot_confusion
from fer_pipeline.plots import plot_curves, plot_f1_bars, plot_timeline


def _header(page: Page, run_dir: Path, kind: str) -> tuple[dict, dict]:
    run = _read_json(run_dir / "run.json") or {}
    cfg_text, cfg = _config(run_dir)
    facts = [("run", run_dir.name), ("directory", str(run_dir.resolve())), ("kind", kind),
             ("git SHA", _git_sha(run_dir, run)),
             ("created", _created(run_dir, run, "config.yaml", "metrics.jsonl"))]
    if run.get("argv"):
        facts.append(("command", shlex.join(map(str, run["argv"]))))
    if run.get("torch") or run.get("python"):
        facts.append(("software",
                      f"torch {run.get('torch', '?')}, python {run.get('python', '?')}"))
    if cfg:
        facts.append(("seed / device", f"{cfg.get('seed', '?')} / {cfg.get('device', '?')}"))
    info = _read_json(run_dir / "stage2.json") or {}
    if info:
        facts += [("store", f"{info.get('store', '?')} (encoder {info.get('encoder_key', '?')}, "
                            f"dim {info.get('in_dim', '?')})"),
                  ("split", f"{info.get('split', '?')}"
                            + (f", fold {info.get('fold')}" if info.get("split") == "kfold" else "")
                            + f": {len(info.get('train_videos') or [])} train / "
                              f"{len(info.get('val_videos') or [])} val videos")]
    facts.append(("report written", _dt.datetime.now().isoformat(timespec="seconds")))
    page.add(Facts(facts))
    page.section("Configuration")
    if cfg_text is None:
        page.add(Note("no config.yaml in the run dir"))
    else:
        page.add(Details("resolved config (config.yaml)", cfg_text, "yaml"))
    if info.get("val_videos"):
        page.add(Details(f"validation videos ({len(info['val_videos'])})",
                         "\n".join(map(str, info["val_videos"]))))
    return run, cfg


def _curves(page: Page, run_dir: Path, kind: str, cfg: dict, kept_epoch=None) -> None:
    page.section("Learning curves")
    rows, bad = _read_metrics(run_dir / "metrics.jsonl")
    if bad:
        page.add(Note(f"metrics.jsonl: {bad} line(s) could not be read and are left out"))
    if not rows:
        page.add(Note("no per-epoch metrics yet (metrics.jsonl is missing or empty): "
                      "training has not finished an epoch"))
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    loss_keys = tuple(k for k in keys if k.endswith("loss"))
    score_keys = tuple(k for k in keys if k.startswith("val_") and not k.endswith("loss"))
    marks = {}
    if kind == "stage1" and _get(cfg, "stage1.nla.enabled") and _get(cfg, "stage1.nla.ce_epochs"):
        marks["NLA starts"] = float(_get(cfg, "stage1.nla.ce_epochs"))
    if kept_epoch is not None:
        marks["kept checkpoint"] = float(kept_epoch)
    page.figure("learning_curves.png",
                lambda p: plot_curves(rows, p, title=f"{run_dir.name}: {len(rows)} epoch(s)",
                                      loss_keys=loss_keys, score_keys=score_keys, marks=marks),
                "training loss (left) and validation scores (right) per epoch, from metrics.jsonl")
    last = rows[-1]
    facts = [("epochs logged", str(len(rows)))]
    for k in score_keys:
        vals = [r[k] for r in rows if isinstance(r.get(k), (int, float))]
        if vals:
            best = int(np.argmax(vals))
            facts.append((k, f"last {last.get(k, float('nan')):.4f}, best {vals[best]:.4f}"))
    page.add(Facts(facts))


def _evaluation(page: Page, run_dir: Path) -> None:
    eval_dir = run_dir / "eval"
    page.section("Evaluation")
    report = _read_json(eval_dir / "f1.json") or {}
    if not eval_dir.is_dir() or not any(eval_dir.iterdir()):
        page.add(Note(f"no evaluation yet (no {eval_dir.name}/ files): run "
                      f"`fer-pipeline stage2 eval --run {run_dir}`"))
        return
    facts = []
    if report:
        facts.append(("macro-F1 %", _pct(report.get("macro_f1"))))
        if isinstance(report.get("post"), dict):
            settings = report["post"].get("settings") or {}
            facts.append(("macro-F1 % post-processed", f"{_pct(report['post'].get('macro_f1'))} ("
                          + ", ".join(f"{k}={v}" for k, v in settings.items()) + ")"))
        facts.append(("accuracy %", _pct(report.get("accuracy"))))
        for k, label in (("split", "evaluated split"), ("checkpoint_epoch", "checkpoint epoch"),
                         ("videos", "videos"), ("frames_scored", "annotated frames scored")):
            if report.get(k) is not None:
                facts.append((label, str(report[k])))
        if report.get("absent_classes"):
            facts.append(("absent classes", ", ".join(report["absent_classes"])
                          + " (no annotated frames; F1 = 0 by definition)"))
        page.add(Facts(facts))
    else:
        page.add(Note("eval/f1.json is missing: headline numbers left out"))

    table = _f1_table(eval_dir, report)
    if table is None:
        page.add(Note("no per-class F1 (eval/f1.csv and eval/f1.json are missing)"))
    else:
        per_class, avg = table[table["class"] != "Avg"], table[table["class"] == "Avg"]
        series = {}
        for col, label in (("F1 %", "raw"), ("F1 post %", "post-processed")):
            if col in table:
                f1 = per_class[col].to_numpy(float)
                macro = float(avg[col].iloc[0]) if len(avg) else float(np.nanmean(f1))
                series[f"{label} (macro-F1 {macro:.2f})"] = f1
        title = "per-class F1 on the validation frames"
        page.figure("f1_per_class.png", lambda p: plot_f1_bars(series, p, title=title),
                    "per-class F1 (%)" + (", raw and post-processed" if len(series) > 1 else ""))
    if report.get("confusion") is not None:
        title = f"confusion: macro-F1 {_pct(report.get('macro_f1'))}"
        page.figure("confusion.png",
                    lambda p: plot_confusion(np.asarray(report["confusion"]), p, title=title),
                    "confusion matrix, rows = annotated class, row-normalised (counts below)")
    elif (eval_dir / "confusion.png").is_file():
        page.add(Figure("confusion.png", (eval_dir / "confusion.png").read_bytes(),
                        "confusion matrix (eval/confusion.png)"))
    else:
        page.add(Note("no confusion matrix (eval/f1.json and eval/confusion.png are missing)"))
    if table is not None:
        page.add(Para("Per-class scores on every annotated validation frame (%):"),
                 Table(table, class_column="class"))


def _accuracy(pred: np.ndarray, label: np.ndarray) -> float:
    """% of annotated frames predicted right; NaN when none is annotated."""
    annotated = label != IGNORE
    return 100 * float((pred[annotated] == label[annotated]).mean()) if annotated.any() else np.nan


def _timelines(page: Page, run_dir: Path, max_videos: int,
               manifest: pd.DataFrame | None) -> tuple[int, int]:
    """Per-video table and timelines; returns (timelines drawn, videos in the predictions)."""
    page.section("Per-video timelines")
    path = run_dir / "eval" / "predictions.parquet"
    if not path.is_file():
        page.add(Note("no per-frame predictions (eval/predictions.parquet is missing): "
                      "timelines left out"))
        return 0, 0
    df = pd.read_parquet(path)
    need = ["video", "frame", "label", "face", "pred"] + [f"p_{c}" for c in CLASSES]
    missing = [c for c in need if c not in df.columns]
    if missing:
        page.add(Note(f"eval/predictions.parquet lacks columns {missing}: timelines left out"))
        return 0, 0
    info = _read_json(run_dir / "stage2.json") or {}
    present = list(dict.fromkeys(df["video"].astype(str)))
    order = [v for v in info.get("val_videos") or [] if v in set(present)]
    order += [v for v in present if v not in set(order)]
    groups = {v: g.sort_values("frame") for v, g in df.groupby(df["video"].astype(str), sort=False)}

    stats = []
    for v in order:
        g = groups[v]
        label = g["label"].to_numpy()
        row = {"video": v, "frames": len(g), "annotated": int((label != IGNORE).sum()),
               "face %": 100 * float(g["face"].mean()),
               "accuracy %": _accuracy(g["pred"].to_numpy(), label)}
        if "pred_post" in g:
            row["accuracy post %"] = _accuracy(g["pred_post"].to_numpy(), label)
        stats.append(row)
    page.add(Table(pd.DataFrame(stats)))

    shown = order[:max(0, max_videos)]
    if len(shown) < len(order):
        page.add(Para(f"Timelines of the first {len(shown)} of {len(order)} videos "
                      f"(--max-videos {max_videos})."))
    fps = _video_fps(info, shown)
    if shown and len(fps) < len(shown):
        page.add(Note("frame rate unknown for some videos (store not readable): "
                      "their timelines are in frames"))
    page.add(Para("Stacked class probabilities per frame (raw model output); bands below: "
                  "predicted class (argmax) and annotation (grey = unannotated); "
                  "hatched = no face detected."))
    drawn = 0
    for i, v in enumerate(shown):
        g = groups[v]
        probs = g[[f"p_{c}" for c in CLASSES]].to_numpy(np.float64)
        thumbs = _thumbnails(manifest, v, g["frame"].to_numpy())
        st = stats[i]
        acc = ("" if np.isnan(st["accuracy %"]) else
               f", accuracy {st['accuracy %']:.1f}% on {st['annotated']} annotated frames")
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in v)
        drawn += page.figure(
            f"timeline_{i:03d}_{safe}.png",
            lambda p: plot_timeline(
                probs, p, fps=fps.get(v), pred=g["pred"].to_numpy(), truth=g["label"].to_numpy(),
                face=g["face"].to_numpy(bool), thumbnails=thumbs,
                title=f"{v}: {len(g)} frames{acc}"),
            f"{v}: class probabilities, prediction and annotation over time")
    return drawn, len(order)


def _stage1_result(page: Page, run_dir: Path) -> None:
    res = _read_json(run_dir / "result.json")
    page.section("Result")
    if not res:
        page.add(Note("no result.json: the run has not finished"))
        return
    page.add(Facts([(k, f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in res.items()]))
    page.add(Para("Stage-1 runs are scored on still images (result.json); per-class F1, "
                  "confusion and timelines come from stage-2 runs."))


_COLLECTIONS = {"kfold": "stage2 kfold (official + random 7:3 video splits)",
                "ablation": "stage2 ablation (aug / V-NAW over seeds)",
                "runs": "folder of stage-2 runs"}


def _collection(page: Page, run_dir: Path, kind: str) -> None:
    subs = _subruns(run_dir, kind)
    table_file = run_dir / {"kfold": "kfold.csv", "ablation": "ablation.csv"}.get(kind, "")
    runs = [_read_json(s / "run.json") or {} for s in subs]
    shas = sorted({_git_sha(s, r) for s, r in zip(subs, runs)}) or ["unknown"]
    facts = [("run", run_dir.name), ("directory", str(run_dir.resolve())),
             ("kind", _COLLECTIONS[kind]),
             ("git SHA", ", ".join(shas)),
             ("created", _created(run_dir, {}, table_file.name, "ablation_runs.csv")
              if table_file.is_file() else min((_created(s, r) for s, r in zip(subs, runs)),
                                               default="unknown")),
             ("sub-runs", str(len(subs)))]
    if runs and runs[0].get("argv"):
        facts.append(("command", shlex.join(map(str, runs[0]["argv"]))))
    facts.append(("report written", _dt.datetime.now().isoformat(timespec="seconds")))
    page.add(Facts(facts))

    page.section("Configuration")
    cfg_text, _ = _config(subs[0]) if subs else (None, {})
    if cfg_text is None:
        page.add(Note("no sub-run config.yaml found"))
    else:
        page.add(Details(f"resolved config of {subs[0].relative_to(run_dir)} " + (
            "(the others may differ: see each run's own report)" if kind == "runs" else
            "(the sub-runs differ in split / seed / aug / V-NAW only)"), cfg_text, "yaml"))

    page.section({"kfold": "F1 per validation set", "ablation": "Ablation"}.get(kind, "F1 per run"))
    if kind != "runs":
        if table_file.is_file():
            page.add(Table(pd.read_csv(table_file)))
        else:
            page.add(Note(f"{table_file.name} is missing"))
    series, what = _collection_f1(run_dir, kind, subs)
    if series:
        page.figure("f1_per_class.png",
                    lambda p: plot_f1_bars(series, p, title=f"per-class F1 (%) per {what}"),
                    f"per-class F1 (%) per {what}")

    page.section("Learning curves")
    merged: dict[int, dict] = {}
    names = [str(s.relative_to(run_dir)) for s in subs]
    for name, s in zip(names, subs):
        for r in _read_metrics(s / "metrics.jsonl")[0]:
            row = merged.setdefault(int(r["epoch"]), {"epoch": int(r["epoch"])})
            row[f"{name}: loss"] = r.get("train_loss", float("nan"))
            row[f"{name}: F1"] = r.get("val_macro_f1", float("nan"))
    if merged:
        rows = [merged[e] for e in sorted(merged)]
        for row in rows:
            for n in names:
                row.setdefault(f"{n}: loss", float("nan"))
                row.setdefault(f"{n}: F1", float("nan"))
        page.figure("learning_curves.png",
                    lambda p: plot_curves(rows, p, title="train loss (left), val macro-F1 (right)",
                                          loss_keys=tuple(f"{n}: loss" for n in names),
                                          score_keys=tuple(f"{n}: F1" for n in names)),
                    "every sub-run's training loss and validation macro-F1 per epoch")
    else:
        page.add(Note("no sub-run metrics.jsonl found"))

    page.section("Sub-runs")
    rows = []
    for name, s in zip(names, subs):
        f1 = _read_json(s / "eval" / "f1.json") or {}
        post = f1.get("post") if isinstance(f1.get("post"), dict) else {}
        rows.append({"sub-run": name, "macro-F1 %": _pct(f1.get("macro_f1")) if f1 else "—",
                     "post %": _pct(post.get("macro_f1")) if post else "—",
                     "epochs": len(_read_metrics(s / "metrics.jsonl")[0]),
                     "checkpoint epoch": f1.get("checkpoint_epoch", "—")})
    if rows:
        page.add(Table(pd.DataFrame(rows)),
                 Para(f"Details of one sub-run: fer-pipeline report {run_dir}/<sub-run>"))
    else:
        page.add(Note("no stage-2 sub-runs found"))
