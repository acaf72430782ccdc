"""Loading the layered configuration: YAML files, presets and dotted overrides, merged and
validated once against the schema.

Resolution order (later wins): ``pipeline.yaml`` (project defaults) <- presets (e.g. the demo)
<- ``--config FILE`` (any number) <- dotted ``key=value`` overrides. An unknown key, a mistyped
key or a wrong type raises ``ConfigError`` with one line naming the layer that set it, the key
path and the closest valid key.
"""
from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from fer_pipeline.config.presets import DEFAULT_CONFIG, preset_file
from fer_pipeline.config.schema import Config
from fer_pipeline.errors import ConfigError

__all__ = ["load_config", "validate", "apply_override", "deep_merge", "parse_yaml",
           "load_yaml_file", "all_keys", "closest_key"]


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads 1e-4 as a float (YAML 1.1 only accepts 1.0e-4)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def parse_yaml(text: str, source: str = "<string>") -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML ({str(e).splitlines()[0]})") from None


def load_yaml_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = parse_yaml(path.read_text(), str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys, got {type(data).__name__}")
    return data


def all_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, groups and leaves."""
    keys = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        keys.append(path)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(all_keys(ann, path + "."))
    return keys


def closest_key(key: str) -> str | None:
    """The valid dotted key nearest to a wrong one (same depth preferred as a fallback)."""
    valid = all_keys()
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if not match:
        same_depth = [k for k in valid if k.count(".") == key.count(".")]
        match = difflib.get_close_matches(key, same_depth, n=1, cutoff=0.3)
    return match[0] if match else None


def deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_override(data: dict, item: str) -> dict:
    """Apply one ``a.b.c=value`` override (value parsed as YAML) to a nested dict."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.path=value")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override {item!r}: empty key path")
    value = parse_yaml(raw, f"override {key}") if raw.strip() else None
    out = copy.deepcopy(data)
    node = out
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {key}: '{'.'.join(parts[:i + 1])}' is a value, not a group")
        node = nxt
    node[parts[-1]] = value
    return out


def _leaf_keys(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        path = f"{prefix}{k}"
        out += _leaf_keys(v, path + ".") if isinstance(v, dict) and v else [path]
    return out


def _source_of(key: str, origin: dict[str, str]) -> str:
    """The layer that last set ``key`` (or a key inside / above it)."""
    hits = [src for k, src in origin.items()
            if not key or k == key or k.startswith(key + ".") or key.startswith(k + ".")]
    return hits[-1] if hits else "config"


def _format_error(err: ValidationError, origin: dict[str, str]) -> str:
    e = err.errors()[0]
    key = ".".join(str(p) for p in e["loc"])
    source = _source_of(key, origin)
    if e["type"] == "extra_forbidden":
        hint = closest_key(key)
        suffix = f" (did you mean '{hint}'?)" if hint else ""
        return f"{source}: unknown config key '{key}'{suffix}"
    got = e.get("input")
    got_s = "" if isinstance(got, dict) else f" (got {got!r})"
    where = f"'{key}'" if key else "config"
    extra = f" [+{len(err.errors()) - 1} more]" if len(err.errors()) > 1 else ""
    return f"{source}: {where}: {e['msg']}{got_s}{extra}"


def validate(data: dict, origin: dict[str, str] | None = None) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err, origin or {})) from None


def load_config(config_files: list[str | Path] | None = None, overrides: list[str] | None = None,
                presets: list[str] | None = None, base: str | Path | None = DEFAULT_CONFIG) -> Config:
    """Resolve the layered configuration, validated once at the end (so overrides may come in
    any order); an error names the file or override that set the offending key."""
    data: dict = {}
    origin: dict[str, str] = {}   # dotted leaf key -> layer that set it last (in set order)
    layers: list[tuple[str, dict]] = []
    if base is not None and Path(base).is_file():
        layers.append((str(base), load_yaml_file(base)))
    for name in presets or []:
        layers.append((f"preset {name}", load_yaml_file(preset_file(name))))
    for f in config_files or []:
        layers.append((str(f), load_yaml_file(f)))
    for source, layer in layers:
        data = deep_merge(data, layer)
        for k in _leaf_keys(layer):
            origin.pop(k, None)
            origin[k] = source
    for item in overrides or []:
        data = apply_override(data, item)
        key = item.partition("=")[0].strip()
        origin.pop(key, None)
        origin[key] = f"override {key}"
    return validate(data, origin)
