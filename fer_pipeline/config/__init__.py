"""One strict, layered configuration for all stages (``pipeline.yaml`` is its documentation).

- ``schema``: the pydantic classes, one per config section, strict about keys and types;
- ``loading``: files, presets and ``key=value`` overrides merged and validated once, errors
  naming the key and the layer that set it;
- ``presets``: where the layers live (``pipeline.yaml``, the shipped presets).

Everything is importable from here: ``from fer_pipeline.config import Config, load_config``.
"""
from fer_pipeline.config import loading, presets, schema
from fer_pipeline.config.loading import *  # noqa: F403
from fer_pipeline.config.presets import *  # noqa: F403
from fer_pipeline.config.schema import *  # noqa: F403
from fer_pipeline.errors import ConfigError

__all__ = [*schema.__all__, *loading.__all__, *presets.__all__, "ConfigError"]
