"""Failure behaviour (issue 15): what the pipeline does when its inputs, its outputs or its
processes fail.

Part 1 has one test per defect of the issue (each failed before its fix). Part 2 injects faults
into real runs on demo-sized data, at points drawn by a seeded RNG (``FAULT_SEED``): SIGKILL of
stage 0 (``--jobs 2``), of a 2-rank embed and of stage 2; a full disk (a small tmpfs in a private
mount namespace, else a monkeypatched write raising ENOSPC); a read-only output; two concurrent
writers; NaN in the store. Each case checks that nothing complete is wrong (equal to an
uninterrupted run), that nothing is lost (a re-run finishes the rest) and that the failure is
one line (no traceback).
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_pipeline.app.cli import main as cli_main
from fer_pipeline.errors import UsageError
from fer_pipeline.store import EmbeddingStore
from tests.conftest import CPU_RANKS, TINY_SWIN, make_store

FAULT_SEED = int(os.environ.get("FER_FAULT_SEED", "15"))
SMALL_S2 = ["stage2.model.d_model=32", "stage2.model.ff=64", "stage2.model.heads=2",
            "stage2.model.layers=1", "stage2.model.dropout=0.1", "stage2.data.clip_len=32",
            "stage2.train.batch_size=8", "stage2.train.lr=3e-3", "stage2.train.warmup_epochs=0",
            "stage2.train.epochs=3",
            # one thread in every run: the reference trains inside pytest, whose torch thread
            # count earlier tests may have changed, the killed run in a fresh process; float
            # sums over another thread count differ in the last bit
            "threads=1"]


def run_inproc(*argv, capsys=None) -> tuple[int, str, str]:
    """``fer-pipeline ARGV`` in this process -> (exit code, stdout, stderr)."""
    try:
        rc = cli_main([str(a) for a in argv])
    finally:
        root = logging.getLogger()
        for h in [h for h in root.handlers if getattr(h, "_fer", False)]:
            root.removeHandler(h)
    out = capsys.readouterr() if capsys else None
    return rc, (out.out if out else ""), (out.err if out else "")


def run_cli(*argv, timeout=600, launcher=None, env=None) -> subprocess.CompletedProcess:
    cmd = (launcher or [sys.executable, "-m"]) + ["fer_pipeline", *map(str, argv)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def error_lines(stderr: str) -> list[str]:
    """The command's error lines; fails the test on a traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


def assert_one_line(stderr: str, *needles: str) -> str:
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr[-3000:]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# ------------------------------------------------------------------------------------------------
# Part 1: the defects
# ------------------------------------------------------------------------------------------------
class _Payload:
    def __reduce__(self):
        return (print, ("this would run on load",))


