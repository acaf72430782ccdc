"""Benchmark plumbing: timing, machine description, JSON rows
``{figure, measured, target, unit, lower_is_better, machine, load}``. A suite writes its rows to
its own file; only ``bench.run_all`` writes the record (bench/results.json and results.md), so a
suite tried on its own never changes it."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()} {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def timeit(fn, repeat: int = 5, warmup: int = 1) -> float:
    """Best-of-``repeat`` seconds of ``fn()`` (synchronising CUDA)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def bracketed(base, measured, rounds: int):
    """Rates of two code paths over ``rounds`` rounds: base, measured(0), base, measured(1), ...,
    base. Each measured run is compared with the mean of the base runs just before and just after
    it, which cancels a drift of the machine's speed across the round (a shared 2-core machine
    drifts by 20 % within a minute: the best of each side, or one run of each, pairs measurements
    taken in different states of the machine). ``base()`` and ``measured(k)`` return a rate.
    Returns (base rates, measured rates, per-round ratios), numpy arrays; the figure is the
    median ratio."""
    base_rates, measured_rates = [base()], []
    for k in range(rounds):
        measured_rates.append(measured(k))
        base_rates.append(base())
    base_rates, measured_rates = np.array(base_rates), np.array(measured_rates)
    return base_rates, measured_rates, measured_rates / ((base_rates[:-1] + base_rates[1:]) / 2)


def ratio_row(figure: str, ratios, target: float, **extra) -> dict:
    """The median of per-round ratios as a figure, with the range of the rounds."""
    return row(figure, np.median(ratios), "x", target=target, ratio_min=round(float(ratios.min()), 3),
               ratio_max=round(float(ratios.max()), 3), **extra)


def row(figure: str, measured: float, unit: str, target: float | None = None,
        lower_is_better: bool = False, timing: bool = True, **extra) -> dict:
    """One figure; ``load`` is the 1-min load average now (``bench.run_all`` replaces it by the
    load around the whole suite and marks the row invalid above cores + 0.5). ``timing=False``
    for a figure other work on the machine cannot change (bytes, FLOPs, memory, F1, a
    partition): it stays valid under load (``load_independent``)."""
    out = {"figure": figure, "measured": round(float(measured), 4), "target": target, "unit": unit,
           "lower_is_better": lower_is_better, "machine": machine(),
           "load": round(os.getloadavg()[0], 2), **extra}
    if not timing:
        out["load_independent"] = True
    return out


def write_rows(rows: list[dict], out: Path | None = None) -> None:
    """Write this script's rows to ``out`` (``--out``) and print them."""
    if out is not None:
        out.write_text(json.dumps(rows, indent=2) + "\n")
    for r in rows:
        tgt = "" if r["target"] is None else f" (target {'<=' if r['lower_is_better'] else '>='} {r['target']})"
        print(f"{r['figure']}: {r['measured']} {r['unit']}{tgt}")
