"""The training-loop skeleton both engines (stage 1 images, stage 2 clips) run on.

One epoch is a pass over micro-batches: forward + loss under bf16 autocast on GPU, the loss
checked for NaN/Inf (a non-finite loss stops the run with a message naming the epoch, step and
batch), backward scaled by the accumulation factor (DDP gradient sync only on the last
micro-batch of an update), then one optimiser update per ``accum`` micro-batches. The sums the
metrics need are all-reduced over ranks. Train state (model, optimiser, schedule, epoch and any
engine extras) is written atomically, and every checkpoint carries the same metadata: git SHA,
the resolved config and the encoder key.
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fer_pipeline import distributed
from fer_pipeline.checkpoint import unwrap_model
from fer_pipeline.errors import RunFailed
from fer_pipeline.io import atomic_path
from fer_pipeline.optim import optimizer_step


class NonFiniteLoss(RunFailed):
    """The loss became NaN or Inf; the message names the epoch, step and batch."""


def autocast(device: torch.device, amp: bool):
    """bf16 autocast on CUDA when ``amp``; a no-op context elsewhere."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class EpochStats:
    loss: float           # mean loss over the epoch's micro-batches (all ranks)
    weight: float         # mean of the per-batch scalar the step reports (e.g. the NAW weight)
    batches: int          # micro-batches over all ranks
    updates: int          # optimiser updates this rank made


def run_epoch(net: torch.nn.Module, batches: Iterable, step: Callable[[Any], tuple[torch.Tensor, Any]],
              opt: torch.optim.Optimizer, sched, *, epoch: int, accum: int = 1,
              grad_clip: float | None = None, first_step: int = 0,
              describe: Callable[[int, Any], str] | None = None) -> EpochStats:
    """One training epoch. ``step(batch) -> (loss, weight)`` runs the forward pass and the loss
    (under ``autocast`` if it wants it); ``describe(i, batch)`` names a batch in the non-finite
    loss message (e.g. its clips); ``first_step`` is the global update count at the start, so
    the message gives the update the failure happened at."""
    dist = distributed.info()
    loss_sum, w_sum, n, updates = 0.0, 0.0, 0, 0
    opt.zero_grad(set_to_none=True)
    for i, batch in enumerate(batches):
        last_micro = (i + 1) % accum == 0
        sync = contextlib.nullcontext() if (last_micro or not dist.enabled) else net.no_sync()
        with sync:
            loss, weight = step(batch)
            if not torch.isfinite(loss):
                what = describe(i, batch) if describe else f"batch {i}"
                raise NonFiniteLoss(f"non-finite loss at epoch {epoch}, step {first_step + updates} "
                                    f"(batch {i}: {what})")
            (loss / accum).backward()
        if last_micro:
            optimizer_step(net, opt, sched, grad_clip)
            updates += 1
        loss_sum += loss.item()
        w_sum += float(weight)
        n += 1
    stats = distributed.all_reduce_sum(torch.tensor([loss_sum, w_sum, n], dtype=torch.float64))
    loss_sum, w_sum, n = stats.tolist()
    return EpochStats(loss_sum / max(n, 1), w_sum / max(n, 1), int(n), updates)


def save_train_state(path: str | Path, model: torch.nn.Module, opt, sched, epoch: int,
                     **extra: Any) -> None:
    """``train_state.pt`` (plain tensors and numbers: loads with ``weights_only=True``),
    written to a temporary name and renamed into place."""
    state = {"model": unwrap_model(model).state_dict(), "optimizer": opt.state_dict(),
             "scheduler": sched.state_dict(), "epoch": epoch, **extra}
    buf = io.BytesIO()              # serialised first, so a full disk is an OSError naming the
    torch.save(state, buf)          # file, not torch's "PytorchStreamWriter failed"
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getbuffer())


def checkpoint_meta(cfg, run_dir: str | Path, encoder_key: str | None, **extra: Any) -> dict:
    """What every checkpoint records about how it was made: the git SHA of the run, the
    resolved config (YAML) and the key of the encoder whose embeddings it reads (stage 2) or
    that it is (stage 1)."""
    sha_file = Path(run_dir) / "git_sha.txt"
    if sha_file.is_file():
        sha = sha_file.read_text().strip()
    else:
        from fer_pipeline.runs import git_sha

        sha = git_sha()
    return {"git_sha": sha, "config": cfg.to_yaml(), "encoder_key": encoder_key, **extra}


def kept_checkpoint(run_dir: str | Path) -> str:
    """'; last good checkpoint kept: PATH' when a stopped run has one, else ''."""
    ckpt = Path(run_dir) / "checkpoint.safetensors"
    return f"; last good checkpoint kept: {ckpt}" if ckpt.is_file() else ""
