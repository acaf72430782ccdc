"""Datasets feeding the image encoder."""
from __future__ import annotations

import os

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.config import EncoderModelConfig


class CropNormalizer:
    """BGR uint8 crop -> (3, S, S) float tensor, resized and normalised like the encoder expects."""

    def __init__(self, cfg: EncoderModelConfig):
        self.size = cfg.img_size
        self.mean = np.asarray(cfg.mean, dtype=np.float32) * 255.0
        self.std = np.asarray(cfg.std, dtype=np.float32) * 255.0

    def __call__(self, bgr: np.ndarray) -> torch.Tensor:
        if bgr.shape[:2] != (self.size, self.size):
            bgr = cv2.resize(bgr, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        rgb = bgr[:, :, ::-1].astype(np.float32)
        return torch.from_numpy(((rgb - self.mean) / self.std).transpose(2, 0, 1).copy())


class CropFiles(Dataset):
    """Face crops read from JPEG files in the given order.

    Item: (index, image (3, S, S), ok). An unreadable or truncated file gives ``ok = False`` and
    a zero image, so one bad JPEG never stops a run.
    """

    def __init__(self, paths: list[str], cfg: EncoderModelConfig):
        self.paths = paths
        self.norm = CropNormalizer(cfg)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        img = read_image(self.paths[i])
        if img is None:
            return i, torch.zeros(3, self.norm.size, self.norm.size), False
        return i, self.norm(img), True


def read_image(path: str) -> np.ndarray | None:
    """BGR uint8 image, or None when the file is missing, unreadable or truncated."""
    if not path or not os.path.isfile(path):
        return None
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        return None
    # A JPEG without its end-of-image marker is truncated; OpenCV would silently grey-fill it.
    if data[:2].tobytes() == b"\xff\xd8" and data[-2:].tobytes() != b"\xff\xd9":
        return None
    return cv2.imdecode(data, cv2.IMREAD_COLOR)

