"""Stage 1 entry.

    fer-pipeline stage1 train --out RUN_DIR [stage1.data.sources='[{format: rafdb, root: RAF}]']
    fer-pipeline stage1 embed --manifest DIR/manifest.parquet [--run RUN_DIR] [--store STORE]
                              [--export-h5 FILE]
    fer-pipeline stage1 eval --run RUN_DIR|bundled --config sources.yaml --out DIR
    torchrun --nproc_per_node=8 -m fer_pipeline stage1 embed --manifest ... --run ... --store ...
    python -m stage1_image_encoder embed --manifest ... stage1.embed.batch_size=256

Without ``--run`` the encoder is built from ``stage1.model`` (weights from
``stage1.model.pretrained``, else a seeded random init). The store defaults to
``<artifacts_dir>/embeddings/<encoder-key>``; complete videos already in it are skipped.
"""
from __future__ import annotations

import argparse
import logging

from fer_pipeline import distributed
from fer_pipeline.cliutil import (add_config_args, add_train_args, launch_ranks, launch_training,
                              resolve_config, summary)
from fer_pipeline.errors import EXIT_INPUTS_FAILED, EXIT_OK, RunFailed, UsageError, output_failure

log = logging.getLogger(__name__)


# what the ranks of a --nproc run import (the CLI itself stays light): loaded once by their
# fork server so its memory is shared, not paid by every rank
_RANK_MODULES = ("stage1_image_encoder.api",)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stage1", help="image encoder: pretrain (NLA), embed crops into the store")
    s1 = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    tr = add_train_args(s1.add_parser("train", help="pretrain the encoder on still images (NLA)"),
                        "stage1")
    tr.set_defaults(handler=train_command)
    ev = add_config_args(s1.add_parser("eval", help="accuracy and macro-F1 of an encoder's classifier "
                                                     "on the test split of the configured sources"))
    ev.add_argument("--run", "--run-dir", dest="run", required=True, metavar="RUN_DIR|bundled",
                    help="stage-1 run dir, or 'bundled' for the encoder shipped with the package")
    ev.add_argument("--out", required=True, metavar="DIR", help="where stage1_eval.json goes")
    ev.add_argument("--flip", action="store_true",
                    help="test-time flip: average the class probabilities of each image and its mirror")
    ev.set_defaults(handler=eval_command)
    emb = add_config_args(s1.add_parser("embed", help="embed every manifest frame into the store"))
    emb.add_argument("--manifest", required=True, metavar="FILE",
                     help="stage-0 manifest.parquet whose face crops are embedded")
    emb.add_argument("--run", "--run-dir", dest="run", metavar="RUN_DIR",
                     help="stage-1 run dir whose encoder to use (--run-dir under torchrun; "
                          "default: the encoder stage1.model describes)")
    emb.add_argument("--store", metavar="DIR", help="store path (default: artifacts/embeddings/<key>)")
    emb.add_argument("--export-h5", metavar="FILE", help="also write the store as one HDF5 file")
    emb.add_argument("--nproc", type=int, default=1, metavar="N",
                     help="self-spawn N ranks on this machine, each embedding its share of the "
                          "videos (or launch with torchrun)")
    emb.set_defaults(handler=embed_command)


def _train_worker(args: argparse.Namespace) -> None:
    from fer_pipeline.training import NonFiniteLoss, kept_checkpoint
    from stage1_image_encoder.api import train

    cfg = resolve_config(args)
    try:
        res = train(cfg, args.out, args.resume)
    except NonFiniteLoss as e:
        raise RunFailed(f"stage1 train stopped: {e}{kept_checkpoint(args.out)}") from None
    if distributed.is_primary():
        acc = "n/a" if res.val_acc is None else f"{100 * res.val_acc:.1f}%"
        summary(f"stage1 train: {res.train_images} images, val accuracy {acc} on "
                f"{res.val_images} images -> {res.run_dir} (learning_curve.png, "
                f"checkpoint.safetensors)")


def train_command(args: argparse.Namespace) -> int:
    launch_training(args, _train_worker, "stage1", preload=_RANK_MODULES + ("stage1_image_encoder.engine",))
    return EXIT_OK


def embed_command(args: argparse.Namespace) -> int:
    return launch_ranks(args, _embed_worker, preload=_RANK_MODULES)


def _embed_worker(args: argparse.Namespace) -> int:
    from stage1_image_encoder.api import embed_manifest

    cfg = resolve_config(args)
    res = embed_manifest(args.manifest, cfg, args.run, args.store)
    parts = distributed.all_gather_objects(
        (len(res.written), len(res.skipped), list(res.failures), res.frames, res.bad_crops,
         res.stopped))
    written = sum(p[0] for p in parts)
    skipped = sum(p[1] for p in parts)
    failures = [f for p in parts for f in p[2]]
    frames = sum(p[3] for p in parts)
    bad = sum(p[4] for p in parts)
    stopped = [p[5] for p in parts if p[5]]
    if args.export_h5 and distributed.is_primary() and not stopped:
        from fer_pipeline.store import EmbeddingStore

        EmbeddingStore.open(res.store).export_h5(args.export_h5)
    distributed.barrier()
    primary = distributed.is_primary()
    if primary:
        ranks = distributed.info().world_size
        summary(f"stage1 embed: {written} video(s) written, {skipped} already complete, "
                f"{len(failures)} failed, {frames} crops embedded"
                f"{f' ({bad} unreadable, made no-face frames)' if bad else ''}"
                f"{f' on {ranks} ranks' if ranks > 1 else ''} -> {res.store}"
                f"{f' (+ {args.export_h5})' if args.export_h5 and not stopped else ''}")
    distributed.cleanup()
    if stopped:
        if not primary:
            return EXIT_INPUTS_FAILED
        raise output_failure(f"stage1 embed stopped: {stopped[0]}; {written + skipped} video(s) "
                             f"complete in the store; fix the location and re-run (complete "
                             f"videos are skipped)", written + skipped > 0)
    return EXIT_INPUTS_FAILED if failures else EXIT_OK


def eval_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fer_pipeline.io import write_json
    from stage1_image_encoder.api import evaluate, evaluation_summary, is_stage1_run

    cfg = resolve_config(args)
    if args.run != "bundled" and not is_stage1_run(args.run):
        raise UsageError(f"{args.run}: not a stage-1 run (needs checkpoint.safetensors and config.yaml)")
    if not cfg.stage1.data.sources:
        raise UsageError("stage1.data.sources is empty: give the image sets to evaluate on "
                         "(e.g. --config with a ferplus source)")
    report = evaluate(cfg, args.run, flip=args.flip)
    n = int(report.confusion.sum())
    result = evaluation_summary(report, n)
    if distributed.is_primary():
        write_json(Path(args.out) / "stage1_eval.json", {"run": str(args.run), "flip": args.flip, **result})
        print(report.text())
        summary(f"stage1 eval: accuracy {100 * result['accuracy']:.2f}%, macro-F1 "
                f"{100 * result['macro_f1']:.2f}% (classes present) on {n} test images -> "
                f"{Path(args.out) / 'stage1_eval.json'}")
    distributed.cleanup()
    return EXIT_OK
