"""Stage 1 on real faces: FERPlus training runs for the experiment NLA exists for.

Labels of the training images come either from the FER+ majority rule (clean) or from one
label drawn per image out of its own 10 annotator votes (``vote_sample``: real annotator noise,
about 19 % of the majority images change label); the loss is plain CE, NLA in the official
release form, NLA in the paper form, or one of two named variants (weighted CE without the
consistency term; the release form with a batch-mean JSD). Every run is scored on the majority labels of
FER2013Valid (3 191 images). Each run is one ``fer-pipeline stage1 train`` command, printed
with its row; the table goes to ``OUT/ferplus_nla.{csv,md,json}``.

    python -m bench.ferplus_nla --out /tmp/fer --seeds 2          # the 10-row table, 2 seeds
    python -m bench.ferplus_nla --out /tmp/fer --rows majority/CE --seeds 1 --epochs 1

Runs already finished in ``OUT`` are reused (delete a run's folder to redo it). Not part of CI:
one run takes minutes to tens of minutes on a CPU (see the recipe in ``bench/ferplus_cpu.yaml``).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DEFAULT_ROOT = ROOT.parent / "shared" / "data" / "ferplus"
RECIPE = BENCH / "ferplus_cpu.yaml"

LABELS = {"majority": "majority", "votes": "vote_sample"}
# NLA as its paper uses it fine-tunes a face-pretrained backbone; from a random init its first
# epoch is plain CE (stage1.nla.ce_epochs), after which the NAW weight (and the release form's
# flip-consistency term) apply. Run from scratch without it, the release form's JSD, summed
# over the batch as the official code does, drove the first epoch to the majority class.
LOSSES = {
    "CE": ["stage1.nla.enabled=false"],
    "NLA-release": ["stage1.nla.enabled=true", "stage1.nla.form=release", "stage1.nla.ce_epochs=1"],
    # the NLA paper's total loss: 0.5 mean((1 + w) CE) + 0.5 JSD (stage1.nla.lam_paper)
    "NLA-paper": ["stage1.nla.enabled=true", "stage1.nla.form=paper", "stage1.nla.ce_epochs=1"],
    # a variant, not NLA: the NAW-weighted CE alone, (1 + w) CE, no consistency term
    "weighted-CE": ["stage1.nla.enabled=true", "stage1.nla.form=weighted_ce", "stage1.nla.ce_epochs=1"],
    # a variant, not NLA: the release form with the JSD averaged over the batch like its CE
    # terms (summed, at 128 images per batch it outweighs them 128 to 1)
    "NLA-release-JSDmean": ["stage1.nla.enabled=true", "stage1.nla.form=release",
                            "stage1.nla.ce_epochs=1", "stage1.nla.jsd_reduction=mean"],
}
ROWS = [f"{lab}/{loss}" for lab in LABELS for loss in LOSSES]


def command(row: str, seed: int, out: Path, root: Path, recipe: Path, extra: list[str]) -> list[str]:
    lab, loss = row.split("/")
    source = f"[{{format: ferplus, root: {root}, label_mode: {LABELS[lab]}, sample_seed: {seed}}}]"
    return [sys.executable, "-m", "fer_pipeline", "stage1", "train", "--out", str(out),
            "--config", str(recipe), f"stage1.data.sources={source}", f"seed={seed}",
            *LOSSES[loss], *extra]


def run_one(cmd: list[str], out: Path, env: dict) -> dict:
    if (out / "result.json").is_file():
        res = json.loads((out / "result.json").read_text())
        timing = json.loads((out / "timing.json").read_text()) if (out / "timing.json").is_file() else {}
        return {**res, **timing, "reused": True}
    if out.exists():                      # an interrupted run: start it again
        import shutil

        shutil.rmtree(out)
    load0 = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}): {shlex.join(cmd)}\n{proc.stderr[-2000:]}")
    timing = {"wall_min": round(wall / 60, 2),
              "cpu_min": round((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / 60, 2),
              "load1_start": round(load0, 2), "load1_end": round(os.getloadavg()[0], 2)}
    (out / "timing.json").write_text(json.dumps(timing) + "\n")
    return {**json.loads((out / "result.json").read_text()), **timing, "reused": False}


def markdown(rows: list[dict]) -> str:
    import numpy as np

    lines = ["| labels | loss | FER2013Valid acc (%) | macro-F1 (%) | seeds | wall min / run | CPU min / run |",
             "|---|---|---|---|---|---|---|"]
    for row in ROWS:
        runs = [r for r in rows if r["row"] == row]
        if not runs:
            continue
        acc = np.array([100 * r["val_acc"] for r in runs])
        f1 = np.array([100 * r["val_macro_f1_present_classes"] for r in runs])
        sd = (lambda a: f" ± {a.std(ddof=1):.2f}" if len(a) > 1 else "")
        lab, loss = row.split("/")
        lines.append(f"| {lab} | {loss} | {acc.mean():.2f}{sd(acc)} | {f1.mean():.2f}{sd(f1)} | "
                     f"{len(runs)} | {np.mean([r.get('wall_min', float('nan')) for r in runs]):.1f} | "
                     f"{np.mean([r.get('cpu_min', float('nan')) for r in runs]):.1f} |")
    lines.append("")
    lines.append("Commands:")
    lines.append("")
    for r in rows:
        lines.append(f"- `{r['row']}` seed {r['seed']}: `{r['command']}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="folder for the runs and the table")
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="FERPlus folder")
    ap.add_argument("--recipe", type=Path, default=RECIPE, help="stage-1 config layered over pipeline.yaml")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--rows", nargs="+", choices=ROWS, default=ROWS)
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="extra config overrides for every run")
    args = ap.parse_args(argv)
    if not (args.root / "FER2013Train" / "label.csv").is_file() and not (args.root / "fer2013.csv").is_file():
        print(f"no FERPlus data in {args.root}", file=sys.stderr)
        return 2
    env = {**os.environ, "FER_NO_PROGRESS": "1"}
    results = []
    for seed in range(args.seeds):
        for row in args.rows:
            out = args.out / row.replace("/", "_") / f"seed{seed}"
            cmd = command(row, seed, out, args.root.resolve(), args.recipe.resolve(), args.overrides)
            res = run_one(cmd, out, env)
            rec = {"row": row, "seed": seed, "command": shlex.join(["fer-pipeline", *cmd[3:]]), **res}
            results.append(rec)
            took = " (reused)" if res["reused"] else f", {res['wall_min']} min"
            print(f"{row} seed {seed}: acc {100 * res['val_acc']:.2f}, macro-F1 "
                  f"{100 * res['val_macro_f1_present_classes']:.2f}{took}", flush=True)
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "ferplus_nla.json").write_text(json.dumps(results, indent=1) + "\n")
            (args.out / "ferplus_nla.md").write_text(markdown(results))
    print((args.out / "ferplus_nla.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
