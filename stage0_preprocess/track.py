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

Only a plausible face is (re-)acquired — at the start, after a cut and after the track was lost
(:func:`plausible_faces`): a detection score of at least ``acquire_min_score``, a box aspect
(height / width) within ``acquire_aspect``, all 5 landmarks inside the box (grown by
``acquire_landmark_margin``), both eyes above the nose and the nose above both mouth corners, and
the eyes' horizontal distance (right minus left) within ``acquire_eye_dist`` of the box width
(profiles, eyes almost on top of each other, pass). Detectors also fire on hands, a hand holding
a microphone for one, often best-scored in a frame without a frontal face; such a detection is
never made the main face. A face being tracked is continued without the check (a head turning to
profile or partly covered stays the main face).
"""
from __future__ import annotations

import numpy as np

from fer_pipeline.config import TrackConfig


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


def plausible_faces(boxes: np.ndarray, scores: np.ndarray, kps: np.ndarray | None,
                    cfg: TrackConfig) -> np.ndarray:
    """(N,) bool: which detections look enough like a face to be acquired as the main face.
    ``kps`` (N, 5, 2) in ArcFace order (left eye, right eye, nose, left / right mouth corner);
    ``None`` checks the score and box only."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    ok = (scores >= cfg.acquire_min_score) & (w > 0) & (h > 0)
    aspect = h / np.maximum(w, 1e-9)
    ok &= (aspect >= cfg.acquire_aspect[0]) & (aspect <= cfg.acquire_aspect[1])
    if kps is None:
        return ok
    k = np.asarray(kps, np.float64).reshape(-1, 5, 2)
    m = cfg.acquire_landmark_margin
    ww, hh = np.maximum(w, 1e-9)[:, None], np.maximum(h, 1e-9)[:, None]
    rx = (k[..., 0] - boxes[:, None, 0]) / ww
    ry = (k[..., 1] - boxes[:, None, 1]) / hh
    ok &= ((rx >= -m) & (rx <= 1 + m) & (ry >= -m) & (ry <= 1 + m)).all(axis=1)
    eyes_y, nose_y, mouth_y = k[:, :2, 1], k[:, 2, 1], k[:, 3:, 1]
    ok &= (eyes_y.max(axis=1) < nose_y) & (nose_y < mouth_y.min(axis=1))
    eye_dx = (k[:, 1, 0] - k[:, 0, 0]) / ww[:, 0]
    ok &= (eye_dx >= cfg.acquire_eye_dist[0]) & (eye_dx <= cfg.acquire_eye_dist[1])
    return ok


class MainFaceTracker:
    def __init__(self, cfg: TrackConfig, side: str | None = None, fps: float = 25.0):
        self.cfg = cfg
        self.side = side
        self.patience = max(1, int(round(cfg.patience_s * fps)))
        self.last_box: np.ndarray | None = None
        self.prev_boxes = np.zeros((0, 4))
        self.lost = 0

    def _acquire(self, boxes: np.ndarray, scores: np.ndarray, kps: np.ndarray | None) -> int:
        """The largest confident plausible face (or the side's one of the two largest); -1 when
        no detection is a plausible face."""
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        rank = np.where(plausible_faces(boxes, scores, kps, self.cfg), area * scores, -np.inf)
        if not np.isfinite(rank).any():
            return -1
        if self.side is None or np.isfinite(rank).sum() == 1:
            return int(np.argmax(rank))
        top2 = np.argsort(-rank, kind="stable")[:2]
        cx = (boxes[top2, 0] + boxes[top2, 2]) / 2
        return int(top2[np.argmin(cx)] if self.side == "left" else top2[np.argmax(cx)])

    def update(self, boxes: np.ndarray, scores: np.ndarray, cut: bool = False,
               kps: np.ndarray | None = None) -> int:
        """Index of the main face among this frame's detections, or -1 when there is none.
        ``cut``: this frame starts a new shot (forget the previous main face). ``kps``: the
        detections' 5 landmarks (N, 5, 2), checked before a face is (re-)acquired."""
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
            idx = self._acquire(boxes, scores, kps)
            if idx < 0:
                self.lost += 1
                return -1
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
