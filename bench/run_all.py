"""The benchmark suite: every stage benchmark in turn (each in its own process), their JSON rows
collected into ``results.json`` and a Markdown table ``results.md`` (figure, target, measured,
ratio, machine).

    python -m bench.run_all                     # this machine; writes bench/results.{json,md}
    python -m bench.run_all --gpu               # on a CUDA machine: + swin_base and GPU-epoch
                                                #   figures; writes bench/gpu/results.{json,md}
    python -m bench.run_all --render            # rewrite results.md (e.g. after bench/gpu/ changed)
    python -m bench.run_all --quick             # smoke run at tiny sizes, into a temp dir
    python -m bench.run_all --only stage1 flops --out-dir /tmp/b

Suites (module ``bench.<name>``): stage0 (decode/detect/full stage, parallel jobs), stage1 (embed
throughput), stage2 (cached vs backbone-in-the-loop step, clip assembly, ``--gpu`` epoch), flops
(work per frame of each model), scale (a 2.8 M x 1024 store: disk / payload, load, stage-2 peak
PSS / payload at 1 process and 4 local ranks, mmap / RAM epoch, training under a memory cap),
crops (stage-0 bytes per frame, loader rate), linear_probe (per-frame probe on the demo data's
store, frozen bundled encoder), balance (largest / mean shard frames). A suite that fails is
reported in the table and the exit code is 1; the others still run.

Load: the 1-minute load average is recorded before and after each suite and sampled every 5 s
while it runs (``load_before``, ``load_after``, ``load`` = the largest, on every row), and the
runnable threads of every process outside the suite's process tree are counted every second
(``other_load`` = their mean). The load average counts the suite's own threads too (stage 0 with
2 jobs lifts it above 3 on 2 cores by itself), so ``other_load`` decides: above 0.5 (other work
took more than half a core) the suite's rows are marked invalid: not a measurement of this code,
neither a hit nor a miss of a target. Without /proc a load above cores + 0.5 does. Figures the
load cannot change (bytes, FLOPs, memory, F1 scores, a partition: rows with
``load_independent``) stay valid.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.record import (GPU_RECORD, OTHER_LIMIT, busy_limit, markdown, merge_header,
                          merge_rows, read_suite_runs)

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SHARED_VIDEOS = ROOT.parent / "shared" / "assets" / "videos"
SUITES = ("stage0", "stage1", "stage2", "flops", "scale", "crops", "linear_probe", "balance")
MODULES = {"scale": "bench.scale_store"}

def suite_args(name: str, quick: bool, gpu: bool) -> list[str] | None:
    """Command-line arguments of one suite (None: cannot run here)."""
    if name == "stage0":
        videos = sorted(SHARED_VIDEOS.glob("*.mp4")) if SHARED_VIDEOS.is_dir() else []
        if not videos:
            return None
        if quick:      # the two shortest clips
            videos = sorted(videos, key=lambda v: v.stat().st_size)[:2]
        return ["--videos", *map(str, videos)] + (["--repeat", "1"] if quick else [])
    if name == "stage1":
        return (["--frames", "128", "--repeat", "1"] if quick else []) + (["--model", "base"] if gpu else [])
    if name == "stage2":
        return (["--skip-base", "--clips", "2", "--clip-len", "32"] if quick else []) + (["--gpu"] if gpu else [])
    if name == "scale":
        return ["--frames", "20000", "--videos", "20", "--ranks", "2"] if quick else []
    if name == "crops":
        videos = sorted(SHARED_VIDEOS.glob("*.mp4")) if SHARED_VIDEOS.is_dir() else []
        if not videos:
            return None
        if quick:      # the shortest clip, one crop size
            return ["--videos", str(min(videos, key=lambda v: v.stat().st_size)), "--sizes", "112"]
        return ["--videos", str(SHARED_VIDEOS)]
    if name == "linear_probe":     # always the same store, built from the repository alone: a
        # store left in artifacts/ by an earlier demo depends on how that demo ran (fine-tuned or
        # frozen encoder), and the figure would change meaning with it
        return ["--build"] + (["--quick"] if quick else [])     # generated demo data, bundled encoder
    return []


def run_child(name: str, argv: list[str]) -> None:
    """Inside the suite's process: its ``main`` writes its rows to ``--out``."""
    importlib.import_module(MODULES.get(name, f"bench.{name}")).main(argv)


