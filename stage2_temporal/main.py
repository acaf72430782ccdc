"""Stage 2 entry.

    fer-pipeline stage2 train --store STORE [--out RUN_DIR] [--nproc N] [--resume] [key=value ...]
    fer-pipeline stage2 eval --run RUN_DIR [--store STORE]
    fer-pipeline stage2 kfold --store STORE --folds 3 --out DIR
    fer-pipeline stage2 ablate --store STORE --seeds 3 --out DIR
    fer-pipeline stage2 heads --store STORE --seeds 3 --out DIR
    torchrun --nproc_per_node=8 -m fer_pipeline stage2 train --store STORE --out RUN_DIR
    python -m stage2_temporal train --store STORE stage2.model.layers=2 stage2.naw.enabled=false

The store is loaded into memory once; training never re-runs the image backbone.
"""
from __future__ import annotations

import argparse
import logging

from fer_pipeline import distributed
from fer_pipeline.cliutil import (add_config_args, add_train_args, launch_ranks, launch_training,
                              resolve_config, summary)
from fer_pipeline.errors import EXIT_OK, RunFailed, UsageError, os_error_line, output_failure

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stage2", help="temporal model (Transformer + V-NAW) on cached embeddings")
    s2 = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    tr = add_train_args(s2.add_parser("train", help="train on the store's train split, "
                                                    "evaluate on its val split"), "stage2")
    tr.add_argument("--store", metavar="DIR", help="embedding store (not needed with --resume)")
    tr.add_argument("--allow-partial", action="store_true",
                    help="train on the complete videos of a store that has incomplete ones "
                         "(default: list them and stop)")
    tr.set_defaults(handler=train_command)
    ev = add_config_args(s2.add_parser("eval", help="evaluate a run on every annotated val frame"))
    ev.add_argument("--run", "--run-dir", dest="run", required=True, metavar="RUN_DIR",
                    help="stage-2 run (spell it --run-dir under torchrun, which claims --run)")
    ev.add_argument("--store", metavar="DIR", help="store (default: the one the run trained on)")
    ev.add_argument("--nproc", type=int, default=1, metavar="N",
                    help="self-spawn N ranks on this machine, each scoring its share of the "
                         "videos (or launch with torchrun)")
    ev.set_defaults(handler=eval_command)
    kf = add_config_args(s2.add_parser("kfold", help="official split + K folds: a Table-1-shaped "
                                                     "F1 report"))
    kf.add_argument("--store", required=True, metavar="DIR", help="embedding store")
    kf.add_argument("--folds", type=int, default=3, metavar="K",
                    help="number of splits beside the official one")
    kf.add_argument("--split", choices=("kfold", "random"), default="kfold",
                    help="kfold = K disjoint folds, every video validated once; "
                         "random = K independent 7:3 video draws (the V-NAW paper)")
    kf.add_argument("--out", required=True, metavar="DIR",
                    help="folder for one run per split and kfold.{csv,md}")
    kf.set_defaults(handler=kfold_command)
    for name, help_, handler in (
            ("ablate", "vanilla / +Aug / +NAW / both over seeds", ablate_command),
            ("heads", "flat head vs CFC-SP (soft and hard cascade), each raw and with Smooth "
                      "Predicting, over seeds", heads_command)):
        sp = add_config_args(s2.add_parser(name, help=help_))
        sp.add_argument("--store", required=True, metavar="DIR", help="embedding store")
        sp.add_argument("--seeds", type=int, default=3, metavar="N",
                        help="training seeds per row (the table gives mean ± std)")
        sp.add_argument("--out", required=True, metavar="DIR",
                        help="folder for one run per row and seed and the "
                             f"{'ablation' if name == 'ablate' else name}.{{csv,md}} table")
        if name == "ablate":
            sp.add_argument("--rows", nargs="+", metavar="ROW",
                            help="only these rows, by name (default: all; the official rows "
                                 "need a store embedded with stage1.embed.flip=true)")
        sp.set_defaults(handler=handler)


# what the ranks of a --nproc run import (the CLI itself stays light): loaded once by their
# fork server so its memory is shared, not paid by every rank
_RANK_MODULES = ("stage2_temporal.api",)


def _report_lines(res) -> None:
    print(res.report.text())
    if res.report.absent:
        print(f"note: no annotated frames of {', '.join(res.report.absent)} in the validation "
              f"videos; their F1 is 0 by definition")
    if res.post_report is not None:
        print(f"with post-processing: macro-F1 {100 * res.post_report.macro_f1:.2f}")


