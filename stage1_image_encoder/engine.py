"""Encoder pretraining on still-image sets with the NLA loss."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from pipeline.checkpoint import save_checkpoint
from pipeline.config import Config
from pipeline.io import append_jsonl, read_jsonl
from pipeline.metrics import F1Report, confusion
from pipeline.optim import adamw_warmup_cosine, optimizer_step
from pipeline.plots import plot_curves
from pipeline.progress import progress
from stage1_image_encoder.data import LabelledImages
from stage1_image_encoder.datasets import ImageList, build_image_sets
from stage1_image_encoder.losses import nla_loss
from stage1_image_encoder.model import build_encoder

log = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    run_dir: Path
    checkpoint: Path
    val_acc: float | None
    val_macro_f1: float | None
    train_images: int
    val_images: int


def _present_macro_f1(report: F1Report) -> float:
    """Macro-F1 over the classes present in the evaluation set (RAF-DB has no 'Other')."""
    present = report.support > 0
    return float(report.f1[present].mean()) if present.any() else 0.0


@torch.inference_mode()
def evaluate_images(model: torch.nn.Module, images: ImageList, cfg: Config,
                    device: torch.device) -> F1Report:
    ds = LabelledImages(images.paths, images.labels, cfg.stage1.model)
    loader = DataLoader(ds, batch_size=cfg.stage1.train.batch_size * 2, shuffle=False,
                        num_workers=cfg.stage1.data.workers)
    model.eval()
    preds, labels = [], []
    for x, y in loader:
        preds.append(model(x.to(device)).argmax(-1).cpu())
        labels.append(y)
    y = torch.cat(labels).numpy()
    p = torch.cat(preds).numpy()
    keep = y >= 0
    return F1Report(confusion(y[keep], p[keep]))


def pretrain(cfg: Config, run_dir: Path, device: torch.device) -> PretrainResult:
    s1 = cfg.stage1
    train_set, val_set, weights = build_image_sets(s1.data.sources)
    model = build_encoder(s1.model).to(device)
    ds = LabelledImages(train_set.paths, train_set.labels, s1.model, s1.augment)
    gen = torch.Generator().manual_seed(cfg.seed)
    sampler = WeightedRandomSampler(torch.as_tensor(weights), num_samples=len(ds),
                                    replacement=True, generator=gen)
    loader = DataLoader(ds, batch_size=s1.train.batch_size, sampler=sampler, drop_last=len(ds) > s1.train.batch_size,
                        num_workers=s1.data.workers, pin_memory=device.type == "cuda",
                        persistent_workers=s1.data.workers > 0)
    steps = len(loader)
    opt, sched = adamw_warmup_cosine(model.parameters(), s1.train.lr, s1.train.wd,
                                     steps * s1.train.epochs, int(round(s1.train.warmup_epochs * steps)))
    ckpt = run_dir / "checkpoint.safetensors"
    log.info("stage1 pretrain: %d train / %d val images, %d steps/epoch, %d epochs, %s loss",
             len(train_set), len(val_set), steps, s1.train.epochs,
             "NLA" if s1.nla.enabled else "CE")
    report = None
    bar = progress(range(s1.train.epochs), desc="stage1 pretrain", unit="epoch")
    for epoch in bar:
        t0 = time.time()
        model.train()
        frac = epoch / s1.train.epochs
        nla_cfg = s1.nla if epoch >= s1.nla.ce_epochs else s1.nla.model_copy(update={"enabled": False})
        loss_sum, w_sum, n = 0.0, 0.0, 0
        for x, y in loader:
            logits = model(x.to(device, non_blocking=True))
            loss, w_mean = nla_loss(logits, y.to(device), frac, nla_cfg)
            if not torch.isfinite(loss):
                raise RuntimeError(f"stage1: non-finite loss at epoch {epoch}")
            optimizer_step(loss, model, opt, sched, s1.train.grad_clip)
            loss_sum += loss.item()
            w_sum += float(w_mean)
            n += 1
        row = {"epoch": epoch, "train_loss": loss_sum / max(n, 1), "mean_nla_weight": w_sum / max(n, 1),
               "lr": opt.param_groups[0]["lr"], "epoch_s": round(time.time() - t0, 2)}
        if len(val_set):
            report = evaluate_images(model, val_set, cfg, device)
            row.update(val_acc=report.accuracy, val_macro_f1=_present_macro_f1(report))
        append_jsonl(run_dir / "metrics.jsonl", row)
        save_checkpoint(ckpt, model, {"epoch": epoch, "model": s1.model.name,
                                      "val_acc": row.get("val_acc")})
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", acc=f"{row.get('val_acc', float('nan')):.3f}")
    history = read_jsonl(run_dir / "metrics.jsonl")
    plot_curves(history, run_dir / "learning_curve.png",
                title=f"stage 1 pretraining ({s1.model.name}, {'NLA' if s1.nla.enabled else 'CE'})")
    return PretrainResult(run_dir, ckpt, report.accuracy if report else None,
                          _present_macro_f1(report) if report else None, len(train_set), len(val_set))

