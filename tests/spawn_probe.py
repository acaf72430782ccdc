"""Run by tests/test_stage2_scale.py in a fresh interpreter: ``cliutil.launch_training`` with
2 self-spawned ranks and stage 2's preload list; each rank writes which modules were already
imported when it started (by its fork server, so their pages are shared), the launcher whether
it imported torch itself.

    python -c "import tests.spawn_probe as p; p.main(OUT)"
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

WATCH = ("torch", "torch._dynamo", "sympy", "stage2_temporal.api", "json.tool")


def probe(args: argparse.Namespace) -> None:
    seen = {m: m in sys.modules for m in WATCH}           # before this rank imports anything
    Path(args.out, f"rank{os.environ['RANK']}.json").write_text(json.dumps(seen))


def main(out: str) -> None:
    from fer_pipeline.cliutil import launch_training
    from stage2_temporal.main import _RANK_MODULES

    args = argparse.Namespace(out=out, resume=False, overwrite=False, nproc=2)
    launch_training(args, probe, "stage2", preload=_RANK_MODULES)
    Path(out, "launcher.json").write_text(json.dumps({"torch": "torch" in sys.modules}))
