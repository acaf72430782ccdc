"""The layers, enforced on the imports of every source file (docs/architecture.md):

    core (fer_pipeline/*, outside app/)  <-  stages (stage0/1/2)  <-  app (fer_pipeline/app,
    fer_pipeline/__init__.py: the public API, fer_pipeline/__main__.py), bench

- the core imports no stage and nothing from the app layer;
- a stage imports the core and itself, never another stage nor the app;
- the app layer reaches a stage only through its door (``import stage1_image_encoder`` or
  ``from stage1_image_encoder import <name in its api.__all__>``);
- a door never exports a name that is also one of its package's submodules (the lazy export
  would then be shadowed by the submodule once it is imported);
- no import circle between the project's modules, counting imports inside functions (a
  deferred import still ties the two modules together);
- no source file is longer than 400 lines unless its docstring gives the reason ("Length:").
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("stage0_preprocess", "stage1_image_encoder", "stage2_temporal")
MAX_LINES = 400


def _files(*dirs: str) -> list[Path]:
    return sorted(p for d in dirs for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path, root: Path = ROOT) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, names imported from it) for every import, nested ones too."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:                         # relative import -> absolute
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join([*base, mod] if mod else base)
            out.append((node.lineno, mod, [a.name for a in node.names]))
    return out


def _top(module: str) -> str:
    return module.split(".")[0]


def _layer(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root)
    if rel.parts[0] in STAGES:
        return rel.parts[0]
    if rel.parts[0] == "fer_pipeline":
        # the package's face (__init__: the public API, served from the app) and its CLI entry
        # (__main__) belong to the app layer; every other module outside app/ is the core
        face = len(rel.parts) == 2 and rel.name in ("__init__.py", "__main__.py")
        return "app" if (len(rel.parts) > 1 and rel.parts[1] == "app") or face else "core"
    return rel.parts[0]


def _door(stage: str) -> set[str]:
    """What ``from <stage> import ...`` offers: ``api.__all__`` plus the CLI registration."""
    from fer_pipeline.lazy import CLI_NAMES

    tree = ast.parse((ROOT / stage / "api.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value)) | set(CLI_NAMES)
    raise AssertionError(f"{stage}/api.py has no __all__")


SOURCES = _files("fer_pipeline", *STAGES)


def test_core_imports_no_stage_and_no_app():
    bad = [f"{p.relative_to(ROOT)}:{line} imports {mod}"
           for p in SOURCES if _layer(p) == "core"
           for line, mod, _ in _imports(p)
           if _top(mod) in STAGES or mod.startswith("fer_pipeline.app")]
    assert not bad, "the core must not import stages or the app:\n" + "\n".join(bad)


def stage_violations(sources: list[Path], root: Path = ROOT) -> list[str]:
    bad = []
    for p in sources:
        layer = _layer(p, root)
        if layer not in STAGES:
            continue
        for line, mod, _ in _imports(p, root):
            if (_top(mod) in STAGES and _top(mod) != layer) or mod.startswith("fer_pipeline.app"):
                bad.append(f"{p.relative_to(root)}:{line} imports {mod}")
    return bad


def test_no_stage_imports_another_stage_or_the_app():
    bad = stage_violations(SOURCES)
    assert not bad, "stages meet through files, never through imports:\n" + "\n".join(bad)


def test_the_app_uses_stage_doors_only():
    doors = {s: _door(s) for s in STAGES}
    bad = []
    for p in SOURCES:
        if _layer(p) != "app":
            continue
        for line, mod, names in _imports(p):
            if _top(mod) not in STAGES:
                continue
            where = f"{p.relative_to(ROOT)}:{line}"
            if mod != _top(mod):
                bad.append(f"{where} reaches into {mod} (use the door: from {_top(mod)} import ...)")
            elif names and not set(names) <= doors[mod]:
                bad.append(f"{where} imports {sorted(set(names) - doors[mod])} from {mod}, which its "
                           f"door (api.__all__) does not export")
    assert not bad, "\n".join(bad)


def test_only_the_app_and_bench_import_several_stages():
    for p in SOURCES + _files("bench"):
        stages = {_top(mod) for _, mod, _ in _imports(p) if _top(mod) in STAGES}
        if len(stages) > 1:
            assert _layer(p) in ("app", "bench"), f"{p.relative_to(ROOT)} imports {sorted(stages)}"


@pytest.mark.parametrize("stage", STAGES)
def test_door_names_do_not_shadow_submodules(stage):
    modules = {p.stem for p in (ROOT / stage).iterdir() if p.suffix == ".py"} | \
              {p.name for p in (ROOT / stage).iterdir() if (p / "__init__.py").is_file()}
    clash = _door(stage) & modules
    assert not clash, f"{stage}: door names {sorted(clash)} are also submodule names"


@pytest.mark.parametrize("stage", STAGES)
def test_door_exports_resolve(stage):
    import importlib

    pkg = importlib.import_module(stage)
    for name in _door(stage):
        assert getattr(pkg, name) is not None, f"{stage}.{name}"


def test_source_files_stay_small_or_say_why():
    long = []
    for p in SOURCES + _files("bench"):
        n = len(p.read_text().splitlines())
        if n > MAX_LINES and "Length:" not in (ast.get_docstring(ast.parse(p.read_text())) or ""):
            long.append(f"{p.relative_to(ROOT)}: {n} lines")
    assert not long, "split these files, or say in their docstring why they are long:\n" + "\n".join(long)


def test_the_rules_catch_a_violation(tmp_path):
    """The check can fail: a stage module importing another stage (even inside a function, or
    relatively through the package) is reported with its file and line."""
    fake = tmp_path / "stage2_temporal" / "engine.py"
    fake.parent.mkdir()
    fake.write_text("import torch\n\n\ndef f():\n    from stage1_image_encoder.model import embed\n")
    assert stage_violations([fake], tmp_path) == [
        "stage2_temporal/engine.py:5 imports stage1_image_encoder.model"]
    fake.write_text("from .data import x\nfrom fer_pipeline.app.cli import main\n")
    assert stage_violations([fake], tmp_path) == ["stage2_temporal/engine.py:2 imports fer_pipeline.app.cli"]


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_cycles(sources: list[Path], root: Path = ROOT) -> list[list[str]]:
    """Every set of modules that import each other in a circle (strongly connected components
    of the import graph with more than one module, or a module importing itself), sorted.
    ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``."""
    modules = {_module_name(p, root): p for p in sources}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for m, p in modules.items():
        for _, mod, names in _imports(p, root):
            targets = [f"{mod}.{n}" for n in names if f"{mod}.{n}" in modules]
            if not targets and mod in modules:
                targets = [mod]
            graph[m].update(t for t in targets if t != m)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:          # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(cycles)


def test_no_import_circles():
    cycles = import_cycles(SOURCES)
    assert not cycles, "modules that import each other (directly or around a circle):\n" + \
        "\n".join(" <-> ".join(c) for c in cycles)


def test_the_circle_check_catches_a_deferred_circle(tmp_path):
    """The check can fail: an entry module importing its door at call time while the door
    imports the entry module is one circle."""
    pkg = tmp_path / "stage0_preprocess"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "api.py").write_text("from stage0_preprocess.main import register\n")
    (pkg / "main.py").write_text("def run():\n    from stage0_preprocess.api import run_videos\n")
    (pkg / "run.py").write_text("import stage0_preprocess.api\n")
    assert import_cycles(sorted(pkg.glob("*.py")), tmp_path) == [
        ["stage0_preprocess.api", "stage0_preprocess.main"]]
