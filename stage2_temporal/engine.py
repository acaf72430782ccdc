"""Training engine for the temporal model on cached embeddings.

Single process or DDP (torchrun / ``--nproc``; gloo on CPU, NCCL on GPU), bf16 autocast on GPU,
gradient accumulation, V-NAW loss, token augmentation, per-epoch validation (all-reduced
confusion counts), early stopping on val macro-F1, atomic checkpoints and exact ``--resume``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from fer_pipeline import distributed
from fer_pipeline.checkpoint import resume_train_state, save_checkpoint, unwrap_model
from fer_pipeline.config import Config
from fer_pipeline.io import append_jsonl
from fer_pipeline.optim import adamw_warmup_cosine
from fer_pipeline.progress import progress
from fer_pipeline.training import NonFiniteLoss, autocast, checkpoint_meta, run_epoch, save_train_state

__all__ = ["NonFiniteLoss", "build_model", "clip_loss", "eval_stride", "fit", "FitResult"]
from stage2_temporal.augment import drop_frames, raw_span
from stage2_temporal.data import ClipSampler, TemporalCache, gather_clips
from stage2_temporal.evaluate import evaluate
from stage2_temporal.heads import decision_rule
from stage2_temporal.losses import balanced_class_weights, vnaw_loss, vnaw_official_loss
from stage2_temporal.model import CascadeTransformer, TemporalTransformer

log = logging.getLogger(__name__)


def build_model(in_dim: int, cfg: Config) -> TemporalTransformer | CascadeTransformer:
    """The configured temporal model: one network (``flat``, ``cfcsp_shared``) or the two
    networks of the CFC-SP cascade (``cfcsp``)."""
    cls = CascadeTransformer if cfg.stage2.model.head == "cfcsp" else TemporalTransformer
    return cls(in_dim, cfg.stage2.model, cfg.stage2.aug, max_len=cfg.stage2.data.clip_len)


def eval_stride(cfg: Config) -> int:
    return cfg.stage2.data.stride_eval or max(1, cfg.stage2.data.clip_len // 2)


def describe_clips(cache: TemporalCache, starts: torch.Tensor, lengths: torch.Tensor) -> str:
    """'video frames a-b' for the first clips of a batch (1-based frames)."""
    out = []
    for s, n in zip(starts[:3].tolist(), lengths[:3].tolist()):
        v, f = cache.locate(s)
        f += 1
        out.append(f"{cache.videos[v]} frames {f}-{f + n - 1}")
    return ", ".join(out) + (" ..." if len(starts) > 3 else "")


def clip_loss(net, cache: TemporalCache, clips, cfg: Config, progress: float,
              class_weights: torch.Tensor | None = None, device: torch.device | None = None):
    """One training batch: gather the clips (frame skipping removes dropped frames first when
    ``aug.drop_mode`` is ``remove``), run the model, V-NAW loss. ``clips`` = (starts, lengths,
    rates) from the sampler. Returns ``(loss, mean weight, logits (B, P, out), batch)``."""
    s2 = cfg.stage2
    starts, lengths, rates = clips
    remove = net.training and s2.aug.enabled and s2.aug.drop_mode == "remove"
    span = raw_span(s2.data.clip_len, s2.aug) if remove else s2.data.clip_len
    flip = net.training and s2.needs_flip()
    batch = gather_clips(cache, starts, lengths, span, rates, device=device, with_flip=flip)
    if remove:                  # with flip, a frame's two halves are kept or dropped together
        batch, _ = drop_frames(batch, s2.data.clip_len, s2.aug)
    if flip:                    # the clip and its flipped-crop twin, one forward of 2B clips
        x, x_flip = batch.x.chunk(2, dim=-1)
        batch = type(batch)(x, batch.label, batch.valid, batch.inside)
        with autocast(device or x.device, s2.train.amp):
            both, keys = net(torch.cat([x, x_flip]), batch.valid.repeat(2, 1), return_keys=True)
        (logits, flip_logits), keys = both.chunk(2), keys[:len(x)]
    else:
        with autocast(device or batch.x.device, s2.train.amp):
            logits, keys = net(batch.x, batch.valid, return_keys=True)
    mask = batch.inside
    if s2.aug.drop_mode == "key_mask" and s2.aug.drop_loss == "exclude":
        mask = mask & ~(batch.valid & ~keys)           # leave key-dropped frames out
    if flip:
        loss, w = vnaw_official_loss(logits, flip_logits, batch.label, mask, progress,
                                     class_weights, s2.grad_through_weight(), s2.naw.jsd_reduction)
    else:
        loss, w = vnaw_loss(logits, batch.label, mask, progress, s2.naw, s2.model.head,
                            s2.loss_target(), class_weights, s2.grad_through_weight())
    return loss, w, logits, batch


@dataclass
class FitResult:
    best_epoch: int
    best_f1: float
    last_f1: float | None
    checkpoint: Path
    stopped_early: bool


def fit(train: TemporalCache, val: TemporalCache, cfg: Config, run_dir: Path,
        device: torch.device, meta: dict, resume: bool = False,
        select: TemporalCache | None = None) -> FitResult:
    """Train for ``stage2.train.epochs``. Each epoch is scored on ``val`` and, when given, on
    ``select`` (videos held out of training); the kept checkpoint (``keep: best``) and early
    stopping follow ``select`` when it exists, else ``val``."""
    s2 = cfg.stage2
    dist = distributed.info()
    model = build_model(train.dim, cfg).to(device)
    sampler = ClipSampler(train, s2.data.clip_len, s2.train.batch_size, seed=cfg.seed,
                          speed_jitter=s2.data.speed_jitter, class_balanced=s2.data.class_balanced,
                          rank=dist.rank, world=dist.world_size,
                          span=raw_span(s2.data.clip_len, s2.aug))
    steps = max(1, len(sampler) // s2.train.accum)
    opt, sched = adamw_warmup_cosine(model.parameters(), s2.train.lr, s2.train.wd,
                                     steps * s2.train.epochs, int(round(s2.train.warmup_epochs * steps)))
    class_weights = (balanced_class_weights(torch.from_numpy(train.view_labels())).to(device)
                     if s2.loss.class_weights == "balanced" else None)
    ckpt = run_dir / "checkpoint.safetensors"
    state_path = run_dir / "train_state.pt"
    start, best_f1, best_epoch, stale, last_f1 = 0, -1.0, -1, 0, None
    if resume:
        st = resume_train_state(run_dir, model, opt, sched)
        start, best_f1, best_epoch, stale = (int(st["epoch"]) + 1, float(st["best_f1"]),
                                             int(st["best_epoch"]), int(st["stale"]))
        log.info("resuming %s at epoch %d (best macro-F1 %.4f at epoch %d)", run_dir, start,
                 best_f1, best_epoch)
    net = DistributedDataParallel(model) if dist.enabled else model
    log.info("stage2: %d train videos (%d frames), %d val videos; %d clips/epoch of %d frames"
             "%s, %d epochs, aug %s, V-NAW %s (target %s), head %s", len(train.videos),
             int(train.offsets[-1]), len(val.videos), len(sampler.clips()[0]) * dist.world_size,
             s2.data.clip_len, f" on {dist.world_size} ranks" if dist.enabled else "",
             s2.train.epochs, "on" if s2.aug.enabled else "off",
             f"on ({s2.naw.form}, w {'with' if s2.grad_through_weight() else 'without'} gradient)"
             if s2.naw.enabled else "off", s2.loss_target(), s2.model.head)
    stopped_early = False
    step = start * steps
    bar = progress(range(start, s2.train.epochs), desc="stage2 train", unit="epoch",
                   initial=start, total=s2.train.epochs)
    for epoch in bar:
        t0 = time.time()
        net.train()
        sampler.set_epoch(epoch)
        torch.manual_seed(cfg.seed * 100_003 + epoch + dist.rank * 7919)   # aug + dropout
        frac = epoch / s2.train.epochs

        def step_fn(clips):
            loss, w, _, _ = clip_loss(net, train, clips, cfg, frac, class_weights, device)
            return loss, w

        stats = run_epoch(net, sampler, step_fn, opt, sched, epoch=epoch, accum=s2.train.accum,
                          grad_clip=s2.train.grad_clip, first_step=step,
                          describe=lambda i, c: describe_clips(train, c[0], c[1]))
        step += stats.updates
        row = {"epoch": epoch, "step": step, "train_loss": stats.loss,
               "mean_naw_weight": stats.weight, "lr": opt.param_groups[0]["lr"],
               "epoch_s": round(time.time() - t0, 3)}
        improved = False
        score = None
        if len(val.videos):
            res = evaluate(unwrap_model(net), val, s2.data.clip_len, eval_stride(cfg), s2.post,
                           rule=decision_rule(s2.model), keep_probs=False)
            last_f1 = score = res.report.macro_f1
            row.update(val_macro_f1=last_f1, val_acc=res.report.accuracy)
            if res.post_report is not None:
                row["val_macro_f1_post"] = res.post_report.macro_f1
        if select is not None and len(select.videos):
            sel = evaluate(unwrap_model(net), select, s2.data.clip_len, eval_stride(cfg), None,
                           rule=decision_rule(s2.model), keep_probs=False)
            score = row["select_macro_f1"] = sel.report.macro_f1
        if score is not None:
            improved = score > best_f1
            if improved:
                best_f1, best_epoch, stale = score, epoch, 0
            else:
                stale += 1
        else:
            best_epoch = epoch
        if dist.primary:
            append_jsonl(run_dir / "metrics.jsonl", row)
            if s2.train.keep == "last" or improved or score is None:
                save_checkpoint(ckpt, net, checkpoint_meta(
                    cfg, run_dir, meta.get("encoder_key"),
                    **{k: v for k, v in meta.items() if k != "encoder_key"}, epoch=epoch,
                    val_macro_f1=row.get("val_macro_f1")))
            save_train_state(state_path, net, opt, sched, epoch, best_f1=best_f1,
                             best_epoch=best_epoch, stale=stale)
        distributed.barrier()
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", f1=f"{row.get('val_macro_f1', float('nan')):.3f}")
        if s2.train.early_stop and stale >= s2.train.early_stop:
            log.info("early stop at epoch %d: no better macro-F1 (on the %s videos) for %d epochs "
                     "(best %.4f, epoch %d)", epoch, "selection" if select is not None else "val",
                     stale, best_f1, best_epoch)
            stopped_early = True
            bar.update(1)       # this epoch is done too (the bar counts an epoch as the next begins)
            break
    return FitResult(best_epoch, best_f1, last_f1, ckpt, stopped_early)