def mark_load(rows: list[dict], before: float, after: float, peak: float = 0.0,
              other: float | None = None) -> list[dict]:
    """Every row of a suite gets the load it ran under and whether that leaves it valid.

    ``load`` is the larger of the 1-min load average before and after the suite and the highest
    sampled while it ran. The load average cannot tell a suite's own threads from other work (a
    stage-0 run with 2 jobs, each with decoder and ONNX threads, lifts it above 3 on 2 cores by
    itself), so when ``other`` -- the mean number of runnable threads outside the suite's process
    tree, sampled while it ran -- is known, a row is valid when it is at most ``OTHER_LIMIT``;
    without it (no /proc), when ``load`` is at most cores + 0.5. Figures the load cannot change
    (``load_independent``) stay valid either way."""
    load = max(before, after, peak)
    busy = (other > OTHER_LIMIT) if other is not None else load > busy_limit()
    for r in rows:
        r.update(load=round(load, 2), load_before=round(before, 2), load_after=round(after, 2),
                 other_load=None if other is None else round(other, 2),
                 valid=not busy or bool(r.get("load_independent")))
    return rows


def _proc_table() -> dict[int, tuple[int, list[str]]]:
    """pid -> (parent pid, states of its threads) from /proc (Linux)."""
    table = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            states = []
            for t in os.listdir(f"/proc/{d}/task"):
                with open(f"/proc/{d}/task/{t}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            table[int(d)] = (ppid, states)
        except (OSError, IndexError, ValueError):   # the process ended while being read
            continue
    return table


def other_runnable(root: int) -> int:
    """Runnable threads of processes outside ``root``'s process tree, right now."""
    table = _proc_table()
    ours, changed = {root}, True
    while changed:
        changed = False
        for pid, (ppid, _) in table.items():
            if ppid in ours and pid not in ours:
                ours.add(pid)
                changed = True
    return sum(st.count("R") for pid, (_, st) in table.items() if pid not in ours)


class LoadWatch:
    """Samples, in a thread, the 1-min load average every ``every`` s (``peak`` = the highest)
    and the runnable threads of other processes every second (``other`` = their mean; None
    without /proc)."""

    def __init__(self, every: float = 5.0):
        self.peak, self._every = 0.0, every
        self._others: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def other(self) -> float | None:
        return sum(self._others) / len(self._others) if self._others else None

    def _run(self):
        tick = 0
        while not self._stop.is_set():
            if tick % max(1, round(self._every)) == 0:
                self.peak = max(self.peak, os.getloadavg()[0])
            if os.path.isdir("/proc/self/task"):
                self._others.append(other_runnable(os.getpid()))
            tick += 1
            self._stop.wait(1.0)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_suite(name: str, argv: list[str], out_dir: Path) -> tuple[list[dict], float, str | None]:
    """(rows, seconds, error) of one suite run in a fresh process."""
    out = out_dir / f"{name}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "bench.run_all", "--child", name, "--", *argv, "--out", str(out)]
    print(f"== {name}: python -m {MODULES.get(name, f'bench.{name}')} {' '.join(argv)}", flush=True)
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT)
    seconds = time.perf_counter() - t
    if proc.returncode != 0 or not out.is_file():
        return [], seconds, f"exit code {proc.returncode}"
    return json.loads(out.read_text()), seconds, None


