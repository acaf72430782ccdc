"""Stage doors that cost nothing to import.

Each stage package exports its public functions from ``<stage>/api.py``; its ``__init__.py``
re-exports them lazily (PEP 562), so ``from stage1_image_encoder import load_encoder`` works
while ``import stage1_image_encoder`` alone imports neither torch nor timm. The CLI's ``--help``
stays fast that way."""
from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path


def _api_names(package: str) -> list[str]:
    """``__all__`` of ``<package>/api.py``, read without importing it."""
    spec = importlib.util.find_spec(package)
    api = Path(spec.origin).parent / "api.py"
    for node in ast.parse(api.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise ImportError(f"{api} defines no __all__")


# Names served from a lighter module than ``api`` (the CLI registration needs no torch).
LIGHT = {"register_cli": ("main", "register")}


def lazy_door(package: str):
    """``(__getattr__, __dir__, __all__)`` for a stage package's ``__init__``."""
    names = _api_names(package)

    def __getattr__(name: str):
        if name in LIGHT and name in names:
            module, attr = LIGHT[name]
            return getattr(importlib.import_module(f"{package}.{module}"), attr)
        if name in names:
            return getattr(importlib.import_module(f"{package}.api"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(names)

    return __getattr__, __dir__, names
