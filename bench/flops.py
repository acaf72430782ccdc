"""Floating-point work per frame of each model, counted by ``torch.utils.flop_counter`` on the
real modules (matmuls, convolutions, attention; elementwise ops are not counted), so the scaling
model in docs/scaling.md can turn a device's sustained FLOP/s into frames/s:

- stage-1 encoder forward per crop: the default swin_base_patch4_window7_224 at 224 px, and the
  tiny test config at 112 px;
- stage-2 training step (forward + backward) per frame: the default temporal model (D = 1024,
  clip of 100) and the small model of bench/scale_store.py.

    python -m bench.flops

Counts, not timings: they do not depend on the machine. Writes bench/flops.json.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import row, write_rows
from fer_pipeline.config import load_config

TINY = ["stage1.model.name=swin_tiny_patch4_window7_224", "stage1.model.img_size=112",
        "stage1.model.embed_dim=32", "stage1.model.depths=[2,2]", "stage1.model.num_heads=[2,4]",
        "stage1.model.window_size=7"]


def encoder_flops(overrides: list[str], batch: int = 2) -> tuple[float, str, int]:
    """Forward FLOPs per crop of the stage-1 encoder's embedding path."""
    from stage1_image_encoder import load_encoder as encoder_from
    from stage1_image_encoder.model import embed

    model, mcfg = encoder_from(load_config(overrides=overrides))
    x = torch.zeros(batch, 3, mcfg.img_size, mcfg.img_size)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        embed(model.eval(), x)
    return fc.get_total_flops() / batch, mcfg.name, mcfg.img_size


def temporal_flops(overrides: list[str], dim: int = 1024, clips: int = 2) -> tuple[float, int]:
    """Forward + backward FLOPs per frame of one stage-2 training step (augmentation on)."""
    from stage2_temporal.engine import build_model

    cfg = load_config(overrides=overrides)
    clip_len = cfg.stage2.data.clip_len
    model = build_model(dim, cfg).train()
    x = torch.randn(clips, clip_len, dim)
    valid = torch.ones(clips, clip_len, dtype=torch.bool)
    with FlopCounterMode(display=False) as fc:
        model(x, valid).float().logsumexp(-1).mean().backward()
    return fc.get_total_flops() / (clips * clip_len), clip_len


def main(argv=None) -> list[dict]:
    from bench.scale_store import SMALL

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("flops.json"))
    args = p.parse_args(argv)
    rows = []
    for name, overrides in (("default", []), ("tiny", TINY)):
        flops, model, size = encoder_flops(overrides)
        rows.append(row(f"flops: stage1 {name} encoder forward ({model}, {size} px), GFLOP/frame",
                        flops / 1e9, "GFLOP/frame", lower_is_better=True, timing=False, model=model,
                        img_size=size))
    for name, overrides in (("default", []), ("small (bench.scale_store)", SMALL[:4])):
        flops, clip_len = temporal_flops(overrides)
        rows.append(row(f"flops: stage2 {name} temporal model train step, MFLOP/frame",
                        flops / 1e6, "MFLOP/frame", lower_is_better=True, timing=False, dim=1024,
                        clip_len=clip_len, overrides=" ".join(overrides) or "pipeline.yaml"))
    write_rows(rows, args.out)
    return rows


if __name__ == "__main__":
    main()
