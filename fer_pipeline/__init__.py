"""fer-pipeline: per-frame facial-expression recognition over the 8 Aff-Wild2 / ABAW classes,
as a two-stage offline pipeline with cached features (face crops -> cached encoder embeddings
-> temporal model).

The Python way in is this package's top level::

    import fer_pipeline
    frames = fer_pipeline.predict("clip.mp4")      # pandas.DataFrame, one row per frame
    frames[["frame", "time_s", "label_name", "smoothed_label_name"]]

>>> import fer_pipeline
>>> fer_pipeline.__version__
'0.1.0'
>>> fer_pipeline.sample_video().name               # a real face video to try it on
'd19.mp4'

- ``predict(video_or_folder, run=None)``: per-frame probabilities and labels (``pandas``);
- ``embed(videos_or_manifest, run=None)``: an embedding store of the face crops;
- ``load_store(path)``: an embedding store, as ``fer-pipeline inspect`` reads it;
- ``Predictor``: a loaded model for repeated ``predict`` calls; ``sample_video()``: a real face
  video shipped with the package; ``UsageError``: what a bad input or argument raises.

They are loaded on first use, so ``import fer_pipeline`` costs nothing and the core modules
below it (``fer_pipeline.config``, ``fer_pipeline.store``, ...) import without the app layer.
The command line is ``fer-pipeline`` (``python -m fer_pipeline``).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public name -> module serving it (imported when the name is first used).
_PUBLIC = {"predict": "fer_pipeline.app.api", "embed": "fer_pipeline.app.api",
           "load_store": "fer_pipeline.app.api", "Predictor": "fer_pipeline.app.api",
           "sample_video": "fer_pipeline.app.api", "UsageError": "fer_pipeline.errors"}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'fer_pipeline' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_PUBLIC})
