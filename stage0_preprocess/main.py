"""Stage 0 entry.

    fer-pipeline stage0 ingest --affwild2 ROOT --out DIR [key=value ...]
    python -m stage0_preprocess ingest --affwild2 ROOT --out DIR

Writes ``DIR/manifest.parquet`` and ``DIR/summary.csv``; exits 1 when some videos failed
(the others are in the manifest), 2 on a usage error.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.cliutil import add_config_args, resolve_config, summary
from pipeline.config import Config
from pipeline.errors import EXIT_INPUTS_FAILED, EXIT_OK
from pipeline.io import atomic_write
from pipeline.manifest import write_manifest
from pipeline.runs import init_run_dir

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stage0", help="face crops + frame manifest")
    s0 = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ing = add_config_args(s0.add_parser(
        "ingest", help="official Aff-Wild2 cropped_aligned + EXPR annotations -> manifest"))
    ing.add_argument("--affwild2", required=True, metavar="ROOT", help="Aff-Wild2 root folder")
    ing.add_argument("--out", required=True, metavar="DIR", help="output folder")
    ing.set_defaults(handler=ingest_command)


def run_ingest(root: str | Path, out: str | Path, cfg: Config):
    from stage0_preprocess.affwild2 import ingest

    out = Path(out)
    result = ingest(root, cfg)
    init_run_dir(out, cfg, "stage0")
    manifest = write_manifest(out / "manifest.parquet", result.frames)
    atomic_write(out / "summary.csv", lambda p: result.summary.to_csv(p, index=False))
    return result, manifest


def ingest_command(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    result, manifest = run_ingest(args.affwild2, args.out, cfg)
    ok = result.summary[result.summary.status == "ok"]
    frames = int(ok.frames.sum()) if len(ok) else 0
    faces = int(ok.face_frames.sum()) if len(ok) else 0
    summary(f"stage0 ingest: {len(ok)} video(s) ok, {len(result.failures)} failed, {frames} frames "
            f"({100 * faces / max(frames, 1):.1f}% with a face) -> {manifest}")
    return EXIT_INPUTS_FAILED if result.failures else EXIT_OK
