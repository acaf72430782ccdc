"""Output locations, checked before a command does any work (issue 15).

A command that writes into a folder (``stage0 run --out``, ``stage1 embed --store``, a training
``--out``, ``stage2 eval``'s run dir) calls :func:`check_output_dir` first: the folder exists or
can be created, is a folder, can really be written (a probe file: permission bits say nothing
for root, and a read-only mount only shows on writing) and has free space for at least one unit
of output. Each failure is one ``UsageError`` line naming the flag, the path and the problem
(exit 2, nothing was run). Failures later in the run are ``OSError``s; ``fer_pipeline.errors.
os_error_line`` turns them into one line.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from fer_pipeline.errors import UsageError, os_error_line

MiB = 1 << 20
RUN_DIR_BYTES = 64 * MiB       # a training run's checkpoint + train state (small models: less)


def _size(n: int) -> str:
    return f"{n / MiB:.1f} MiB" if n < 1 << 30 else f"{n / (1 << 30):.2f} GiB"


def check_output_dir(path: str | Path, flag: str = "--out", need_bytes: int = 0,
                     unit: str = "unit of output") -> Path:
    """``path`` as a writable folder (created when absent) with at least ``need_bytes`` free,
    or a one-line ``UsageError``."""
    path = Path(path)
    where = f"{flag} {path}"
    if path.exists() and not path.is_dir():
        raise UsageError(f"{where}: is a file, not a folder")
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UsageError(f"{where}: cannot be created, {probe} is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{where}: cannot be created ({os_error_line(e)})") from None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".fer-write-test-", dir=path)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise UsageError(f"{where}: not writable ({e.strerror or e})") from None
    free = shutil.disk_usage(path).free
    if free < need_bytes:
        raise UsageError(f"{where}: only {_size(free)} free, at least {_size(need_bytes)} needed "
                         f"for one {unit}")
    return path
