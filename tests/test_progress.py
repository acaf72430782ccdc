"""Progress bars (``fer_pipeline.progress``) and logging around them (``cliutil.setup_logging``):
the count advances per epoch, a log record never starts in the middle of a bar's line, and
outside a terminal a bar prints whole lines, at most one per ``FER_PROGRESS_INTERVAL``."""
from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys

import pytest

from fer_pipeline.cliutil import setup_logging
from fer_pipeline.progress import progress
from tests.conftest import make_store
from tests.test_stage2_train import SMALL

RECORD = re.compile(r"\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def stderr(monkeypatch):
    """A fresh ``sys.stderr`` (a log file unless the test makes it a terminal), with bars on
    and the fer logging handler removed afterwards."""
    monkeypatch.delenv("FER_NO_PROGRESS", raising=False)
    monkeypatch.delenv("FER_PROGRESS_INTERVAL", raising=False)
    yield monkeypatch
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, "_fer", False)]:
        root.removeHandler(h)


def test_stage2_train_bar_advances_per_epoch_in_a_log(tmp_path):
    """The path a Slurm job takes: stderr is a file, bars on, one line per redraw."""
    store = make_store(tmp_path / "store")
    env = {k: v for k, v in os.environ.items() if k != "FER_NO_PROGRESS"}
    env["FER_PROGRESS_INTERVAL"] = "0"
    r = subprocess.run([sys.executable, "-m", "fer_pipeline", "stage2", "train", "--store", str(store),
                        "--out", str(tmp_path / "run"), *SMALL],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "\r" not in r.stderr
    lines = r.stderr.splitlines()
    bar = [ln for ln in lines if ln.startswith("stage2 train:")]
    epochs = int(next(o for o in SMALL if o.startswith("stage2.train.epochs=")).split("=")[1])
    counts = [re.search(r"\| (\d+)/(\d+) \[", ln).group(1, 2) for ln in bar]
    assert counts == [(str(k), str(epochs)) for k in range(epochs + 1)], "\n".join(bar)
    assert "loss=" in bar[-1] and "f1=" in bar[-1]
    for ln in lines:
        m = RECORD.search(ln)
        assert m is None or m.start() == 0, f"a log record starts inside a line: {ln!r}"


def test_in_a_terminal_log_records_go_above_the_bar(stderr):
    tty = _Terminal()
    stderr.setattr(sys, "stderr", tty)
    setup_logging("INFO")
    log = logging.getLogger("fer.test")
    bar = progress(range(3), desc="train", unit="epoch")
    for epoch in bar:
        log.info("epoch %d done", epoch)
        bar.set_postfix(loss=f"{epoch:.3f}")
    out = tty.getvalue()
    starts = [m.start() for m in RECORD.finditer(out)]
    assert len(starts) == 3
    # each record begins a fresh line: after a newline, or after the carriage return that
    # follows the bar being blanked out
    for s in starts:
        assert s == 0 or out[s - 1] in "\r\n", repr(out[max(0, s - 80):s + 20])
        line_start = max(out.rfind("\n", 0, s), 0)
        assert out[line_start:s].split("\r")[-2:][0].strip() == "", repr(out[line_start:s])
    assert "3/3" in out.rsplit("\n", 2)[-2]          # the final bar shows every epoch


def test_outside_a_terminal_one_line_per_interval_and_a_final_line(stderr):
    log_file = io.StringIO()
    stderr.setattr(sys, "stderr", log_file)
    for _ in progress(range(200), desc="videos", unit="video"):
        pass
    lines = log_file.getvalue().splitlines()
    assert "\r" not in log_file.getvalue()
    assert len(lines) == 2                           # the first line, then the final one
    assert "0/200" in lines[0] and "200/200" in lines[1]

    stderr.setenv("FER_PROGRESS_INTERVAL", "0")
    log_file.seek(0)
    log_file.truncate()
    with progress(total=3, desc="embed") as bar:
        for _ in range(3):
            bar.update(1)
    assert [re.search(r"(\d)/3", ln).group(1) for ln in log_file.getvalue().splitlines()] == \
        ["0", "1", "2", "3"]

    stderr.setenv("FER_NO_PROGRESS", "1")
    log_file.seek(0)
    log_file.truncate()
    assert list(progress(range(5), desc="hidden")) == [0, 1, 2, 3, 4]
    assert log_file.getvalue() == ""
