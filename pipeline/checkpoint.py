"""Checkpoints as safetensors: plain tensors + string metadata, written atomically, saved from
the unwrapped model (no ``module.`` prefixes from DDP)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.errors import UsageError
from pipeline.io import atomic_path


def unwrap_model(model: nn.Module) -> nn.Module:
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return getattr(model, "_orig_mod", model)  # torch.compile wrapper


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> Path:
    state = {k: v.detach().cpu().contiguous() for k, v in unwrap_model(model).state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"meta": json.dumps(meta, default=str)})
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
    from pipeline import distributed
    from pipeline.io import truncate_jsonl

    state_path = Path(run_dir) / "train_state.pt"
    if not state_path.is_file():
        raise UsageError(f"{run_dir}: nothing to resume (no train_state.pt)")
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    if distributed.is_primary():
        truncate_jsonl(Path(run_dir) / "metrics.jsonl", int(state["epoch"]) + 1)
    return state

