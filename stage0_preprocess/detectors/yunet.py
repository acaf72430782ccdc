"""libfacedetection YuNet (``cls/obj/bbox/kps`` at strides 8/16/32, one prior per cell),
decoded here: BGR 0-255 input, score = sqrt(cls * obj)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fer_pipeline.config import DetectorConfig
from fer_pipeline.errors import UsageError
from stage0_preprocess.detectors.base import Detections, select
from stage0_preprocess.detectors.session import OnnxDetector

YUNET_STRIDES = (8, 16, 32)
YUNET_OUTPUTS = [f"{k}_{s}" for k in ("cls", "obj", "bbox", "kps") for s in YUNET_STRIDES]


class YuNet(OnnxDetector):
    """libfacedetection YuNet: BGR 0-255, score = sqrt(cls * obj), one prior per cell."""

    def __init__(self, path: Path, cfg: DetectorConfig, signature):
        inputs, _ = signature
        super().__init__("yunet", path, cfg, inputs[0][1])
        w, h = self.input_size
        self.grids = []
        for s in YUNET_STRIDES:
            ys, xs = np.meshgrid(np.arange(h // s), np.arange(w // s), indexing="ij")
            self.grids.append((s, np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float32)))

    def _decode(self, outs, b):
        boxes, scores, kps = [], [], []
        for s, cells in self.grids:
            cls = np.clip(outs[f"cls_{s}"][b].reshape(-1), 0, 1)
            obj = np.clip(outs[f"obj_{s}"][b].reshape(-1), 0, 1)
            sc = np.sqrt(cls * obj)
            if len(sc) != len(cells):
                raise UsageError(f"{self.path}: cls_{s} has {len(sc)} cells, expected "
                                 f"{len(cells)} at input {self.input_size}")
            m = sc >= self.threshold
            if not m.any():
                continue
            bb, kp, cell = outs[f"bbox_{s}"][b][m], outs[f"kps_{s}"][b][m], cells[m]
            c = (cell + bb[:, :2]) * s
            wh = np.exp(bb[:, 2:]) * s
            boxes.append(np.concatenate([c - wh / 2, c + wh / 2], 1))
            kps.append((kp.reshape(-1, 5, 2) + cell[:, None, :]) * s)
            scores.append(sc[m])
        if not scores:
            empty = Detections.empty()
            return empty.boxes, empty.scores, empty.kps
        return select(np.concatenate(boxes), np.concatenate(scores), np.concatenate(kps),
                      self.threshold, self.nms_iou)
