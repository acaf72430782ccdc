"""Stage 2 jobs: train on a store, evaluate a run, k-fold protocol, ablation, flat vs CFC-SP
heads. Config in, files out (SPEC §8): ``RUN_DIR/{config.yaml, git_sha.txt, stage2.json, metrics.jsonl,
checkpoint.safetensors, train_state.pt, learning_curve.png, eval/{f1.csv, f1.md, f1.json,
confusion.png, predictions.parquet, f1_post.csv}}``."""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline import distributed
from pipeline.checkpoint import load_checkpoint
from pipeline.config import Config, load_config
from pipeline.errors import UsageError
from pipeline.io import atomic_write, read_jsonl, write_json, write_parquet, write_text
from pipeline.labels import CLASSES
from pipeline.metrics import F1Report, plot_confusion, to_markdown
from pipeline.plots import plot_curves
from pipeline.runs import init_run_dir, setup_rank
from pipeline.store import EmbeddingStore, LoadedStore
from stage2_temporal.data import TemporalCache
from stage2_temporal.engine import build_model, eval_stride, fit
from stage2_temporal.evaluate import EvalResult, evaluate
from stage2_temporal.heads import decide, decision_rule

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ splits
def _raw_name(video: str) -> str:
    return re.sub(r"_(left|right)$", "", video)


def kfold_split(videos: list[str], lengths: list[int], fold: int, val_ratio: float,
                seed: int) -> tuple[list[str], list[str]]:
    """One random video-level split: about ``val_ratio`` of the frames held out. The two people
    of a raw video (``X_left`` / ``X_right``) stay on the same side."""
    groups: dict[str, list[int]] = {}
    for i, v in enumerate(videos):
        groups.setdefault(_raw_name(v), []).append(i)
    names = sorted(groups)
    rng = np.random.default_rng([seed, 7919, fold])
    order = rng.permutation(len(names))
    total = sum(lengths)
    val, held = [], 0
    for g in order:
        if held >= val_ratio * total:
            break
        idx = groups[names[g]]
        val += idx
        held += sum(lengths[i] for i in idx)
    val_set = set(val)
    return ([videos[i] for i in range(len(videos)) if i not in val_set],
            [videos[i] for i in sorted(val_set)])


def select_split(loaded: LoadedStore, cfg: Config) -> tuple[list[int], list[int]]:
    """(train indices, val indices) into the loaded store for ``stage2.data.split``."""
    d = cfg.stage2.data
    if d.split == "official":
        train = [i for i in range(len(loaded)) if loaded.split_of(i) == "train"]
        val = [i for i in range(len(loaded)) if loaded.split_of(i) == "val"]
    else:
        pool = [i for i in range(len(loaded)) if loaded.split_of(i) in ("train", "val")]
        names = [loaded.videos[i] for i in pool]
        tr, va = kfold_split(names, [int(loaded.lengths()[i]) for i in pool], d.fold,
                             d.val_ratio, cfg.seed)
        train = [loaded.index(v) for v in tr]
        val = [loaded.index(v) for v in va]
    return train, val


def _cache(loaded: LoadedStore, indices: list[int], device: torch.device) -> TemporalCache:
    return TemporalCache.from_store(loaded.select(indices), device)


# ------------------------------------------------------------------------------------ train
@dataclass
class TrainResult:
    run_dir: Path
    report: F1Report | None
    post_report: F1Report | None
    best_epoch: int
    last_f1: float | None
    stopped_early: bool = False
    eval: EvalResult | None = None     # the kept checkpoint on the validation videos