def test_defect5_pickled_train_state_is_one_line_and_never_suggests_unsafe_loading(tmp_path):
    from fer_pipeline.checkpoint import load_train_state, resume_train_state

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    (tmp_path / "train_state.pt").write_bytes(pickle.dumps({"model": _Payload()}))
    with pytest.raises(UsageError) as e:
        resume_train_state(tmp_path, model, opt, sched)
    msg = str(e.value)
    assert "\n" not in msg and "weights_only" not in msg and str(tmp_path / "train_state.pt") in msg
    assert "not a training state written by this pipeline" in msg
    torch.save({"model": {}}, tmp_path / "partial.pt")
    with pytest.raises(UsageError, match="needs model, optimizer, scheduler and epoch"):
        load_train_state(tmp_path / "partial.pt")
    torch.save({"model": {"w": torch.zeros(1)}, "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "epoch": 0}, tmp_path / "train_state.pt")
    with pytest.raises(UsageError, match="does not fit this run's model"):
        resume_train_state(tmp_path, model, opt, sched)


def _small_run(tmp_path, capsys, n_train: int, epochs: int):
    """A small store and a finished stage-2 run on it: (store, run dir)."""
    store = make_store(tmp_path / "store", n_train=n_train, n_val=1)
    run = tmp_path / "run"
    rc, _, _ = run_inproc("stage2", "train", "--store", store, "--out", run, *SMALL_S2,
                          f"stage2.train.epochs={epochs}", capsys=capsys)
    assert rc == 0
    return store, run


def test_defect5_resume_from_a_pickled_train_state_through_the_cli(tmp_path, capsys):
    store, run = _small_run(tmp_path, capsys, n_train=2, epochs=1)
    (run / "train_state.pt").write_bytes(pickle.dumps({"model": _Payload(), "epoch": 0}))
    rc, _, err = run_inproc("stage2", "train", "--resume", "--out", run, capsys=capsys)
    assert rc == 2
    assert_one_line(err, str(run / "train_state.pt"), "not a training state")
    assert "weights_only" not in err


def _fake_stage1_run(path: Path, checkpoint: bytes) -> Path:
    from fer_pipeline.config import load_config

    path.mkdir(parents=True)
    (path / "config.yaml").write_text(load_config(overrides=TINY_SWIN).to_yaml())
    (path / "checkpoint.safetensors").write_bytes(checkpoint)
    return path


def _tiny_manifest(path: Path) -> Path:
    from fer_pipeline.manifest import empty_rows, write_manifest

    return write_manifest(path, [empty_rows("v", 3, "train", np.arange(3) / 25)])


def test_defect5_a_checkpoint_that_is_not_safetensors_is_one_line(tmp_path, capsys):
    from fer_pipeline.config import load_config
    from stage1_image_encoder.model import build_encoder, load_weights

    model = build_encoder(load_config(overrides=TINY_SWIN).stage1.model)
    (tmp_path / "x.safetensors").write_bytes(b"PK\x03\x04 this is a zip, not safetensors" * 20)
    with pytest.raises(UsageError, match=r"x.safetensors: not a readable safetensors file .*state dict"):
        load_weights(model, tmp_path / "x.safetensors")
    manifest = _tiny_manifest(tmp_path / "m.parquet")
    run = _fake_stage1_run(tmp_path / "s1", b"\x00" * 64)
    rc, _, err = run_inproc("stage1", "embed", "--manifest", manifest, "--run", run, "--store",
                            tmp_path / "store", *TINY_SWIN, capsys=capsys)
    assert rc == 2
    assert_one_line(err, str(run / "checkpoint.safetensors"), "not a readable safetensors file")
    rc, _, err = run_inproc("stage1", "embed", "--manifest", manifest, "--store", tmp_path / "store",
                            *TINY_SWIN, f"stage1.model.pretrained={tmp_path / 'x.safetensors'}",
                            capsys=capsys)
    assert rc == 2
    assert_one_line(err, "x.safetensors: not a readable safetensors file")


def _poisoned_store(path: Path, video: str, rows: slice, n_train=4, n_val=2) -> Path:
    """A small store whose ``video`` has NaN / Inf embedding rows ``rows``."""
    make_store(path, n_train=n_train, n_val=n_val)
    store = EmbeddingStore.open(path, mode="a")
    rec = store.read_video(video)
    reps = -(-260 // len(rec.label))                         # at least 260 frames long
    emb, label, face = (np.concatenate([a] * reps) for a in (rec.emb, rec.label, rec.face))
    emb[rows] = np.nan
    emb[rows.start, 0] = np.inf
    store.write_video(video, emb, label, face, rec.attrs)
    return path


def test_defect1_nan_in_a_validation_video_is_named_at_load_not_scored(tmp_path, capsys):
    """Issue 15, defect 1: NaN rows in a validation video were scored as Neutral and an F1
    reported with rc 0. Now the load names the video and its frames (exit 2), or masks them
    as no-face frames with stage2.data.bad_frames=mask (a warning counting them)."""
    store = _poisoned_store(tmp_path / "store", "v05", slice(10, 220))   # 210 rows of a val video
    rc, out, err = run_inproc("stage2", "train", "--store", store, "--out", tmp_path / "run",
                              *SMALL_S2, "stage2.train.epochs=1", capsys=capsys)
    assert rc == 2 and out == ""
    assert_one_line(err, "210 frame(s) with non-finite embeddings", "v05 frames 11-220",
                    "stage2.data.bad_frames=mask")
    assert not (tmp_path / "run" / "eval").exists()
    rc, out, err = run_inproc("stage2", "train", "--store", store, "--out", tmp_path / "masked",
                              *SMALL_S2, "stage2.train.epochs=1", "stage2.data.bad_frames=mask",
                              capsys=capsys)
    assert rc == 0, err[-2000:]
    assert "210 frame(s) with non-finite embeddings treated as no-face frames (v05 frames 11-220)" in err
    pred = __import__("pandas").read_parquet(tmp_path / "masked" / "eval" / "predictions.parquet")
    v05 = pred[pred.video == "v05"]
    assert not v05.face.iloc[10:220].any()
    assert np.isfinite(v05[[c for c in pred.columns if c.startswith("p_")]].to_numpy()).all()
    # the run trained on a clean store, evaluated on a store poisoned later: the same line
    clean = make_store(tmp_path / "clean", n_train=4, n_val=2)
    rc, _, _ = run_inproc("stage2", "train", "--store", clean, "--out", tmp_path / "r2", *SMALL_S2,
                          "stage2.train.epochs=1", capsys=capsys)
    assert rc == 0
    rc, _, err = run_inproc("stage2", "eval", "--run", tmp_path / "r2", "--store", store, capsys=capsys)
    assert rc == 2
    assert_one_line(err, "v05 frames 11-220")
    rc, _, err = run_inproc("inspect", store, "--out", tmp_path / "insp", capsys=capsys)
    assert rc == 2
    assert_one_line(err, "v05 frames 11-220")


def test_defect1_nan_in_a_training_video_names_that_video(tmp_path, capsys):
    """The stop message named the first clips of the batch, not the video holding the NaN."""
    store = _poisoned_store(tmp_path / "store", "v02", slice(5, 9))
    rc, _, err = run_inproc("stage2", "train", "--store", store, "--out", tmp_path / "run",
                            *SMALL_S2, "stage2.train.epochs=1", capsys=capsys)
    assert rc == 2
    line = assert_one_line(err, "4 frame(s)", "1 video(s): v02 frames 6-9")
    assert "v00" not in line and "v01" not in line


def _store_with_partial_video(path: Path) -> Path:
    make_store(path, n_train=4, n_val=2)
    store = EmbeddingStore.open(path, mode="a")
    g = store.root["videos"].create_group("v09")            # a writer killed mid-write (old layout)
    g.create_array("emb", data=np.zeros((30, store.dim), np.float16))
    store.expect_videos(["v10"])                             # listed by a writer, never written
    return path


def test_defect8_stage2_and_inspect_refuse_a_partial_store_unless_allowed(tmp_path, capsys):
    """Issue 15, defect 8: groups without a completion marker were skipped in silence."""
    store = _store_with_partial_video(tmp_path / "store")
    rc, _, err = run_inproc("stage2", "train", "--store", store, "--out", tmp_path / "run",
                            *SMALL_S2, "stage2.train.epochs=1", capsys=capsys)
    assert rc == 2
    assert_one_line(err, "2 video(s) incomplete", "(v09, v10)", "--allow-partial", "6 complete")
    rc, _, err = run_inproc("stage2", "train", "--store", store, "--out", tmp_path / "run",
                            "--allow-partial", *SMALL_S2, "stage2.train.epochs=1", capsys=capsys)
    assert rc == 0, err[-2000:]
    assert "leaving out 2 incomplete video(s) (v09, v10); using the 6 complete one(s)" in err
    info = json.loads((tmp_path / "run" / "stage2.json").read_text())
    assert "v09" not in info["train_videos"] + info["val_videos"]
    rc, _, err = run_inproc("inspect", store, "--out", tmp_path / "i", capsys=capsys)
    assert rc == 2
    assert_one_line(err, "2 video(s) incomplete")
    rc, out, err = run_inproc("inspect", store, "--out", tmp_path / "i", "--allow-partial",
                              capsys=capsys)
    assert rc == 0 and "inspect: 6 videos" in out and "leaving out 2" in err


def test_defect7_training_into_an_existing_run_needs_resume_or_overwrite(tmp_path, capsys):
    """Issue 15, defect 7: a new run appended its metrics to the old run's and kept its eval/."""
    store, run = _small_run(tmp_path, capsys, n_train=3, epochs=2)
    before = (run / "metrics.jsonl").read_text()
    (run / "eval" / "stale.txt").write_text("from the old run")
    (run / "notes.txt").write_text("mine")
    rc, _, err = run_inproc("stage2", "train", "--store", store, "--out", run, *SMALL_S2,
                            "stage2.train.epochs=1", capsys=capsys)
    assert rc == 2
    assert_one_line(err, f"{run} exists", "--resume", "--overwrite")
    assert (run / "metrics.jsonl").read_text() == before
    rc, _, err = run_inproc("stage2", "train", "--store", store, "--out", run, "--overwrite",
                            *SMALL_S2, "stage2.train.epochs=1", capsys=capsys)
    assert rc == 0, err[-2000:]
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0]
    assert not (run / "eval" / "stale.txt").exists() and (run / "eval" / "f1.json").is_file()
    assert (run / "notes.txt").read_text() == "mine"          # not a run file: kept
    rc, _, err = run_inproc("stage2", "train", "--out", run, "--resume", "--overwrite", capsys=capsys)
    assert rc == 2 and "give one of them" in err


def test_defect4_bad_output_locations_are_one_line_and_exit_2(tmp_path, capsys, affwild2_tree):
    """Issue 15, defect 4: /proc paths, files given as folders were 17-90-line tracebacks."""
    video = tmp_path / "a.mp4"
    video.write_bytes(b"\0" * 100)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    store = make_store(tmp_path / "store", n_train=2, n_val=1)
    cases = [
        (["stage0", "run", "--videos", video, "--out", "/proc/fer-x"], "--out /proc/fer-x: cannot be created"),
        (["stage0", "run", "--videos", video, "--out", a_file], "is a file, not a folder"),
        (["stage0", "run", "--videos", video, "--out", a_file / "sub"], f"cannot be created, {a_file} is a file"),
        (["stage0", "ingest", "--affwild2", affwild2_tree, "--out", a_file], "is a file, not a folder"),
        (["stage0", "ingest", "--affwild2", affwild2_tree, "--out", "/proc/fer-x"], "cannot be created"),
        (["stage1", "embed", "--manifest", _tiny_manifest(tmp_path / "m.parquet"), "--store", a_file,
          *TINY_SWIN], "--store"),
        (["stage2", "train", "--store", store, "--out", a_file, *SMALL_S2], "is a file, not a folder"),
    ]
    for argv, needle in cases:
        rc, _, err = run_inproc(*argv, capsys=capsys)
        assert rc == 2, (argv, err[-2000:])
        assert_one_line(err, needle)
    assert a_file.read_text() == "x"


def test_a_truncated_mp4_without_its_index_says_so(tmp_path, capsys):
    """Also fix: a truncated mp4 whose moov atom (at the end) is gone was 'not a readable video'."""
    from fer_pipeline.media import ffmpeg_exe

    full = tmp_path / "full.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10",
                    "-t", "2", "-c:v", "mpeg4", str(full)], check=True)
    data = full.read_bytes()
    assert data.find(b"moov") > len(data) // 2                # index at the end (no faststart)
    cut = tmp_path / "videos" / "cut.mp4"
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) // 2])
    rc, _, _ = run_inproc("stage0", "run", "--videos", cut, "--out", tmp_path / "s0", capsys=capsys)
    assert rc == 1
    summary = __import__("pandas").read_csv(tmp_path / "s0" / "summary.csv")
    assert summary.error.iloc[0] == f"{cut}: truncated or missing its index (moov atom)"


