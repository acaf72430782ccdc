"""Main-face tracking: per frame, pick the detection that continues the previous main face.

Continuation is by box IoU with the last main box (kept through frames where the detector
missed), ranked by ``IoU + score_weight * score``. When no detection overlaps enough — a scene
cut, or the person left — the main face is re-acquired: the largest confident face, or for the
two-person Aff-Wild2 tracks (``side='left'|'right'``) the left- or rightmost of the two largest.
A missed detection of the main face must not hand the track to a background face: a face that
was already visible in the previous frame (so not a cut) and is smaller than ``min_area_ratio``
of the last main box is only taken after the main face has been lost for ``patience`` frames.
At a scene cut (``cut=True``, from :func:`cut_score`) the track is reset and the main face is
re-acquired at once.
"""
from __future__ import annotations

import numpy as np

from pipeline.config import TrackConfig


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box (4,) against many (N, 4) -> (N,)."""
    ix1 = np.maximum(a[0], b[:, 0])
    iy1 = np.maximum(a[1], b[:, 1])
    ix2 = np.minimum(a[2], b[:, 2])
    iy2 = np.minimum(a[3], b[:, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


def thumbnail(image: np.ndarray) -> np.ndarray:
    """32x32 grey thumbnail used to detect scene cuts."""
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)


def cut_score(prev_thumb: np.ndarray | None, thumb: np.ndarray) -> float:
    """Mean absolute grey difference (0..255) between consecutive thumbnails; hard cuts score
    ~25-30, camera motion within a shot stays well under 15 on the sample videos."""
    return 0.0 if prev_thumb is None else float(np.abs(thumb - prev_thumb).mean())


class MainFaceTracker:
    def __init__(self, cfg: TrackConfig, side: str | None = None, fps: float = 25.0):
        self.cfg = cfg
        self.side = side
        self.patience = max(1, int(round(cfg.patience_s * fps)))
        self.last_box: np.ndarray | None = None
        self.prev_boxes = np.zeros((0, 4))
        self.lost = 0

    def _acquire(self, boxes: np.ndarray, scores: np.ndarray) -> int:
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        rank = area * scores
        if self.side is None or len(boxes) == 1:
            return int(np.argmax(rank))
        top2 = np.argsort(-rank)[:2]
        cx = (boxes[top2, 0] + boxes[top2, 2]) / 2
        return int(top2[np.argmin(cx)] if self.side == "left" else top2[np.argmax(cx)])

    def update(self, boxes: np.ndarray, scores: np.ndarray, cut: bool = False) -> int:
        """Index of the main face among this frame's detections, or -1 when there is none.
        ``cut``: this frame starts a new shot (forget the previous main face)."""
        if cut:
            self.last_box, self.prev_boxes, self.lost = None, np.zeros((0, 4)), 0
        prev, self.prev_boxes = self.prev_boxes, np.asarray(boxes, np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            self.lost += 1
            return -1
        idx = -1
        if self.last_box is not None:
            iou = box_iou(self.last_box, boxes)
            ok = iou >= self.cfg.iou
            if ok.any():
                rank = np.where(ok, iou + self.cfg.score_weight * scores, -np.inf)
                idx = int(np.argmax(rank))
        if idx < 0:
            idx = self._acquire(boxes, scores)
            b = boxes[idx]
            seen_before = len(prev) and box_iou(b, prev).max() >= self.cfg.iou
            if self.last_box is not None and self.lost < self.patience and seen_before:
                last_area = (self.last_box[2] - self.last_box[0]) * (self.last_box[3] - self.last_box[1])
                if (b[2] - b[0]) * (b[3] - b[1]) < self.cfg.min_area_ratio * last_area:
                    self.lost += 1
                    return -1
        self.lost = 0
        self.last_box = boxes[idx].astype(np.float64)
        return idx
