"""Pieces every command shares: ``--config`` + trailing ``key=value`` overrides, logging setup,
and the one-line final summary."""
from __future__ import annotations

import argparse
import logging
import sys

from pipeline.config import Config, load_config

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
