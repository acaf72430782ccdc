"""tqdm with defaults that suit both terminals and batch-job logs."""
from __future__ import annotations

import sys

from tqdm import tqdm


def progress(iterable=None, **kwargs) -> tqdm:
    """A tqdm bar on stderr; in a non-interactive log (Slurm, CI) it refreshes every 30 s
    instead of flooding the file. ``FER_NO_PROGRESS=1`` hides it."""
    import os

    interactive = sys.stderr.isatty()
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 0.2 if interactive else 30.0)
    kwargs.setdefault("disable", os.environ.get("FER_NO_PROGRESS") == "1")
    return tqdm(iterable, **kwargs)
