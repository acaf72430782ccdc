"""Optimiser schedule shared by the training engines."""
from __future__ import annotations

import math

import torch


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """LR multiplier: linear warmup to 1 over ``warmup`` steps, then cosine to 0 at ``total``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


def adamw_warmup_cosine(params, lr: float, wd: float, total_steps: int, warmup_steps: int):
    """AdamW + per-step warmup/cosine schedule: (optimizer, scheduler)."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: warmup_cosine(k, total_steps, warmup_steps))
    return opt, sched


def optimizer_step(net: torch.nn.Module, opt, sched, grad_clip: float | None) -> None:
    """One update after the accumulated micro-batches: clip, step, schedule, clear."""
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)

