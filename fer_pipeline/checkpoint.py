"""Checkpoints as safetensors: plain tensors + string metadata, written atomically, saved from
the unwrapped model (no ``module.`` prefixes from DDP). Loading never runs code (safetensors, or
torch files with ``weights_only=True``): a file that is not what it should be is one
``UsageError`` line naming it and what it should be; a write that fails on the file system is an
``OSError`` naming the file (safetensors' own error would hide it)."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from fer_pipeline.errors import UsageError
from fer_pipeline.io import atomic_path


def unwrap_model(model: nn.Module) -> nn.Module:
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return getattr(model, "_orig_mod", model)  # torch.compile wrapper


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> Path:
    state = {k: v.detach().cpu().contiguous() for k, v in unwrap_model(model).state_dict().items()}
    with atomic_path(path) as tmp:
        try:
            save_file(state, str(tmp), metadata={"meta": json.dumps(meta, default=str)})
        except SafetensorError as e:      # "... I/O error: No space left on device (os error 28)"
            code = re.search(r"os error (\d+)|code: (\d+)", str(e))
            if code:                      # an OSError naming the file, like every other write
                n = int(code.group(1) or code.group(2))
                raise OSError(n, os.strerror(n), str(path)) from None
            raise
    return Path(path)


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint not found: {path}")
    try:
        state = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("meta", "{}"))
    except (SafetensorError, OSError, ValueError) as e:
        raise UsageError(f"{path}: not a readable safetensors checkpoint ({e})") from None
    return state, meta


def resume_train_state(run_dir: Path, model: nn.Module, opt, sched) -> dict[str, Any]:
    """Restore model, optimiser and schedule from ``RUN_DIR/train_state.pt`` and drop the
    metrics rows of the epochs the resumed run redoes. Returns the state (its ``epoch`` is the
    last finished one)."""
    from fer_pipeline import distributed
    from fer_pipeline.io import truncate_jsonl

    state_path = Path(run_dir) / "train_state.pt"
    if not state_path.is_file():
        raise UsageError(f"{run_dir}: nothing to resume (no train_state.pt)")
    state = load_train_state(state_path)
    try:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise UsageError(f"{state_path}: does not fit this run's model or optimiser "
                         f"({str(e).splitlines()[0][:160]})") from None
    if distributed.is_primary():
        truncate_jsonl(Path(run_dir) / "metrics.jsonl", int(state["epoch"]) + 1)
    return state



def load_train_state(path: str | Path) -> dict[str, Any]:
    """A ``train_state.pt`` this pipeline wrote (plain tensors and numbers, loaded with
    ``weights_only=True``, so no code runs), or a one-line ``UsageError`` saying what it is not."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling, zip and I/O errors all mean "not one"
        raise UsageError(f"{path}: not a training state written by this pipeline (it must hold "
                         f"only tensors and numbers; {type(e).__name__}); train into a new --out, "
                         f"or --overwrite this one") from None
    if not isinstance(state, dict) or not {"model", "optimizer", "scheduler", "epoch"} <= set(state):
        raise UsageError(f"{path}: not a training state written by this pipeline (needs model, "
                         f"optimizer, scheduler and epoch)")
    return state
