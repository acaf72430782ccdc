"""Pieces every command shares: ``--config`` + trailing ``key=value`` overrides, logging setup,
the one-line final summary, and running a parsed command with the exit codes of SPEC §8."""
from __future__ import annotations

import argparse
import logging
import sys

from pipeline.config import Config, load_config
from pipeline.errors import EXIT_INPUTS_FAILED, EXIT_USAGE, RunFailed, UsageError

log = logging.getLogger("fer")


def add_config_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="YAML layered over pipeline.yaml (repeatable; later wins)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted config overrides, e.g. stage2.model.layers=6")
    return p


def resolve_config(args: argparse.Namespace, presets: list[str] | None = None) -> Config:
    cfg = load_config(args.config, args.overrides, presets=presets)
    setup_logging(cfg.log_level)
    return cfg


def setup_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_fer", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                                               datefmt="%H:%M:%S"))
        handler._fer = True
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("matplotlib", "PIL", "numcodecs", "asyncio", "zarr"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def summary(line: str) -> None:
    """The final one-line summary every command prints on stdout."""
    print(line, flush=True)


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen handler: 0 success, 1 some inputs failed (``RunFailed``),
    2 usage or config error (``UsageError``), 130 interrupted."""
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except RunFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUTS_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def stage_main(prog: str, register, argv: list[str] | None = None) -> int:
    """``python -m <stage package> ACTION ...``: the stage's own sub-commands, without the app."""
    parser = argparse.ArgumentParser(prog=prog)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(sub)
    name = next(iter(sub.choices))
    return run_command(parser, [name, *(sys.argv[1:] if argv is None else argv)])
