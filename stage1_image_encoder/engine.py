"""Encoder pretraining on still-image sets with the NLA loss.

Single process or DDP (torchrun / gloo on CPU, NCCL on GPU); bf16 autocast on GPU; gradient
accumulation; per-epoch ``train_state.pt`` so ``--resume`` continues exactly where a run
stopped (the epoch's sampling and augmentation seeds depend only on (seed, epoch)).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler

from fer_pipeline import distributed
from fer_pipeline.checkpoint import resume_train_state, save_checkpoint, unwrap_model
from fer_pipeline.config import Config
from fer_pipeline.io import append_jsonl, read_jsonl
from fer_pipeline.metrics import F1Report, confusion
from fer_pipeline.optim import adamw_warmup_cosine
from fer_pipeline.plots import plot_curves
from fer_pipeline.progress import progress
from fer_pipeline.training import autocast, checkpoint_meta, run_epoch, save_train_state
from stage1_image_encoder.loading import LabelledImages
from stage1_image_encoder.losses import nla_loss
from stage1_image_encoder.model import build_encoder, encoder_key
from stage1_image_encoder.sources import ImageList, build_image_sets

log = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    run_dir: Path
    checkpoint: Path
    val_acc: float | None
    val_macro_f1: float | None
    train_images: int
    val_images: int


class WeightedShardSampler(Sampler[int]):
    """``len(weights)`` draws with replacement by weight, identical on every rank for an epoch
    (seeded by (seed, epoch)), of which each rank takes every world-th."""

    def __init__(self, weights: np.ndarray, seed: int, rank: int = 0, world: int = 1):
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.seed, self.rank, self.world = seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        draws = torch.multinomial(self.weights, len(self.weights), replacement=True, generator=g)
        return iter(draws[self.rank::self.world].tolist())

    def __len__(self) -> int:
        return len(range(self.rank, len(self.weights), self.world))


def _present_macro_f1(report: F1Report) -> float:
    """Macro-F1 over the classes present in the evaluation set (RAF-DB has no 'Other')."""
    present = report.support > 0
    return float(report.f1[present].mean()) if present.any() else 0.0


def _images(lst: ImageList, cfg: Config, augment=None) -> LabelledImages:
    return LabelledImages(lst.paths, lst.labels, cfg.stage1.model, augment, boxes=lst.boxes,
                          soft=lst.soft if augment is not None else None)


@torch.inference_mode()
def evaluate_images(model: torch.nn.Module, images: ImageList, cfg: Config,
                    device: torch.device, flip: bool = False) -> F1Report:
    """Confusion over the rank's share of ``images``, all-reduced over ranks; ``flip``: classify
    by the mean of the softmax of each image and of its mirror (test-time flip)."""
    ds = _images(images, cfg)
    idx = distributed.shard(range(len(ds)))
    loader = DataLoader(torch.utils.data.Subset(ds, idx), batch_size=cfg.stage1.train.batch_size * 2,
                        shuffle=False, num_workers=cfg.stage1.data.workers)
    model.eval()
    cm = np.zeros((8, 8), np.int64)
    for x, y in loader:
        with autocast(device, cfg.stage1.train.amp):
            x = x.to(device)
            prob = model(x).float().softmax(-1)
            if flip:
                prob = prob + model(x.flip(-1)).float().softmax(-1)
            pred = prob.argmax(-1).cpu().numpy()
        y = y.numpy()
        cm += confusion(y[y >= 0], pred[y >= 0])
    total = distributed.all_reduce_sum(torch.from_numpy(cm))
    return F1Report(total.numpy())


def pretrain(cfg: Config, run_dir: Path, device: torch.device, resume: bool = False) -> PretrainResult:
    s1 = cfg.stage1
    dist = distributed.info()
    train_set, val_set, weights = build_image_sets(s1.data.sources)
    model = build_encoder(s1.model).to(device)
    ds = _images(train_set, cfg, s1.augment)
    sampler = WeightedShardSampler(weights, cfg.seed, dist.rank, dist.world_size)
    loader_gen = torch.Generator()
    loader = DataLoader(ds, batch_size=s1.train.batch_size, sampler=sampler,
                        drop_last=len(sampler) > s1.train.batch_size,
                        num_workers=s1.data.workers, pin_memory=device.type == "cuda",
                        persistent_workers=s1.data.workers > 0, generator=loader_gen)
    steps = max(1, len(loader) // s1.train.accum)
    opt, sched = adamw_warmup_cosine(model.parameters(), s1.train.lr, s1.train.wd,
                                     steps * s1.train.epochs, int(round(s1.train.warmup_epochs * steps)))
    state_path = run_dir / "train_state.pt"
    start = 0
    if resume:
        start = int(resume_train_state(run_dir, model, opt, sched)["epoch"]) + 1
        log.info("resuming %s at epoch %d", run_dir, start)
    net = DistributedDataParallel(model) if dist.enabled else model
    ckpt = run_dir / "checkpoint.safetensors"
    log.info("stage1 pretrain: %d train / %d val images, %d steps/epoch, %d epochs, %s loss%s",
             len(train_set), len(val_set), steps, s1.train.epochs,
             f"NLA ({s1.nla.form})" if s1.nla.enabled else "CE",
             f", {dist.world_size} ranks" if dist.enabled else "")
    report = None
    for epoch in progress(range(start, s1.train.epochs), desc="stage1 pretrain", unit="epoch",
                          initial=start, total=s1.train.epochs):
        t0 = time.time()
        net.train()
        sampler.set_epoch(epoch)
        # this epoch's randomness depends only on (seed, epoch): worker augmentation seeds, and
        # the global generator (in-process augmentation, dropout) for exact resumption
        loader_gen.manual_seed(cfg.seed * 100_003 + epoch)
        torch.manual_seed(cfg.seed * 100_003 + epoch + dist.rank * 7919)
        frac = epoch / s1.train.epochs
        nla_cfg = s1.nla if epoch >= s1.nla.ce_epochs else s1.nla.model_copy(update={"enabled": False})
        flip = nla_cfg.needs_flip()

        def step(batch):
            x, y = batch[0].to(device, non_blocking=True), batch[1].to(device)
            soft = batch[2].to(device) if len(batch) > 2 else None
            with autocast(device, s1.train.amp):
                # the consistency term (release, paper) needs the mirrored view of the same
                # augmented image
                logits = net(torch.cat([x, x.flip(-1)]) if flip else x)
            logits_flip = None
            if flip:
                logits, logits_flip = logits.chunk(2)
            return nla_loss(logits, y, frac, nla_cfg, soft, logits_flip)

        stats = run_epoch(net, loader, step, opt, sched, epoch=epoch, accum=s1.train.accum,
                          grad_clip=s1.train.grad_clip, first_step=epoch * steps,
                          describe=lambda i, b: f"{len(b[0])} images")
        row = {"epoch": epoch, "train_loss": stats.loss, "mean_nla_weight": stats.weight,
               "nla": bool(nla_cfg.enabled), "lr": opt.param_groups[0]["lr"],
               "epoch_s": round(time.time() - t0, 2)}
        if len(val_set):
            report = evaluate_images(unwrap_model(net), val_set, cfg, device)
            row.update(val_acc=report.accuracy, val_macro_f1=_present_macro_f1(report))
        if dist.primary:
            append_jsonl(run_dir / "metrics.jsonl", row)
            model_now = unwrap_model(net)
            save_checkpoint(ckpt, net, checkpoint_meta(
                cfg, run_dir, encoder_key(model_now, s1.model), epoch=epoch, model=s1.model.name,
                val_acc=row.get("val_acc")))
            save_train_state(state_path, net, opt, sched, epoch)
        distributed.barrier()
    if report is None and len(val_set):      # resumed a finished run: report its final state
        report = evaluate_images(unwrap_model(net), val_set, cfg, device)
    if dist.primary:
        history = read_jsonl(run_dir / "metrics.jsonl")
        marks = {"NLA starts": s1.nla.ce_epochs} if s1.nla.enabled and s1.nla.ce_epochs else {}
        plot_curves(history, run_dir / "learning_curve.png", marks=marks,
                    title=f"stage 1 pretraining ({s1.model.name}, "
                          f"{'NLA ' + s1.nla.form if s1.nla.enabled else 'CE'})")
    return PretrainResult(run_dir, ckpt, report.accuracy if report else None,
                          _present_macro_f1(report) if report else None, len(train_set), len(val_set))
