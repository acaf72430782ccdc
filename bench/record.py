"""The benchmark record: the Markdown table of ``results.md`` written from the rows of
``results.json`` (figure, target, measured, ratio, load, machine), and the merging of a re-run of
some suites into an existing record. ``bench.run_all`` runs the suites and writes both files."""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

BENCH = Path(__file__).resolve().parent

# Figures only a CUDA machine produces (``--gpu``, whose record is bench/gpu/results.{json,md});
# the CPU record lists them with the GPU record's value, or as not measured.
GPU_RECORD = BENCH / "gpu"
GPU_ONLY = {
    "stage1 swin_base bf16 channels-last forward, frames/s": (3000, False, "frames/s"),
    "stage2 GPU epoch over 600k x 1024 frames, s": (5.0, True, "s"),
}


def busy_limit() -> float:
    """The 1-min load average above which the machine counts as busy: cores + 0.5."""
    return (os.cpu_count() or 1) + 0.5


# At most this many runnable threads of *other* processes, on average over a suite, leave its
# rows valid: other work took at most half a core.
OTHER_LIMIT = 0.5


def fmt(v) -> str:
    if v is None:
        return "—"
    v = float(v)
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def ratio(r: dict) -> float | None:
    """Measured against the target, oriented so that >= 1 means the target is met."""
    if r.get("target") in (None, 0) or not r.get("measured"):
        return None
    m, t = float(r["measured"]), float(r["target"])
    return t / m if r.get("lower_is_better") else m / t


def table_line(r: dict, where: str = "") -> str:
    """One row of the figures table; ``where`` follows the machine (e.g. which record it is from)."""
    tgt = "—" if r.get("target") is None else f"{'≤' if r['lower_is_better'] else '≥'} {fmt(r['target'])}"
    q = ratio(r)
    rq = "—" if q is None else f"{q:.2f} {'✓' if q >= 1 else '✗'}"
    other = r.get("other_load")
    if r.get("valid") is False:
        rq = (f"invalid (other {other:.2f} > {OTHER_LIMIT:g})" if other is not None
              else f"invalid (load {r['load']:.1f} > {busy_limit():g})")
    ld = "—" if r.get("load") is None else f"{r['load']:.1f}"
    if r.get("load_independent") and ld != "—":
        ld += " (n/a)"
    return (f"| {r['figure']} | {tgt} | {fmt(r['measured'])} | {r['unit']} | {rq} | {ld} | "
            f"{'—' if other is None else f'{other:.2f}'} | {r['machine']}{where} |")


