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

The code: ``page`` holds the page model and its HTML / Markdown renderers, ``readers`` reads a
run dir (and the store / manifest the timelines need), ``sections`` builds each part of the page
from what was read; this module puts the page together (the command's arguments are declared
in ``fer_pipeline.app.cli``, so ``--help`` loads none of this).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

from fer_pipeline.app.commands.report.page import (Details, Facts, Figure, Heading, Note, Page, Para,
                                               Table, render_html, render_markdown)
from fer_pipeline.app.commands.report.readers import (MAX_BAR_SERIES, THUMBNAIL_HEIGHT,
                                                  THUMBNAILS_PER_VIDEO, _read_json, _run_kind)
from fer_pipeline.app.commands.report.sections import (_COLLECTIONS, _collection, _curves,
                                                   _evaluation, _header, _stage1_result,
                                                   _timelines)
from fer_pipeline.cliutil import resolve_config, summary
from fer_pipeline.errors import EXIT_OK, UsageError
from fer_pipeline.io import atomic_write, write_text

__all__ = ["MAX_BAR_SERIES", "THUMBNAIL_HEIGHT", "THUMBNAILS_PER_VIDEO", "Details", "Facts",
           "Figure", "Heading", "Note", "Page", "Para", "Table", "build_report",
           "render_html", "render_markdown", "report_command", "write_report"]


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
        from fer_pipeline.manifest import read_manifest

        manifest = read_manifest(args.manifest)
    index, page, stats = write_report(run_dir, args.max_videos, manifest, args.markdown)
    missing = sum(isinstance(b, Note) for b in page.blocks)
    extra = (f", {stats['timelines']} of {stats['videos']} video timelines"
             if stats["kind"] == "stage2" else "")
    summary(f"report: {stats['kind']} run {run_dir.name}: {len(page.figures)} figures{extra}"
            f"{f', {missing} missing piece(s) noted' if missing else ''} -> {index}"
            f"{' (+ report.md)' if args.markdown else ''}")
    return EXIT_OK
