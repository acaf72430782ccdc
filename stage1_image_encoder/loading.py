"""Datasets feeding the image encoder."""
from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from fer_pipeline.config import AugmentConfig, EncoderModelConfig


def to_gray(bgr: np.ndarray) -> np.ndarray:
    """BGR -> grey replicated into 3 channels (encoders trained on greyscale sets)."""
    return cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


def crop_tensor(bgr: np.ndarray, size: int, grayscale: bool = False) -> torch.Tensor:
    """BGR uint8 crop -> (3, size, size) RGB uint8 tensor (resized when needed; grey when
    ``grayscale``)."""
    if grayscale:
        bgr = to_gray(bgr)
    if bgr.shape[:2] != (size, size):
        bgr = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1)))


class BatchNormalizer:
    """(B, 3, S, S) uint8 RGB -> float, normalised like the encoder expects. Runs on the batch
    where it lives (the GPU in production), so workers only decode and ship 4x fewer bytes."""

    def __init__(self, cfg: EncoderModelConfig):
        self.mean = torch.tensor(cfg.mean).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(cfg.std).view(1, 3, 1, 1) * 255.0

    def __call__(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: (B, 3, S, S), or (B, S, S, 3) channels-last as :class:`CropBatches` gives it.
        ``out``: a (B, 3, S, S) float32 tensor to write into (a loop on the CPU reuses one
        buffer: each of the three intermediate results, 10 MB for 64 crops of 112 px, would
        otherwise be fresh pages that the kernel faults in and zeroes, batch after batch)."""
        if x.shape[-1] == 3 and x.shape[1] != 3:
            x = x.permute(0, 3, 1, 2)
        if self.mean.device != x.device:    # once: a copy from host memory waits for the GPU's queue
            self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
        mean, std = self.mean, self.std
        if out is None:
            return (x.float() - mean) / std
        return torch.sub(x, mean, out=out).div_(std)


class CropBatches(Dataset):
    """Face crops read from JPEG files, one batch per item (``batches``: lists of indices into
    ``paths``; use ``DataLoader(..., batch_size=None)``).

    Item: (indices (n,) int64, images (n, S, S, 3) uint8 RGB channels-last, ok (n,) bool). Each
    crop is decoded straight into its row of the batch: no per-crop tensor, no collate copy. An
    unreadable or truncated file gives ``ok = False`` and a zero image, so one bad JPEG never
    stops a run. ``buffers``: item k is written into buffer ``k % buffers`` of a ring allocated
    once, for a loop in the main process that holds at most ``buffers`` items at a time (not with
    DataLoader workers); 0: a fresh tensor per item. Normalise with :class:`BatchNormalizer`.
    """

    def __init__(self, paths: list[str], batches: list[list[int]], cfg: EncoderModelConfig,
                 buffers: int = 0):
        self.paths = paths
        self.batches = batches
        self.size = cfg.img_size
        self.grayscale = cfg.grayscale
        rows = max(map(len, batches), default=0)
        self._ring = [torch.empty(rows, self.size, self.size, 3, dtype=torch.uint8)
                      for _ in range(buffers if rows else 0)]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int):
        idx = self.batches[k]
        n, S = len(idx), self.size
        images = (self._ring[k % len(self._ring)][:n] if self._ring
                  else torch.empty(n, S, S, 3, dtype=torch.uint8))
        rows = images.numpy()
        ok = np.ones(n, bool)
        for j, i in enumerate(idx):
            if not decode_into(self.paths[i], rows[j], self.grayscale):
                ok[j] = False
                rows[j] = 0
        return torch.as_tensor(idx, dtype=torch.int64), images, torch.from_numpy(ok)


def read_jpeg_bytes(path: str) -> np.ndarray | None:
    """The file's bytes, or None when it is missing, unreadable, empty or a truncated JPEG."""
    if not path:
        return None
    try:               # one open + read (half the time of isfile + np.fromfile on a 4 kB crop)
        with open(path, "rb") as f:
            data = np.frombuffer(f.read(), dtype=np.uint8)
    except OSError:    # missing, a directory, unreadable
        return None
    if data.size == 0:
        return None
    # A JPEG without its end-of-image marker is truncated; OpenCV would silently grey-fill it.
    if data[:2].tobytes() == b"\xff\xd8" and data[-2:].tobytes() != b"\xff\xd9":
        return None
    return data


def read_image(path: str) -> np.ndarray | None:
    """BGR uint8 image, or None when the file is missing, unreadable or truncated."""
    data = read_jpeg_bytes(path)
    return None if data is None else cv2.imdecode(data, cv2.IMREAD_COLOR)


def decode_into(path: str, dst: np.ndarray, grayscale: bool = False) -> bool:
    """Decode the image file at ``path`` into ``dst`` ((S, S, 3) uint8 RGB), resized when its
    size differs, grey when ``grayscale``; the same pixels as :func:`crop_tensor` of
    :func:`read_image`. False (``dst`` untouched) when the file is unreadable."""
    data = read_jpeg_bytes(path)
    img = None if data is None else cv2.imdecode(data, cv2.IMREAD_COLOR_RGB)
    if img is None:
        return False
    if grayscale:
        img = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    if img.shape[:2] != dst.shape[:2]:
        cv2.resize(img, dst.shape[1::-1], dst=dst, interpolation=cv2.INTER_LINEAR)
    else:
        dst[...] = img
    return True


def crop_box(img: np.ndarray, box) -> np.ndarray | None:
    """The part of ``img`` inside ``box`` = (x, y, w, h) pixels, clipped to the image.

    A box with a NaN (or ``None``) means "no box": the whole image is returned. A box that does
    not overlap the image (or has no area) gives None, like an unreadable file."""
    if box is None:
        return img
    x, y, w, h = (float(v) for v in box)
    if np.isnan([x, y, w, h]).any():
        return img
    H, W = img.shape[:2]
    x0, y0 = max(int(np.floor(x)), 0), max(int(np.floor(y)), 0)
    x1, y1 = min(int(np.ceil(x + w)), W), min(int(np.ceil(y + h)), H)
    if x1 <= x0 or y1 <= y0:
        return None
    return img[y0:y1, x0:x1]


class LabelledImages(Dataset):
    """Still images with 8-class labels for pretraining.

    Item: ``(image (3, S, S) float, label int)``; when ``soft`` is given,
    ``(image, label, soft_row (K,) float32)`` — the hard label stays available (for NAW
    weights and metrics) next to the soft target.

    ``boxes`` (N, 4) x, y, w, h: each image is first cropped to its box (clipped to the image;
    NaN row = whole image). Training augmentation (``augment`` given) then applies random
    resized crop, horizontal flip, rotation, colour jitter, blur, random erasing — on the uint8 tensor, before
    normalisation. An unreadable image, or one whose box lies outside it, yields a zero image
    with label -1 (and an all-zero soft row), which the loss ignores.
    """

    def __init__(self, paths: list[str], labels, cfg: EncoderModelConfig,
                 augment: AugmentConfig | None = None, boxes=None, soft=None):
        from torchvision.transforms import v2

        self.paths = paths
        self.labels = [int(v) for v in labels]
        if len(self.labels) != len(paths):
            raise ValueError(f"{len(paths)} paths but {len(self.labels)} labels")
        self.boxes = None
        if boxes is not None:
            self.boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
            if len(self.boxes) != len(paths):
                raise ValueError(f"{len(paths)} paths but {len(self.boxes)} boxes")
        self.soft = None
        if soft is not None:
            self.soft = torch.as_tensor(np.asarray(soft, dtype=np.float32))
            if self.soft.ndim != 2 or len(self.soft) != len(paths):
                raise ValueError(f"soft must be ({len(paths)}, K), got {tuple(self.soft.shape)}")
        self.size = cfg.img_size
        self.grayscale = cfg.grayscale
        self.mean = torch.tensor(cfg.mean).view(3, 1, 1)
        self.std = torch.tensor(cfg.std).view(3, 1, 1)
        self.train_tf = None
        self.erase = None
        if augment is not None:
            ops = [v2.RandomResizedCrop(self.size, scale=tuple(augment.crop_scale), ratio=(0.9, 1.1),
                                        antialias=True),
                   v2.RandomHorizontalFlip(augment.hflip)]
            if augment.rotate > 0:
                ops.append(v2.RandomRotation(augment.rotate))
            if augment.color_jitter > 0:
                j = augment.color_jitter
                ops.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j))
            if augment.blur > 0:
                ops.append(v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 1.5))], p=augment.blur))
            self.train_tf = v2.Compose(ops)
            if augment.erase > 0:
                self.erase = v2.RandomErasing(p=augment.erase, value=0)

    def __len__(self) -> int:
        return len(self.paths)

    def _item(self, x: torch.Tensor, label: int, i: int):
        if self.soft is None:
            return x, label
        soft = self.soft[i].clone() if label >= 0 else torch.zeros(self.soft.shape[1])
        return x, label, soft

    def __getitem__(self, i: int):
        img = read_image(self.paths[i])
        if img is not None and self.boxes is not None:
            img = crop_box(img, self.boxes[i])
        if img is None:
            return self._item(torch.zeros(3, self.size, self.size), -1, i)
        if self.grayscale:
            img = to_gray(img)
        x = torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1)))  # RGB uint8
        if self.train_tf is not None:
            x = self.train_tf(x)
        elif x.shape[1:] != (self.size, self.size):
            x = torch.nn.functional.interpolate(x[None].float(), size=(self.size, self.size),
                                                mode="bilinear", antialias=True, align_corners=False)[0]
        x = (x.float() / 255.0 - self.mean) / self.std
        if self.erase is not None:
            x = self.erase(x)
        return self._item(x, self.labels[i], i)