def git_sha() -> str:
    """The short commit of the tree, ``+uncommitted changes`` when tracked files differ from it.
    A copy of the tree whose ``.git`` is missing or older than its files (a job's staging copy on
    a GPU node) names its commit in the environment variable ``BENCH_COMMIT``."""
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"] + " (named by BENCH_COMMIT)"
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":!bench/results.md", ":!bench/results.json"],   # its own output
                               cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+uncommitted changes" if dirty else "") or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", action="store_true", help="CUDA machine: swin_base and GPU-epoch figures")
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run; default out: temp dir)")
    p.add_argument("--only", nargs="+", choices=SUITES, metavar="SUITE", help=f"some of {', '.join(SUITES)}")
    p.add_argument("--out-dir", type=Path, help="where results.{json,md} go (default bench/)")
    p.add_argument("--merge", action="store_true",
                   help="with --only: replace those suites' rows and records in the existing "
                        "results.{json,md}, keep the other suites' as they were measured")
    p.add_argument("--render", action="store_true",
                   help="run nothing: rewrite results.md from results.json and the record of its "
                        "suites (after the GPU record changed)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args, rest = p.parse_known_args(argv)
    if args.child:
        run_child(args.child, [a for a in rest if a != "--"])
        return 0
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.merge and not args.only:
        p.error("--merge re-runs some suites: name them with --only")
    out_dir = args.out_dir or (Path(tempfile.mkdtemp(prefix="bench-quick-")) if args.quick
                               else GPU_RECORD if args.gpu else BENCH)
    gpu_json = GPU_RECORD / "results.json"
    gpu_rows = json.loads(gpu_json.read_text()) if out_dir != GPU_RECORD and gpu_json.is_file() else []
    if args.render:
        old_md = (out_dir / "results.md").read_text()
        header = old_md.splitlines()[2].split(". Ratio =", 1)[0]
        (out_dir / "results.md").write_text(markdown(json.loads((out_dir / "results.json").read_text()),
                                                     read_suite_runs(old_md), "", "", header=header,
                                                     gpu_rows=gpu_rows))
        print(f"{out_dir / 'results.md'} rewritten")
        return 0
    if args.merge and not (out_dir / "results.json").is_file():
        p.error(f"--merge: no {out_dir / 'results.json'} to merge into (run every suite once "
                f"without --merge)")
    out_dir.mkdir(parents=True, exist_ok=True)
    sha = git_sha()        # the code that runs: edits made while the suites run are not in it
    rows: list[dict] = []
    runs: dict[str, tuple] = {}
    load_start = os.getloadavg()[0]
    for name in args.only or SUITES:
        sargs = suite_args(name, args.quick, args.gpu)
        if sargs is None:
            runs[name] = (0.0, f"skipped: no sample videos in {SHARED_VIDEOS}")
            continue
        before = os.getloadavg()[0]
        with LoadWatch() as watch:
            got, seconds, error = run_suite(name, sargs, out_dir)
        after = os.getloadavg()[0]
        rows += [{**r, "suite": name} for r in mark_load(got, before, after, watch.peak, watch.other)]
        runs[name] = (seconds, error, before, after, watch.other)
        other = "n/a" if watch.other is None else f"{watch.other:.2f}"
        print(f"== {name}: 1-min load {before:.1f} -> {after:.1f} (peak {watch.peak:.1f}) on "
              f"{os.cpu_count()} cores; other processes' runnable threads {other} on average"
              + (": its rows are invalid" if any(r.get("valid") is False for r in got) else ""),
              flush=True)
    command = "python -m bench.run_all" + "".join(
        f" {a}" for a, on in (("--gpu", args.gpu), ("--quick", args.quick)) if on) + (
        f" --only {' '.join(args.only)}" if args.only else "")
    # other work on the machine shows in the timings: record how busy it was
    load = f" (1-min load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end)"
    header = None
    if args.merge:
        old_md = (out_dir / "results.md").read_text() if (out_dir / "results.md").is_file() else ""
        rows = merge_rows(json.loads((out_dir / "results.json").read_text()), rows, args.only)
        runs = {**read_suite_runs(old_md), **runs}
        header = merge_header(old_md, args.only, f"`{command} --merge` at commit `{sha}`, "
                                                 f"{_dt.date.today().isoformat()}{load}")
    (out_dir / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out_dir / "results.md").write_text(markdown(rows, runs, command, sha, load, header, gpu_rows))
    print(f"{len(rows)} figures from {len(runs)} suites -> {out_dir / 'results.md'}")
    return 1 if any(run[1] and not run[1].startswith("skipped") for run in runs.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
