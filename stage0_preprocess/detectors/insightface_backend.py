"""Detectors decoded by insightface: SCRFD and insightface-format RetinaFace (score/bbox/kps per
stride), loaded through ``insightface.model_zoo.get_model`` and fed our letterboxed canvas."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fer_pipeline.config import DetectorConfig
from fer_pipeline.errors import UsageError
from stage0_preprocess.detectors.base import Detections, as_bgr, letterbox, to_image
from stage0_preprocess.detectors.session import (describe, network_size, ort_providers,
                                                 session_options, short)


def is_insightface_layout(outputs) -> bool:
    """score/bbox/kps per stride: 9 outputs (3 strides) or 15 (5 strides), 2-D or 3-D, with
    last dims 1 / 4 / 10 in insightface's order."""
    n = len(outputs)
    if n not in (9, 15):
        return False
    fmc = n // 3
    for i, (_, shape) in enumerate(outputs):
        if len(shape) not in (2, 3):
            return False
        want = (1, 4, 10)[i // fmc]
        if shape[-1] is not None and shape[-1] != want:
            return False
    return True


class InsightFaceDetector:
    """An insightface ``model_zoo`` detector (SCRFD, or insightface-format RetinaFace), fed our
    letterboxed canvas so that its own resize is the identity; one image per session call."""

    def __init__(self, name: str, path: Path, cfg: DetectorConfig, signature):
        from insightface import model_zoo

        inputs, outputs = signature
        self.name = name
        self.path = path
        self.input_size = network_size(path, inputs[0][1], cfg.input_size)
        self.batch_size = 1
        if path.suffix.lower() != ".onnx":  # insightface treats other names as model-zoo names
            raise UsageError(f"{path}: insightface loads detector files named *.onnx only")
        try:
            model = model_zoo.get_model(str(path), providers=ort_providers(),
                                        sess_options=session_options())
        except UsageError:
            raise
        except Exception as e:
            raise UsageError(f"{path}: insightface cannot load it ({short(e)})") from None
        if model is None or getattr(model, "taskname", None) != "detection":
            raise UsageError(f"{path}: insightface does not load it as a face detector "
                             f"(outputs: {describe(outputs)})")
        if not getattr(model, "use_kps", False):
            raise UsageError(f"{path}: detector has no 5-point landmark outputs "
                             "(expected 9 or 15 outputs: score/bbox/kps per stride)")
        model.det_thresh = float(cfg.threshold)
        model.nms_thresh = float(cfg.nms)
        self.model = model

    def __repr__(self) -> str:
        return (f"InsightFaceDetector(name={self.name!r}, path='{self.path}', "
                f"model={type(self.model).__name__}, input_size={self.input_size})")

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        results = []
        for img in images:
            canvas, sx, sy = letterbox(as_bgr(img), self.input_size)
            det, kpss = self.model.detect(canvas, input_size=self.input_size, max_num=0)
            if det is None or len(det) == 0:
                results.append(Detections.empty())
                continue
            results.append(to_image(det[:, :4], det[:, 4], kpss, sx, sy, img.shape))
        return results
