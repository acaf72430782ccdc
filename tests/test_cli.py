"""The command line itself: ``--version``, a ``--help`` that loads no heavy library, help text
and defaults on every option, usage errors with the sub-command's usage, predict's input errors."""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from importlib import metadata

import pytest

from fer_pipeline.app.cli import build_parser
from fer_pipeline.media import VIDEO_EXTENSIONS

HEAVY = ("torch", "timm", "cv2", "insightface", "pandas", "zarr", "matplotlib")


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "fer_pipeline", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def _sub_parsers(parser: argparse.ArgumentParser, path=()):
    """``(command words, parser)`` for the parser and every sub-parser below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _sub_parsers(sub, (*path, name))


COMMANDS = [path for path, _ in _sub_parsers(build_parser())]


def test_version_prints_the_package_version():
    r = cli("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"fer-pipeline {metadata.version('fer-pipeline')}"


@pytest.mark.parametrize("argv", [["--help"], ["stage2", "train", "--help"], ["predict", "--help"],
                                  ["stage1", "embed", "--help"], ["inspect", "--help"],
                                  ["report", "--help"], ["demo", "--help"]])
def test_help_imports_no_heavy_library(argv):
    code = ("import json, sys\nfrom fer_pipeline.app.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit as e:\n    code = e.code\n"
            f"print(json.dumps([code, sorted(m for m in {HEAVY!r} if m in sys.modules)]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "usage: fer-pipeline" in r.stdout
    code, loaded = json.loads(r.stdout.strip().splitlines()[-1])
    assert code == 0 and loaded == [], f"{' '.join(argv)} imported {loaded}"


def _option_entries(help_text: str) -> dict[str, str]:
    """``{option invocation: its help text}`` from the ``options:`` section of a ``--help``:
    an entry is a line indented by two spaces; its help follows on the same line after two
    spaces or on the deeper-indented lines below it."""
    entries: dict[str, str] = {}
    current = None
    in_options = False
    for line in help_text.splitlines():
        if line and not line.startswith(" "):
            in_options = line.rstrip() == "options:"
            current = None
            continue
        if not in_options or not line.strip():
            continue
        if re.match(r"^  -", line):
            invocation, _, text = line.strip().partition("  ")
            current = invocation
            entries[current] = text.strip()
        elif current is not None:
            entries[current] = (entries[current] + " " + line.strip()).strip()
    return entries


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "fer-pipeline")
def test_every_option_has_help_and_shows_its_default(path):
    parser = dict(_sub_parsers(build_parser()))[path]
    text = parser.format_help()
    entries = _option_entries(text)
    options = [a for a in parser._actions if a.option_strings]
    assert len(entries) == len(options), text
    missing = [inv for inv, help_ in entries.items() if not help_]
    assert not missing, f"options without help text in `{' '.join(path)} --help`: {missing}"
    for action in options:
        default = action.default
        if default in (None, False, [], argparse.SUPPRESS):
            continue
        help_ = next(h for inv, h in entries.items() if inv.startswith(action.option_strings[0]))
        assert "default" in help_, f"{' '.join(path)} {action.option_strings[0]}: {help_!r}"


def test_defaults_are_printed_in_help():
    r = cli("stage2", "kfold", "--help")
    assert r.returncode == 0
    assert re.search(r"--folds K\s+number of splits beside the official one \(default: 3\)", r.stdout)
    assert "(default: kfold)" in r.stdout


@pytest.mark.parametrize("argv, usage, message", [
    (["stage2", "train", "--nproc", "x"], "usage: fer-pipeline stage2 train",
     "argument --nproc: invalid int value: 'x'"),
    (["predict"], "usage: fer-pipeline predict", "the following arguments are required: VIDEO"),
    (["predict", "clip.mp4", "--smooth-window", "-3"], "usage: fer-pipeline predict",
     "argument --smooth-window: must be >= 0 frames"),
])
def test_usage_errors_print_the_sub_commands_usage(argv, usage, message):
    r = cli(*argv)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(usage), r.stderr
    assert message in r.stderr
    assert r.stdout == ""


def test_predict_on_a_folder_without_videos_is_a_usage_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no video here\n")
    (tmp_path / "sub").mkdir()
    r = cli("predict", tmp_path, "--out", tmp_path / "out")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (f"error: no video files in {tmp_path} (looked for "
                                f"{', '.join(VIDEO_EXTENSIONS)})")
    assert not (tmp_path / "out").exists()
