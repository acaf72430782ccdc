"""Exceptions that map onto the CLI's exit codes (SPEC §8).

- ``UsageError`` / ``ConfigError``: exit 2, nothing was run.
- ``InputError``: one input (a video, an annotation file, a JPEG) is bad; the command reports it,
  goes on with the rest and exits 1 at the end.
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
