"""Face crops from detections: 5-point similarity alignment (ArcFace template, insightface's
``norm_crop``) or a square box crop with a margin."""
from __future__ import annotations

import warnings

import cv2
import numpy as np
from insightface.utils.face_align import norm_crop

from fer_pipeline.config import AlignConfig

# insightface calls scikit-image's deprecated SimilarityTransform.estimate (same result)
warnings.filterwarnings("ignore", message="`estimate` is deprecated", category=FutureWarning)


def margin_crop(img: np.ndarray, box: np.ndarray, size: int, margin: float) -> np.ndarray:
    """Square crop centred on ``box`` with side ``max(w, h) * (1 + 2 * margin)``, resized to
    ``size``; outside the frame is filled with the replicated border."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    scale = size / max(side, 1e-6)
    # affine map: (cx, cy) -> centre of the output, uniform scale
    M = np.array([[scale, 0, size / 2 - scale * cx], [0, scale, size / 2 - scale * cy]], np.float32)
    return cv2.warpAffine(img, M, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def align_face(img: np.ndarray, kps: np.ndarray, size: int) -> np.ndarray:
    """ArcFace 5-point similarity alignment (insightface ``norm_crop``) of a BGR image to a
    ``size`` x ``size`` crop. ``norm_crop`` itself takes multiples of 112 or 128; other sizes
    are resized from the 112 crop."""
    native = size % 112 == 0 or size % 128 == 0
    crop = norm_crop(img, np.asarray(kps, np.float32).reshape(5, 2), image_size=size if native else 112)
    if not native:
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return crop


def crop_face(img: np.ndarray, box: np.ndarray, kps: np.ndarray, cfg: AlignConfig) -> np.ndarray:
    """(H, W, 3) BGR frame -> (size, size, 3) aligned face crop."""
    if cfg.mode == "five_point":
        return align_face(img, kps, cfg.size)
    return margin_crop(img, box, cfg.size, cfg.margin)
