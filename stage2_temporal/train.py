"""Stage 2 jobs: train on a store, evaluate a run. Config in, files out (SPEC §8):
``RUN_DIR/{config.yaml, git_sha.txt, stage2.json, metrics.jsonl, checkpoint.safetensors,
eval/{f1.csv, f1.md, f1.json, confusion.png, predictions.parquet}}``."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.checkpoint import load_checkpoint
from pipeline.config import Config, load_config
from pipeline.errors import UsageError
from pipeline.io import read_jsonl, write_json, write_parquet, write_text
from pipeline.labels import CLASSES
from pipeline.metrics import F1Report, plot_confusion
from pipeline.runs import init_run_dir, setup_torch
from pipeline.store import EmbeddingStore, LoadedStore
from stage2_temporal.data import TemporalCache
from stage2_temporal.engine import build_model, eval_stride, fit
from stage2_temporal.evaluate import evaluate

log = logging.getLogger(__name__)


def split_indices(loaded: LoadedStore, split: str) -> list[int]:
    return [i for i in range(len(loaded)) if loaded.split_of(i) == split]


def _cache(loaded: LoadedStore, indices: list[int], device: torch.device) -> TemporalCache:
    return TemporalCache.from_store(loaded.select(indices), device)


@dataclass
class TrainResult:
    run_dir: Path
    report: F1Report | None
    best_epoch: int
    last_f1: float | None


def train(store_path: str | Path, run_dir: str | Path, cfg: Config) -> TrainResult:
    device = setup_torch(cfg)
    store = EmbeddingStore.open(store_path)
    loaded = store.load()
    train_idx, val_idx = split_indices(loaded, "train"), split_indices(loaded, "val")
    if not train_idx:
        raise UsageError(f"{store_path}: no video with split 'train' in the store")
    hold = device if cfg.stage2.data.preload == "device" else torch.device("cpu")
    train_c, val_c = _cache(loaded, train_idx, hold), _cache(loaded, val_idx, hold)
    run_dir = init_run_dir(run_dir, cfg, "stage2")
    info = {"store": str(Path(store_path).resolve()), "encoder_key": store.encoder_key,
            "in_dim": store.dim, "train_videos": train_c.videos, "val_videos": val_c.videos}
    write_json(run_dir / "stage2.json", info)
    result = fit(train_c, val_c, cfg, run_dir, device,
                 {"encoder_key": store.encoder_key, "in_dim": store.dim})
    history = read_jsonl(run_dir / "metrics.jsonl")
    last_f1 = history[-1].get("val_macro_f1") if history else None
    report = None
    if val_c.videos:
        report = evaluate_run(run_dir, store_path)
    return TrainResult(run_dir, report, result.best_epoch, last_f1)


def load_run_model(run_dir: str | Path) -> tuple[torch.nn.Module, Config, dict, dict]:
    """Model (with the run's best weights), resolved config, stage2.json and checkpoint meta."""
    run_dir = Path(run_dir)
    if not (run_dir / "stage2.json").is_file():
        raise UsageError(f"{run_dir}: not a stage-2 run directory (no stage2.json)")
    cfg = load_config([run_dir / "config.yaml"], base=None)
    info = json.loads((run_dir / "stage2.json").read_text())
    state, meta = load_checkpoint(run_dir / "checkpoint.safetensors")
    model = build_model(int(info["in_dim"]), cfg)
    model.load_state_dict(state)
    return model, cfg, info, meta


def evaluate_run(run_dir: str | Path, store_path: str | Path | None = None,
                 split: str = "val") -> F1Report:
    """Evaluate a run's checkpoint on every annotated frame of the store's ``split`` videos and
    write ``RUN_DIR/eval/``."""
    run_dir = Path(run_dir)
    model, cfg, info, meta = load_run_model(run_dir)
    device = setup_torch(cfg)
    store = EmbeddingStore.open(store_path or info["store"])
    if store.encoder_key != info["encoder_key"]:
        raise UsageError(f"{store.path}: store encoder key {store.encoder_key} differs from the "
                         f"run's {info['encoder_key']}")
    if store.dim != int(info["in_dim"]):
        raise UsageError(f"{store.path}: embedding dim {store.dim} != model input {info['in_dim']}")
    names = info.get(f"{split}_videos") or [v for v in store.videos()
                                            if store.video_attrs(v).get("split") == split]
    if not names:
        raise UsageError(f"{store.path}: no {split} videos to evaluate")
    loaded = store.load(names)
    cache = TemporalCache.from_store(loaded, device if cfg.stage2.data.preload == "device" else "cpu")
    model = model.to(device)
    report, probs = evaluate(model, cache, cfg.stage2.data.clip_len, eval_stride(cfg))
    write_eval(run_dir / "eval", report, cache, probs, loaded,
               title=f"{split}: macro-F1 {100 * report.macro_f1:.2f} (epoch {meta.get('epoch')})",
               extra={"split": split, "checkpoint_epoch": meta.get("epoch"),
                      "videos": len(names), "frames_scored": int(report.support.sum())})
    return report


def write_eval(out: Path, report: F1Report, cache: TemporalCache, probs: torch.Tensor,
               loaded: LoadedStore, title: str, extra: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    table = report.table()
    from pipeline.io import atomic_write

    atomic_write(out / "f1.csv", lambda p: table.to_csv(p, index=False))
    write_text(out / "f1.md", f"# {title}\n\n" + report.markdown())
    write_json(out / "f1.json", {**report.to_dict(), **extra})
    plot_confusion(report.confusion, out / "confusion.png", title=title)
    pred = probs.argmax(-1).numpy()
    frames = np.concatenate([np.arange(1, n + 1) for n in loaded.lengths()])
    videos = np.repeat(np.asarray(loaded.videos, dtype=object), loaded.lengths())
    df = pd.DataFrame({"video": videos, "frame": frames.astype(np.int32),
                       "label": loaded.label, "face": loaded.face, "pred": pred.astype(np.int8)})
    for k, c in enumerate(CLASSES):
        df[f"p_{c}"] = probs[:, k].numpy().astype(np.float32)
    write_parquet(out / "predictions.parquet", df)
