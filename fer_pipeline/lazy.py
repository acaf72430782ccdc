"""Stage doors that cost nothing to import.

A stage package's door is its ``__init__``: the public functions of ``<stage>/api.py`` (its
``__all__``) plus ``register_cli``, the stage's sub-commands, served from ``<stage>/main.py``.
Both are loaded on first use (PEP 562), so ``from stage1_image_encoder import load_encoder``
works while ``import stage1_image_encoder`` alone imports neither torch nor timm, and building
the CLI imports only the light ``main.py`` modules (``--help`` stays fast).

Imports point one way inside a stage: ``main.py`` (argument parsing) calls ``api.py`` (the
library door), never the reverse, which is why the CLI registration is served from here rather
than re-exported by ``api.py``."""
from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

# Names a stage door serves from its entry module instead of ``api`` (no torch needed).
CLI_NAMES = {"register_cli": ("main", "register")}


def api_names(package: str) -> list[str]:
    """``__all__`` of ``<package>/api.py``, read without importing it."""
    spec = importlib.util.find_spec(package)
    api = Path(spec.origin).parent / "api.py"
    for node in ast.parse(api.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise ImportError(f"{api} defines no __all__")


def lazy_door(package: str):
    """``(__getattr__, __dir__, __all__)`` for a stage package's ``__init__``."""
    names = api_names(package) + list(CLI_NAMES)

    def __getattr__(name: str):
        if name in CLI_NAMES:
            module, attr = CLI_NAMES[name]
            return getattr(importlib.import_module(f"{package}.{module}"), attr)
        if name in names:
            return getattr(importlib.import_module(f"{package}.api"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(names)

    return __getattr__, __dir__, names
