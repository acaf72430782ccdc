"""Embed every frame of a manifest once into the embedding store.

All pending crops stream through one loader (DataLoader workers, or without workers a reading
thread) in (video, frame) order, in batches that never span two videos (so a video's embeddings
do not depend on which other videos were pending: a resumed run and a multi-rank run write the
same arrays as one uninterrupted run). A video is written to the store (completion marker last)
as soon as its last crop has been embedded, by a thread of its own while the next batches run
(at most ``MAX_QUEUED_WRITES`` videos wait), so a killed run loses at most the videos in
flight. Videos already complete are skipped. Under torchrun, ranks take disjoint videos and
write to the same store; separate runs may share a store too (the store locks each video; one
finished by another writer meanwhile is skipped). On a GPU the encoder runs as a bf16,
channels-last copy (``for_inference``) and nothing in the loop waits for the GPU's queue: each
batch's embeddings come back by an asynchronous copy, taken in after the next batch is queued.

A video fails (named, not written, so a re-run redoes it) when its embeddings are not finite or
when more than ``stage1.embed.max_bad_crops`` of its face crops are unreadable; fewer unreadable
crops become no-face frames and are counted. A write that fails on the file system (disk full,
read-only) stops the run: ``EmbedResult.stopped`` names the file and the OS error.
"""
from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from fer_pipeline import distributed
from fer_pipeline.config import Config
from fer_pipeline.errors import os_error_line
from fer_pipeline.io import write_text
from fer_pipeline.progress import progress
from fer_pipeline.runs import git_sha
from fer_pipeline.store import EmbeddingStore, nonfinite_rows
from stage1_image_encoder.loading import BatchNormalizer, CropBatches
from stage1_image_encoder.model import embed, encoder_key, for_inference, preprocessing

log = logging.getLogger(__name__)

MAX_QUEUED_WRITES = 2   # videos embedded and waiting for the store writer, at most
# ``stage1.embed.workers: auto`` on a GPU: 2 processes decode ~8,000 crops/s (docs/scaling.md M5),
# twice swin_base's rate on an H200. On a CPU, auto is 0: one worker process gave 0.64 of the bare
# forward against 0.85-0.93 for the reading thread (both cores already run the forward).
AUTO_GPU_WORKERS = 2


@dataclass
class _Pending:
    """A video being assembled: rows of the full frame index, filled as crops arrive."""
    name: str
    rows: pd.DataFrame
    emb: np.ndarray
    face: np.ndarray
    remaining: int
    bad_jpegs: list[str] = field(default_factory=list)
    faces: int = 0       # face frames of the manifest (crops to read)
    emb_flip: np.ndarray | None = None   # stage1.embed.flip: the flipped crops' embeddings
    upgrade: bool = False                # complete already, without flipped-crop embeddings


@dataclass
class EmbedResult:
    store: Path
    encoder_key: str
    written: list[str]
    skipped: list[str]
    failures: list[str]
    frames: int
    bad_crops: int = 0       # unreadable crops made no-face frames in the videos written
    stopped: str = ""        # the file-system error that stopped the run (one line), if any


def _video_attrs(rows: pd.DataFrame) -> dict:
    t = rows["time_s"].to_numpy()
    fps = float((len(t) - 1) / (t[-1] - t[0])) if len(t) > 1 and t[-1] > t[0] else 0.0
    return {"fps": round(fps, 4), "split": str(rows["split"].iloc[0] or ""),
            "source": str(rows["video"].iloc[0])}


