"""``fer-pipeline`` (= ``python -m fer_pipeline``): one command line for every stage (SPEC §8).

Exit codes: 0 success, 1 some inputs failed (the rest done), 2 usage or config error.

Building the parser imports no heavy library (torch, timm, cv2, insightface, pandas, zarr), so
``--help`` answers at once: the stages register their commands from their light ``main.py``,
and the app's own commands (predict, inspect, report) are declared here with handlers that
import their module when the command runs.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from fer_pipeline.cliutil import (ArgumentParser, add_config_args, package_version, resolve_config,
                              run_command, summary)
from fer_pipeline.config import DEFAULT_SMOOTH_WINDOW
from fer_pipeline.errors import EXIT_OK

log = logging.getLogger("fer")


def _config_show(args: argparse.Namespace) -> int:
    cfg = resolve_config(args, presets=["demo"] if args.demo else None)
    print(cfg.to_yaml(), end="")
    return EXIT_OK


def _synth(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fer_pipeline.app.synth import generate

    cfg = resolve_config(args)
    seed = cfg.seed if args.seed is None else args.seed
    info = generate(cfg.synth, Path(args.out), seed)
    totals = info.get("totals", {})
    summary(f"synth: {len(info.get('videos', []))} annotated videos, {totals.get('frames', '?')} "
            f"frames, {totals.get('stills', '?')} still images (seed {seed}) -> {args.out}")
    return EXIT_OK


def _later(module: str, name: str):
    """A handler that imports ``module`` only when its command runs, then calls ``name``."""
    def handler(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), name)(args)

    handler.__qualname__ = f"{module}.{name}"
    return handler


def _frames(text: str) -> int:
    """``--smooth-window``: a whole number of frames, >= 0."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of frames: {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 frames (0 or 1 = no smoothing), got {n}")
    return n


def _register_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="new videos -> per-frame expressions (CSV, ABAW "
                                       "submission, timeline)")
    p.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="YAML layered over the run's config (repeatable; later wins)")
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files or folders of videos")
    p.set_defaults(overrides=[])      # KEY=VALUE tokens anywhere on the line (cliutil)
    p.add_argument("--run", "--run-dir", dest="run", default=None, metavar="RUN_DIR",
                   help="a stage-2 run (temporal model; it records its store and encoder) or a "
                        "stage-1 run (frame level); default: the real-face encoder shipped with "
                        "the package (frame level)")
    p.add_argument("--out", metavar="DIR", help="output dir (default artifacts/predict/<run name>)")
    p.add_argument("--encoder-run", metavar="DIR",
                   help="stage-1 run of the encoder, when the stage-2 run does not record it")
    p.add_argument("--smooth-window", type=_frames, default=None, metavar="N",
                   help="frames of the centred moving average behind the smoothed label "
                        f"(default: the run's stage2.post.smooth_window, or {DEFAULT_SMOOTH_WINDOW} "
                        "when it has none)")
    p.set_defaults(handler=_later("fer_pipeline.app.commands.predict", "predict_command"))


def _register_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="counts, nearest neighbours, 2-D projection, HDF5 export "
                       "of an embedding store",
                       description="Print what an embedding store holds (videos, frames, labels, "
                       "faces, per-video table) and optionally: the nearest frames of one frame, "
                       "a 2-D projection of the face frames, an HDF5 export.")
    p.add_argument("store", metavar="STORE", help="embedding store folder "
                   "(artifacts/embeddings/<encoder-key>)")
    p.add_argument("--json", metavar="FILE", help="also write the counts and tables as JSON")
    p.add_argument("--neighbours", "--neighbors", metavar="VIDEO:FRAME",
                   help="list the --k most cosine-similar face frames of the store to this frame; "
                   "FRAME is the 0-based row in that video's arrays (manifest frame k, crop "
                   "<k:05d>.jpg, is row k-1); also writes a thumbnail strip PNG to --out")
    p.add_argument("--k", type=int, default=10, help="number of neighbours")
    p.add_argument("--exclude-query-video", action="store_true",
                   help="with --neighbours: leave out every frame of the query's own video, so "
                   "the neighbours are similar frames of other videos")
    p.add_argument("--project", action="store_true",
                   help="2-D projection of the face frames coloured by label: PNG + CSV in --out")
    p.add_argument("--method", choices=("auto", "pca", "umap"), default="auto",
                   help="projection method; auto = UMAP when the umap package is installed, "
                   "else PCA")
    p.add_argument("--max-points", type=int, default=20000, metavar="N",
                   help="project at most N face frames, drawn at random with the config seed")
    p.add_argument("--out", metavar="DIR", default=".",
                   help="folder for image and CSV outputs (default: the current folder)")
    p.add_argument("--manifest", metavar="FILE",
                   help="stage-0 manifest.parquet whose crop_path gives the thumbnails (default: "
                   "a manifest.parquet in the store's artifacts folder or one level below it)")
    p.add_argument("--crops", metavar="DIR",
                   help="crop folder laid out as DIR/<video>/<k:05d>.jpg (instead of a manifest)")
    p.add_argument("--export-h5", metavar="FILE", help="write the store as one HDF5 file")
    p.add_argument("--allow-partial", action="store_true",
                   help="inspect the complete videos of a store that has incomplete ones "
                   "(default: list them and stop)")
    add_config_args(p)
    p.set_defaults(handler=_later("fer_pipeline.app.commands.inspect", "inspect_command"))


def _register_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="one self-contained HTML page for a run: config, curves, F1, timelines")
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="a stage-1/stage-2 run dir, or the --out of stage2 kfold / ablate")
    add_config_args(p)                # after RUN_DIR, so trailing key=value stay overrides
    p.add_argument("--max-videos", type=int, default=12, metavar="N",
                   help="timelines for at most N validation videos")
    p.add_argument("--manifest", metavar="FILE",
                   help="stage-0 manifest.parquet: adds face-crop thumbnails to the timelines")
    p.add_argument("--markdown", action="store_true",
                   help="also write RUN_DIR/report/report.md with the PNGs beside it")
    p.set_defaults(handler=_later("fer_pipeline.app.commands.report", "report_command"))


def build_parser() -> argparse.ArgumentParser:
    import stage0_preprocess as stage0
    import stage1_image_encoder as stage1
    import stage2_temporal as stage2
    from fer_pipeline.app.commands import demo

    parser = ArgumentParser(
        prog="fer-pipeline", description="Video facial-expression recognition: stage 0 (faces) "
        "-> stage 1 (cached Swin embeddings) -> stage 2 (Transformer + V-NAW).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}",
                        help="print the package version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cfg = sub.add_parser("config", help="inspect the resolved configuration")
    cfg_sub = cfg.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = add_config_args(cfg_sub.add_parser("show", help="print the resolved config as YAML"))
    show.add_argument("--demo", action="store_true", help="include the demo preset")
    show.set_defaults(handler=_config_show)

    syn = add_config_args(sub.add_parser("synth", help="generate the demo data set"))
    syn.add_argument("--out", required=True, metavar="DIR", help="folder the data set is written to")
    syn.add_argument("--seed", type=int, default=None, help="random seed (default: the config's seed)")
    syn.set_defaults(handler=_synth)

    stage0.register_cli(sub)
    stage1.register_cli(sub)
    stage2.register_cli(sub)
    demo.register(sub)
    _register_predict(sub)
    _register_inspect(sub)
    _register_report(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
