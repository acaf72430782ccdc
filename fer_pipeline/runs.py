"""Run directories: ``artifacts/runs/<stage>/<run-id>/`` with the resolved config and git SHA.

torch is imported by the functions that use it, so the CLI can build its parser (and
``--help``) without loading it."""
from __future__ import annotations

import datetime as _dt
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fer_pipeline.config import PROJECT_ROOT, Config, load_config
from fer_pipeline.errors import UsageError
from fer_pipeline.io import write_json, write_text

if TYPE_CHECKING:
    import torch


def git_sha() -> str:
    """``<sha>`` of the checkout (``-dirty`` appended when tracked files differ), or 'unknown'."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def new_run_id() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{os.getpid() % 10000:04d}"


def default_run_dir(cfg: Config, stage: str) -> Path:
    return Path(cfg.artifacts_dir) / "runs" / stage / new_run_id()


# what a training run writes into its run dir (``clear_run_dir`` removes exactly these)
RUN_FILES = ("config.yaml", "git_sha.txt", "run.json", "stage2.json", "result.json",
             "metrics.jsonl", "checkpoint.safetensors", "train_state.pt", "learning_curve.png",
             "stage1_eval.json", "eval", "eval_last", "report")


def is_run_dir(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds what a training run writes (so a new run would mix with it)."""
    run_dir = Path(run_dir)
    return run_dir.is_dir() and any((run_dir / name).exists() for name in RUN_FILES)


def clear_run_dir(run_dir: str | Path) -> list[str]:
    """Remove a previous run's files (``RUN_FILES``) from ``run_dir``; other files stay. Returns
    the names removed."""
    import shutil

    run_dir = Path(run_dir)
    removed = []
    for name in RUN_FILES:
        p = run_dir / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        else:
            continue
        removed.append(name)
    return removed


def init_run_dir(run_dir: str | Path, cfg: Config, stage: str, fresh: bool = False) -> Path:
    """Create the run dir and record how it was produced: resolved config, git SHA, command.
    ``fresh`` (a new training run): first remove what an earlier run left there (metrics,
    checkpoints, eval/), so the two never mix."""
    import torch

    run_dir = Path(run_dir)
    if fresh:
        clear_run_dir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "config.yaml", cfg.to_yaml())
    write_text(run_dir / "git_sha.txt", git_sha() + "\n")
    write_json(run_dir / "run.json", {
        "stage": stage, "argv": sys.argv, "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "git_sha": git_sha(), "torch": torch.__version__, "python": sys.version.split()[0],
    })
    return run_dir


def resume_config(run_dir: Path, marker: str, stage: str) -> Config:
    """The resolved config a run was started with, for ``--resume``: ``UsageError`` when
    ``run_dir`` has no ``marker`` file (it is not a ``stage`` run)."""
    if not (run_dir / marker).is_file():
        raise UsageError(f"{run_dir}: not a {stage} run to resume")
    return load_config([run_dir / "config.yaml"], base=None)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(cfg: Config) -> torch.device:
    import torch

    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        from fer_pipeline.errors import ConfigError

        raise ConfigError("device=cuda but no CUDA device is available")
    return torch.device(cfg.device)


def setup_torch(cfg: Config) -> torch.device:
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    return resolve_device(cfg)


def setup_rank(cfg: Config, quiet: bool = True):
    """Join the process group when launched as a rank, seed and thread torch, and pick this
    rank's device (its own GPU under DDP). Returns ``(DistInfo, device)``."""
    import torch

    from fer_pipeline import distributed

    dist = distributed.init(prefer_cuda=resolve_device(cfg).type == "cuda")   # device=cpu: gloo
    if quiet:
        distributed.quiet_non_primary()
    device = setup_torch(cfg)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    return dist, device

