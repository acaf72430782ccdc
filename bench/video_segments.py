"""``fer-pipeline predict`` on the six sample videos, scored per segment against expressions
annotated by eye (tests/data/video_segments.csv, made as tests/data/video_segments.md says).

A segment is a hit when the most frequent smoothed label over its face frames is the annotated
expression; ``agree`` is the share of its face frames labelled so. Segments marked
``ambiguous`` are listed but not scored. Each ``--runs`` entry is one ``predict`` over all the
videos (``bundled``: no ``--run``, the encoder shipped with the package), so two entries give a
before / after table from one invocation:

    python -m bench.video_segments --out /tmp/segments                       # predict as shipped
    python -m bench.video_segments --out /tmp/segments --runs old=OLD_RUN new=bundled

Writes ``OUT/video_segments.{json,md}`` and keeps each run's predictions in ``OUT/<name>/``
(reused when present: delete the folder to predict again). Not part of CI: about 2 CPU-minutes
per run; the test suite scores two of the videos through the same function.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from fer_pipeline.labels import CLASSES

ROOT = Path(__file__).resolve().parent.parent
SEGMENTS = ROOT / "tests" / "data" / "video_segments.csv"
VIDEOS = ROOT.parent / "shared" / "assets" / "videos"
AMBIGUOUS = "ambiguous"


def load_segments(path: str | Path = SEGMENTS) -> pd.DataFrame:
    """The annotated segments, checked: 1-based inclusive frame ranges, an 8-class name or
    ``ambiguous``, no two segments of one video overlapping. A bad row is a ValueError naming it."""
    seg = pd.read_csv(path)
    need = {"video", "start_frame", "end_frame", "expression"}
    if not need <= set(seg.columns):
        raise ValueError(f"{path}: needs columns {sorted(need)}, has {list(seg.columns)}")
    for i, r in seg.iterrows():
        where = f"{path}, row {i + 2} ({r.video} {r.start_frame}-{r.end_frame})"
        if not 1 <= r.start_frame <= r.end_frame:
            raise ValueError(f"{where}: frames are 1-based and start <= end")
        if r.expression not in (*CLASSES, AMBIGUOUS):
            raise ValueError(f"{where}: expression {r.expression!r} is none of {[*CLASSES, AMBIGUOUS]}")
    for video, g in seg.groupby("video"):
        g = g.sort_values("start_frame")
        if (g.start_frame.to_numpy()[1:] <= g.end_frame.to_numpy()[:-1]).any():
            raise ValueError(f"{path}: segments of {video} overlap")
    return seg


def score(segments: pd.DataFrame, pred_dir: str | Path) -> pd.DataFrame:
    """One row per segment whose video has ``pred_dir/<video>.csv``: its face frames, the
    share of them whose smoothed label is the annotated one (``agree``), the most frequent
    smoothed label (``top``) and whether it is the annotated one (``hit``; None if ambiguous)."""
    rows = []
    for video, g in segments.groupby("video", sort=False):
        csv = Path(pred_dir) / f"{video}.csv"
        if not csv.is_file():
            continue
        pred = pd.read_csv(csv)
        for r in g.itertuples():
            seg = pred[(pred.frame >= r.start_frame) & (pred.frame <= r.end_frame) & pred.has_face]
            names = seg.smoothed_label_name
            top = names.value_counts().index[0] if len(seg) else None
            scored = r.expression != AMBIGUOUS
            rows.append({"video": video, "start_frame": r.start_frame, "end_frame": r.end_frame,
                         "expression": r.expression, "face_frames": len(seg),
                         "agree": float((names == r.expression).mean()) if scored and len(seg) else None,
                         "top": top, "hit": (top == r.expression) if scored else None})
    return pd.DataFrame(rows)


def summary(scored: pd.DataFrame) -> dict:
    s = scored[scored.hit.notna()]
    per = {e: {"segments": int(len(g)), "hits": int(g.hit.sum())} for e, g in s.groupby("expression")}
    frames = (s.agree * s.face_frames).sum() / max(1, s.face_frames.sum())
    return {"segments": int(len(s)), "hits": int(s.hit.sum()), "frame_agreement": float(frames),
            "per_expression": per}


def predict(videos: list[Path], out: Path, run: str) -> Path:
    if all((out / f"{v.stem}.csv").is_file() for v in videos):
        return out
    cmd = [sys.executable, "-m", "fer_pipeline", "predict", *map(str, videos), "--out", str(out),
           *([] if run == "bundled" else ["--run", run])]
    proc = subprocess.run(cmd, env={**os.environ, "FER_NO_PROGRESS": "1"}, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"predict failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return out


def markdown(tables: dict[str, pd.DataFrame]) -> str:
    names = list(tables)
    base = next(iter(tables.values()))
    head = "| video | frames | by eye | " + " | ".join(f"{n}: top (agree)" for n in names) + " |"
    lines = [head, "|" + "---|" * (3 + len(names))]
    for i, r in base.iterrows():
        cells = []
        for n in names:
            t = tables[n].iloc[i]
            mark = "" if t.hit is None or pd.isna(t.hit) else (" ✓" if t.hit else " ✗")
            agree = "" if t.agree is None or pd.isna(t.agree) else f" ({100 * t.agree:.0f} %)"
            cells.append(f"{t.top}{agree}{mark}")
        lines.append(f"| {r.video} | {r.start_frame}-{r.end_frame} | {r.expression} | " + " | ".join(cells) + " |")
    lines.append("")
    for n in names:
        s = summary(tables[n])
        per = ", ".join(f"{e} {v['hits']}/{v['segments']}" for e, v in s["per_expression"].items())
        lines.append(f"- **{n}**: {s['hits']}/{s['segments']} segments hit ({per}); "
                     f"{100 * s['frame_agreement']:.1f} % of their face frames agree")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--runs", nargs="+", default=["bundled=bundled"], metavar="NAME=RUN",
                    help="predict runs to compare: NAME=RUN_DIR, or NAME=bundled for no --run")
    ap.add_argument("--segments", type=Path, default=SEGMENTS)
    ap.add_argument("--videos", type=Path, default=VIDEOS, help="folder of the sample videos")
    args = ap.parse_args(argv)
    seg = load_segments(args.segments)
    videos = []
    for name in dict.fromkeys(seg.video):
        found = sorted(args.videos.glob(f"{name}.*"))
        if not found:
            print(f"no video {name}.* in {args.videos}", file=sys.stderr)
            return 2
        videos.append(found[0])
    tables = {}
    for spec in args.runs:
        name, _, run = spec.partition("=")
        tables[name] = score(seg, predict(videos, args.out / name, run or name))
    rec = {name: {"summary": summary(t), "segments": t.to_dict("records")} for name, t in tables.items()}
    rec["runs"] = dict(s.partition("=")[::2] for s in args.runs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "video_segments.json").write_text(json.dumps(rec, indent=1, default=str) + "\n")
    (args.out / "video_segments.md").write_text(markdown(tables))
    print((args.out / "video_segments.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
