"""``fer-pipeline report RUN_DIR``: one self-contained HTML page describing a run.

    fer-pipeline report artifacts/runs/stage2/<run-id>
    fer-pipeline report RUN_DIR --max-videos 4 --manifest artifacts/stage0/manifest.parquet
    fer-pipeline report RUN_DIR --markdown      # also report.md with the PNGs beside it

Writes ``RUN_DIR/report/index.html`` with every figure embedded as a base64 PNG, so the single
file opens offline. Everything is drawn from the files the run left behind:

- stage-2 run (``stage2.json``): header (run id, git SHA, date, command, store, split), the
  resolved config, learning curves from ``metrics.jsonl``, per-class F1 bars (raw and
  post-processed), confusion matrix and F1 table from ``eval/``, and one timeline per
  validation video from ``eval/predictions.parquet``;
- stage-1 run (or any run dir with ``run.json`` / ``config.yaml``): header, config, curves and
  the numbers in ``result.json``;
- ``stage2 kfold`` / ``stage2 ablate`` output: the F1 table, per-split F1 bars, the sub-runs'
  curves side by side and a line per sub-run.

A missing piece (no eval yet, no metrics) becomes a note in the page, never an error.
"""
from __future__ import annotations

import argparse
import base64
import datetime as _dt
import html
import json
import logging
import shlex
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from pipeline.cliutil import add_config_args, resolve_config, summary
from pipeline.errors import EXIT_OK, UsageError
from pipeline.io import atomic_write, write_text
from pipeline.labels import CLASSES, IGNORE
from pipeline.metrics import F1Report, plot_confusion, to_markdown
from pipeline.plots import CLASS_COLOR, plot_curves, plot_f1_bars, plot_timeline

log = logging.getLogger(__name__)

THUMBNAILS_PER_VIDEO = 8
THUMBNAIL_HEIGHT = 64
MAX_BAR_SERIES = 6          # runs compared in one per-class F1 chart of a folder of runs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="one self-contained HTML page for a run: config, curves, F1, timelines")
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="a stage-1/stage-2 run dir, or the --out of stage2 kfold / ablate")
    add_config_args(p)                # after RUN_DIR, so trailing key=value stay overrides
    p.add_argument("--max-videos", type=int, default=12, metavar="N",
                   help="timelines for at most N validation videos (default 12)")
    p.add_argument("--manifest", metavar="FILE",
                   help="stage-0 manifest.parquet: adds face-crop thumbnails to the timelines")
    p.add_argument("--markdown", action="store_true",
                   help="also write RUN_DIR/report/report.md with the PNGs beside it")
    p.set_defaults(handler=report_command)


# ------------------------------------------------------------------------------ page model
# The page is a list of blocks, collected once and rendered to HTML (and Markdown).
@dataclass
class Heading:
    text: str
    anchor: str


@dataclass
class Para:
    text: str


@dataclass
class Note:
    text: str


@dataclass
class Facts:
    rows: list[tuple[str, str]]


@dataclass
class Figure:
    name: str               # file name under report/ when written out
    png: bytes
    caption: str


@dataclass
class Table:
    df: pd.DataFrame
    class_column: str | None = None     # cells of this column get their class colour swatch


@dataclass
class Details:
    summary: str
    text: str
    lang: str = ""


@dataclass
class Page:
    title: str
    blocks: list = field(default_factory=list)
    workdir: Path | None = None         # where figures are rendered before being embedded

    def add(self, *blocks) -> None:
        self.blocks.extend(blocks)

    def section(self, text: str) -> None:
        anchor = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
        self.blocks.append(Heading(text, anchor))

    def figure(self, name: str, draw: Callable[[Path], object], caption: str) -> bool:
        """Render one PNG with ``draw(path)`` and add it; a failing plot becomes a note."""
        path = self.workdir / name
        try:
            draw(path)
        except (ValueError, KeyError, TypeError, OSError) as e:
            self.add(Note(f"{caption}: could not be drawn ({e})"))
            return False
        self.add(Figure(name, path.read_bytes(), caption))
        return True

    @property
    def figures(self) -> list[Figure]:
        return [b for b in self.blocks if isinstance(b, Figure)]


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;
 color:#222;background:#fafafa}
