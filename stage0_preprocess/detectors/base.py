"""What every detector backend shares: the ``Detections`` result, letterboxing into the network
input, greedy NMS, and the mapping of canvas-pixel detections back to the image passed in."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PRE_NMS_TOP_K = 5000


@dataclass
class Detections:
    boxes: np.ndarray   # (N, 4) float32 x1 y1 x2 y2, image pixels
    scores: np.ndarray  # (N,) float32, descending
    kps: np.ndarray     # (N, 5, 2) float32 image pixels, ArcFace order

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
                   np.zeros((0, 5, 2), np.float32))


def as_bgr(img: np.ndarray) -> np.ndarray:
    """Grey or BGRA -> BGR; anything but a non-empty uint8 3-channel image is a ``ValueError``."""
    img = np.asarray(img)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or 0 in img.shape[:2]:
        raise ValueError(f"expected a non-empty (H, W, 3) uint8 BGR image, got "
                         f"{img.shape} {img.dtype}")
    return img


def letterbox(img: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float, float]:
    """Scale ``img`` to fit ``size = (width, height)`` keeping its aspect, pad bottom/right with
    zeros. Returns the canvas and the x/y scale factors (canvas pixels per image pixel)."""
    tw, th = size
    h, w = img.shape[:2]
    s = min(tw / w, th / h)
    nw = min(tw, max(1, int(round(w * s))))
    nh = min(th, max(1, int(round(h * s))))
    canvas = np.zeros((th, tw, 3), np.uint8)
    canvas[:nh, :nw] = img if (nw, nh) == (w, h) else cv2.resize(img, (nw, nh),
                                                                   interpolation=cv2.INTER_LINEAR)
    return canvas, nw / w, nh / h


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression; indices of the kept boxes, highest score first."""
    order = np.argsort(-scores, kind="stable")
    if len(order) <= 1:
        return order
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        ovr = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[ovr <= iou]
    return np.asarray(keep, np.int64)


def select(boxes, scores, kps, threshold: float, iou: float):
    """Threshold, keep the top ``PRE_NMS_TOP_K``, NMS."""
    m = scores >= threshold
    boxes, scores, kps = boxes[m], scores[m], kps[m]
    if len(scores) > PRE_NMS_TOP_K:
        top = np.argpartition(-scores, PRE_NMS_TOP_K)[:PRE_NMS_TOP_K]
        boxes, scores, kps = boxes[top], scores[top], kps[top]
    keep = nms(boxes, scores, iou)
    return boxes[keep], scores[keep], kps[keep]


def to_image(boxes, scores, kps, sx: float, sy: float, shape) -> Detections:
    """Canvas-pixel detections (already thresholded and suppressed) -> image pixels, clipped
    boxes, degenerate ones dropped, sorted by score."""
    if len(scores) == 0:
        return Detections.empty()
    h, w = shape[:2]
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4) / np.array([sx, sy, sx, sy], np.float32)
    kps = np.asarray(kps, np.float32).reshape(-1, 5, 2) / np.array([sx, sy], np.float32)
    scores = np.asarray(scores, np.float32).reshape(-1)
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h)
    ok = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
    order = np.argsort(-scores[ok], kind="stable")
    keep = np.flatnonzero(ok)[order]
    return Detections(np.ascontiguousarray(boxes[keep]), np.ascontiguousarray(scores[keep]),
                      np.ascontiguousarray(kps[keep]))
