"""The README and docs/ say only what is true of this checkout: the quick start runs as written,
every link resolves (files and #anchors), every ``fer-pipeline`` command and option they show
exists, every ``python -m`` module and ``make`` target they name is there, and the README stays
a front page."""
from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else p.name


def _code(text: str) -> list[str]:
    """Code in a page: every fenced block and every inline code span."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M)
    rest = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)
    return blocks + [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", rest)]


def _section(text: str, heading: str) -> str:
    m = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert m, f"README has no '## {heading}' section"
    return m.group(1)


# ------------------------------------------------------------------------------ the front page
def test_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    for heading in ("Set-up", "Quick start", "The pipeline at a glance", "Headline figures"):
        _section(text, heading)
    assert "make demo" in _section(text, "Set-up") and "make test" in _section(text, "Set-up")
    assert (ROOT / ".ci" / "run").read_text().rstrip().endswith("make test")


@pytest.mark.slow
def test_the_quick_start_runs_as_written(tmp_path, monkeypatch):
    """The quick start's shell lines and Python lines, verbatim, from a folder holding what
    they name (the package's sample video, the venv); the DataFrame equals the CLI's CSV."""
    import pandas as pd

    quick = _section((ROOT / "README.md").read_text(), "Quick start")
    bash, = re.findall(r"^```bash\n(.*?)^```", quick, re.S | re.M)
    python, = re.findall(r"^```python\n(.*?)^```", quick, re.S | re.M)
    assert len((bash + python).strip().splitlines()) <= 5
    (tmp_path / "fer_pipeline").symlink_to(ROOT / "fer_pipeline")
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)   # the running venv
    r = subprocess.run(["bash", "-euc", bash], cwd=tmp_path, capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "FER_NO_PROGRESS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "predict: 1 video(s) predicted, 0 failed" in r.stdout
    out = tmp_path / "predictions"
    assert {p.name for p in out.iterdir()} >= {"d19.csv", "d19_submission.txt", "d19_timeline.png"}

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FER_NO_PROGRESS", "1")
    namespace: dict = {}
    exec(compile(python, "README quick start", "exec"), namespace)
    frames = namespace["frames"]
    csv = pd.read_csv(out / "d19.csv")
    assert list(frames.columns) == ["video", *csv.columns] and len(frames) == len(csv) == 250
    assert (frames["smoothed_label"].to_numpy() == csv["smoothed_label"].to_numpy()).all()
    probs = [c for c in csv.columns if c.startswith("p_")]
    assert abs(frames[probs].to_numpy() - csv[probs].to_numpy()).max() < 1e-4   # CSV has 5 decimals


# ------------------------------------------------------------------------------ links
def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but ``-`` and ``_`` dropped (code
    backticks too), spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    for h in re.findall(r"^#{1,6} (.+)$", text, re.M):
        s = _slug(h)
        n = seen.get(s, 0)
        out.add(s if n == 0 else f"{s}-{n}")
        seen[s] = n + 1
    return out


def link_problems(page: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+://|^mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{_rel(page)}: link to {target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{_rel(page)}: link to {target}: no heading with that anchor")
    return bad


def test_every_link_resolves():
    bad = [b for page in PAGES for b in link_problems(page)]
    assert not bad, "\n".join(bad)


def test_the_link_check_can_fail(tmp_path):
    page = tmp_path / "p.md"
    (tmp_path / "q.md").write_text("# Title\n## `fer-pipeline stage2 eval --run RUN_DIR`\n")
    page.write_text("[a](q.md#title) [b](q.md#fer-pipeline-stage2-eval---run-run_dir) "
                    "[c](missing.md) [d](q.md#nowhere)\n")
    assert [b.split(": ", 1)[1] for b in link_problems(page)] == [
        "link to missing.md: no such file", "link to q.md#nowhere: no heading with that anchor"]


# ------------------------------------------------------------------------------ commands
def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


STOP = {"\\", "#", "|", "||", "&&", ";", ">", "2>&1", "...", "…", "/"}


def command_problems(line: str, parser: argparse.ArgumentParser) -> list[str]:
    """Checks one shown ``fer-pipeline ...`` command: its sub-commands exist, and so does
    every ``--option`` written after them (up to the end of the command)."""
    tokens = line.replace("[", " ").replace("]", " ").split()
    path = ["fer-pipeline"]
    node = parser
    bad = []
    for tok in tokens:
        if tok in STOP or tok.startswith("#") or tok.startswith("$("):
            break
        subs = _subparsers(node)
        if subs and not tok.startswith("-"):
            if tok not in subs:
                if re.fullmatch(r"[a-z][a-z0-9]*", tok):
                    bad.append(f"'{' '.join(path)} {tok}': no such command")
                break
            node = subs[tok]
            path.append(tok)
            continue
        if tok.startswith("--"):
            opt = tok.split("=", 1)[0].rstrip(",.:;)'\"")
            if opt not in node._option_string_actions:
                bad.append(f"'{' '.join(path)}': no option {opt}")
    return bad


def _shown_commands() -> list[tuple[Path, str]]:
    out = []
    for page in PAGES:
        for code in _code(page.read_text()):
            code = re.sub(r"\\\n\s*", " ", code)             # join continued lines
            for line in code.splitlines():
                line = re.sub(r"-m fer_pipeline\b", "fer-pipeline", line)
                for m in re.finditer(r"(?:^|[\s(`'\"/])fer-pipeline((?: [^|;&`]*)?)", line):
                    out.append((page, m.group(1)))
    return out


def test_every_shown_command_and_option_exists():
    from fer_pipeline.app.cli import build_parser

    parser = build_parser()
    shown = _shown_commands()
    assert len(shown) > 50                          # the pages do show the commands
    bad = sorted({f"{_rel(page)}: {b}" for page, cmd in shown for b in command_problems(cmd, parser)})
    assert not bad, "\n".join(bad)


def test_the_command_check_can_fail():
    from fer_pipeline.app.cli import build_parser

    parser = build_parser()
    assert command_problems(" stage2 train --store S --out R --resume", parser) == []
    assert command_problems(" stage2 trian --store S", parser) == [
        "'fer-pipeline stage2 trian': no such command"]
    assert command_problems(" predict clip.mp4 --runn R", parser) == [
        "'fer-pipeline predict': no option --runn"]


def test_every_python_module_make_target_and_project_path_shown_exists():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    bad = []
    for page in PAGES:
        for code in _code(page.read_text()):
            for mod in re.findall(r"python3? -m ([\w.]+)", code):
                if mod not in ("pip", "venv") and importlib.util.find_spec(mod) is None:
                    bad.append(f"{_rel(page)}: python -m {mod}: no such module")
            for target in re.findall(r"(?:^|\s)make ([\w-]+)", code):
                if target not in targets:
                    bad.append(f"{_rel(page)}: make {target}: no such target")
            for path in re.findall(r"(?<![\w./$<-])((?:fer_pipeline|stage[012]_\w+|bench|scripts|tests|"
                                   r"docs)/[\w./-]*\w)", code):
                if not (ROOT / path).exists():
                    bad.append(f"{_rel(page)}: {path}: no such file or folder")
    assert not bad, "\n".join(sorted(set(bad)))

