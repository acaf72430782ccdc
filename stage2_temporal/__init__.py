"""Stage 2: temporal model (Transformer + V-NAW) trained on cached embeddings.

The public door is ``stage2_temporal.api`` (its names are also importable from here, loaded on
first use)."""
from fer_pipeline.lazy import lazy_door

__getattr__, __dir__, __all__ = lazy_door(__name__)
