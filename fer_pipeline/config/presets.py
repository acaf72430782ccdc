"""Where the configuration layers come from: the project's ``pipeline.yaml`` (every knob with
its default, documented) and the named presets shipped in ``fer_pipeline/presets/`` (``demo``:
the bundled encoder and a small temporal model, layered by ``fer-pipeline demo`` and
``config show --demo``)."""
from __future__ import annotations

from pathlib import Path

from fer_pipeline.errors import ConfigError

__all__ = ["PROJECT_ROOT", "DEFAULT_CONFIG", "PRESETS_DIR", "preset_names", "preset_file"]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = PROJECT_ROOT / "pipeline.yaml"
PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"


def preset_names() -> list[str]:
    """The presets shipped with the package, sorted."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def preset_file(name: str) -> Path:
    """The YAML file of preset ``name``; ``ConfigError`` listing the presets when there is none."""
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r} (presets: {', '.join(preset_names()) or 'none'})")
    return path
