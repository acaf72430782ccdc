"""Per-frame linear probe on a store: how much the cached embeddings alone tell apart.

Logistic regression (full batch, AdamW) on the standardised embeddings of the face frames of the
store's train videos, scored by macro-F1 on its val videos. A temporal model that scores far
below this probe is under-trained; one far above it uses time.

    python -m bench.linear_probe STORE [--steps 500] [--json probe.json]
    python -m bench.linear_probe --build [--quick]     # on the demo data, built in a temp dir

``--build`` makes the demo's store with the public commands (``fer-pipeline synth``, ``stage0
ingest``, ``stage1 embed`` with the bundled encoder, as ``fer-pipeline demo --encoder frozen``
does); ``--quick`` generates 3 short videos only. Writes bench/linear_probe.json (rows).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from fer_pipeline.labels import CLASSES, NUM_CLASSES
from fer_pipeline.metrics import F1Report, confusion
from fer_pipeline.store import EmbeddingStore


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


def build_demo_store(work: Path, quick: bool = False) -> Path:
    """The demo's embedding store (generated videos, bundled encoder) under ``work``."""
    import subprocess
    import sys

    demo = [str(Path(__file__).resolve().parents[1] / "fer_pipeline" / "presets" / "demo.yaml")]
    small = ["synth.n_videos=3", "synth.n_val=1", "synth.duration_s=[4,6]",
             "synth.stills_train_per_class=1", "synth.stills_test_per_class=1"] if quick else []
    steps = [["synth", "--out", str(work / "data"), *small],
             ["stage0", "ingest", "--affwild2", str(work / "data"), "--out", str(work / "s0")],
             ["stage1", "embed", "--manifest", str(work / "s0" / "manifest.parquet"),
              "--store", str(work / "store")]]
    for args in steps:
        r = subprocess.run([sys.executable, "-m", "fer_pipeline", *args, "--config", *demo],
                           capture_output=True, text=True)
        if r.returncode not in (0, 1):          # 1 = some inputs failed, the rest done
            raise SystemExit(f"fer-pipeline {' '.join(args[:2])} failed:\n{r.stderr[-3000:]}")
    return work / "store"


def main(argv=None) -> list[dict]:
    import shutil
    import tempfile

    from bench.common import row, write_rows

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store", nargs="?", help="embedding store (or --build)")
    ap.add_argument("--build", action="store_true", help="build the demo data's store in a temp dir")
    ap.add_argument("--quick", action="store_true", help="with --build: 3 short videos")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--json", help="also write the whole result as JSON")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("linear_probe.json"))
    args = ap.parse_args(argv)
    if not args.store and not args.build:
        ap.error("give a STORE or --build")
    work = Path(tempfile.mkdtemp(prefix="bench-probe-")) if args.build else None
    try:
        store = str(build_demo_store(work, args.quick)) if work else args.store
        res = probe(store, args.steps)
    finally:
        if work:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(res, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    # the row names say which embeddings were probed: the figure means nothing without it
    what = ("demo data, frozen bundled encoder" + (", quick" if args.quick else "") if work
            else f"store {Path(store).name}")
    info = {"store": what if work else str(Path(store).resolve()), "train_frames": res["train_frames"],
            "val_frames": res["val_frames"], "steps": args.steps}
    rows = [row(f"linear_probe: per-frame logistic regression, val macro-F1 ({what}), %",
                res["val_macro_f1"], "%", timing=False, **info),
            row(f"linear_probe: per-frame logistic regression, train macro-F1 ({what}), %",
                res["train_macro_f1"], "%", timing=False, **info)]
    write_rows(rows, args.out)
    return rows


if __name__ == "__main__":
    main()
