"""What bf16 does to the embeddings: the embed path on a GPU runs the encoder in bf16 weights
(``for_inference``); training used bf16 autocast. On the same real faces (512 FERPlus images from
../shared), each encoder's pooled embeddings and 8-way predictions under bf16 autocast and in
bf16 weights are compared with float32: cosine similarity, relative error of the embedding, and
top-1 agreement of the classifier head. Runs on a CPU (bf16 kernels there are slow: minutes).

    python -m bench.precision [--images 512]

Encoders: the bundled FERPlus resnet10t, and a randomly initialised Swin-T (embed 96, depths
2-2-6-2) at 112 px. Writes bench/precision.json.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from bench.common import row, write_rows
from fer_pipeline.config import load_config

FERPLUS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "ferplus"
SWIN_T = ["stage1.model.name=swin_tiny_patch4_window7_224", "stage1.model.img_size=112",
          "stage1.model.embed_dim=96", "stage1.model.depths=[2,2,6,2]",
          "stage1.model.num_heads=[3,6,12,24]", "stage1.model.window_size=7"]


def outputs(model, x: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled embeddings, logits) in float32, computed in ``mode`` (the pooled embedding is
    what ``stage1_image_encoder.model.embed`` returns)."""
    with torch.inference_mode():
        if mode == "bf16 weights":
            model = model.to(torch.bfloat16)
            x = x.to(torch.bfloat16)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16 autocast"):
            feats = model.forward_features(x)        # one forward: embedding and logits from it
            out = (model.forward_head(feats, pre_logits=True).float(),
                   model.forward_head(feats).float())
        model.float()
    return out


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("precision.json"))
    args = p.parse_args(argv)
    from stage1_image_encoder import load_encoder
    from stage1_image_encoder.loading import BatchNormalizer, crop_tensor

    files = sorted(FERPLUS.rglob("*.png"))[:args.images]
    if not files:
        raise SystemExit(f"no FERPlus images under {FERPLUS}")
    torch.manual_seed(0)
    rows = []
    for label, overrides in (("bundled resnet10t", ["stage1.model.pretrained=bundled"]), ("Swin-T random init", SWIN_T)):
        model, mcfg = load_encoder(load_config(overrides=overrides))
        model.eval()
        x = BatchNormalizer(mcfg)(torch.stack([crop_tensor(cv2.imread(str(f)), mcfg.img_size, mcfg.grayscale)
                                               for f in files]))
        ref, ref_logits = outputs(model, x, "float32")
        for mode in ("bf16 autocast", "bf16 weights"):
            e, logits = outputs(model, x, mode)
            cos = torch.nn.functional.cosine_similarity(e, ref).numpy()
            rel = ((e - ref).norm(dim=1) / ref.norm(dim=1)).numpy()
            agree = float((logits.argmax(1) == ref_logits.argmax(1)).float().mean())
            info = {"encoder": label, "mode": mode, "images": len(files)}
            rows += [row(f"precision {label}, {mode}: embedding relative error vs float32, median",
                         float(np.median(rel)), "", timing=False, rel_max=round(float(rel.max()), 4),
                         cos_min=round(float(cos.min()), 5), **info),
                     row(f"precision {label}, {mode}: top-1 agreement with float32", agree, "",
                         timing=False, **info)]
            print(f"{label:20s} {mode:14s} cos min {cos.min():.5f}  rel err median {np.median(rel):.4f} "
                  f"max {rel.max():.4f}  top-1 agreement {agree:.4f}", flush=True)
    write_rows(rows, args.out)
    return rows


if __name__ == "__main__":
    main()
