"""Protocols over several stage-2 runs: the Table-1-shaped k-fold report, the Table-2 ablation
over seeds, and flat head vs CFC-SP. Every reported run keeps its last epoch on the official
split, so no number is chosen on the set it is reported on."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from fer_pipeline import distributed
from fer_pipeline.config import Config
from fer_pipeline.errors import UsageError
from fer_pipeline.io import atomic_write, read_jsonl, write_text
from fer_pipeline.labels import CLASSES
from fer_pipeline.metrics import F1Report, to_markdown
from stage2_temporal.runs import TrainResult, evaluate_run, train


def f1_values(report: F1Report) -> dict:
    """Per-class F1 and their average (macro-F1), in %."""
    return {**{c: round(100 * float(f), 2) for c, f in zip(CLASSES, report.f1)},
            "Avg": round(100 * report.macro_f1, 2)}


def f1_row(name: str, report: F1Report) -> dict:
    return {"val_set": name, **f1_values(report)}


SELECT_RATIO = 0.15     # share of training frames that choose the checkpoint in k-fold runs


def kfold(store_path: str | Path, out: str | Path, cfg: Config, folds: int,
          split: str = "kfold") -> tuple[pd.DataFrame, dict[str, TrainResult]]:
    """Table-1-shaped report (V-NAW paper): the official split plus ``folds`` rows, either K
    disjoint folds of all annotated videos (``split="kfold"``: every video validated once) or
    K independent random 7:3 video draws (``"random"``, the paper's protocol); columns =
    per-class F1 and the average, in %.

    No reported F1 comes from an epoch chosen on the videos it is reported on: a run that keeps
    its best epoch (``train.keep: best``) chooses it on a share of its training videos
    (``data.select_ratio``, 0.15 when unset), and the last epoch of every run is reported too
    (``kfold_last.{csv,md}``). Returns the table of the kept checkpoints and each run."""
    if split not in ("kfold", "random"):
        raise UsageError(f"split must be kfold or random, got {split!r}")
    out = Path(out)
    rows, last_rows, runs = [], [], {}
    plan = [("official", {"split": "official"})] + [
        (f"fold-{k + 1}", {"split": split, "folds": folds, "fold": k}) for k in range(folds)]
    best = cfg.stage2.train.keep == "best"
    for name, data in plan:
        c = cfg.model_copy(deep=True)
        if best and not c.stage2.data.select_ratio:
            data = {**data, "select_ratio": SELECT_RATIO}
        c.stage2.data = c.stage2.data.model_copy(update=data)
        res = train(store_path, out / name, c)
        if res.report is None:
            raise UsageError(f"{name}: no validation videos")
        rows.append(f1_row(name, res.report))
        last = evaluate_run(res.run_dir, weights="last").report if best else res.report
        last_rows.append(f1_row(name, last))
        runs[name] = res
    table, last_table = pd.DataFrame(rows), pd.DataFrame(last_rows)
    if distributed.is_primary():
        what = {"kfold": f"{folds} disjoint folds", "random": f"{folds} random 7:3 video draws"}[split]
        chosen = (f"checkpoint chosen on {int(100 * (cfg.stage2.data.select_ratio or SELECT_RATIO))} % "
                  f"of each run's training frames" if best else "last epoch")
        atomic_write(out / "kfold.csv", lambda p: table.to_csv(p, index=False))
        write_text(out / "kfold.md", f"# F1 (%) per validation set: official + {what}; {chosen}\n\n"
                   + to_markdown(table))
        atomic_write(out / "kfold_last.csv", lambda p: last_table.to_csv(p, index=False))
        write_text(out / "kfold_last.md", f"# F1 (%) per validation set: official + {what}; last "
                   f"epoch\n\n" + to_markdown(last_table))
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


# (row, token augmentation, NAW form or None = plain CE, token-drop mode, positional encoding)
ABLATION_ROWS = (
    ("vanilla", False, None, "remove", "none"),
    ("+Aug", True, None, "remove", "none"),
    ("+Aug (key mask)", True, None, "key_mask", "none"),
    ("+NAW (paper)", False, "paper", "remove", "none"),
    ("+NAW (official)", False, "official", "remove", "none"),
    ("+NAW (frame_detached)", False, "frame_detached", "remove", "none"),
    ("+Aug +NAW (paper)", True, "paper", "remove", "none"),
    ("+Aug +NAW (official)", True, "official", "remove", "none"),
    ("+Aug +NAW (frame_detached)", True, "frame_detached", "remove", "none"),
    ("+Aug +NAW (paper) + sine pos", True, "paper", "remove", "sine"),
    ("+Aug +NAW (paper) + learned pos", True, "paper", "remove", "learned"),
)


def _tag(name: str) -> str:
    """Folder name of a row: '+Aug +NAW (paper)' -> 'plus_Augplus_NAW_paper'."""
    return name.replace("+", "plus_").replace(" ", "").replace("(", "_").replace(")", "")


def ablate(store_path: str | Path, out: str | Path, cfg: Config, seeds: int,
           rows: list[str] | None = None) -> pd.DataFrame:
    """V-NAW Table 2 and the variants this project offers, each over ``seeds`` seeds on the
    official split: vanilla, +Aug (frame skipping as removal, and as key masking), +NAW in the
    paper form and in the frame_detached form, and both with +Aug. Rows without NAW train on
    the CE the configured form uses (paper: CE of the clip mean, eq. 10). Every run keeps its
    last epoch, so no number is chosen on the set it is reported on. The ``official`` rows need a
    store embedded with ``stage1.embed.flip``; the last rows add positional encoding to the
    paper form. ``rows``: only these rows (names of ``ABLATION_ROWS``)."""
    out = Path(out)
    unknown = sorted(set(rows or []) - {r[0] for r in ABLATION_ROWS})
    if unknown:
        raise UsageError(f"unknown ablation row(s) {unknown}; rows: "
                         + ", ".join(repr(r[0]) for r in ABLATION_ROWS))
    chosen = [r for r in ABLATION_ROWS if rows is None or r[0] in rows]
    plain_target = cfg.stage2.loss_target()
    variants, names = [], {}
    for name, aug, form, drop, pos in chosen:
        tag = _tag(name)
        # a NAW row is its form exactly (target and weight gradient as the form says)
        naw = {"enabled": form is not None, "form": form or cfg.stage2.naw.form,
               **({"weight_grad": None} if form else {})}
        loss = {"target": None if form else plain_target}
        variants.append((tag, {"aug": {"enabled": aug, "drop_mode": drop}, "naw": naw, "loss": loss,
                               "model": {"pos": pos}}))
        names[tag] = (name, aug, form, drop, pos)
    runs = []
    for tag, c, res in _seed_runs(store_path, out, cfg, seeds, variants, "ablation"):
        name, aug, form, drop, pos = names[tag]
        runs.append({"row": name, "aug": aug, "naw": form or "", "drop_mode": drop if aug else "",
                     "pos": pos,
                     "target": c.stage2.loss_target(), "weight_grad": c.stage2.grad_through_weight()
                     if form else "", "seed": c.seed, **f1_row(name, res.report),
                     "best_epoch_f1": round(100 * max(
                         r.get("val_macro_f1", 0) for r in read_jsonl(res.run_dir / "metrics.jsonl")), 2)})
    per_run = pd.DataFrame(runs)
    table = _mean_std_table(per_run, [r[0] for r in chosen])
    table.insert(0, "pos", [p for *_, p in chosen])
    table.insert(0, "NAW", [f or "" for _, _, f, _, _ in chosen])
    table.insert(0, "Aug", [("✓" + (" key mask" if d == "key_mask" else "")) if a else ""
                            for _, a, _, d, _ in chosen])
    _write_seed_report(out, "ablation", per_run, table,
                       f"Ablation: macro-F1 and per-class F1 (%), mean ± std over {seeds} seed(s); "
                       f"rows without NAW train on the {plain_target} CE")
    return table


HEAD_NAMES = {"flat": "flat", "cfcsp": "CFC (two networks)", "cfcsp_shared": "CFC (shared trunk)"}
HEADS_ROWS = tuple(
    f"{HEAD_NAMES[head]}{'' if head == 'flat' else ' ' + rule}{sp}"
    for head in HEAD_NAMES for rule in (("soft",) if head == "flat" else ("soft", "hard"))
    for sp in ("", " + SP"))


def compare_heads(store_path: str | Path, out: str | Path, cfg: Config, seeds: int) -> pd.DataFrame:
    """Flat head vs CFC-SP as two networks vs CFC-SP as one shared trunk, over ``seeds`` seeds
    each, official split, last epoch kept. Rows: each head's raw output and "+ SP" (Smooth
    Predicting, ``evaluate.smooth_predict``: the run's post-processing with the window
    ``stage2.post.smoothing_window()`` and moment weight ``stage2.post.moment_weight``); the
    CFC-SP runs are scored under both decision rules (soft / hard cascade) from the same
    probabilities."""
    out = Path(out)
    window = cfg.stage2.post.smoothing_window()
    post = {"smooth_window": window}
    variants = [("flat", {"model": {"head": "flat", "cascade": "soft"}, "post": post}),
                ("cfcsp", {"model": {"head": "cfcsp"}, "post": post}),
                ("cfcsp_shared", {"model": {"head": "cfcsp_shared"}, "post": post})]
    runs = []
    for head, c, res in _seed_runs(store_path, out, cfg, seeds, variants, "heads"):
        rules = ("soft",) if head == "flat" else ("soft", "hard")
        for rule in rules:
            # the per-frame probabilities are on the primary rank under DDP
            raw, smoothed = distributed.broadcast_object(
                res.eval.reports(rule) if distributed.is_primary() else None)
            name = HEAD_NAMES[head] + ("" if head == "flat" else f" {rule}")
            for row, report in ((name, raw), (f"{name} + SP", smoothed)):
                runs.append({"row": row, "head": head, "cascade": rule if head != "flat" else "",
                             "smooth_window": window if row.endswith("+ SP") else 0,
                             "moment_weight": cfg.stage2.post.moment_weight if row.endswith("+ SP") else "",
                             "seed": c.seed, **f1_values(report)})
    per_run = pd.DataFrame(runs)
    table = _mean_std_table(per_run, list(HEADS_ROWS))
    interp = ", no-face frames interpolated" if cfg.stage2.post.interpolate else ""
    _write_seed_report(out, "heads", per_run, table,
                       f"Flat head vs CFC-SP (two networks / shared trunk): per-class F1 and Avg "
                       f"(macro-F1, %), mean ± std over {seeds} seed(s); + SP = Smooth Predicting "
                       f"over {window} frames, moment weight {cfg.stage2.post.moment_weight}{interp}")
    return table