def train(store_path: str | Path, run_dir: str | Path, cfg: Config, resume: bool = False) -> TrainResult:
    dist, device = setup_rank(cfg)
    run_dir = Path(run_dir)
    if resume:
        if not (run_dir / "stage2.json").is_file():
            raise UsageError(f"{run_dir}: not a stage-2 run to resume")
        cfg = load_config([run_dir / "config.yaml"], base=None)
        store_path = json.loads((run_dir / "stage2.json").read_text())["store"]
    store = EmbeddingStore.open(store_path)
    loaded = store.load()
    train_idx, val_idx = select_split(loaded, cfg)
    if not train_idx:
        raise UsageError(f"{store_path}: no training videos for split '{cfg.stage2.data.split}' "
                         f"(videos need split=train in the store)")
    hold = device if cfg.stage2.data.preload == "device" else torch.device("cpu")
    train_c, val_c = _cache(loaded, train_idx, hold), _cache(loaded, val_idx, hold)
    if dist.primary and not resume:
        init_run_dir(run_dir, cfg, "stage2")
        write_json(run_dir / "stage2.json", {
            "store": str(Path(store_path).resolve()), "encoder_key": store.encoder_key,
            "encoder_run": store.meta.get("encoder_run"), "in_dim": store.dim, "split": cfg.stage2.data.split, "fold": cfg.stage2.data.fold,
            "train_videos": train_c.videos, "val_videos": val_c.videos})
    distributed.barrier()
    result = fit(train_c, val_c, cfg, run_dir, device,
                 {"encoder_key": store.encoder_key, "in_dim": store.dim}, resume=resume)
    report = post = evaluated = None
    if dist.primary:
        plot_curves(read_jsonl(run_dir / "metrics.jsonl"), run_dir / "learning_curve.png",
                    score_keys=("val_acc", "val_macro_f1", "val_macro_f1_post"),
                    title=f"stage 2 ({cfg.stage2.model.head}, aug {'on' if cfg.stage2.aug.enabled else 'off'},"
                          f" V-NAW {'on' if cfg.stage2.naw.enabled else 'off'})")
    distributed.barrier()
    if val_c.videos:
        evaluated = evaluate_run(run_dir, store_path)
        report, post = evaluated.report, evaluated.post_report
    return TrainResult(run_dir, report, post, result.best_epoch, result.last_f1, result.stopped_early,
                       evaluated)


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
    model.load_state_dict(state)
    return model.eval(), cfg, info, meta


def evaluate_run(run_dir: str | Path, store_path: str | Path | None = None,
                 split: str = "val") -> EvalResult:
    """Evaluate a run's checkpoint on every annotated frame of its validation videos (those of
    its own split) and write ``RUN_DIR/eval/`` (primary rank)."""
    run_dir = Path(run_dir)
    model, cfg, info, meta = load_run_model(run_dir)
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
    missing = [v for v in names if not store.is_complete(v)]
    if missing:
        raise UsageError(f"{store.path}: {len(missing)} {split} video(s) of the run are missing "
                         f"from the store: {', '.join(missing[:10])}")
    loaded = store.load(names)
    cache = TemporalCache.from_store(loaded, device if cfg.stage2.data.preload == "device" else "cpu")
    rule = decision_rule(cfg.stage2.model)
    res = evaluate(model.to(device), cache, cfg.stage2.data.clip_len, eval_stride(cfg), cfg.stage2.post,
                   rule=rule)
    if distributed.is_primary():
        write_eval(run_dir / "eval", res, loaded, cfg,
                   title=f"{split}: macro-F1 {100 * res.report.macro_f1:.2f} (epoch {meta.get('epoch')})",
                   extra={"split": split, "checkpoint_epoch": meta.get("epoch"), "decision_rule": rule,
                          "videos": len(names), "frames_scored": int(res.report.support.sum())})
    return res