def embed_manifest(manifest: pd.DataFrame, model: torch.nn.Module, cfg: Config, store_path: Path,
                   device: torch.device, encoder_run: str | Path | None = None) -> EmbedResult:
    """Embed every face frame of the manifest into the store (videos already complete are
    skipped). ``encoder_run``: the stage-1 run the weights came from, recorded in the store so a
    stage-2 run trained on it can find its encoder again (``fer-pipeline predict``)."""
    mcfg = cfg.stage1.model
    key = encoder_key(model, mcfg)
    model, dtype = for_inference(model, device)
    dim = int(model.num_features)
    if distributed.is_primary():   # one writer creates the store, then everybody opens it
        store = EmbeddingStore.create_or_open(store_path, key, preprocessing(mcfg), dim)
        write_text(store.path / "config.yaml", cfg.to_yaml())   # provenance of the latest writer
        write_text(store.path / "git_sha.txt", git_sha() + "\n")
        if encoder_run is not None:
            store.update_attrs(encoder_run=str(Path(encoder_run).resolve()))
        store.expect_videos(sorted(manifest["video"].unique()))
    distributed.barrier()
    if not distributed.is_primary():
        store = EmbeddingStore.create_or_open(store_path, key, preprocessing(mcfg), dim)

    pending: list[_Pending] = []
    skipped, written, failures = [], [], []
    bad_crops, stopped = 0, ""
    max_bad = cfg.stage1.embed.max_bad_crops
    sizes = manifest.groupby("video").size().sort_index()        # ranks share the frames evenly
    videos = distributed.shard(list(sizes.index), weights=sizes.to_numpy())
    flip = cfg.stage1.embed.flip
    upgrades = 0
    for name, rows in manifest[manifest["video"].isin(videos)].groupby("video", sort=True):
        rows = rows.sort_values("frame")
        complete = store.is_complete(name)
        if complete and (not flip or store.has_flip(name)):
            skipped.append(name)
            continue
        upgrades += complete
        T = len(rows)
        faces = int(rows["has_face"].sum())
        pending.append(_Pending(name, rows.reset_index(drop=True), np.zeros((T, dim), np.float16),
                                np.zeros(T, bool), faces, faces=faces,
                                emb_flip=np.zeros((T, dim), np.float16) if flip else None,
                                upgrade=complete))
    if skipped:
        log.info("%d video(s) already complete in %s, skipped", len(skipped), store_path)
    if upgrades:
        log.info("%d complete video(s) without flipped-crop embeddings: embedded again with "
                 "them (stage1.embed.flip)", upgrades)

    # One flat, ordered list of crops of all pending videos: (pending index, row index, path).
    owners, positions, paths = [], [], []
    for i, p in enumerate(pending):
        idx = np.flatnonzero(p.rows["has_face"].to_numpy())
        owners += [i] * len(idx)
        positions += idx.tolist()
        paths += p.rows["crop_path"].iloc[idx].tolist()
    positions = np.asarray(positions, dtype=np.int64)

    def finish(p: _Pending) -> None:
        """Check a video whose crops are all embedded and queue its store write."""
        if stopped:
            return
        if nonfinite_rows(p.emb).size or (p.emb_flip is not None and nonfinite_rows(p.emb_flip).size):
            msg = f"{p.name}: encoder produced NaN/Inf embeddings; video not written"
            log.error(msg)
            failures.append(msg)
            return
        bad = len(p.bad_jpegs)
        if bad and bad > max_bad * p.faces:
            msg = (f"{p.name}: {bad} of {p.faces} face crops unreadable ({100 * bad / p.faces:.1f}%, "
                   f"more than stage1.embed.max_bad_crops {100 * max_bad:g}%; first: "
                   f"{p.bad_jpegs[0]}); video not written")
            log.error(msg)
            failures.append(msg)
            return
        if bad:
            log.warning("%s: %d of %d face crops unreadable, marked face=False (first: %s)",
                        p.name, bad, p.faces, p.bad_jpegs[0])
        labels = p.rows["label"].to_numpy(np.int8)
        writes.append((p, writer.submit(store.write_video, p.name, p.emb, labels, p.face,
                                        _video_attrs(p.rows), replace=p.upgrade,
                                        emb_flip=p.emb_flip)))
        settle(keep=MAX_QUEUED_WRITES)

    def settle(keep: int) -> None:
        """Account for the store writes that are done, in order; wait while more than ``keep``
        are queued."""
        nonlocal bad_crops, stopped
        while writes and (len(writes) > keep or writes[0][1].done()):
            p, fut = writes.popleft()
            try:
                done = fut.result()
            except OSError as e:    # disk full, read-only: nothing of this video is in the store
                if not stopped:
                    stopped = f"{os_error_line(e)} (writing {p.name}; it is not in the store)"
                    log.error(stopped)
                continue
            if not done:
                log.info("%s: completed meanwhile by another writer of %s; skipped", p.name, store.path)
                skipped.append(p.name)
                continue
            bad_crops += len(p.bad_jpegs)
            written.append(p.name)

    # Store writes run on a thread of their own, overlapping the next batches' forward passes.
    writes: deque[tuple[_Pending, Future]] = deque()
    writer = ThreadPoolExecutor(1, thread_name_prefix="embed-store-writer")
    try:
        for p in pending:  # videos without any face crop are complete already
            if p.remaining == 0:
                finish(p)
        if paths:
            on_cpu = device.type == "cpu"
            workers = cfg.stage1.embed.workers
            if workers == "auto":
                workers = 0 if on_cpu else AUTO_GPU_WORKERS
            batches = per_video_batches(owners, cfg.stage1.embed.batch_size)
            if workers:
                loader = DataLoader(CropBatches(paths, batches, mcfg), batch_size=None,
                                    num_workers=workers, pin_memory=device.type == "cuda")
            else:
                loader = prefetched(CropBatches(paths, batches, mcfg, buffers=2))
            normalize = BatchNormalizer(mcfg)
            buf = None      # on a CPU: one input buffer for all batches (see BatchNormalizer)
            if on_cpu:
                S = mcfg.img_size
                buf = torch.empty(cfg.stage1.embed.batch_size, 3, S, S)

            def take(idx: torch.Tensor, ok: torch.Tensor, out: torch.Tensor, ready) -> None:
                """Put one batch's embeddings into its video's rows (a batch never spans two
                videos); queue the video's store write once its last crop is in."""
                if ready is not None:
                    ready.synchronize()
                out = out.float().numpy()
                idx, ok = idx.numpy(), ok.numpy()
                p = pending[owners[idx[0]]]
                rows = positions[idx]
                if flip:                  # [embeddings | flipped-crop embeddings]
                    out, out_flip = np.split(out, 2, axis=1)
                    p.emb_flip[rows[ok]] = out_flip[ok]
                p.emb[rows[ok]] = out[ok]
                p.face[rows[ok]] = True
                p.bad_jpegs += [paths[i] for i in idx[~ok]]
                p.remaining -= len(idx)
                if p.remaining == 0:
                    finish(p)
                settle(keep=MAX_QUEUED_WRITES)
                bar.update(len(idx))

            # On a GPU the embeddings of a batch come back by an asynchronous copy, taken in
            # only after the next batch's forward pass has been queued: the GPU never waits
            # for this loop's bookkeeping, nor for the loader between two batches.
            before = None
            with torch.inference_mode(), progress(total=len(paths), desc="embed", unit="frame") as bar:
                for idx, images, ok in loader:
                    x = images.to(device, non_blocking=True)
                    x = normalize(x, out=None if buf is None else buf[:len(x)]).to(dtype)
                    out = embed(model, x)
                    if flip:              # the same crops mirrored left-right
                        out = torch.cat([out, embed(model, x.flip(-1))], dim=1)
                    ready = None
                    if not on_cpu:
                        host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
                        out = host.copy_(out, non_blocking=True)
                        ready = torch.cuda.Event()
                        ready.record()
                    if before is not None:
                        take(*before)
                    before = (idx, ok, out, ready)
                    if stopped:
                        break
                if before is not None and not stopped:
                    take(*before)
        settle(keep=0)
    finally:
        writer.shutdown(wait=True, cancel_futures=True)
    distributed.barrier()
    return EmbedResult(store_path, key, written, skipped, failures, len(paths), bad_crops, stopped)


def prefetched(items: Dataset) -> Iterator:
    """``items`` in order, each decoded on a thread of its own while the caller works on the one
    before (JPEG decoding releases the GIL): without DataLoader workers, the next batch's crops
    are read while the forward pass of this one runs. Holds at most two items at a time."""
    with ThreadPoolExecutor(1, thread_name_prefix="embed-reader") as reader:
        ahead = reader.submit(items.__getitem__, 0) if len(items) else None
        for k in range(len(items)):
            item = ahead.result()
            if k + 1 < len(items):
                ahead = reader.submit(items.__getitem__, k + 1)
            yield item
            # the caller is done with item k when it asks for item k + 1


def per_video_batches(owners: list[int], batch_size: int) -> list[list[int]]:
    """Index batches of at most ``batch_size`` over a flat, video-ordered list, each batch
    inside one video (``owners[i]`` = the video of item i)."""
    batches, current = [], []
    for i, v in enumerate(owners):
        if current and (len(current) == batch_size or owners[current[0]] != v):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
