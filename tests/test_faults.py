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

from pipeline.app.cli import main as cli_main
from pipeline.errors import UsageError
from pipeline.store import EmbeddingStore
from tests.conftest import TINY_SWIN, make_store

FAULT_SEED = int(os.environ.get("FER_FAULT_SEED", "15"))
SMALL_S2 = ["stage2.model.d_model=32", "stage2.model.ff=64", "stage2.model.heads=2",
            "stage2.model.layers=1", "stage2.model.dropout=0.1", "stage2.data.clip_len=32",
            "stage2.train.batch_size=8", "stage2.train.lr=3e-3", "stage2.train.warmup_epochs=0",
            "stage2.train.epochs=3"]


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
    cmd = (launcher or [sys.executable, "-m"]) + ["pipeline", *map(str, argv)]
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
    from pipeline.checkpoint import load_train_state, resume_train_state

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


def test_defect5_resume_from_a_pickled_train_state_through_the_cli(tmp_path, capsys):
    store = make_store(tmp_path / "store", n_train=2, n_val=1)
    run = tmp_path / "run"
    rc, _, _ = run_inproc("stage2", "train", "--store", store, "--out", run, *SMALL_S2,
                          "stage2.train.epochs=1", capsys=capsys)
    assert rc == 0
    (run / "train_state.pt").write_bytes(pickle.dumps({"model": _Payload(), "epoch": 0}))
    rc, _, err = run_inproc("stage2", "train", "--resume", "--out", run, capsys=capsys)
    assert rc == 2
    line = assert_one_line(err, str(run / "train_state.pt"), "not a training state")
    assert "weights_only" not in err


def _fake_stage1_run(path: Path, checkpoint: bytes) -> Path:
    from pipeline.config import load_config

    path.mkdir(parents=True)
    (path / "config.yaml").write_text(load_config(overrides=TINY_SWIN).to_yaml())
    (path / "checkpoint.safetensors").write_bytes(checkpoint)
    return path


def _tiny_manifest(path: Path) -> Path:
    from pipeline.manifest import empty_rows, write_manifest

    return write_manifest(path, [empty_rows("v", 3, "train", np.arange(3) / 25)])


def test_defect5_a_checkpoint_that_is_not_safetensors_is_one_line(tmp_path, capsys):
    from pipeline.config import load_config
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
    store = make_store(tmp_path / "store", n_train=3, n_val=1)
    run = tmp_path / "run"
    rc, _, _ = run_inproc("stage2", "train", "--store", store, "--out", run, *SMALL_S2,
                          "stage2.train.epochs=2", capsys=capsys)
    assert rc == 0
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
    from pipeline.media import ffmpeg_exe

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
