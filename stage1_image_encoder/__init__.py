"""Stage 1: image encoder (timm, NLA pretraining) and the per-frame embedding store.

The public door is ``stage1_image_encoder.api`` (its names are also importable from here,
loaded on first use)."""
from fer_pipeline.lazy import lazy_door

__getattr__, __dir__, __all__ = lazy_door(__name__)
