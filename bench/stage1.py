"""Stage-1 embedding throughput, side by side in one run on the same crops:

- the full embed path (JPEG decode in DataLoader workers, per-video batches, store writes)
- the bare backbone forward on the same batches, already decoded in memory
- their ratio (target >= 0.9: reading and writing hide behind the forward pass): the median over
  rounds, each an embed run against the mean of the bare runs just before and just after it

    python -m bench.stage1 [--frames 2000] [--model tiny|base] [--workers 2] [--threads 1]

``--threads 1 --workers 1`` on a CPU gives the forward one core and the loader the other (the
division of labour of a GPU node, where the forward has a device of its own).

Both sides run the model as the embed path does (``for_inference``: on a GPU bf16 weights,
channels-last; float32 on a CPU), and the store written by the first embed run must hold what
the bare forward gives for each crop. On a GPU: ``--model base`` measures
swin_base_patch4_window7_224 frames/s (target >= 3000 on an H100), and a run embeds 32768 crops
(~10 s) by default. Writes bench/stage1.json.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from bench.common import bracketed, ratio_row, row, write_rows
from fer_pipeline.config import load_config
from fer_pipeline.manifest import empty_rows, write_manifest
from fer_pipeline.store import EmbeddingStore

TINY = ["stage1.model.name=swin_tiny_patch4_window7_224", "stage1.model.img_size=112",
        "stage1.model.embed_dim=32", "stage1.model.depths=[2,2]", "stage1.model.num_heads=[2,4]",
        "stage1.model.window_size=7"]


def make_manifest(root: Path, frames: int, per_video: int = 500) -> Path:
    rng = np.random.default_rng(0)
    parts = []
    for v in range(-(-frames // per_video)):
        n = min(per_video, frames - v * per_video)
        d = root / "crops" / f"v{v:03d}"
        d.mkdir(parents=True)
        rows = empty_rows(f"v{v:03d}", n, "train", np.arange(n) / 25)
        for k in range(n):
            img = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
            cv2.imwrite(str(d / f"{k + 1:05d}.jpg"), cv2.GaussianBlur(img, (7, 7), 2))
        rows["has_face"] = True
        rows["crop_path"] = pd.array([f"crops/v{v:03d}/{k + 1:05d}.jpg" for k in range(n)], dtype="string")
        parts.append(rows)
    return write_manifest(root / "manifest.parquet", parts)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--frames", type=int, default=None,
                   help="crops to embed per run (default 2000 on a CPU, 32768 on a GPU: a run of "
                        "~10 s, so that a call's fixed set-up, ~0.5 s of loader start and weight "
                        "hashing, weighs in it about as little as in a real job)")
    p.add_argument("--model", choices=["tiny", "base"], default="tiny")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=0 if not torch.cuda.is_available() else 4,
                   help="DataLoader workers (default: 0 on a CPU, where workers compete with the forward)")
    p.add_argument("--repeat", type=int, default=None,
                   help="rounds: embed runs, each between two bare runs (default 11 on a CPU, where "
                        "single rounds spread over 0.88-1.03 on an idle 2-core machine; 7 on a GPU)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of the forward, both sides (default: torch's, all cores)")
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("stage1.json"))
    args = p.parse_args(argv)
    if args.frames is None:
        args.frames = 32768 if torch.cuda.is_available() else 2000
    if args.repeat is None:
        args.repeat = 7 if torch.cuda.is_available() else 11
    if args.threads:
        torch.set_num_threads(args.threads)

    from stage1_image_encoder.loading import BatchNormalizer, crop_tensor
    from fer_pipeline.manifest import read_manifest
    from stage1_image_encoder.embed import embed_manifest, per_video_batches
    from stage1_image_encoder import load_encoder as encoder_from
    from stage1_image_encoder.model import embed, for_inference

    overrides = (TINY if args.model == "tiny" else []) + [
        f"stage1.embed.batch_size={args.batch}", f"stage1.embed.workers={args.workers}"]
    cfg = load_config(overrides=overrides)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tmp = Path(tempfile.mkdtemp(prefix="bench-stage1-"))
    try:
        manifest = make_manifest(tmp, args.frames)
        # bare forward on the same crops, decoded in memory beforehand, same batch boundaries
        model, mcfg = encoder_from(cfg)
        model, dtype = for_inference(model, device)        # the embed path's own precision
        norm = BatchNormalizer(mcfg)
        paths = sorted((tmp / "crops").rglob("*.jpg"))
        owners = [q.parent.name for q in paths]                     # the video of each crop
        # decoded and normalised beforehand, held where the forward runs (on a GPU: in its memory)
        batches = [norm(torch.stack([crop_tensor(cv2.imread(str(paths[i])), mcfg.img_size, mcfg.grayscale)
                                     for i in b])).to(device, dtype)
                   for b in per_video_batches(owners, args.batch)]
        assert sum(map(len, batches)) == len(paths)

        def bare() -> float:
            with torch.inference_mode():
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                for x in batches:
                    embed(model, x)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                return len(paths) / (time.perf_counter() - t)

        # the streaming embed loop (model already built, as in a long run's steady state)
        df = read_manifest(manifest)

        def full(k: int) -> float:
            t = time.perf_counter()
            res = embed_manifest(df, model, cfg, tmp / f"store{k}", device)
            return res.frames / (time.perf_counter() - t)

        with torch.inference_mode():
            embed(model, batches[0])                                 # warm-up
        first = df["video"] == df["video"].iloc[0]                   # warm-up: one video
        embed_manifest(df[first], model, cfg, tmp / "store-warm-up", device)
        bare_fps, full_fps, ratios = bracketed(bare, full, args.repeat)  # bare, embed, ..., bare
        # the store holds what the bare forward gives for each crop (same precision, fp16 rows)
        with torch.inference_mode():
            want = torch.cat([embed(model, x).float().cpu() for x in batches]).half().float()
        store = EmbeddingStore.open(tmp / "store0")
        got = torch.from_numpy(np.concatenate([store.read_video(v).emb for v in store.videos()])).float()
        diff = float(((got - want).norm(dim=1) / want.norm(dim=1)).max())
        assert diff < 2e-2, f"the embed path's store differs from the bare forward: {diff:.3g}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info = {"model": mcfg.name, "img_size": mcfg.img_size, "batch": args.batch,
            "workers": args.workers, "frames": args.frames, "device": device.type,
            "rounds": args.repeat, "threads": torch.get_num_threads()}
    rows = [row("stage1 bare backbone forward, frames/s", np.median(bare_fps), "frames/s", **info),
            row("stage1 embed (decode + forward + store), frames/s", np.median(full_fps), "frames/s",
                **info),
            ratio_row("stage1 embed / bare forward", ratios, 0.9, **info),
            row("stage1 store rows vs bare forward, largest relative difference", diff, "",
                timing=False, **info)]
    if device.type == "cuda" and args.model == "base":
        rows.append(row("stage1 swin_base bf16 channels-last forward, frames/s", max(bare_fps),
                        "frames/s", target=3000, **info))
    write_rows(rows, args.out)
    return rows


if __name__ == "__main__":
    main()
