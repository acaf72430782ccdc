"""Datasets feeding the image encoder."""
from __future__ import annotations

import os

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.config import AugmentConfig, EncoderModelConfig


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



class LabelledImages(Dataset):
    """Still images with 8-class labels for pretraining. Item: (image (3, S, S), label).

    Training augmentation (``augment`` given): random resized crop, horizontal flip, colour
    jitter, random erasing — on the uint8 tensor, before normalisation. An unreadable image
    yields a zero image with label -1, which the loss ignores.
    """

    def __init__(self, paths: list[str], labels, cfg: EncoderModelConfig,
                 augment: AugmentConfig | None = None):
        from torchvision.transforms import v2

        self.paths = paths
        self.labels = [int(v) for v in labels]
        self.size = cfg.img_size
        self.mean = torch.tensor(cfg.mean).view(3, 1, 1)
        self.std = torch.tensor(cfg.std).view(3, 1, 1)
        self.train_tf = None
        self.erase = None
        if augment is not None:
            ops = [v2.RandomResizedCrop(self.size, scale=tuple(augment.crop_scale), ratio=(0.9, 1.1),
                                        antialias=True),
                   v2.RandomHorizontalFlip(augment.hflip)]
            if augment.color_jitter > 0:
                j = augment.color_jitter
                ops.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j))
            self.train_tf = v2.Compose(ops)
            if augment.erase > 0:
                self.erase = v2.RandomErasing(p=augment.erase, value=0)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        img = read_image(self.paths[i])
        if img is None:
            return torch.zeros(3, self.size, self.size), -1
        x = torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1)))  # RGB uint8
        if self.train_tf is not None:
            x = self.train_tf(x)
        elif x.shape[1:] != (self.size, self.size):
            x = torch.nn.functional.interpolate(x[None].float(), size=(self.size, self.size),
                                                mode="bilinear", antialias=True, align_corners=False)[0]
        x = (x.float() / 255.0 - self.mean) / self.std
        if self.erase is not None:
            x = self.erase(x)
        return x, self.labels[i]
