"""Stage 2's public door: what the app layer and the benchmarks call.

- ``train``: one run on a store (DDP-aware) into a run dir; ``evaluate_run`` scores it;
- ``load_model``: a run's model with its kept weights, config and records;
- ``predict_video``: per-frame probabilities of one video's embeddings (sliding windows,
  no-face interpolation), ``smooth`` (Smooth Predicting) and ``decide`` (class ids by the
  run's decision rule);
- ``kfold``, ``ablate``, ``compare_heads``: the multi-run protocols.

The ``stage2`` sub-commands live in ``main.py``, which calls this door; the package serves its
``register`` as ``register_cli`` (``fer_pipeline.lazy``), so this module never imports ``main``.
"""
from __future__ import annotations

import numpy as np
import torch

from fer_pipeline.config import Config
from fer_pipeline.store import LoadedStore
from fer_pipeline.postprocess import interpolate_no_face, smooth
from stage2_temporal.heads import decide as _decide, decision_rule
from stage2_temporal.protocols import ABLATION_ROWS, HEADS_ROWS, ablate, compare_heads, kfold
from stage2_temporal.runs import TrainResult, evaluate_run, load_run_model as load_model, train

__all__ = ["train", "evaluate_run", "load_model", "predict_video", "smooth", "decide", "kfold",
           "ablate", "compare_heads", "TrainResult", "ABLATION_ROWS", "HEADS_ROWS"]


def predict_video(model: torch.nn.Module, loaded: LoadedStore, cfg: Config,
                  device: torch.device | str = "cpu") -> np.ndarray:
    """(T, 8) per-frame probabilities of the one video in ``loaded``: overlapping sliding
    windows of ``stage2.data.clip_len`` averaged; frames without a face take the interpolation
    of their face neighbours."""
    from stage2_temporal.data import TemporalCache
    from stage2_temporal.engine import eval_stride
    from stage2_temporal.evaluate import predict_probs

    if len(loaded.videos) != 1:
        raise ValueError(f"predict_video takes one video, got {len(loaded.videos)}")
    cache = TemporalCache.from_store(loaded, device)
    raw = predict_probs(model.to(device), cache, cfg.stage2.data.clip_len, eval_stride(cfg)).numpy()
    return interpolate_no_face(raw, loaded.face.astype(bool))


def decide(probs: np.ndarray, cfg: Config) -> np.ndarray:
    """(T, 8) probabilities -> (T,) class ids by the run's rule (CFC-SP cascade or argmax)."""
    return _decide(probs, decision_rule(cfg.stage2.model))
