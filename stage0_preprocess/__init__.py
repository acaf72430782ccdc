"""Stage 0: videos -> aligned face crops + frame manifest (parquet).

The public door is ``stage0_preprocess.api`` (its names are also importable from here, loaded
on first use so that ``import stage0_preprocess`` stays cheap)."""
from fer_pipeline.lazy import lazy_door

__getattr__, __dir__, __all__ = lazy_door(__name__)