# ------------------------------------------------------------------------------------------------
# Part 2: fault injection on demo-sized data (points drawn by a seeded RNG)
# ------------------------------------------------------------------------------------------------
SYNTH = ["synth.n_videos=3", "synth.n_val=1", "synth.duration_s=[1.5,2]",
         "synth.stills_train_per_class=1", "synth.stills_test_per_class=1"]
S0 = ["stage0.detector.name=yunet", "stage0.detector.input_size=320"]
EMB = [*TINY_SWIN, "stage1.model.img_size=56", "stage1.embed.batch_size=8", *CPU_RANKS]
PY = [sys.executable, "-m", "fer_pipeline"]


def _main(*argv) -> int:
    """``fer-pipeline ARGV`` in this process (fixtures: no capsys), its log handler removed."""
    try:
        return cli_main([str(a) for a in argv])
    finally:
        root = logging.getLogger()
        for h in [h for h in root.handlers if getattr(h, "_fer", False)]:
            root.removeHandler(h)


@pytest.fixture(autouse=True, scope="module")
def _keep_torch_threads():
    """The runs here set one torch thread in this process (``threads=1``); later tests get the
    count back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Generated Aff-Wild2-layout data (3 raw videos, 4 annotated tracks, ~200 frames), its
    uninterrupted stage-0 run (re-detected, labelled), store and stage-2 run: the references."""
    root = tmp_path_factory.mktemp("faults")
    assert _main("synth", "--out", root / "data", *SYNTH) == 0
    assert _main("stage0", "run", "--affwild2", root / "data", "--out", root / "s0", *S0) == 0
    manifest = root / "s0" / "manifest.parquet"
    assert _main("stage1", "embed", "--manifest", manifest, "--store", root / "store", *EMB) == 0
    assert _main("stage2", "train", "--store", root / "store", "--out", root / "run", *SMALL_S2,
                 "stage2.train.epochs=4") == 0
    return {"root": root, "data": root / "data", "s0": root / "s0", "manifest": manifest,
            "store": root / "store", "run": root / "run", "rng": np.random.default_rng(FAULT_SEED)}