def write_eval(out: Path, res: EvalResult, loaded: LoadedStore, cfg: Config, title: str,
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
    frames = np.concatenate([np.arange(1, n + 1) for n in loaded.lengths()])
    videos = np.repeat(np.asarray(loaded.videos, dtype=object), loaded.lengths())
    df = pd.DataFrame({"video": videos, "frame": frames.astype(np.int32), "label": loaded.label,
                       "face": loaded.face, "pred": decide(res.probs, res.rule).astype(np.int8)})
    if res.post_probs is not None:
        df["pred_post"] = decide(res.post_probs, res.rule).astype(np.int8)
    for k, c in enumerate(CLASSES):
        df[f"p_{c}"] = res.probs[:, k].astype(np.float32)
    write_parquet(out / "predictions.parquet", df)


# ------------------------------------------------------------------------------------ protocols
def f1_values(report: F1Report) -> dict:
    """Per-class F1 and their average (macro-F1), in %."""
    return {**{c: round(100 * float(f), 2) for c, f in zip(CLASSES, report.f1)},
            "Avg": round(100 * report.macro_f1, 2)}


def f1_row(name: str, report: F1Report) -> dict:
    return {"val_set": name, **f1_values(report)}


def kfold(store_path: str | Path, out: str | Path, cfg: Config,
          folds: int) -> tuple[pd.DataFrame, dict[str, TrainResult]]:
    """Table-1-shaped report (V-NAW paper): one row per random 7:3 video split plus the
    official split; columns = per-class F1 and the average, in %. Also returns each run."""
    out = Path(out)
    rows, runs = [], {}
    plan = [("official", {"split": "official"})] + [
        (f"fold-{k + 1}", {"split": "kfold", "folds": folds, "fold": k}) for k in range(folds)]
    for name, data in plan:
        c = cfg.model_copy(deep=True)
        c.stage2.data = c.stage2.data.model_copy(update=data)
        res = train(store_path, out / name, c)
        if res.report is None:
            raise UsageError(f"{name}: no validation videos")
        rows.append(f1_row(name, res.report))
        runs[name] = res
    table = pd.DataFrame(rows)
    if distributed.is_primary():
        atomic_write(out / "kfold.csv", lambda p: table.to_csv(p, index=False))
        write_text(out / "kfold.md", "# F1 (%) per validation set\n\n" + to_markdown(table))
    return table, runs


# Runs reported over seeds keep their last epoch on the official split, so no number is chosen
# on the set it is reported on.
_REPORTED_RUN = {"train": {"keep": "last"}, "data": {"split": "official"}}


def _seed_runs(store_path: str | Path, out: Path, cfg: Config, seeds: int,
               variants: list[tuple[str, dict[str, dict]]], what: str):
    """Train each ``(tag, {stage2 section: updates})`` variant of ``cfg`` for ``seeds`` seeds
    (``cfg.seed + i``) into ``out/tag/seed{i}``; yields ``(tag, config, TrainResult)``."""
    if seeds < 1:
        raise UsageError(f"--seeds must be at least 1 (got {seeds})")
    for tag, updates in variants:
        for seed in range(seeds):
            c = cfg.model_copy(deep=True)
            c.seed = cfg.seed + seed
            for section in {**updates, **_REPORTED_RUN}:
                setattr(c.stage2, section, getattr(c.stage2, section).model_copy(
                    update={**updates.get(section, {}), **_REPORTED_RUN.get(section, {})}))
            res = train(store_path, out / tag / f"seed{seed}", c)
            if res.report is None:
                raise UsageError(f"the store has no validation videos to evaluate the {what} on")
            yield tag, c, res


def _mean_std_table(per_run: pd.DataFrame, rows: list[str]) -> pd.DataFrame:
    """One row per name in ``rows``: per-class F1 and Avg of its runs as 'mean ± std'."""
    cols = list(CLASSES) + ["Avg"]
    g = per_run.groupby("row", sort=False)
    mean, std = g[cols].mean(), g[cols].std(ddof=1).fillna(0.0)
    return pd.DataFrame({c: [f"{mean.loc[r, c]:.2f} ± {std.loc[r, c]:.2f}" for r in rows]
                         for c in cols}, index=rows)


def _write_seed_report(out: Path, stem: str, per_run: pd.DataFrame, table: pd.DataFrame,
                       title: str) -> None:
    """``out/{stem}_runs.csv`` (one line per run and row), ``{stem}.csv`` and ``{stem}.md``."""
    if distributed.is_primary():
        atomic_write(out / f"{stem}_runs.csv", lambda p: per_run.to_csv(p, index=False))
        atomic_write(out / f"{stem}.csv", lambda p: table.to_csv(p, index_label="row"))
        write_text(out / f"{stem}.md", f"# {title}\n\n" + to_markdown(table.reset_index(names="row")))


ABLATION_ROWS = (("vanilla", False, False), ("+Aug", True, False), ("+NAW", False, True),
                 ("+Aug +NAW", True, True))


def ablate(store_path: str | Path, out: str | Path, cfg: Config, seeds: int) -> pd.DataFrame:
    """V-NAW Table 2: the four aug/NAW combinations, each over ``seeds`` seeds, official split.
    Every run keeps its last epoch, so no number is chosen on the set it is reported on."""
    out = Path(out)
    names = {name.replace(" ", "").replace("+", "plus_") or "vanilla": (name, aug, naw)
             for name, aug, naw in ABLATION_ROWS}
    variants = [(tag, {"aug": {"enabled": aug}, "naw": {"enabled": naw}})
                for tag, (_, aug, naw) in names.items()]
    runs = []
    for tag, c, res in _seed_runs(store_path, out, cfg, seeds, variants, "ablation"):
        name, aug, naw = names[tag]
        runs.append({"row": name, "aug": aug, "naw": naw, "seed": c.seed,
                     **f1_row(name, res.report), "best_epoch_f1": round(100 * max(
                         r.get("val_macro_f1", 0) for r in read_jsonl(res.run_dir / "metrics.jsonl")), 2)})
    per_run = pd.DataFrame(runs)
    table = _mean_std_table(per_run, [r for r, _, _ in ABLATION_ROWS])
    table.insert(0, "NAW", ["✓" if n else "" for _, _, n in ABLATION_ROWS])
    table.insert(0, "Aug", ["✓" if a else "" for _, a, _ in ABLATION_ROWS])
    _write_seed_report(out, "ablation", per_run, table,
                       f"Ablation: macro-F1 and per-class F1 (%), mean ± std over {seeds} seed(s)")
    return table


HEADS_ROWS = ("flat", "flat + SP", "CFC-SP soft", "CFC-SP soft + SP", "CFC-SP hard",
              "CFC-SP hard + SP")


def compare_heads(store_path: str | Path, out: str | Path, cfg: Config, seeds: int) -> pd.DataFrame:
    """Flat head vs CFC-SP over ``seeds`` seeds each, official split, last epoch kept. Rows:
    each head's raw output and "+ SP" (Smooth Predicting: the run's post-processing with the
    centred moving average over ``stage2.post.smoothing_window()`` frames); the CFC-SP runs are
    scored under both decision rules (soft / hard cascade) from the same probabilities."""
    out = Path(out)
    window = cfg.stage2.post.smoothing_window()
    post = {"smooth_window": window}
    variants = [("flat", {"model": {"head": "flat", "cascade": "soft"}, "post": post}),
                ("cfcsp", {"model": {"head": "cfcsp"}, "post": post})]
    runs = []
    for head, c, res in _seed_runs(store_path, out, cfg, seeds, variants, "heads"):
        rules = ("soft",) if head == "flat" else ("soft", "hard")
        for rule in rules:
            raw, smoothed = res.eval.reports(rule)
            name = "flat" if head == "flat" else f"CFC-SP {rule}"
            for row, report in ((name, raw), (f"{name} + SP", smoothed)):
                runs.append({"row": row, "head": head, "cascade": rule if head == "cfcsp" else "",
                             "smooth_window": window if row.endswith("+ SP") else 0,
                             "seed": c.seed, **f1_values(report)})
    per_run = pd.DataFrame(runs)
    table = _mean_std_table(per_run, list(HEADS_ROWS))
    interp = ", no-face frames interpolated" if cfg.stage2.post.interpolate else ""
    _write_seed_report(out, "heads", per_run, table,
                       f"Flat head vs CFC-SP: per-class F1 and Avg (macro-F1, %), mean ± std over "
                       f"{seeds} seed(s); + SP = centred moving average over {window} frames{interp}")
    return table
