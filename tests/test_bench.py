"""The benchmark suite's plumbing: the results table (every figure, ratio orientation, GPU-only
figures listed), the scale benchmark's synthetic store and memory measurement, and a
``run_all --quick`` smoke run of one suite. No test looks at a timing."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bench import record, run_all
from bench.memory import run_measured
from bench.scale_store import generate
from fer_pipeline.store import EmbeddingStore
from tests.conftest import ROOT


def _row(figure, measured, target=None, lower=False):
    return {"figure": figure, "measured": measured, "target": target, "unit": "x",
            "lower_is_better": lower, "machine": "test box"}


def test_table_lists_every_figure_with_ratios_oriented_to_the_target():
    rows = [_row("fast enough", 4.0, target=2.0), _row("too slow", 10.0, target=5.0, lower=True),
            _row("no target", 3.0), _row("stage1 swin_base bf16 channels-last forward, frames/s", 3300.0, 3000)]
    md = run_all.markdown(rows, {"stage1": (12.0, None), "stage2": (3.0, "exit code 1")},
                          "python -m bench.run_all", "abc123")
    table = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines() if line.startswith("| ")}
    for r in rows:
        assert r["figure"] in table and "test box" in table[r["figure"]]
    assert "| ≥ 2 | 4 | x | 2.00 ✓ |" in table["fast enough"]
    assert "| ≤ 5 | 10 | x | 0.50 ✗ |" in table["too slow"]
    assert "| — | 3 | x | — |" in table["no target"]
    assert "3,300" in table["stage1 swin_base bf16 channels-last forward, frames/s"]
    # the GPU-only figure not measured here is listed as such; a failed suite shows its error
    assert "not measured" in table["stage2 GPU epoch over 600k x 1024 frames, s"]
    assert "| stage2 | 3 | — | — | exit code 1 |" in md


def test_gpu_only_figures_come_from_the_gpu_record_and_render_rewrites_the_table(tmp_path, monkeypatch):
    epoch = "stage2 GPU epoch over 600k x 1024 frames, s"
    gpu = [{**_row(epoch, 0.399, target=5.0, lower=True), "machine": "H200 box", "load": 2.3,
            "other_load": 0.0, "valid": True}]
    md = run_all.markdown([_row("cpu figure", 1.0)], {"s": (1.0, None)}, "cmd", "abc", gpu_rows=gpu)
    table = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines() if line.startswith("| ")}
    assert "| ≤ 5 | 0.399 | s | 12.53 ✓ |" in table[epoch] and "H200 box" in table[epoch]
    assert "gpu/results.md" in table[epoch]
    assert "not measured" in table["stage1 swin_base bf16 channels-last forward, frames/s"]
    # --render: the CPU record's table rewritten from its rows and the GPU record, nothing run
    rows = [{**_row("cpu figure", 1.0), "suite": "s"}]
    (tmp_path / "gpu").mkdir()
    (tmp_path / "gpu" / "results.json").write_text(json.dumps(gpu))
    (tmp_path / "results.json").write_text(json.dumps(rows))
    (tmp_path / "results.md").write_text(run_all.markdown(rows, {"s": (1.0, None, 0.1, 0.2, 0.0)},
                                                          "python -m bench.run_all", "abc"))
    monkeypatch.setattr(run_all, "GPU_RECORD", tmp_path / "gpu")
    monkeypatch.setattr(run_all, "run_suite", lambda *a: pytest.fail("--render ran a suite"))
    assert run_all.main(["--render", "--out-dir", str(tmp_path)]) == 0
    out = (tmp_path / "results.md").read_text()
    assert "`python -m bench.run_all` at commit `abc`" in out and "| s | 1 | 0.1 → 0.2 | 0.00 | ok |" in out
    assert "0.399" in out and "not measured" in out


def test_merge_header_keeps_only_the_reruns_whose_rows_remain():
    md = ("# Benchmark results\n\n`python -m bench.run_all` at commit `a1`, 2026-11-29 (load); "
          "suites scale re-run with `x --merge` at commit `b2`, 2026-11-30 (load); suites balance, "
          "flops re-run with `y --merge` at commit `c3`, 2026-11-30 (load). Ratio = measured ...\n")
    h = run_all.merge_header(md, ["scale"], "`z --merge` at commit `d4`, 2026-12-01 (load)")
    assert h == ("`python -m bench.run_all` at commit `a1`, 2026-11-29 (load); suites balance, flops "
                 "re-run with `y --merge` at commit `c3`, 2026-11-30 (load); suites scale re-run with "
                 "`z --merge` at commit `d4`, 2026-12-01 (load)")
    # a re-run of one of two suites re-run together leaves that record (the other's rows remain)
    h = run_all.merge_header(md, ["flops"], "`w`")
    assert "`b2`" in h and "`c3`" in h and h.endswith("suites flops re-run with `w`")
    assert "; suites balance re-run with `y --merge` at commit `c3`" in h      # flops is not c3's now
    assert "balance, flops" not in h


def test_merge_replaces_one_suites_rows_and_record_and_keeps_the_others():
    old = [{**_row("stage1 a", 1.0), "suite": "stage1"}, _row("scale: b", 2.0), _row("scale: c", 3.0), _row("balance: d", 4.0)]
    old_runs = {"stage1": (10.0, None, 0.5, 0.6, 0.01), "scale": (99.0, None, 0.7, 0.8, 0.02),
                "balance": (5.0, None, 0.1, 0.2, None)}
    md = run_all.markdown(old, old_runs, "python -m bench.run_all", "old123", " (load)")
    assert run_all.read_suite_runs(md) == old_runs
    new = [{**_row("scale: c", 30.0), "suite": "scale"}, {**_row("scale: e", 5.0), "suite": "scale"}]
    merged = run_all.merge_rows(old, new, ["scale"])
    assert [r["figure"] for r in merged] == ["stage1 a", "scale: c", "scale: e", "balance: d"]
    assert merged[1]["measured"] == 30.0
    # a second merge finds the rows by their suite field
    again = run_all.merge_rows(merged, [{**_row("scale: f", 6.0), "suite": "scale"}], ["scale"])
    assert [r["figure"] for r in again] == ["stage1 a", "scale: f", "balance: d"]
    # suites re-run together: each suite's rows stay where that suite's rows were
    both = run_all.merge_rows(again, [{**_row("stage1 g", 7.0), "suite": "stage1"},
                                      {**_row("balance: h", 8.0), "suite": "balance"}],
                              ["stage1", "balance"])
    assert [r["figure"] for r in both] == ["stage1 g", "scale: f", "balance: h"]


def test_rows_of_a_suite_run_under_load_are_invalid_not_misses():
    limit = run_all.busy_limit()
    assert limit == (os.cpu_count() or 1) + 0.5
    calm = run_all.mark_load([_row("calm", 4.0, target=2.0)], before=limit - 1, after=limit - 0.6)
    busy = run_all.mark_load([_row("busy", 1.0, target=2.0)], before=0.1, after=0.2, peak=limit + 1)
    assert calm[0]["valid"] and calm[0]["load"] == round(limit - 0.6, 2)
    assert not busy[0]["valid"] and busy[0]["load"] == round(limit + 1, 2)
    assert busy[0]["load_before"] == 0.1 and busy[0]["load_after"] == 0.2
    counted = run_all.mark_load([{**_row("bytes", 3.0), "load_independent": True}], 0.1, 0.2, limit + 1)
    assert counted[0]["valid"]                       # a byte count is not a timing: still valid
    md = run_all.markdown(calm + busy, {"s": (5.0, None, 0.1, limit + 1)}, "cmd", "abc")
    table = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines() if line.startswith("| ")}
    assert "2.00 ✓" in table["calm"] and "invalid (load" in table["busy"] and "✗" not in table["busy"]
    assert "1 of 2 rows invalid" in md and f"| s | 5 | 0.1 → {limit + 1:.1f} | — | ok |" in md
    # with the other processes' runnable threads known, they decide, not the suite's own load
    own = run_all.mark_load([_row("own", 4.0, target=2.0)], 0.1, limit + 2, limit + 2, other=0.2)
    foreign = run_all.mark_load([_row("foreign", 4.0, target=2.0)], 0.1, 0.3, 0.4, other=1.3)
    assert own[0]["valid"] and own[0]["other_load"] == 0.2
    assert not foreign[0]["valid"]
    md = run_all.markdown(own + foreign, {"s": (5.0, None, 0.1, 0.3, 1.3)}, "cmd", "abc")
    assert "invalid (other 1.30 > 0.5)" in md and "| s | 5 | 0.1 → 0.3 | 1.30 | ok |" in md


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_other_runnable_threads_leave_out_the_suites_own_process_tree():
    """A busy process counts as other work unless it descends from the root being measured."""
    import subprocess
    import time

    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.5)
        diffs = []
        for _ in range(6):
            # the busy loop is a child of this process: ours here, other work for the sleeper
            diffs.append(run_all.other_runnable(sleeper.pid) - run_all.other_runnable(os.getpid()))
            time.sleep(0.1)
        assert sum(d >= 1 for d in diffs) >= 4, diffs
    finally:
        busy.kill()
        sleeper.kill()
        busy.wait()
        sleeper.wait()


def test_gpu_only_figures_are_the_names_the_benchmarks_write():
    sources = "".join(p.read_text() for p in (ROOT / "bench").glob("stage*.py"))
    for fig in record.GPU_ONLY:
        assert f'"{fig}"' in sources, fig


def test_scale_store_is_the_real_format_with_the_asked_size(tmp_path):
    info = generate(tmp_path / "s", frames=3001, videos=8, dim=32)
    store = EmbeddingStore.open(tmp_path / "s")
    loaded = store.load()
    assert int(loaded.offsets[-1]) == 3001 and loaded.emb.shape == (3001, 32)
    assert loaded.emb.dtype == np.float16 and len(loaded) == 8
    splits = [loaded.split_of(i) for i in range(8)]
    assert splits.count("val") == info["val_videos"] == 2 and splits.count("train") == 6
    assert not loaded.emb[~loaded.face].any()           # no-face rows are zero
    assert set(np.unique(loaded.label)) <= set(range(-1, 8))
    assert info["emb_bytes"] == 3001 * 32 * 2 and info["disk_bytes"] >= info["emb_bytes"]


def test_peak_memory_of_a_child_and_its_descendants():
    grow = "import numpy as np, time; a = np.ones(300 * 2**20 // 8); time.sleep(0.5)"
    one = run_measured([sys.executable, "-c", grow])
    assert one.rc == 0 and one.maxrss >= 300 * 2**20 and one.tree_peak >= 300 * 2**20
    # two grandchildren holding 300 MiB each at the same time: the tree sum sees both
    two = run_measured([sys.executable, "-c",
                        "import subprocess, sys; ps = [subprocess.Popen([sys.executable, '-c', "
                        f"{grow.replace('0.5', '5')!r}]) for _ in range(2)]; [p.wait() for p in ps]"])
    assert two.rc == 0 and two.tree_peak >= 600 * 2**20
    assert two.pss_peak >= 600 * 2**20 and two.unshared_peak >= 600 * 2**20     # private pages
    assert run_measured([sys.executable, "-c", "raise SystemExit(3)"]).rc == 3


@pytest.mark.slow
def test_run_all_quick_has_the_rows_of_items_1_to_4_and_every_suite(tmp_path):
    """The suites of issue 14 at tiny sizes: scale (disk / payload, peak memory / payload at 1 and
    2 local ranks, mmap / RAM epoch), balance (largest / mean shard), crops and the linear probe
    (on generated demo data); every row carries the load it ran under. Values are not checked."""
    r = subprocess.run([sys.executable, "-m", "bench.run_all", "--quick", "--only", "balance", "scale",
                        "crops", "linear_probe", "--out-dir", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = json.loads((tmp_path / "results.json").read_text())
    figures = [x["figure"] for x in rows]
    md = (tmp_path / "results.md").read_text()
    # crops measures the sample videos of ../shared: without them the table says why it did not run
    videos = any(run_all.SHARED_VIDEOS.glob("*.mp4")) if run_all.SHARED_VIDEOS.is_dir() else False
    if not videos:
        assert "skipped: no sample videos" in md
    for part in ("store size on disk / payload", "/ fp16 embedding bytes, 1 process",
                 "/ fp16 embedding bytes, 2 local ranks", "preload=mmap / preload=cpu",
                 "largest / mean shard frames, 8 shards by frame count",
                 "linear_probe: per-frame logistic regression, val macro-F1") + (
                     ("crops: stage0 JPEG crop",) if videos else ()):
        assert any(part in f for f in figures), part
    for x in rows:
        assert {"load", "load_before", "load_after", "other_load", "valid"} <= set(x)
        assert x["measured"] is not None
        if "target" in x and x["target"] == 1.3:       # the memory rows: load cannot change them
            assert x["lower_is_better"] and x["load_independent"] and x["valid"]
    assert "| suite | seconds | load before → after | other | status |" in md
    for suite in ("balance", "scale", "crops", "linear_probe"):
        assert f"| {suite} |" in md


@pytest.mark.slow
def test_run_all_quick_writes_the_table_of_its_figures(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bench.run_all", "--quick", "--only", "flops",
                        "--out-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((tmp_path / "results.json").read_text())
    assert len(rows) == 4
    for row in rows:
        assert set(row) >= {"figure", "measured", "target", "unit", "lower_is_better", "machine"}
        assert row["measured"] > 0
    md = (tmp_path / "results.md").read_text()
    assert all(f"| {row['figure']} |" in md for row in rows)
    assert "| flops |" in md and "--quick --only flops" in md
    # re-running one suite with --merge keeps the other suite's rows and record
    r = subprocess.run([sys.executable, "-m", "bench.run_all", "--quick", "--only", "balance", "--merge",
                        "--out-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    merged = json.loads((tmp_path / "results.json").read_text())
    assert [x["figure"] for x in merged[:4]] == [x["figure"] for x in rows]
    assert {x.get("suite") for x in merged[4:]} == {"balance"} and len(merged) > 4
    md = (tmp_path / "results.md").read_text()
    assert "| flops |" in md and "| balance |" in md
    assert "--quick --only flops` at commit" in md and "suites balance re-run with" in md


def test_a_suite_run_alone_leaves_the_record_alone_and_merge_needs_one(tmp_path):
    """Only ``bench.run_all`` writes bench/results.{json,md}: a suite tried on its own writes its
    own file, and ``--merge`` into a directory without a record is refused, not a table of the
    re-run suite alone."""
    from bench import balance

    record = [ROOT / "bench" / n for n in ("results.json", "results.md")]
    before = [p.read_bytes() if p.exists() else None for p in record]
    rows = balance.main(["--shards", "4", "--videos", "20", "--frames", "5000",
                         "--out", str(tmp_path / "balance.json")])
    assert json.loads((tmp_path / "balance.json").read_text()) == rows and len(rows) == 2
    assert [p.read_bytes() if p.exists() else None for p in record] == before
    r = subprocess.run([sys.executable, "-m", "bench.run_all", "--only", "balance", "--merge",
                        "--out-dir", str(tmp_path / "empty")], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "no " in r.stderr and "results.json to merge into" in r.stderr
    assert not (tmp_path / "empty" / "results.md").exists()


def test_bracketed_rounds_cancel_a_steady_drift_of_the_machines_speed():
    """The machine slows by 5 % per run; the measured path is always 0.9x the base path at the
    same moment. Each round's ratio (measured against the mean of the base runs around it) is
    0.9, where the first base run against the last measured one would give 0.9 x 0.55 = 0.50."""
    from bench.common import bracketed, ratio_row

    clock = iter(range(100))
    speed = lambda: 1.0 - 0.05 * next(clock)                   # noqa: E731 - one run per call
    base, measured, ratios = bracketed(speed, lambda k: 0.9 * speed(), 5)
    assert len(base) == 6 and len(measured) == 5
    assert np.allclose(ratios, 0.9)
    assert measured[-1] / base[0] < 0.6
    r = ratio_row("x / y", ratios, 0.8)
    assert r["measured"] == 0.9 and r["ratio_min"] == r["ratio_max"] == 0.9 and r["target"] == 0.8
