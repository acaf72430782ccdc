"""Stage 2 entry.

    fer-pipeline stage2 train --store STORE [--out RUN_DIR] [key=value ...]
    fer-pipeline stage2 eval --run RUN_DIR [--store STORE]
    python -m stage2_temporal train --store STORE stage2.model.layers=2 stage2.train.epochs=10

The store is loaded into memory once; training never re-runs the image backbone.
"""
from __future__ import annotations

import argparse
import logging

from pipeline.cliutil import add_config_args, resolve_config, summary
from pipeline.errors import EXIT_OK
from pipeline.runs import default_run_dir

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stage2", help="temporal model on cached embeddings")
    s2 = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    tr = add_config_args(s2.add_parser("train", help="train on the store's train split, "
                                                     "evaluate on its val split"))
    tr.add_argument("--store", required=True, metavar="DIR")
    tr.add_argument("--out", metavar="RUN_DIR", help="run dir (default artifacts/runs/stage2/<id>)")
    tr.set_defaults(handler=train_command)
    ev = add_config_args(s2.add_parser("eval", help="evaluate a run on every annotated val frame"))
    ev.add_argument("--run", required=True, metavar="RUN_DIR")
    ev.add_argument("--store", metavar="DIR", help="store (default: the one the run trained on)")
    ev.set_defaults(handler=eval_command)


def train_command(args: argparse.Namespace) -> int:
    from stage2_temporal.train import train

    cfg = resolve_config(args)
    res = train(args.store, args.out or default_run_dir(cfg, "stage2"), cfg)
    if res.report is not None:
        print(res.report.text())
        summary(f"stage2 train: val macro-F1 {100 * res.report.macro_f1:.2f} "
                f"(checkpoint of epoch {res.best_epoch}, chosen on val; last epoch "
                f"{100 * (res.last_f1 or 0):.2f}) -> {res.run_dir}")
    else:
        summary(f"stage2 train: no val videos; last-epoch checkpoint -> {res.run_dir}")
    return EXIT_OK


def eval_command(args: argparse.Namespace) -> int:
    from stage2_temporal.train import evaluate_run

    resolve_config(args)
    report = evaluate_run(args.run, args.store)
    print(report.text())
    summary(f"stage2 eval: macro-F1 {100 * report.macro_f1:.2f} over "
            f"{int(report.support.sum())} annotated frames -> {args.run}/eval")
    return EXIT_OK
