"""One stage-2 run: train on a store into a run dir, load its model, evaluate it. Config in,
files out (SPEC §8): ``RUN_DIR/{config.yaml, git_sha.txt, stage2.json, metrics.jsonl,
checkpoint.safetensors, train_state.pt, learning_curve.png, eval/{f1.csv, f1.md, f1.json,
confusion.png, predictions.parquet, f1_post.csv}}``."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fer_pipeline import distributed, memory
from fer_pipeline.checkpoint import load_checkpoint, load_train_state
from fer_pipeline.config import Config, load_config
from fer_pipeline.errors import UsageError
from fer_pipeline.io import atomic_write, read_jsonl, write_json, write_parquet, write_text
from fer_pipeline.labels import CLASSES
from fer_pipeline.metrics import F1Report, plot_confusion, to_markdown
from fer_pipeline.plots import plot_curves
from fer_pipeline.runs import init_run_dir, resume_config, setup_rank
from fer_pipeline.store import EmbeddingStore
from stage2_temporal.data import TemporalCache, load_checked, load_flip
from stage2_temporal.engine import build_model, eval_stride, fit
from stage2_temporal.evaluate import EvalResult, evaluate
from stage2_temporal.heads import decide, decision_rule
from stage2_temporal.splits import select_split

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    report: F1Report | None
    post_report: F1Report | None
    best_epoch: int
    last_f1: float | None
    stopped_early: bool = False
    eval: EvalResult | None = None     # the kept checkpoint on the validation videos
    chosen_on: str = "last"            # what chose the kept checkpoint: last (keep: last),
                                       # selection (held-out training videos) or val
    select_videos: int = 0


def train(store_path: str | Path, run_dir: str | Path, cfg: Config, resume: bool = False,
          allow_partial: bool = False) -> TrainResult:
    memory.limit_arenas()           # before the store's reading threads start (fer_pipeline.memory)
    dist, device = setup_rank(cfg)
    run_dir = Path(run_dir)
    if resume:
        cfg = resume_config(run_dir, "stage2.json", "stage-2")
        store_path = json.loads((run_dir / "stage2.json").read_text())["store"]
    store = EmbeddingStore.open(store_path)
    store.require_complete(allow_partial)        # incomplete videos: error, or left out
    index = store.index()                        # layout only: splits are chosen before loading
    try:
        train_idx, val_idx, select_idx = select_split(index, cfg)
    except ValueError as e:
        raise UsageError(f"{store_path}: stage2.data: {e}") from None
    if not train_idx:
        raise UsageError(f"{store_path}: no training videos for split '{cfg.stage2.data.split}' "
                         f"(videos need split=train in the store)")
    # one loaded array (one per node under DDP); the splits are index views of it
    needed = [index.videos[i] for i in sorted({*train_idx, *val_idx, *select_idx})]
    data = load_checked(store, store.index(needed), cfg.stage2.data, device)   # NaN/Inf: error or masked
    if cfg.stage2.needs_flip():     # naw.form official: the flipped crops' embeddings too
        load_flip(store, data)
    names = index.videos
    train_c = data.subset_names([names[i] for i in train_idx])
    val_c = data.subset_names([names[i] for i in val_idx])
    select_c = data.subset_names([names[i] for i in select_idx]) if select_idx else None
    if dist.primary and not resume:
        init_run_dir(run_dir, cfg, "stage2", fresh=True)
        write_json(run_dir / "stage2.json", {
            "store": str(Path(store_path).resolve()), "encoder_key": store.encoder_key,
            "encoder_run": store.meta.get("encoder_run"), "in_dim": store.dim,
            "split": cfg.stage2.data.split, "fold": cfg.stage2.data.fold,
            "train_videos": train_c.videos, "val_videos": val_c.videos,
            "select_videos": select_c.videos if select_c else []})
    distributed.barrier()
    result = fit(train_c, val_c, cfg, run_dir, device,
                 {"encoder_key": store.encoder_key, "in_dim": store.dim}, resume=resume,
                 select=select_c)
    report = post = evaluated = None
    if dist.primary:
        plot_curves(read_jsonl(run_dir / "metrics.jsonl"), run_dir / "learning_curve.png",
                    score_keys=("val_acc", "val_macro_f1", "val_macro_f1_post", "select_macro_f1"),
                    title=f"stage 2 ({cfg.stage2.model.head}, aug {'on' if cfg.stage2.aug.enabled else 'off'},"
                          f" V-NAW {'on' if cfg.stage2.naw.enabled else 'off'})")
    distributed.barrier()
    if val_c.videos:
        evaluated = evaluate_run(run_dir, store_path, cache=data)   # the data loaded above
        report, post = evaluated.report, evaluated.post_report
    chosen_on = ("last" if cfg.stage2.train.keep == "last" else
                 "selection" if select_c is not None and select_c.videos else "val")
    return TrainResult(run_dir, report, post, result.best_epoch, result.last_f1, result.stopped_early,
                       evaluated, chosen_on, len(select_c.videos) if select_c else 0)


def load_run_model(run_dir: str | Path) -> tuple[torch.nn.Module, Config, dict, dict]:
    """Model (with the run's kept weights), resolved config, stage2.json and checkpoint meta."""
    run_dir = Path(run_dir)
    if not (run_dir / "stage2.json").is_file():
        raise UsageError(f"{run_dir}: not a stage-2 run directory (no stage2.json)")
    if not (run_dir / "checkpoint.safetensors").is_file():
        raise UsageError(f"{run_dir}: no checkpoint.safetensors (training did not finish an epoch)")
    cfg = load_config([run_dir / "config.yaml"], base=None)
    info = json.loads((run_dir / "stage2.json").read_text())
    state, meta = load_checkpoint(run_dir / "checkpoint.safetensors")
    model = build_model(int(info["in_dim"]), cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError:
        hint = (" (a CFC-SP run from before the two-network cascade: add "
                "stage2.model.head=cfcsp_shared to its config.yaml)"
                if cfg.stage2.model.head == "cfcsp" and not any(k.startswith("coarse.") for k in state)
                else "")
        raise UsageError(f"{run_dir}/checkpoint.safetensors does not fit the model its config "
                         f"describes{hint}") from None
    return model.eval(), cfg, info, meta


def evaluate_run(run_dir: str | Path, store_path: str | Path | None = None,
                 split: str = "val", weights: str = "checkpoint",
                 cache: TemporalCache | None = None) -> EvalResult:
    """Evaluate a run on every annotated frame of its validation videos (those of its own
    split) and write ``RUN_DIR/eval/`` (primary rank). ``weights="last"`` scores the last
    epoch's weights (from ``train_state.pt``) instead of the kept checkpoint, into
    ``RUN_DIR/eval_last/``. ``cache``: embeddings already loaded from the store (training's),
    used instead of loading the store again when it holds the videos."""
    memory.limit_arenas()           # before the store's reading threads start (fer_pipeline.memory)
    run_dir = Path(run_dir)
    model, cfg, info, meta = load_run_model(run_dir)
    if weights == "last":
        state = load_train_state(run_dir / "train_state.pt")
        model.load_state_dict(state["model"])
        meta = {**meta, "epoch": int(state["epoch"])}
    dist, device = setup_rank(cfg, quiet=False)
    store = EmbeddingStore.open(store_path or info["store"])
    if store.encoder_key != info["encoder_key"]:
        raise UsageError(f"{store.path}: store encoder key {store.encoder_key} differs from the "
                         f"run's {info['encoder_key']}")
    if store.dim != int(info["in_dim"]):
        raise UsageError(f"{store.path}: embedding dim {store.dim} does not match the model's "
                         f"input {info['in_dim']}")
    names = info.get(f"{split}_videos") or []
    if not names:
        raise UsageError(f"{run_dir}: the run has no {split} videos to evaluate")
    if cache is not None and set(names) <= set(cache.videos):
        view = cache.subset_names(names)
    else:
        missing = [v for v in names if not store.is_complete(v)]
        if missing:
            raise UsageError(f"{store.path}: {len(missing)} {split} video(s) of the run are missing "
                             f"from the store: {', '.join(missing[:10])}")
        view = load_checked(store, store.index(names), cfg.stage2.data, device).subset_names(names)
    rule = decision_rule(cfg.stage2.model)
    res = evaluate(model.to(device), view, cfg.stage2.data.clip_len, eval_stride(cfg), cfg.stage2.post,
                   rule=rule)
    if distributed.is_primary():
        write_eval(run_dir / ("eval" if weights == "checkpoint" else "eval_last"), res, view, cfg,
                   title=f"{split}: macro-F1 {100 * res.report.macro_f1:.2f} (epoch {meta.get('epoch')})",
                   extra={"split": split, "checkpoint_epoch": meta.get("epoch"), "decision_rule": rule,
                          "videos": len(names), "frames_scored": int(res.report.support.sum())})
    return res


def write_eval(out: Path, res: EvalResult, cache: TemporalCache, cfg: Config, title: str,
               extra: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    report = res.report
    atomic_write(out / "f1.csv", lambda p: report.table().to_csv(p, index=False))
    md = f"# {title}\n\n" + report.markdown()
    if report.absent:
        md += f"\nClasses without annotated frames (F1 = 0 by definition): {', '.join(report.absent)}\n"
    info = {**report.to_dict(), **extra}
    if res.post_report is not None:
        post = cfg.stage2.post
        label = (f"interpolate={post.interpolate}, smooth_window={post.smooth_window}")
        both = pd.DataFrame({"class": list(CLASSES) + ["Avg"],
                             "f1_raw": report.table()["f1"], "f1_post": res.post_report.table()["f1"]})
        atomic_write(out / "f1_post.csv", lambda p: both.to_csv(p, index=False))
        md += f"\n## With post-processing ({label})\n\n" + to_markdown(both)
        info["post"] = {"settings": post.model_dump(), **res.post_report.to_dict()}
    write_text(out / "f1.md", md)
    write_json(out / "f1.json", info)
    plot_confusion(report.confusion, out / "confusion.png", title=title)
    frames = np.concatenate([np.arange(1, n + 1) for n in cache.lengths()])
    videos = np.repeat(np.asarray(cache.videos, dtype=object), cache.lengths())
    df = pd.DataFrame({"video": videos, "frame": frames.astype(np.int32),
                       "label": cache.view_labels().astype(np.int8), "face": cache.view_face(),
                       "pred": decide(res.probs, res.rule).astype(np.int8)})
    if res.post_probs is not None:
        df["pred_post"] = decide(res.post_probs, res.rule).astype(np.int8)
    for k, c in enumerate(CLASSES):
        df[f"p_{c}"] = res.probs[:, k].astype(np.float32)
    write_parquet(out / "predictions.parquet", df)
