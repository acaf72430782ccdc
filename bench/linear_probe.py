"""Per-frame linear probe on a store: how much the cached embeddings alone tell apart.

Logistic regression (full batch, AdamW) on the standardised embeddings of the face frames of the
store's train videos, scored by macro-F1 on its val videos. A temporal model that scores far
below this probe is under-trained; one far above it uses time.

    python -m bench.linear_probe STORE [--steps 500] [--out probe.json]
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from pipeline.labels import CLASSES, NUM_CLASSES
from pipeline.metrics import F1Report, confusion
from pipeline.store import EmbeddingStore


def probe(store_path: str, steps: int = 500, lr: float = 1e-2, wd: float = 1e-4,
          seed: int = 0) -> dict:
    st = EmbeddingStore.open(store_path).load()
    train = np.zeros(len(st.label), bool)
    for i in range(len(st.videos)):
        if st.split_of(i) == "train":
            train[st.offsets[i]:st.offsets[i + 1]] = True
    use = (st.label >= 0) & st.face
    x = torch.from_numpy(st.emb.astype(np.float32))
    mu, sd = x[train & use].mean(0), x[train & use].std(0) + 1e-6
    x = (x - mu) / sd
    y = torch.from_numpy(st.label.astype(np.int64))
    tr, va = torch.from_numpy(train & use), torch.from_numpy(~train & use)
    torch.manual_seed(seed)
    lin = torch.nn.Linear(x.shape[1], NUM_CLASSES)
    opt = torch.optim.AdamW(lin.parameters(), lr, weight_decay=wd)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(lin(x[tr]), y[tr]).backward()
        opt.step()
    with torch.no_grad():
        pred = lin(x).argmax(1).numpy()
    out = {"store": store_path, "train_frames": int(tr.sum()), "val_frames": int(va.sum())}
    for name, m in (("train", tr.numpy()), ("val", va.numpy())):
        rep = F1Report(confusion(st.label[m], pred[m]))
        out[f"{name}_macro_f1"] = round(100 * rep.macro_f1, 2)
        out[f"{name}_f1"] = dict(zip(CLASSES, (round(100 * float(v), 2) for v in rep.f1)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--out", help="also write the result as JSON")
    args = ap.parse_args()
    res = probe(args.store, args.steps)
    print(json.dumps(res, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
