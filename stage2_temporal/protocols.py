"""Protocols over several stage-2 runs: the Table-1-shaped k-fold report, the Table-2 ablation
over seeds, and flat head vs CFC-SP. Every reported run keeps its last epoch on the official
split, so no number is chosen on the set it is reported on."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline import distributed
from pipeline.config import Config
from pipeline.errors import UsageError
from pipeline.io import atomic_write, read_jsonl, write_text
from pipeline.labels import CLASSES
from pipeline.metrics import F1Report, to_markdown
from stage2_temporal.runs import TrainResult, train


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
