"""Encoder forward speed on a GPU by precision, memory layout and batch size: which way of
running the stage-1 encoder is fastest on this card (the embed path uses ``for_inference``: bf16
weights, channels-last). timm's forward_features on random 224 px input, after 3 warm-up calls;
``--compile`` adds torch.compile of the bf16-weights forward (its compile time is reported).

    python -m bench.forward_sweep [--model swin_base_patch4_window7_224] [--compile]

CUDA only. JSON lines to stdout and bench/forward_sweep.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def fps(fn, x: torch.Tensor) -> float:
    with torch.inference_mode():
        for _ in range(3):
            fn(x)
        torch.cuda.synchronize()
        n = max(4, 4096 // len(x))
        t = time.perf_counter()
        for _ in range(n):
            fn(x)
        torch.cuda.synchronize()
    return round(n * len(x) / (time.perf_counter() - t), 1)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="swin_base_patch4_window7_224")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("forward_sweep.json"))
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench.forward_sweep needs a CUDA device")
    import timm

    dev = torch.device("cuda")
    rows = []

    def emit(**r):
        rows.append(r)
        print(json.dumps(r), flush=True)

    m = timm.create_model(args.model, pretrained=False, num_classes=8).to(dev).eval()
    for cl in (True, False):
        m = m.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
        for dtype in (torch.bfloat16, torch.float16):
            for bs in (64, 128, 256, 512):
                x = torch.randn(bs, 3, 224, 224, device=dev)
                if cl:
                    x = x.contiguous(memory_format=torch.channels_last)

                def autocast_forward(x, dtype=dtype):
                    with torch.autocast("cuda", dtype=dtype):
                        return m.forward_features(x)
                emit(kind="autocast", channels_last=cl, dtype=str(dtype), batch=bs, fps=fps(autocast_forward, x))
    m = m.to(dtype=torch.bfloat16, memory_format=torch.channels_last)
    for bs in (64, 256):
        x = torch.randn(bs, 3, 224, 224, device=dev, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
        emit(kind="bf16 weights", channels_last=True, batch=bs, fps=fps(m.forward_features, x))
    if args.compile:
        c = torch.compile(m.forward_features)
        for bs in (64, 256):
            x = torch.randn(bs, 3, 224, 224, device=dev, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
            t = time.perf_counter()
            with torch.inference_mode():
                c(x)
            torch.cuda.synchronize()
            emit(kind="bf16 weights, torch.compile", channels_last=True, batch=bs,
                 compile_s=round(time.perf_counter() - t, 1), fps=fps(c, x))
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
