"""Training engine for the temporal model on cached embeddings."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.checkpoint import save_checkpoint
from pipeline.config import Config
from pipeline.progress import progress
from pipeline.io import append_jsonl
from pipeline.labels import IGNORE, NUM_CLASSES
from pipeline.metrics import F1Report
from pipeline.optim import adamw_warmup_cosine, optimizer_step
from stage2_temporal.data import ClipSampler, TemporalCache, gather_clips
from stage2_temporal.evaluate import evaluate
from stage2_temporal.model import TemporalTransformer

log = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    pass


def build_model(in_dim: int, cfg: Config) -> TemporalTransformer:
    return TemporalTransformer(in_dim, cfg.stage2.model, max_len=cfg.stage2.data.clip_len)


def eval_stride(cfg: Config) -> int:
    return cfg.stage2.data.stride_eval or max(1, cfg.stage2.data.clip_len // 2)


def frame_loss(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Mean CE over annotated frames of the batch: (B, P, 8), (B, P) -> scalar."""
    return F.cross_entropy(logits.reshape(-1, NUM_CLASSES).float(), label.reshape(-1),
                           ignore_index=IGNORE)


@dataclass
class FitResult:
    best_epoch: int
    best_f1: float
    report: F1Report | None
    checkpoint: Path


def fit(train: TemporalCache, val: TemporalCache, cfg: Config, run_dir: Path,
        device: torch.device, meta: dict) -> FitResult:
    s2 = cfg.stage2
    model = build_model(train.dim, cfg).to(device)
    sampler = ClipSampler(train, s2.data.clip_len, s2.train.batch_size, seed=cfg.seed)
    steps_per_epoch = len(sampler)
    opt, sched = adamw_warmup_cosine(model.parameters(), s2.train.lr, s2.train.wd,
                                     steps_per_epoch * s2.train.epochs,
                                     int(round(s2.train.warmup_epochs * steps_per_epoch)))
    ckpt = run_dir / "checkpoint.safetensors"
    metrics_path = run_dir / "metrics.jsonl"
    best_f1, best_epoch, best_report = -1.0, -1, None
    step = 0
    log.info("stage2: %d train videos (%d frames), %d val videos; %d clips/epoch of %d frames, "
             "%d epochs", len(train.videos), int(train.offsets[-1]), len(val.videos),
             len(sampler.clips()[0]), s2.data.clip_len, s2.train.epochs)
    bar = progress(range(s2.train.epochs), desc="stage2 train", unit="epoch")
    for epoch in bar:
        t0 = time.time()
        model.train()
        sampler.set_epoch(epoch)
        loss_sum, n_batches = 0.0, 0
        for starts, lengths in sampler:
            batch = gather_clips(train, starts, lengths, s2.data.clip_len)
            logits = model(batch.x, batch.valid)
            loss = frame_loss(logits, batch.label)
            if not torch.isfinite(loss):
                raise NonFiniteLoss(f"non-finite loss at epoch {epoch} step {step} "
                                    f"(batch clip starts {starts[:4].tolist()}...)")
            optimizer_step(loss, model, opt, sched, s2.train.grad_clip)
            step += 1
            loss_sum += loss.item()
            n_batches += 1
        row = {"epoch": epoch, "step": step, "train_loss": loss_sum / max(1, n_batches),
               "lr": opt.param_groups[0]["lr"], "epoch_s": round(time.time() - t0, 3)}
        if len(val.videos):
            report, _ = evaluate(model, val, s2.data.clip_len, eval_stride(cfg))
            row.update(val_macro_f1=report.macro_f1, val_acc=report.accuracy)
            if report.macro_f1 > best_f1:
                best_f1, best_epoch, best_report = report.macro_f1, epoch, report
                save_checkpoint(ckpt, model, {**meta, "epoch": epoch, "val_macro_f1": best_f1})
        else:  # no validation videos: keep the last epoch
            best_epoch = epoch
            save_checkpoint(ckpt, model, {**meta, "epoch": epoch})
        append_jsonl(metrics_path, row)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", f1=f"{row.get('val_macro_f1', float('nan')):.3f}")
    return FitResult(best_epoch, best_f1, best_report, ckpt)