def markdown(rows: list[dict], runs: dict[str, tuple], command: str, git_sha: str,
             load: str = "", header: str | None = None, gpu_rows: list[dict] = ()) -> str:
    """The results table. ``runs``: suite -> (seconds, error) or (seconds, error, load before,
    load after[, other processes' mean runnable threads]). ``header``: the sentence saying what
    produced the table (default: ``command`` at ``git_sha``, today, ``load``). ``gpu_rows``: the
    GPU record's rows, which give the GPU-only figures this table does not hold."""
    invalid = [r for r in rows if r.get("valid") is False]
    lines = [
        "# Benchmark results",
        "",
        (header or f"`{command}` at commit `{git_sha}`, {_dt.date.today().isoformat()}{load}") + ". "
        "Ratio = measured / target (target / measured where lower is better): ≥ 1 meets the target. "
        "Load = the 1-minute load average around the row's suite (its own threads included); "
        "other = the mean number of runnable threads of other processes while it ran, sampled "
        f"every second: above {OTHER_LIMIT:g} (other work took more than half a core; without "
        f"/proc: a load above cores + 0.5 = {busy_limit():g}) the row is **invalid**, neither a hit "
        "nor a miss; rows marked n/a are figures the load cannot change. How each figure is measured: the docstring of its `bench/*.py`; what they "
        "imply at dataset scale: [docs/scaling.md](../docs/scaling.md).",
        "",
    ]
    if invalid:
        lines += [f"{len(invalid)} of {len(rows)} rows invalid (measured under load).", ""]
    lines += ["| figure | target | measured | unit | ratio | load | other | machine |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [table_line(r) for r in rows]
    have = {r["figure"] for r in rows}
    on_gpu = {r["figure"]: r for r in gpu_rows}
    for fig, (target, lower, unit) in GPU_ONLY.items():
        if fig in have:
            continue
        g = on_gpu.get(fig)
        if g is None:
            lines.append(f"| {fig} | {'≤' if lower else '≥'} {fmt(target)} | not measured | {unit} | — | — | "
                         "— | needs a CUDA device: `python -m bench.run_all --gpu` |")
            continue
        lines.append(table_line({**g, "unit": unit}, where=": the GPU record, [gpu/results.md](gpu/results.md)"))
    lines += ["", "| suite | seconds | load before → after | other | status |", "|---|---|---|---|---|"]
    for name, run in runs.items():
        seconds, error = run[0], run[1]
        ld = f"{run[2]:.1f} → {run[3]:.1f}" if len(run) > 3 else "—"
        ot = f"{run[4]:.2f}" if len(run) > 4 and run[4] is not None else "—"
        lines.append(f"| {name} | {seconds:.0f} | {ld} | {ot} | {error or 'ok'} |")
    return "\n".join(lines) + "\n"


def read_suite_runs(md: str) -> dict[str, tuple]:
    """The suite table of a results.md written by :func:`markdown`: suite -> (seconds, error,
    load before, load after, other) (``None`` where it shows a dash)."""
    runs = {}
    for line in md.split("| suite | seconds |", 1)[-1].splitlines()[2:] if "| suite | seconds |" in md else []:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5:
            continue
        name, seconds, ld, other, status = cells
        before, _, after = ld.partition(" → ")
        num = (lambda x: None if x in ("", "—") else float(x))
        runs[name] = (float(seconds), None if status == "ok" else status, num(before), num(after), num(other))
    return runs


def merge_rows(old: list[dict], new: list[dict], suites: list[str]) -> list[dict]:
    """``old`` with the rows of ``suites`` replaced by ``new``: each suite's new rows in place of
    its first old row (a suite new to the table at the end). A row belongs to a suite by its
    ``suite`` field, or, in tables written before rows carried it, by the figure's ``<suite>:``
    prefix or a figure name the suite's new rows share."""
    def owner(r: dict) -> str | None:
        if r.get("suite") in suites:
            return r["suite"]
        for s in suites:
            if r["figure"] in figures[s] or ("suite" not in r and r["figure"].startswith(f"{s}:")):
                return s
        return None

    figures = {s: {r["figure"] for r in new if r.get("suite") == s} for s in suites}
    fresh = {s: [r for r in new if r.get("suite") == s] for s in suites}
    fresh[None] = [r for r in new if r.get("suite") not in suites]
    out: list[dict] = []
    placed = set()
    for r in old:
        s = owner(r)
        if s is None:
            out.append(r)
        elif s not in placed:
            out += fresh[s]
            placed.add(s)
    return out + [r for s in [*suites, None] if s not in placed for r in fresh[s]]


def merge_header(old_md: str, only: list[str], how: str) -> str:
    """The record line of a merged results.md: the earlier line, each earlier re-run naming only
    the suites whose rows it still holds (one with none left is dropped), plus this re-run."""
    lines = old_md.splitlines()
    before = lines[2].split(". Ratio =", 1)[0] if len(lines) > 2 and lines[2].startswith("`") else "earlier runs"
    first, *reruns = before.split("; suites ")
    kept = []
    for clause in reruns:
        suites, _, how_then = clause.partition(" re-run with ")
        left = [x for x in suites.split(", ") if x not in only]
        if left:
            kept.append(f"{', '.join(left)} re-run with {how_then}")
    return "; suites ".join([first, *kept, f"{', '.join(only)} re-run with {how}"])
