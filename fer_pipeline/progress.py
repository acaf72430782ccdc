"""Progress bars that suit both terminals and batch-job logs.

- In a terminal (stderr is a TTY) a bar redraws in place; log records are written through
  ``tqdm.write`` (``cliutil.setup_logging``), so they go above the bar, never onto its line.
- Outside a terminal (Slurm, CI, a pipe) every redraw is one whole line, at most one per
  ``FER_PROGRESS_INTERVAL`` seconds (default 30), plus a final line when the bar ends.
- ``FER_NO_PROGRESS=1`` hides every bar.

The count on the bar is always current: iterating a bar advances it after each item (tqdm's own
iterator only stores the count when it prints, so ``set_postfix`` between prints redrew a stale
count, e.g. ``0/40`` for a whole stage-2 run).
"""
from __future__ import annotations

import os
import sys

from tqdm import tqdm

DEFAULT_LOG_INTERVAL = 30.0     # seconds between two bar lines in a non-interactive log


def log_interval() -> float:
    """``FER_PROGRESS_INTERVAL`` (seconds, >= 0), else :data:`DEFAULT_LOG_INTERVAL`."""
    try:
        return max(0.0, float(os.environ["FER_PROGRESS_INTERVAL"]))
    except (KeyError, ValueError):
        return DEFAULT_LOG_INTERVAL


class _LogLines:
    """The file a bar writes to outside a terminal: tqdm redraws by writing ``'\\r' + status``
    (+ padding) and ends with a bare newline; here each status becomes one whole line and the
    rest (clears, padding, cursor moves) is dropped."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, s: str) -> int:
        for part in s.replace("\x1b[A", "").split("\r"):
            text = part.strip()
            if text:
                self._stream.write(text + "\n")
        return len(s)

    def flush(self) -> None:
        getattr(self._stream, "flush", lambda: None)()


class Progress(tqdm):
    """tqdm whose count is current whenever it is drawn (see the module docstring)."""

    def __init__(self, iterable=None, *, interactive: bool = True, **kwargs):
        self._interactive = interactive
        self._shown = None
        super().__init__(iterable, **kwargs)

    def __iter__(self):
        if self.disable:
            yield from self.iterable
            return
        try:
            for obj in self.iterable:
                yield obj
                self.update(1)
        finally:
            self.close()

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        # outside a terminal the postfix shows on the next line the interval allows
        super().set_postfix(ordered_dict, refresh=refresh and self._interactive, **kwargs)

    def set_description(self, desc=None, refresh=True):
        super().set_description(desc, refresh=refresh and self._interactive)

    def display(self, msg=None, pos=None):
        if not self._interactive and msg is None:
            self._shown = (self.n, self.postfix, self.desc)
        return super().display(msg, pos)

    def close(self):
        if not self._interactive and not self.disable and self._shown == (self.n, self.postfix, self.desc):
            self.leave = False          # the last line printed already shows the final state
        super().close()


def progress(iterable=None, **kwargs) -> Progress:
    """A bar on stderr (see the module docstring for terminals, logs and the variables)."""
    stream = kwargs.pop("file", None) or sys.stderr
    interactive = bool(getattr(stream, "isatty", lambda: False)())
    kwargs.setdefault("disable", os.environ.get("FER_NO_PROGRESS") == "1")
    if interactive:
        kwargs.setdefault("dynamic_ncols", True)
        kwargs.setdefault("mininterval", 0.2)
    else:
        stream = _LogLines(stream)
        kwargs.setdefault("mininterval", log_interval())
        kwargs.setdefault("miniters", 1)   # fixed: tqdm's monitor thread never forces a redraw
        kwargs.setdefault("ascii", True)
    return Progress(iterable, interactive=interactive, file=stream, **kwargs)
