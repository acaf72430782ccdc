"""``fer-pipeline`` (= ``python -m pipeline``): one command line for every stage (SPEC §8).

Exit codes: 0 success, 1 some inputs failed (the rest done), 2 usage or config error.
"""
from __future__ import annotations

import argparse
import logging
import sys

from pipeline.cliutil import add_config_args, resolve_config, run_command, summary
from pipeline.errors import EXIT_OK

log = logging.getLogger("fer")


def _config_show(args: argparse.Namespace) -> int:
    cfg = resolve_config(args, presets=["demo"] if args.demo else None)
    print(cfg.to_yaml(), end="")
    return EXIT_OK


def _synth(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.app.synth import generate

    cfg = resolve_config(args)
    seed = cfg.seed if args.seed is None else args.seed
    info = generate(cfg.synth, Path(args.out), seed)
    totals = info.get("totals", {})
    summary(f"synth: {len(info.get('videos', []))} annotated videos, {totals.get('frames', '?')} "
            f"frames, {totals.get('stills', '?')} still images (seed {seed}) -> {args.out}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    import stage0_preprocess as stage0
    import stage1_image_encoder as stage1
    import stage2_temporal as stage2
    from pipeline.app.commands import demo, inspect, predict, report

    parser = argparse.ArgumentParser(
        prog="fer-pipeline", description="Video facial-expression recognition: stage 0 (faces) "
        "-> stage 1 (cached Swin embeddings) -> stage 2 (Transformer + V-NAW).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cfg = sub.add_parser("config", help="inspect the resolved configuration")
    cfg_sub = cfg.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = add_config_args(cfg_sub.add_parser("show", help="print the resolved config as YAML"))
    show.add_argument("--demo", action="store_true", help="include the demo preset")
    show.set_defaults(handler=_config_show)

    syn = add_config_args(sub.add_parser("synth", help="generate the demo data set"))
    syn.add_argument("--out", required=True, metavar="DIR")
    syn.add_argument("--seed", type=int, default=None, help="default: the config's seed")
    syn.set_defaults(handler=_synth)

    stage0.register_cli(sub)
    stage1.register_cli(sub)
    stage2.register_cli(sub)
    demo.register(sub)
    predict.register(sub)
    inspect.register(sub)
    report.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