def _train_worker(args: argparse.Namespace) -> None:
    from fer_pipeline.training import NonFiniteLoss, kept_checkpoint
    from stage2_temporal.api import train

    cfg = resolve_config(args)
    try:
        res = train(args.store, args.out, cfg, resume=args.resume, allow_partial=args.allow_partial)
    except NonFiniteLoss as e:
        raise RunFailed(f"stage2 train stopped: {e}{kept_checkpoint(args.out)}") from None
    except OSError as e:     # disk full, read-only: the last good epoch stays resumable
        kept = kept_checkpoint(args.out)
        raise output_failure(f"stage2 train stopped: {os_error_line(e)}{kept}"
                             f"{' (--resume continues from it)' if kept else ''}", bool(kept)) from None
    if not distributed.is_primary():
        return
    if res.report is not None:
        _report_lines(res)
        chosen = {"last": "the last epoch",
                  "selection": f"chosen on {res.select_videos} held-out training video"
                               f"{'s' if res.select_videos != 1 else ''}",
                  "val": "chosen on these val videos: optimistic; stage2.data.select_ratio > 0 "
                         "or stage2.train.keep=last reports an unchosen figure"}[res.chosen_on]
        summary(f"stage2 train: val macro-F1 {100 * res.report.macro_f1:.2f} (checkpoint of epoch "
                f"{res.best_epoch}, {chosen}; last epoch {100 * (res.last_f1 or 0):.2f}"
                f"{', stopped early' if res.stopped_early else ''}) -> {res.run_dir}")
    else:
        summary(f"stage2 train: no val videos; last-epoch checkpoint -> {res.run_dir}")


def train_command(args: argparse.Namespace) -> int:
    if not args.resume and not args.store:
        raise UsageError("--store is required (unless --resume)")
    launch_training(args, _train_worker, "stage2", preload=_RANK_MODULES)
    return EXIT_OK


def eval_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fer_pipeline.outdir import check_output_dir

    if (Path(args.run) / "stage2.json").is_file():
        check_output_dir(args.run, "--run", 1 << 20, "evaluation")
    return launch_ranks(args, _eval_worker, preload=_RANK_MODULES)


def _eval_worker(args: argparse.Namespace) -> int:
    from stage2_temporal.api import evaluate_run

    resolve_config(args)
    res = evaluate_run(args.run, args.store)
    if distributed.is_primary():
        _report_lines(res)
        ranks = distributed.info().world_size
        summary(f"stage2 eval: macro-F1 {100 * res.report.macro_f1:.2f} over "
                f"{int(res.report.support.sum())} annotated frames"
                f"{f' on {ranks} ranks' if ranks > 1 else ''} -> {args.run}/eval")
    distributed.cleanup()
    return EXIT_OK


def kfold_command(args: argparse.Namespace) -> int:
    from fer_pipeline.metrics import to_markdown
    from stage2_temporal.api import kfold

    cfg = resolve_config(args)
    table, _ = kfold(args.store, args.out, cfg, args.folds, args.split)
    print(to_markdown(table))
    summary(f"stage2 kfold: official + {args.folds} {args.split} splits, mean macro-F1 over them "
            f"{table['Avg'].iloc[1:].mean():.2f} -> {args.out}/kfold.md")
    return EXIT_OK


def ablate_command(args: argparse.Namespace) -> int:
    from fer_pipeline.metrics import to_markdown
    from stage2_temporal.api import ablate

    cfg = resolve_config(args)
    table = ablate(args.store, args.out, cfg, args.seeds, args.rows)
    print(to_markdown(table.reset_index(names="row")))
    summary(f"stage2 ablate: {len(table)} rows x {args.seeds} seed(s) -> {args.out}/ablation.md")
    return EXIT_OK


def heads_command(args: argparse.Namespace) -> int:
    from fer_pipeline.metrics import to_markdown
    from stage2_temporal.api import HEADS_ROWS, compare_heads

    cfg = resolve_config(args)
    table = compare_heads(args.store, args.out, cfg, args.seeds)
    print(to_markdown(table.reset_index(names="row")))
    summary(f"stage2 heads: {len(HEADS_ROWS)} rows from 3 models (flat, CFC two networks, CFC "
            f"shared trunk) x {args.seeds} seed(s) -> "
            f"{args.out}/heads.md")
    return EXIT_OK
