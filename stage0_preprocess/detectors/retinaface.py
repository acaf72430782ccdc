"""The Pytorch_Retinaface ONNX export (outputs ``loc``, ``conf``, ``landms``), decoded here:
SSD-style prior boxes per stride, variances (0.1, 0.2), BGR minus (104, 117, 123)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fer_pipeline.config import DetectorConfig
from fer_pipeline.errors import UsageError
from stage0_preprocess.detectors.base import select
from stage0_preprocess.detectors.session import OnnxDetector, dim

# Pytorch_Retinaface (mobilenet0.25 / resnet50 configs)
RETINA_MIN_SIZES = ((16, 32), (64, 128), (256, 512))
RETINA_STEPS = (8, 16, 32)
RETINA_VARIANCES = (0.1, 0.2)
RETINA_MEAN_BGR = (104.0, 117.0, 123.0)


def retinaface_priors(width: int, height: int) -> np.ndarray:
    """Pytorch_Retinaface prior boxes ``(P, 4)`` as ``cx, cy, w, h`` in input pixels: per level,
    cells row-major, the level's two min sizes innermost (16 800 priors at 640x640)."""
    levels = []
    for step, sizes in zip(RETINA_STEPS, RETINA_MIN_SIZES):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        ys, xs = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        centres = np.stack([(xs.ravel() + 0.5) * step, (ys.ravel() + 0.5) * step], -1)
        n, k = len(centres), len(sizes)
        wh = np.asarray(sizes, np.float64)[:, None].repeat(2, 1)
        levels.append(np.concatenate([np.repeat(centres, k, 0), np.tile(wh, (n, 1))], 1))
    return np.concatenate(levels).astype(np.float32)


def is_priorbox_layout(outputs) -> bool:
    """Three 3-D outputs whose last dims are 2 / 4 / 10 (conf, loc, landms) in any order."""
    return len(outputs) == 3 and all(len(s) == 3 for _, s in outputs) \
        and sorted(s[-1] or 0 for _, s in outputs) == [2, 4, 10]


class RetinaFacePriorBox(OnnxDetector):
    """The Pytorch_Retinaface ONNX export (``loc``, ``conf``, ``landms``): BGR minus
    (104, 117, 123), SSD priors, variances (0.1, 0.2)."""

    def __init__(self, path: Path, cfg: DetectorConfig, signature):
        inputs, outputs = signature
        super().__init__("retinaface", path, cfg, inputs[0][1])
        by_last = {s[-1]: n for n, s in outputs}
        self.out_loc, self.out_conf, self.out_landms = by_last[4], by_last[2], by_last[10]
        self.priors = retinaface_priors(*self.input_size)
        for n, s in outputs:
            if dim(s[1]) and s[1] != len(self.priors):
                raise UsageError(f"{path}: output {n} has {s[1]} priors, expected "
                                 f"{len(self.priors)} for a {self.input_size[0]}x"
                                 f"{self.input_size[1]} Pytorch_Retinaface export")
        self.mean = np.asarray(RETINA_MEAN_BGR, np.float32)

    def _blob(self, canvases):
        x = np.stack(canvases).astype(np.float32)
        x -= self.mean
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def _decode(self, outs, b):
        conf = outs[self.out_conf][b]
        if conf.min() < 0 or conf.max() > 1:  # exported without the final softmax
            e = np.exp(conf - conf.max(1, keepdims=True))
            conf = e / e.sum(1, keepdims=True)
        scores = conf[:, 1]
        if len(scores) != len(self.priors):
            raise UsageError(f"{self.path}: {len(scores)} predictions for "
                             f"{len(self.priors)} priors")
        m = scores >= self.threshold
        pri, scores = self.priors[m], scores[m]
        loc, lm = outs[self.out_loc][b][m], outs[self.out_landms][b][m]
        v0, v1 = RETINA_VARIANCES
        c = pri[:, :2] + loc[:, :2] * v0 * pri[:, 2:]
        wh = pri[:, 2:] * np.exp(loc[:, 2:] * v1)
        boxes = np.concatenate([c - wh / 2, c + wh / 2], 1)
        kps = pri[:, None, :2] + lm.reshape(-1, 5, 2) * v0 * pri[:, None, 2:]
        return select(boxes, scores, kps, self.threshold, self.nms_iou)
