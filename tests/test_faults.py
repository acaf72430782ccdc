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