def _stage0_files(out: Path, names=None) -> dict[str, bytes]:
    """Stage 0's deterministic outputs (crops, per-track parts, manifest), by relative path."""
    files = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        if not p.is_file() or rel.parts[0] not in ("crops", "parts", "manifest.parquet"):
            continue
        if p.name.endswith(".done.json") or (rel.parts[0] == "manifest.parquet" and names):
            continue
        track = rel.parts[1].split(".")[0] if rel.parts[0] == "parts" else \
            (rel.parts[1] if rel.parts[0] == "crops" else None)
        if names is None or track in names:
            files[str(rel)] = p.read_bytes()
    return files


def _complete_tracks(out: Path) -> list[str]:
    return sorted(p.name[: -len(".done.json")] for p in (out / "parts").glob("*.done.json")) \
        if (out / "parts").is_dir() else []


def _store_arrays(path: Path, videos=None) -> dict:
    store = EmbeddingStore.open(path)
    return {v: (r.emb, r.label, r.face) for v in (videos or store.videos())
            for r in [store.read_video(v)]}


def _assert_same_videos(path: Path, ref: Path, videos=None) -> None:
    got, want = _store_arrays(path, videos), _store_arrays(ref, videos)
    assert sorted(got) == sorted(want) if videos is None else True
    for v, arrays in got.items():
        for a, b in zip(arrays, want[v]):
            np.testing.assert_array_equal(a, b)


