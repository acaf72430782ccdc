"""Stage 0's public door: what the app layer and the benchmarks call.

- ``run_videos``: any video collection -> aligned crops, frame manifest, summary (resumable,
  sharded, parallel); ``merge_shards`` joins sharded outputs; ``find_videos`` lists inputs;
- ``ingest_affwild2``: Aff-Wild2's own layout (official crops + EXPR annotations) -> manifest;
- ``recrop_ferplus``: FERPlus re-cropped through this stage's detector and alignment (the
  framing the encoder is fed at inference), as a cached FERPlus folder;
- ``align_face`` and ``write_expr_annotation`` / ``parse_expr_annotation``: the stage's
  alignment and its annotation format, for tools that write data in the same form.

The ``stage0`` sub-commands live in ``main.py``, which calls this door; the package serves its
``register`` as ``register_cli`` (``fer_pipeline.lazy``), so this module never imports ``main``.
"""
from __future__ import annotations

import logging
from pathlib import Path

from fer_pipeline.config import Config
from fer_pipeline.errors import UsageError
from fer_pipeline.io import atomic_write
from fer_pipeline.manifest import write_manifest
from fer_pipeline.outdir import check_output_dir
from fer_pipeline.runs import init_run_dir
from stage0_preprocess.affwild2 import raw_video_name
from stage0_preprocess.align import align_face
from stage0_preprocess.annotations import parse_expr_annotation, write_expr_annotation
from stage0_preprocess.run import Stage0Result, find_videos, merge_all as merge_shards
from stage0_preprocess.stills import RecropResult, recrop_ferplus

log = logging.getLogger(__name__)

__all__ = ["run_videos", "ingest_affwild2", "merge_shards", "find_videos", "align_face",
           "write_expr_annotation", "parse_expr_annotation", "raw_video_name",
           "Stage0Result", "recrop_ferplus", "RecropResult"]


def ingest_affwild2(root: str | Path, out: str | Path, cfg: Config):
    """Official Aff-Wild2 crops + annotations -> ``out/manifest.parquet`` and ``summary.csv``.
    Returns ``(IngestResult, manifest path)``."""
    from stage0_preprocess.affwild2 import discover, ingest

    out = Path(out)
    layout = discover(root)                 # a bad root is a usage error before --out is made
    check_output_dir(out, "--out", 1 << 20, "manifest")
    result = ingest(layout, cfg)
    init_run_dir(out, cfg, "stage0")
    manifest = write_manifest(out / "manifest.parquet", result.frames)
    atomic_write(out / "summary.csv", lambda p: result.summary.to_csv(p, index=False))
    return result, manifest


def run_videos(videos: list[str | Path] | None, out: str | Path, cfg: Config, *,
               affwild2: str | Path | None = None, shard: str | None = None,
               record_run: bool = True) -> tuple[Stage0Result, list[str]]:
    """Decode, detect, track and align ``videos`` (files and/or folders), or the raw videos of
    an Aff-Wild2 root (``affwild2``, labels attached), into ``out``. Returns the result and the
    annotation files whose video is missing."""
    from stage0_preprocess.run import (jobs_for_affwild2, jobs_for_videos, output_bytes, parse_shard,
                                       run_jobs, select_shard)

    out = Path(out)
    shard_kn = parse_shard(shard)
    missing: list[str] = []
    if affwild2:
        jobs, missing = jobs_for_affwild2(affwild2)
    else:
        jobs = jobs_for_videos(find_videos(videos or []))
    if not jobs:
        raise UsageError("no videos to process")
    jobs = select_shard(jobs, shard_kn)
    check_output_dir(out, "--out", output_bytes(jobs), "video's crops")
    suffix = f".shard-{shard_kn[0]}-of-{shard_kn[1]}" if shard_kn else ""
    if record_run:   # each shard its own record (the shards share ``out``)
        init_run_dir(out / "shards" / f"{shard_kn[0]}-of-{shard_kn[1]}" if shard_kn else out, cfg,
                     "stage0")
    result = run_jobs(jobs, out, cfg, suffix)
    for m in missing:
        log.error("skipped %s", m)
    return result, missing