main{max-width:1240px;margin:0 auto;padding:16px 24px 48px;background:#fff}
h1{font-size:1.5em;margin:.4em 0}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd;
 padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
td,th{border:1px solid #ddd;padding:3px 9px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
table.facts td{text-align:left;border:none;padding:1px 12px 1px 0}
table.facts td:first-child{color:#666}
.note{background:#fff7e0;border-left:4px solid #e0b000;padding:6px 10px;margin:.6em 0}
figure{margin:.8em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}
.swatch{display:inline-block;width:.9em;height:.9em;margin-right:.4em;vertical-align:-.1em;
 border:1px solid #0003}
pre{background:#f6f6f6;padding:8px;overflow:auto;font-size:.85em}
nav a{margin-right:1em}
code{background:#f3f3f3;padding:0 3px}
"""


def _cell(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else f"{v:.2f}"
    return str(v)


def render_html(page: Page) -> str:
    e = html.escape
    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{e(page.title)}</title>", f"<style>{_CSS}</style></head><body><main>",
           f"<h1>{e(page.title)}</h1>"]
    heads = [b for b in page.blocks if isinstance(b, Heading)]
    toc = "".join(f'<a href="#{h.anchor}">{e(h.text)}</a>' for h in heads)
    toc_done = False
    for b in page.blocks:
        if isinstance(b, Heading):
            if not toc_done:
                out.append(f"<nav>{toc}</nav>")
                toc_done = True
            out.append(f'<h2 id="{b.anchor}">{e(b.text)}</h2>')
        elif isinstance(b, Para):
            out.append(f"<p>{e(b.text)}</p>")
        elif isinstance(b, Note):
            out.append(f'<p class="note">{e(b.text)}</p>')
        elif isinstance(b, Facts):
            out.append('<table class="facts">' + "".join(
                f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in b.rows) + "</table>")
        elif isinstance(b, Figure):
            data = base64.b64encode(b.png).decode("ascii")
            out.append(f'<figure><img alt="{e(b.caption)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{e(b.caption)}</figcaption></figure>")
        elif isinstance(b, Table):
            rows = ["<tr>" + "".join(f"<th>{e(str(c))}</th>" for c in b.df.columns) + "</tr>"]
            for rec in b.df.itertuples(index=False):
                cells = []
                for col, v in zip(b.df.columns, rec):
                    text = e(_cell(v))
                    name = str(v).removesuffix(" (absent)")
                    if col == b.class_column and name in CLASS_COLOR:
                        text = (f'<span class="swatch" style="background:{CLASS_COLOR[name]}">'
                                f"</span>{text}")
                    cells.append(f"<td>{text}</td>")
                rows.append("<tr>" + "".join(cells) + "</tr>")
            out.append("<table>" + "".join(rows) + "</table>")
        elif isinstance(b, Details):
            out.append(f"<details><summary>{e(b.summary)}</summary>"
                       f"<pre>{e(b.text)}</pre></details>")
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"


def render_markdown(page: Page) -> str:
    out = [f"# {page.title}", ""]
    for b in page.blocks:
        if isinstance(b, Heading):
            out += [f"## {b.text}", ""]
        elif isinstance(b, Para):
            out += [b.text, ""]
        elif isinstance(b, Note):
            out += [f"> **Note:** {b.text}", ""]
        elif isinstance(b, Facts):
            out += [f"- **{k}:** {v}" for k, v in b.rows] + [""]
        elif isinstance(b, Figure):
            out += [f"![{b.caption}]({b.name})", "", f"*{b.caption}*", ""]
        elif isinstance(b, Table):
            out += [to_markdown(b.df.map(_cell)), ""]
        elif isinstance(b, Details):
            out += [f"<details><summary>{html.escape(b.summary)}</summary>", "",
                    f"```{b.lang}", b.text.rstrip("\n"), "```", "", "</details>", ""]
    return "\n".join(out)


# ------------------------------------------------------------------------------ run files
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


# ------------------------------------------------------------------------------ sections
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


def _video_fps(info: dict, videos: list[str]) -> dict[str, float]:
    """Frame rate per video from the run's store; empty when the store cannot be opened."""
    if not info.get("store"):
        return {}
    from pipeline.store import EmbeddingStore

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


# ------------------------------------------------------------------------------ collections
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


# ------------------------------------------------------------------------------ command
def build_report(run_dir: Path, workdir: Path, max_videos: int = 12,
                 manifest: pd.DataFrame | None = None) -> tuple[Page, dict]:
    """Collect the page for ``run_dir``; figures are rendered under ``workdir``."""
    kind = _run_kind(run_dir)
    page = Page(f"Run report: {run_dir.name}", workdir=workdir)
    stats = {"kind": kind, "timelines": 0, "videos": 0}
    if kind in _COLLECTIONS:
        _collection(page, run_dir, kind)
        return page, stats
    _, cfg = _header(page, run_dir, kind)
    if kind == "stage2":
        kept = (_read_json(run_dir / "eval" / "f1.json") or {}).get("checkpoint_epoch")
        _curves(page, run_dir, kind, cfg, kept_epoch=kept)
        _evaluation(page, run_dir)
        stats["timelines"], stats["videos"] = _timelines(page, run_dir, max_videos, manifest)
    else:
        _curves(page, run_dir, kind, cfg)
        if kind == "stage1" or (run_dir / "result.json").is_file():
            _stage1_result(page, run_dir)
    return page, stats


def write_report(run_dir: Path, max_videos: int = 12, manifest: pd.DataFrame | None = None,
                 markdown: bool = False) -> tuple[Path, Page, dict]:
    """Write ``RUN_DIR/report/index.html`` (and ``report.md`` with its PNGs when ``markdown``)."""
    _run_kind(run_dir)                       # refuse a non-run dir before creating report/
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".figures-", dir=out) as tmp:
        page, stats = build_report(run_dir, Path(tmp), max_videos, manifest)
        index = write_text(out / "index.html", render_html(page))
        if markdown:
            for fig in page.figures:
                atomic_write(out / fig.name, lambda p, png=fig.png: p.write_bytes(png))
            write_text(out / "report.md", render_markdown(page))
    return index, page, stats


def report_command(args: argparse.Namespace) -> int:
    resolve_config(args)
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such directory")
    if args.max_videos < 0:
        raise UsageError(f"--max-videos must be >= 0, got {args.max_videos}")
    manifest = None
    if args.manifest:
        from pipeline.manifest import read_manifest

        manifest = read_manifest(args.manifest)
    index, page, stats = write_report(run_dir, args.max_videos, manifest, args.markdown)
    missing = sum(isinstance(b, Note) for b in page.blocks)
    extra = (f", {stats['timelines']} of {stats['videos']} video timelines"
             if stats["kind"] == "stage2" else "")
    summary(f"report: {stats['kind']} run {run_dir.name}: {len(page.figures)} figures{extra}"
            f"{f', {missing} missing piece(s) noted' if missing else ''} -> {index}"
            f"{' (+ report.md)' if args.markdown else ''}")
    return EXIT_OK
