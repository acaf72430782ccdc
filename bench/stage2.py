"""Stage-2 benchmarks, each measured side by side in one run:

(a) one training step on cached embeddings vs the same step with the stage-1 backbone in the
    loop (JPEG decode + frozen encoder forward on the same clips), at the tiny and at the
    default (swin_base) backbone -> the speedup the cache buys;
(b) clip-batch assembly from the in-memory cache vs a plain tensor copy of the same bytes
    (target >= 0.5x);
(d) the NaN/Inf check of loaded embeddings: the float16 bit test the store runs on each block
    as it reads it, vs converting the rows to float32 and summing them (the check it replaced);
(c) ``--gpu``: one epoch over an Aff-Wild2-sized synthetic store (600k frames, D = 1024; an
    epoch covers every frame once) on the GPU (target <= 5 s on an H100).

    python -m bench.stage2 [--skip-base] [--gpu]

Writes bench/stage2.json.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from bench.common import row, timeit, write_rows
from fer_pipeline.config import load_config
from fer_pipeline.store import LoadedStore
from stage2_temporal.data import ClipSampler, TemporalCache, gather_clips

TINY = ["stage1.model.name=swin_tiny_patch4_window7_224", "stage1.model.img_size=112",
        "stage1.model.embed_dim=32", "stage1.model.depths=[2,2]", "stage1.model.num_heads=[2,4]",
        "stage1.model.window_size=7"]


def synthetic_cache(frames: int, dim: int, video_len: int, device) -> TemporalCache:
    rng = np.random.default_rng(0)
    lengths = np.full(max(1, frames // video_len), video_len)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n = int(offsets[-1])
    loaded = LoadedStore([f"v{i}" for i in range(len(lengths))], offsets,
                         rng.standard_normal((n, dim), dtype=np.float32).astype(np.float16),
                         rng.integers(-1, 8, n).astype(np.int8), rng.random(n) > 0.05,
                         [{}] * len(lengths), "bench", dim)
    return TemporalCache.from_store(loaded, device)


def clip_assembly(device, frames=100_000, dim=1024, clip_len=100, batch=64) -> list[dict]:
    """(b): gather clips from the cache vs a plain cast-copy of as many bytes."""
    cache = synthetic_cache(frames, dim, 1500, device)
    batches = list(ClipSampler(cache, clip_len, batch, seed=0))[:20]
    n_rows = sum(int(l.sum()) for _, l, _ in batches)
    src = cache.emb[:n_rows]
    t_gather = timeit(lambda: [gather_clips(cache, s, l, clip_len) for s, l, _ in batches])
    t_copy = timeit(lambda: src.float())
    info = {"device": str(device), "dim": dim}
    return [row("stage2 clip assembly, frames/s", n_rows / t_gather, "frames/s", **info),
            row("stage2 clip assembly / plain tensor copy of the same bytes", t_copy / t_gather,
                "x", target=0.5, **info)]


def step_speedup(backbone: str, device, clips: int, clip_len: int, repeat: int) -> list[dict]:
    """(a): cached training step vs backbone-in-the-loop step on the same clips."""
    from stage1_image_encoder.loading import BatchNormalizer, crop_tensor
    from stage1_image_encoder import load_encoder as encoder_from
    from stage1_image_encoder.model import embed
    from stage2_temporal.engine import build_model
    from stage2_temporal.losses import vnaw_loss

    cfg = load_config(overrides=TINY if backbone == "tiny" else [])
    encoder, mcfg = encoder_from(cfg)
    encoder = encoder.to(device).eval()
    dim = int(encoder.num_features)
    model = build_model(dim, cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    frames = clips * clip_len
    tmp = Path(tempfile.mkdtemp(prefix="bench-stage2-"))
    try:
        rng = np.random.default_rng(0)
        paths = []
        for k in range(frames):
            p = tmp / f"{k:05d}.jpg"
            cv2.imwrite(str(p), cv2.GaussianBlur(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8),
                                                 (7, 7), 2))
            paths.append(str(p))
        cache = synthetic_cache(frames, dim, clip_len, device)
        starts = torch.arange(clips) * clip_len
        lengths = torch.full((clips,), clip_len)
        norm = BatchNormalizer(mcfg)

        def temporal_step(x, valid, label):
            logits = model(x, valid)
            loss, _ = vnaw_loss(logits, label, valid, 0.5, cfg.stage2.naw)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def cached():
            b = gather_clips(cache, starts, lengths, clip_len)
            temporal_step(b.x, b.valid, b.label)

        def with_backbone():
            imgs = torch.stack([crop_tensor(cv2.imread(p), mcfg.img_size, mcfg.grayscale) for p in paths])
            with torch.inference_mode():
                feats = embed(encoder, norm(imgs.to(device))).float()
            x = feats.clone().view(clips, clip_len, dim)
            b = gather_clips(cache, starts, lengths, clip_len)
            temporal_step(x, b.valid, b.label)

        t_cached = timeit(cached, repeat=repeat)
        t_backbone = timeit(with_backbone, repeat=max(1, repeat // 2), warmup=1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info = {"backbone": mcfg.name, "img_size": mcfg.img_size, "clips": clips,
            "clip_len": clip_len, "device": str(device)}
    return [row(f"stage2 train step on cached embeddings ({backbone} backbone), s", t_cached, "s",
                lower_is_better=True, **info),
            row(f"stage2 train step with the {backbone} backbone in the loop, s", t_backbone, "s",
                lower_is_better=True, **info),
            row(f"stage2 cached-step speedup over backbone-in-the-loop ({backbone})",
                t_backbone / t_cached, "x", **info)]


def gpu_epoch(frames=600_000, dim=1024, clip_len=100, batch=256) -> list[dict]:
    """(c): one epoch (every frame about once) over an Aff-Wild2-sized store held on the GPU."""
    from stage2_temporal.engine import build_model
    from stage2_temporal.losses import vnaw_loss

    device = torch.device("cuda")
    cfg = load_config()
    cache = synthetic_cache(frames, dim, 5000, device)
    model = build_model(dim, cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    sampler = ClipSampler(cache, clip_len, batch, seed=0)

    def epoch():
        for s, l, r in sampler:
            b = gather_clips(cache, s, l, clip_len, r)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(b.x, b.valid)
            loss, _ = vnaw_loss(logits, b.label, b.inside, 0.5, cfg.stage2.naw)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    t = timeit(epoch, repeat=2, warmup=1)
    return [row("stage2 GPU epoch over 600k x 1024 frames, s", t, "s", target=5.0,
                lower_is_better=True, batch=batch, device=torch.cuda.get_device_name(0))]


def finite_check(frames=131_072, dim=1024) -> list[dict]:
    """(d): seconds per 1 M rows of the store's NaN/Inf test vs a float32 row sum, same rows."""
    from fer_pipeline.store.reader import _FINITE_CHUNK, nonfinite_rows

    emb = np.random.default_rng(0).standard_normal((frames, dim), dtype=np.float32).astype(np.float16)
    emb[frames // 3, 7] = np.nan

    def float32_sum():
        return np.concatenate([np.flatnonzero(~np.isfinite(emb[s:s + _FINITE_CHUNK].sum(1, dtype=np.float32))) + s
                               for s in range(0, frames, _FINITE_CHUNK)])
    np.testing.assert_array_equal(nonfinite_rows(emb), float32_sum())
    t_bits, t_sum = timeit(lambda: nonfinite_rows(emb)), timeit(float32_sum)
    info = {"frames": frames, "dim": dim}
    per_m = 1e6 / frames
    return [row("stage2 NaN/Inf check of fp16 embeddings (bit test), s per 1M x 1024 rows", t_bits * per_m,
                "s", lower_is_better=True, **info),
            row("stage2 NaN/Inf check: float32 row sum / float16 bit test", t_sum / t_bits, "x", **info)]


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--clips", type=int, default=4, help="clips per step in (a)")
    p.add_argument("--clip-len", type=int, default=100)
    p.add_argument("--skip-base", action="store_true", help="(a) at the tiny backbone only")
    p.add_argument("--gpu", action="store_true", help="also (c), on the GPU")
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("stage2.json"))
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = clip_assembly(device) + finite_check()
    rows += step_speedup("tiny", device, args.clips, args.clip_len, repeat=5)
    if not args.skip_base:
        rows += step_speedup("base", device, args.clips, args.clip_len, repeat=2)
    if args.gpu:
        if not torch.cuda.is_available():
            raise SystemExit("--gpu: no CUDA device")
        rows += gpu_epoch()
    write_rows(rows, args.out)
    return rows


if __name__ == "__main__":
    main()
