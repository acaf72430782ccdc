"""Stage 1 on real faces: which framing and which recipe, measured on FERPlus.

Each row is one ``fer-pipeline stage1 train`` run (the recipe ``bench/ferplus_cpu.yaml``, plus the
row's overrides), trained on FERPlus in its original framing (FER2013's Haar cut) or on
``fer-pipeline stage0 recrop-ferplus``'s re-crop through stage 0's detector and 5-point alignment
(the framing the encoder is fed on videos). Every finished run is then scored by ``fer-pipeline
stage1 eval`` on FER2013Valid's majority labels in both framings, with and without test-time flip,
so the framing rows give the 2 x 2 table (trained on x tested on) and every row gives its flip gain.

    fer-pipeline stage0 recrop-ferplus --ferplus ../shared/data/ferplus --out ALIGNED
    python -m bench.ferplus_recipe --out /tmp/recipe --aligned ALIGNED               # every row
    python -m bench.ferplus_recipe --out /tmp/recipe --aligned ALIGNED --rows aligned/CE --epochs 1

Runs already finished in ``OUT`` are reused (delete a run's folder to redo it); the table
(``OUT/ferplus_recipe.{json,md}``) holds every finished run in ``OUT``, so several invocations with
different ``--rows`` can share one ``OUT``. Not part of CI: one run takes tens of CPU-minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from bench.ferplus_nla import DEFAULT_ROOT, RECIPE, run_one

CE = ["stage1.nla.enabled=false"]
# name -> (training framing, overrides over bench/ferplus_cpu.yaml)
ROWS: dict[str, tuple[str, list[str]]] = {
    "original/CE": ("original", CE),
    "aligned/CE": ("aligned", CE),
    "aligned/CE/soft": ("aligned", [*CE, "label_mode=soft"]),
    "aligned/CE/aug+": ("aligned", [*CE, "stage1.augment.rotate=10", "stage1.augment.blur=0.2",
                                    "stage1.augment.crop_scale=[0.6,1.0]"]),
    "aligned/CE/64px": ("aligned", [*CE, "stage1.model.img_size=64"]),
    "aligned/CE/soft/64px": ("aligned", [*CE, "stage1.model.img_size=64", "label_mode=soft"]),
    "aligned/weighted-CE/soft": ("aligned", ["stage1.nla.enabled=true", "stage1.nla.form=weighted_ce",
                                             "stage1.nla.ce_epochs=1", "label_mode=soft"]),
}
TESTS = ("original", "aligned")


def command(row: str, out: Path, roots: dict[str, Path], epochs: int | None, seed: int) -> list[str]:
    framing, over = ROWS[row]
    mode = next((o.split("=", 1)[1] for o in over if o.startswith("label_mode=")), "majority")
    over = [o for o in over if not o.startswith("label_mode=")]
    source = f"[{{format: ferplus, root: {roots[framing]}, label_mode: {mode}}}]"
    cmd = [sys.executable, "-m", "fer_pipeline", "stage1", "train", "--out", str(out), "--config",
           str(RECIPE), f"stage1.data.sources={source}", f"seed={seed}", "threads=1", *over]
    return cmd + ([f"stage1.train.epochs={epochs}"] if epochs else [])


def evaluate(run: Path, roots: dict[str, Path], env: dict) -> dict:
    """FER2013Valid figures of a run in each framing, plain and with test-time flip."""
    scores = {}
    for test in TESTS:
        for flip in (False, True):
            out = run / "eval" / f"{test}{'_flip' if flip else ''}"
            if not (out / "stage1_eval.json").is_file():
                cmd = [sys.executable, "-m", "fer_pipeline", "stage1", "eval", "--run", str(run),
                       "--out", str(out), f"stage1.data.sources=[{{format: ferplus, root: {roots[test]}}}]",
                       "threads=1", *(["--flip"] if flip else [])]
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if proc.returncode:
                    raise SystemExit(f"eval failed: {shlex.join(cmd)}\n{proc.stderr[-2000:]}")
            res = json.loads((out / "stage1_eval.json").read_text())
            scores[f"{test}{'_flip' if flip else ''}"] = {"acc": res["accuracy"], "macro_f1": res["macro_f1"]}
    return scores


def markdown(rows: list[dict]) -> str:
    head = ("| row | trained on | tested on original | tested on aligned | aligned + flip "
            "| macro-F1 aligned (%) | CPU min |")
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["scores"]
        lines.append(f"| {r['row']} | {ROWS[r['row']][0]} | {100 * s['original']['acc']:.2f} | "
                     f"{100 * s['aligned']['acc']:.2f} | {100 * s['aligned_flip']['acc']:.2f} | "
                     f"{100 * s['aligned']['macro_f1']:.2f} | {r.get('cpu_min', float('nan')):.1f} |")
    lines += ["", "Accuracy (%) on FER2013Valid, majority labels. Commands:", ""]
    lines += [f"- `{r['row']}`: `{r['command']}`" for r in rows]
    return "\n".join(lines) + "\n"


def collect(out: Path) -> list[dict]:
    rows = []
    for row in ROWS:
        for run in sorted((out / row.replace("/", "_")).glob("seed*")):
            rec = run / "record.json"
            if rec.is_file():
                rows.append(json.loads(rec.read_text()))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="folder for the runs and the table")
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="FERPlus folder (original framing)")
    ap.add_argument("--aligned", required=True, type=Path,
                    help="FERPlus re-cropped by `fer-pipeline stage0 recrop-ferplus`")
    ap.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    ap.add_argument("--epochs", type=int, help="override the recipe's epochs")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    roots = {"original": args.root.resolve(), "aligned": args.aligned.resolve()}
    needed = {"original"} | {ROWS[r][0] for r in args.rows}
    for name, root in roots.items():
        if name in needed and not (root / "FER2013Train" / "label.csv").is_file():
            print(f"no FERPlus {name} data in {root} (FER2013Train/label.csv)", file=sys.stderr)
            return 2
    env = {**os.environ, "FER_NO_PROGRESS": "1"}
    for row in args.rows:
        run = args.out / row.replace("/", "_") / f"seed{args.seed}"
        cmd = command(row, run, roots, args.epochs, args.seed)
        res = run_one(cmd, run, env)
        rec = {"row": row, "seed": args.seed, "command": shlex.join(["fer-pipeline", *cmd[3:]]),
               **res, "scores": evaluate(run, roots, env)}
        (run / "record.json").write_text(json.dumps(rec, indent=1) + "\n")
        s = rec["scores"]
        print(f"{row}: original {100 * s['original']['acc']:.2f}, aligned {100 * s['aligned']['acc']:.2f},"
              f" aligned+flip {100 * s['aligned_flip']['acc']:.2f}", flush=True)
        rows = collect(args.out)
        (args.out / "ferplus_recipe.json").write_text(json.dumps(rows, indent=1) + "\n")
        (args.out / "ferplus_recipe.md").write_text(markdown(rows))
    print((args.out / "ferplus_recipe.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
