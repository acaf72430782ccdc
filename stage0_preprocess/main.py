"""Stage 0 entry.

    fer-pipeline stage0 run --videos PATH... --out DIR [--shard K/N] [--jobs N] [key=value ...]
    fer-pipeline stage0 run --affwild2 ROOT --out DIR        re-detect Aff-Wild2's raw videos
    fer-pipeline stage0 merge --out DIR                      one manifest after sharded runs
    fer-pipeline stage0 ingest --affwild2 ROOT --out DIR     official crops + annotations
    fer-pipeline stage0 recrop-ferplus --ferplus ROOT --out DIR   FERPlus in stage 0's framing
    python -m stage0_preprocess run --videos clips/ --out artifacts/stage0 stage0.detector.name=scrfd

``run`` writes ``DIR/crops/<video>/{k:05d}.jpg``, ``DIR/manifest.parquet`` (``manifest.shard-K-of-N
.parquet`` with ``--shard``), ``DIR/detections.parquet``, ``DIR/summary.csv`` and
``DIR/contact_sheets/<video>.png``; re-running skips complete videos and redoes partial ones.
Exit 1 when some videos failed (the others are done), 2 on a usage error.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fer_pipeline.cliutil import add_config_args, resolve_config, summary
from fer_pipeline.errors import EXIT_INPUTS_FAILED, EXIT_OK, UsageError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stage0", help="face crops + frame manifest")
    s0 = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = s0.add_parser("run", help="decode, detect, track, align: videos -> crops + manifest")
    src = run.add_mutually_exclusive_group(required=True)
    src.add_argument("--videos", nargs="+", metavar="PATH", help="video files and/or folders")
    src.add_argument("--affwild2", metavar="ROOT", help="Aff-Wild2 root: raw videos + EXPR labels")
    run.add_argument("--out", required=True, metavar="DIR",
                     help="output folder: crops/, manifest.parquet, detections.parquet, summary.csv")
    run.add_argument("--shard", metavar="K/N",
                     help="process the K-th of N disjoint parts (default: every video)")
    run.add_argument("--jobs", type=int, metavar="N",
                     help="videos in parallel (default: the config's stage0.parallel.jobs)")
    add_config_args(run)
    run.set_defaults(handler=run_command)
    merge = add_config_args(s0.add_parser("merge", help="merge sharded outputs into manifest.parquet"))
    merge.add_argument("--out", required=True, metavar="DIR",
                       help="the --out folder the sharded stage0 runs wrote to")
    merge.set_defaults(handler=merge_command)
    ing = add_config_args(s0.add_parser(
        "ingest", help="official Aff-Wild2 cropped_aligned + EXPR annotations -> manifest"))
    ing.add_argument("--affwild2", required=True, metavar="ROOT", help="Aff-Wild2 root folder")
    ing.add_argument("--out", required=True, metavar="DIR", help="output folder")
    ing.set_defaults(handler=ingest_command)
    rc = add_config_args(s0.add_parser(
        "recrop-ferplus", help="FERPlus re-cropped by this stage's detector + alignment (the inference framing)"))
    rc.add_argument("--ferplus", required=True, metavar="ROOT",
                    help="FERPlus folder with FER2013Train/ and FER2013Valid/ (each with label.csv)")
    rc.add_argument("--out", required=True, metavar="DIR",
                    help="output FERPlus folder (re-running skips its finished splits)")
    rc.add_argument("--upscale", type=int, default=4, metavar="N",
                    help="enlarge each image N x before detection (default 4: 48 -> 192 px)")
    rc.add_argument("--pad", type=float, default=0.25, metavar="F",
                    help="pad the enlarged image by F of its side on each edge (default 0.25)")
    rc.set_defaults(handler=recrop_command)


def ingest_command(args: argparse.Namespace) -> int:
    from stage0_preprocess.api import ingest_affwild2

    cfg = resolve_config(args)
    result, manifest = ingest_affwild2(args.affwild2, args.out, cfg)
    ok = result.summary[result.summary.status == "ok"]
    frames = int(ok.frames.sum()) if len(ok) else 0
    faces = int(ok.face_frames.sum()) if len(ok) else 0
    summary(f"stage0 ingest: {len(ok)} video(s) ok, {len(result.failures)} failed, {frames} frames "
            f"({100 * faces / max(frames, 1):.1f}% with a face) -> {manifest}")
    return EXIT_INPUTS_FAILED if result.failures else EXIT_OK


def run_command(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    if args.jobs:
        cfg = cfg.model_copy(update={"stage0": cfg.stage0.model_copy(update={
            "parallel": cfg.stage0.parallel.model_copy(update={"jobs": args.jobs})})})
    from stage0_preprocess.api import run_videos

    result, missing = run_videos(args.videos, Path(args.out), cfg, affwild2=args.affwild2,
                                 shard=args.shard)
    ok = [o for o in result.outcomes if o.status != "failed"]
    frames = sum(o.frames for o in ok)
    faces = sum(o.face_frames for o in ok)
    n_failed = len(result.failed) + len(missing)
    summary(f"stage0 run: {len(ok)} video(s) ok ({sum(o.status == 'complete' for o in ok)} already "
            f"complete), {n_failed} failed, {frames} frames ({100 * faces / max(frames, 1):.1f}% "
            f"with a face) -> {result.manifest or args.out}")
    return EXIT_INPUTS_FAILED if n_failed else EXIT_OK


def recrop_command(args: argparse.Namespace) -> int:
    from stage0_preprocess.api import recrop_ferplus

    cfg = resolve_config(args)
    if args.upscale < 1 or args.pad < 0:
        raise UsageError(f"--upscale must be >= 1 and --pad >= 0, got {args.upscale} and {args.pad}")
    result = recrop_ferplus(args.ferplus, args.out, cfg, upscale=args.upscale, pad=args.pad)
    parts = [f"{s}: {c['aligned']} aligned, {c['original']} original framing (no face),"
             f" {c['unreadable']} unreadable" for s, c in result.counts.items()]
    summary(f"stage0 recrop-ferplus: {'; '.join(parts)} -> {result.out}")
    return EXIT_OK


def merge_command(args: argparse.Namespace) -> int:
    from stage0_preprocess.api import merge_shards

    resolve_config(args)
    result = merge_shards(Path(args.out))
    summary(f"stage0 merge: {len(result.outcomes)} video(s) -> {result.manifest}")
    return EXIT_OK
