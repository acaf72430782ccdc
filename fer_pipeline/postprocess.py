"""Post-processing of per-frame class probabilities, shared by stage-2 evaluation and
prediction at any level (frame-level encoders too): no-face interpolation and Smooth
Predicting."""
from __future__ import annotations

import numpy as np


def interpolate_no_face(probs: np.ndarray, face: np.ndarray) -> np.ndarray:
    """(T, 8) probabilities of one video: frames without a face get the linear interpolation of
    the nearest face frames' probabilities (the nearest one at the ends). Unchanged when the
    video has no face at all."""
    if face.all() or not face.any():
        return probs
    t = np.arange(len(face))
    out = probs.copy()
    for k in range(probs.shape[1]):
        out[~face, k] = np.interp(t[~face], t[face], probs[face, k])
    return out


def smooth(probs: np.ndarray, window: int, moment_weight: float = 0.0) -> np.ndarray:
    """Smooth Predicting (CFC-SP): per frame, ``(1 - m)`` x the centred moving average of the
    probabilities over ``window`` frames (shrinking at the ends) -- the period around the
    frame, CFC-SP's "universal" evidence -- plus ``m`` x the frame's own probabilities -- the
    moment, its "unique" evidence. ``m = 0`` is the plain moving average."""
    if window <= 1 or len(probs) < 2:
        return probs
    half = window // 2
    csum = np.concatenate([np.zeros((1, probs.shape[1])), np.cumsum(probs, 0)])
    t = np.arange(len(probs))
    lo, hi = np.clip(t - half, 0, len(probs)), np.clip(t + half + 1, 0, len(probs))
    period = (csum[hi] - csum[lo]) / (hi - lo)[:, None]
    return period if moment_weight <= 0 else (1 - moment_weight) * period + moment_weight * probs
