"""Exceptions that map onto the CLI's exit codes (SPEC §8).

- ``UsageError`` / ``ConfigError``: exit 2, nothing was run.
- ``InputError``: one input (a video, an annotation file, a JPEG) is bad; the command reports it,
  goes on with the rest and exits 1 at the end.
- An output location that fails during a run (``OSError``: disk full, read-only) is one line
  naming the file and the OS error (``os_error_line``); exit 1 when other inputs were done,
  else 2 (``output_failure``).
"""
from __future__ import annotations

EXIT_OK, EXIT_INPUTS_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad command line or missing required path; exit code 2."""


class ConfigError(UsageError):
    """Unknown / mistyped config key or a value of the wrong type; exit code 2."""


class RunFailed(Exception):
    """A run stopped on its own data (e.g. a non-finite loss); exit code 1, outputs kept."""


class InputError(Exception):
    """A single bad input. The message names the file and the problem in one line."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def os_error_line(e: OSError) -> str:
    """An OS error as one line naming the file: ``PATH: No space left on device``."""
    what = e.strerror or str(e) or type(e).__name__
    if e.filename is None:
        return what
    two = f" -> {e.filename2}" if getattr(e, "filename2", None) else ""
    return f"{e.filename}{two}: {what}"


def output_failure(message: str, others_done: bool) -> Exception:
    """The exception for an output location that failed during a run (disk full, read-only):
    ``RunFailed`` (exit 1) when other inputs were done, else ``UsageError`` (exit 2)."""
    return RunFailed(message) if others_done else UsageError(message)