def _procs() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, state, command name) of every process."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1: stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(d.name)] = (int(fields[1]), fields[0], comm)
    return out


def _descendants(pid: int) -> set[int]:
    procs, found, todo = _procs(), set(), [pid]
    while todo:
        p = todo.pop()
        kids = {q for q, (ppid, _, _) in procs.items() if ppid == p} - found
        found |= kids
        todo += kids
    return found


def _alive(pids: set[int]) -> dict[int, str]:
    procs = _procs()
    return {p: procs[p][2] for p in pids if p in procs and procs[p][1] not in "ZX"}


def _userns() -> bool:
    """A private mount namespace where this user may mount tmpfs and read-only binds."""
    if not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k none /mnt"],
                       capture_output=True)
    return r.returncode == 0


def _tmpfs_bytes(path: Path) -> int:
    """What a tree takes on tmpfs: whole 4 KiB pages per file."""
    return sum(-(-p.stat().st_size // 4096) * 4096 for p in path.rglob("*") if p.is_file())


def _in_small_tmpfs(tmp: Path, free: int, argv: list, keep: str) -> tuple[int, str]:
    """Run ``fer-pipeline ARGV`` (``{mnt}`` = a tmpfs with ``free`` bytes left) in a private
    mount namespace, then copy ``{mnt}/KEEP`` to ``tmp/KEEP``: (exit code, stderr)."""
    mnt = tmp / "mnt"
    mnt.mkdir()
    size = 16 << 20
    args = " ".join(f"'{str(a).replace('{mnt}', str(mnt))}'" for a in [*PY, *argv])
    script = (f"mount -t tmpfs -o size={size} none '{mnt}' && "
              f"head -c {size - free} /dev/zero > '{mnt}/filler' && "
              f"{args} 2> '{tmp}/stderr'; echo $? > '{tmp}/rc'; "
              f"cp -a '{mnt}/{keep}' '{tmp}/{keep}' 2>/dev/null; true")
    subprocess.run(["unshare", "-rm", "sh", "-c", script], timeout=600, check=True)
    return int((tmp / "rc").read_text()), (tmp / "stderr").read_text()


def _kill_stage0_parent(demo, out: Path, need: int, delay: float) -> list[str] | None:
    """Start a 2-worker stage-0 run, SIGKILL its parent (not the workers) once ffmpeg decodes
    and ``need`` tracks are complete, plus ``delay`` s; assert no worker or ffmpeg outlives it
    by 5 s (defect 6). Returns the tracks marked complete, or None if the run ended first."""
    proc = subprocess.Popen([*PY, "stage0", "run", "--affwild2", demo["data"], "--out", out,
                             "--jobs", "2", *S0], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, decoding = time.time() + 240, False
    while time.time() < deadline and proc.poll() is None:
        kids = _alive(_descendants(proc.pid))
        decoding = any(name.startswith("ffmpeg") for name in kids.values())
        if decoding and len(_complete_tracks(out)) >= need:
            break
        time.sleep(0.05)
    assert decoding, "the run ended before any worker decoded"
    time.sleep(delay)
    family = _descendants(proc.pid)
    if proc.poll() is not None:                             # the delay outlived the run
        return None
    os.kill(proc.pid, signal.SIGKILL)                       # the parent only
    proc.wait()
    deadline = time.time() + 5
    while _alive(family) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(family), f"orphans 5 s after the parent died: {_alive(family)}"
    return _complete_tracks(out)


def test_sigkill_stage0_jobs2_no_orphans_and_resumes_identically(demo, tmp_path):
    """SIGKILL of the stage-0 command (not its workers) at a random point while its 2 workers
    decode: within 5 s no worker or ffmpeg survives (defect 6); every track marked complete
    equals the uninterrupted run; a re-run finishes the rest byte-identically.

    A random kill point can land after the last track is done (the parent then only writes
    the manifest) or after the run; such a kill tests nothing about resuming, so the run is
    repeated with the kill at the first decoded frame."""
    rng = demo["rng"]
    need, delay = int(rng.integers(0, 2)), float(rng.uniform(0.0, 0.8))
    everything = _complete_tracks(demo["s0"])
    for attempt in range(3):
        out = tmp_path / f"s0_{attempt}"
        done = _kill_stage0_parent(demo, out, need, delay)
        if done is not None and done != everything:
            break
        need, delay = 0, 0.0
    assert done is not None and done != everything, "three kills all landed after the last track"
    assert _stage0_files(out, done) == _stage0_files(demo["s0"], done)   # nothing complete is wrong
    assert _main("stage0", "run", "--affwild2", demo["data"], "--out", out, *S0) == 0
    assert _stage0_files(out) == _stage0_files(demo["s0"])                # nothing lost


def test_sigkill_embed_with_two_ranks_then_rerun(demo, tmp_path):
    """SIGKILL of a 2-rank embed (--nproc 2) after a random number of videos: the complete
    videos hold exactly the uninterrupted run's arrays, the rest are listed as incomplete, and a
    re-run finishes them identically."""
    rng = demo["rng"]
    need, delay = int(rng.integers(0, 3)), float(rng.uniform(0.0, 0.5))
    out = tmp_path / "store"
    proc = subprocess.Popen([*PY, "stage1", "embed", "--manifest", demo["manifest"], "--store", out,
                             "--nproc", "2", *EMB], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (out / "zarr.json").exists() and len(EmbeddingStore.open(out).videos()) >= need:
            break
        time.sleep(0.05)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    total = len(EmbeddingStore.open(demo["store"]).videos())
    if (out / "zarr.json").exists():
        store = EmbeddingStore.open(out)
        _assert_same_videos(out, demo["store"], store.videos())
        assert len(store.videos()) + len(store.incomplete_videos()) in (0, total) or \
            not store.meta.get("expected_videos")
    assert _main("stage1", "embed", "--manifest", demo["manifest"], "--store", out, *EMB) == 0
    _assert_same_videos(out, demo["store"])
    assert EmbeddingStore.open(out).incomplete_videos() == []


def test_sigkill_stage2_then_resume_ends_with_the_uninterrupted_weights(demo, tmp_path):
    from safetensors.torch import load_file

    from fer_pipeline.checkpoint import load_train_state

    rng = demo["rng"]
    epochs, delay = int(rng.integers(1, 4)), float(rng.uniform(0.0, 0.5))
    run = tmp_path / "run"
    proc = subprocess.Popen([*PY, "stage2", "train", "--store", demo["store"], "--out", run,
                             *SMALL_S2, "stage2.train.epochs=4"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        rows = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []
        if len(rows) >= epochs:
            break
        time.sleep(0.05)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if (run / "train_state.pt").exists():                    # what is there loads
        state = load_train_state(run / "train_state.pt")
        assert 0 <= state["epoch"] < 4
    rc = _main("stage2", "train", "--resume", "--out", run) if (run / "train_state.pt").exists() \
        else _main("stage2", "train", "--store", demo["store"], "--out", run, "--overwrite",
                   *SMALL_S2, "stage2.train.epochs=4")
    assert rc == 0
    a, b = load_file(run / "checkpoint.safetensors"), load_file(demo["run"] / "checkpoint.safetensors")
    assert sorted(a) == sorted(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == \
        [0, 1, 2, 3]


def test_full_disk_during_embed(demo, tmp_path, monkeypatch, capsys):
    """The store's disk fills at a random point: one line naming the file and 'No space left on
    device', exit 1 (some videos complete) or 2; the complete videos are right, the failed one is
    not marked complete, and once there is room a re-run completes the store."""
    rng = demo["rng"]
    if _userns():
        from fer_pipeline.manifest import read_manifest

        need = int(read_manifest(demo["manifest"]).groupby("video").size().max()) * 64 * 2 + (64 << 10)
        total = _tmpfs_bytes(demo["store"])
        free = int(rng.integers(need + 8192, total - 16384))
        rc, err = _in_small_tmpfs(tmp_path, free, ["stage1", "embed", "--manifest", demo["manifest"],
                                                   "--store", "{mnt}/store", *EMB], "store")
    else:                                  # no private mounts here: a write that raises ENOSPC
        import errno

        import zarr

        real, calls, fail_at = zarr.Group.create_array, [0], int(rng.integers(1, 4))

        def full(self, name, *a, **k):
            calls[0] += name == "emb"
            if calls[0] >= fail_at:
                raise OSError(errno.ENOSPC, "No space left on device", None)
            return real(self, name, *a, **k)

        monkeypatch.setattr(zarr.Group, "create_array", full)
        rc, _, err = run_inproc("stage1", "embed", "--manifest", demo["manifest"], "--store",
                                tmp_path / "store", *EMB, capsys=capsys)
        monkeypatch.undo()
    assert rc in (1, 2), err[-2000:]
    assert_one_line(err, "No space left on device", "stage1 embed stopped")
    store = EmbeddingStore.open(tmp_path / "store")
    assert (rc == 1) == bool(store.videos())
    _assert_same_videos(tmp_path / "store", demo["store"], store.videos())
    assert store.incomplete_videos()
    assert _main("stage1", "embed", "--manifest", demo["manifest"], "--store", tmp_path / "store",
                 *EMB) == 0
    _assert_same_videos(tmp_path / "store", demo["store"])


def test_full_disk_during_stage0(demo, tmp_path):
    if not _userns():
        pytest.skip("no private mount namespace to make a small tmpfs (unshare -rm)")
    rng = demo["rng"]
    total = _tmpfs_bytes(demo["s0"])
    free = int(rng.integers(300 << 10, total - (64 << 10)))
    rc, err = _in_small_tmpfs(tmp_path, free, ["stage0", "run", "--affwild2", demo["data"], "--out",
                                               "{mnt}/s0", *S0], "s0")
    assert rc in (1, 2), err[-2000:]
    assert_one_line(err, "No space left on device", "stage0 stopped")
    out = tmp_path / "s0"
    done = _complete_tracks(out)
    assert (rc == 1) == bool(done) and done != _complete_tracks(demo["s0"])
    assert _stage0_files(out, done) == _stage0_files(demo["s0"], done)
    assert _main("stage0", "run", "--affwild2", demo["data"], "--out", out, *S0) == 0
    assert _stage0_files(out) == _stage0_files(demo["s0"])


def test_full_disk_while_stage2_saves_then_resume(demo, tmp_path, monkeypatch, capsys):
    """The disk fills while a training run saves, at a random epoch, in the training state's
    write or in the checkpoint's (safetensors' own error, as it reads on a full tmpfs): one line
    naming the file, the last good checkpoint is kept (exit 1; exit 2 when none was written yet),
    and --resume once there is room ends with the uninterrupted run's weights."""
    import errno
    from pathlib import Path as _P

    import safetensors.torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    rng = demo["rng"]
    which = str(rng.choice(["train_state.pt", "checkpoint.safetensors"]))
    best, saves = -1.0, 0                     # the reference run saved its checkpoint this often
    for row in (demo["run"] / "metrics.jsonl").read_text().splitlines():
        score = json.loads(row)["val_macro_f1"]
        saves, best = (saves + 1, score) if score > best else (saves, best)
    fail_at = int(rng.integers(1, (saves if which == "checkpoint.safetensors" else 4) + 1))
    print(f"fault: ENOSPC at write {fail_at} of {which}")
    real_write, real_save, calls = _P.write_bytes, safetensors.torch.save_file, [0]

    def write_bytes(self, data):
        if self.name.startswith(".train_state.pt."):
            calls[0] += 1
            if calls[0] == fail_at:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    def save_file(tensors, filename, metadata=None):
        calls[0] += 1
        if calls[0] == fail_at:
            raise SafetensorError("Error while serializing: I/O error: No space left on device "
                                  "(os error 28)")
        return real_save(tensors, filename, metadata=metadata)

    run = tmp_path / "run"
    if which == "train_state.pt":
        monkeypatch.setattr(_P, "write_bytes", write_bytes)
    else:
        import fer_pipeline.checkpoint

        monkeypatch.setattr(fer_pipeline.checkpoint, "save_file", save_file)
    rc, _, err = run_inproc("stage2", "train", "--store", demo["store"], "--out", run, *SMALL_S2,
                            "stage2.train.epochs=4", capsys=capsys)
    monkeypatch.undo()
    line = assert_one_line(err, "stage2 train stopped", f"{run / which}: No space left on device")
    assert rc == (1 if (run / "checkpoint.safetensors").exists() else 2)
    if rc == 1:
        assert "--resume continues from it" in line
    if (run / "train_state.pt").exists():
        rc, _, err = run_inproc("stage2", "train", "--resume", "--out", run, capsys=capsys)
    else:
        rc, _, err = run_inproc("stage2", "train", "--store", demo["store"], "--out", run,
                                "--overwrite", *SMALL_S2, "stage2.train.epochs=4", capsys=capsys)
    assert rc == 0, err[-2000:]
    a, b = load_file(run / "checkpoint.safetensors"), load_file(demo["run"] / "checkpoint.safetensors")
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


_READ_ONLY = r'''
import contextlib, io, json, sys
from fer_pipeline.app.cli import main
import logging
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, "_fer", False)]:
        root.removeHandler(h)
    print(json.dumps([rc, err.getvalue()]))
'''


def test_read_only_outputs_are_one_line_and_change_nothing(demo, tmp_path):
    if not _userns():
        pytest.skip("no private mount namespace for a read-only bind mount (unshare -rm)")
    ro = tmp_path / "ro"
    shutil.copytree(demo["store"], ro / "store")
    (ro / "s0").mkdir()
    (ro / "run").mkdir()
    before = {str(p): p.read_bytes() for p in ro.rglob("*") if p.is_file()}
    commands = [
        ["stage0", "run", "--affwild2", str(demo["data"]), "--out", str(ro / "s0"), *S0],
        ["stage0", "ingest", "--affwild2", str(demo["data"]), "--out", str(ro / "s0")],
        ["stage1", "embed", "--manifest", str(demo["manifest"]), "--store", str(ro / "store"), *EMB],
        ["stage2", "train", "--store", str(demo["store"]), "--out", str(ro / "run"), *SMALL_S2],
        ["stage2", "train", "--store", str(demo["store"]), "--out", str(ro / "run" / "new"), *SMALL_S2],
    ]
    script = (f"mount --bind '{ro}' '{ro}' && mount -o remount,bind,ro '{ro}' && "
              f"'{sys.executable}' -c '{_READ_ONLY}' '{json.dumps(commands)}'")
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True,
                       timeout=600)
    results = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("[")]
    assert len(results) == len(commands), r.stderr[-3000:]
    for argv, (rc, err) in zip(commands, results):
        assert rc == 2, (argv, err[-2000:])
        assert_one_line(err, "Read-only file system")
    assert {str(p): p.read_bytes() for p in ro.rglob("*") if p.is_file()} == before


def test_two_concurrent_embed_processes_on_one_store(demo, tmp_path, capsys):
    """Two `stage1 embed` runs into one store at the same time (a subprocess, and this process
    once the other has created the store): both succeed in one summary line each, the store is
    complete and holds exactly the single run's arrays. (tests/test_store.py repeats the race,
    store creation included, with processes writing through the store directly.)"""
    out = tmp_path / "store"
    proc = subprocess.Popen([*PY, "stage1", "embed", "--manifest", demo["manifest"], "--store", out,
                             *EMB], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not (out / "zarr.json").exists():
        time.sleep(0.02)
    rc, here, err = run_inproc("stage1", "embed", "--manifest", demo["manifest"], "--store", out,
                               *EMB, capsys=capsys)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0 and rc == 0, (stderr[-3000:], err[-3000:])
    for o, e in ((stdout, stderr), (here, err)):
        assert "Traceback" not in e and o.splitlines()[-1].startswith("stage1 embed:")
    _assert_same_videos(out, demo["store"])
    assert EmbeddingStore.open(out).incomplete_videos() == []


def test_nan_at_random_rows_of_the_store(demo, tmp_path, capsys):
    """NaN/Inf written into random rows of a random video of a copy of the store: stage 2 and
    inspect name exactly that video and those frames in one line; mask mode trains."""
    rng = demo["rng"]
    path = tmp_path / "store"
    shutil.copytree(demo["store"], path)
    store = EmbeddingStore.open(path, mode="a")
    video = str(rng.choice(store.videos()))
    rec = store.read_video(video)
    a = int(rng.integers(0, len(rec.label) - 10))
    b = int(rng.integers(a + 1, min(a + 40, len(rec.label))))
    emb = rec.emb.copy()
    emb[a:b, int(rng.integers(0, emb.shape[1]))] = rng.choice([np.nan, np.inf, -np.inf])
    store.write_video(video, emb, rec.label, rec.face, rec.attrs)
    frames = f"{a + 1}-{b}" if b > a + 1 else f"{a + 1}"
    rc, _, err = run_inproc("stage2", "train", "--store", path, "--out", tmp_path / "run",
                            *SMALL_S2, "stage2.train.epochs=1", capsys=capsys)
    assert rc == 2
    assert_one_line(err, f"{b - a} frame(s) with non-finite", f"1 video(s): {video} frames {frames};")
    rc, _, err = run_inproc("inspect", path, "--out", tmp_path / "i", capsys=capsys)
    assert rc == 2
    assert_one_line(err, f"{video} frames {frames};")
    rc, _, err = run_inproc("stage2", "train", "--store", path, "--out", tmp_path / "run",
                            *SMALL_S2, "stage2.train.epochs=1", "stage2.data.bad_frames=mask",
                            capsys=capsys)
    assert rc == 0 and f"{b - a} frame(s) with non-finite embeddings treated as no-face" in err


def test_more_local_ranks_than_gpus_is_one_line_naming_both(monkeypatch):
    """A rank whose local index has no GPU stops with a line saying how many ranks and GPUs the
    node has and what to do, before any process group is joined (torch's own error is "CUDA
    error: invalid device ordinal"); with device=cpu the same ranks use gloo and no GPU."""
    import torch

    from fer_pipeline import distributed
    from fer_pipeline.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: pytest.fail("set_device reached"))
    joined = []
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend: joined.append(backend))
    monkeypatch.setattr(distributed, "_initialized", lambda: False)
    monkeypatch.setattr(distributed, "info", lambda: distributed.DistInfo())
    for k, v in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as e:
        distributed.init(prefer_cuda=True)
    assert str(e.value) == ("2 ranks on this node but 1 GPU(s) visible: local rank 1 has none of its "
                            "own; start one rank per GPU (--nproc 1), or run the ranks on the CPU "
                            "with device=cpu")
    assert joined == []
    distributed.init(prefer_cuda=False)
    assert joined == ["gloo"]
