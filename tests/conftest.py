"""Shared fixtures: a tiny hand-made Aff-Wild2 tree, and a small store."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("FER_NO_PROGRESS", "1")

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
# torchrun launcher for 2 CPU ranks; the module form works where the venv's bin/ is not on PATH.
# Rank rehearsals pin CPU_RANKS (device=cpu: gloo) in every run they compare, so they also pass on
# a 1-GPU host, where a second rank has no GPU of its own.
CPU_RANKS = ["device=cpu"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
TINY_SWIN = [
    "stage1.model.name=swin_tiny_patch4_window7_224", "stage1.model.img_size=112",
    "stage1.model.embed_dim=32", "stage1.model.depths=[2,2]", "stage1.model.num_heads=[2,4]",
    "stage1.model.window_size=7", "stage1.embed.workers=0",
]


def make_affwild2(root: Path, videos: dict[str, tuple[str, int]], *, seed: int = 0,
                  no_face_every: int = 17, write_videos: bool = True) -> Path:
    """An Aff-Wild2-layout tree: ``videos = {name: (Train_Set|Validation_Set, n_frames)}``.

    Labels come in runs of 20 frames; crops are grey squares whose drawn disc size encodes the
    label (so an encoder can learn it); every ``no_face_every``-th frame has no crop.
    """
    from fer_pipeline.media import VideoWriter
    from stage0_preprocess.annotations import write_expr_annotation

    rng = np.random.default_rng(seed)
    for name, (split, T) in videos.items():
        lab = np.repeat(rng.integers(0, 8, size=T // 20 + 1), 20)[:T]
        lab[:3] = -1
        if write_videos:
            raw = name.removesuffix("_left").removesuffix("_right")
            vpath = root / "videos" / f"{raw}.mp4"
            if not vpath.exists():
                with VideoWriter(vpath, 64, 48, 25) as w:
                    for k in range(T):
                        w.write(np.full((48, 64, 3), k % 250, np.uint8))
        write_expr_annotation(root / "annotations" / "EXPR_Recognition_Challenge" / split / f"{name}.txt", lab)
        d = root / "cropped_aligned" / name
        d.mkdir(parents=True, exist_ok=True)
        for k in range(T):
            if no_face_every and k % no_face_every == no_face_every - 1:
                continue
            img = np.full((112, 112, 3), 40, np.uint8)
            cv2.circle(img, (56, 56), 8 + 6 * max(int(lab[k]), 0), (230, 230, 230), -1)
            img = np.clip(img + rng.integers(0, 25, img.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(d / f"{k + 1:05d}.jpg"), img)
    return root


def make_store(path, n_train=6, n_val=3, dim=16, seed=0, absent=None, key="synthkey", flip=False):
    """An embedding store of ``n_train + n_val`` videos ``v00, v01, ...`` whose embeddings are
    class prototypes + noise, labels in runs of 10-40 frames, ~10% no-face rows, ~5% label -1.
    ``flip``: each frame also gets a "flipped-crop" embedding (its own plus a little noise)."""
    from fer_pipeline.store import EmbeddingStore

    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((8, dim)) * 2
    store = EmbeddingStore.create_or_open(path, key, {"name": "synthetic"}, dim)
    for i in range(n_train + n_val):
        T = int(rng.integers(60, 200))
        lab = np.repeat(rng.integers(0, 8, 20), rng.integers(10, 40, 20))[:T]
        if len(lab) < T:
            lab = np.concatenate([lab, np.zeros(T - len(lab), int)])
        if absent is not None:
            lab[lab == absent] = 0
        face = rng.random(T) > 0.1
        emb = (protos[lab] + rng.standard_normal((T, dim))) * face[:, None]
        lab = lab.astype(np.int8)
        lab[rng.random(T) < 0.05] = -1
        emb_flip = None
        if flip:      # its own generator: the plain store is the same with or without flip
            noise = np.random.default_rng([seed, i]).standard_normal((T, dim))
            emb_flip = ((emb + 0.3 * noise) * face[:, None]).astype(np.float16)
        store.write_video(f"v{i:02d}", emb.astype(np.float16), lab, face,
                          {"split": "train" if i < n_train else "val", "fps": 25.0},
                          emb_flip=emb_flip)
    return path


@pytest.fixture
def affwild2_tree(tmp_path):
    return make_affwild2(tmp_path / "aw", {
        "vid_a": ("Train_Set", 120), "vid_b": ("Train_Set", 90), "vid_c_left": ("Train_Set", 60),
        "vid_c_right": ("Train_Set", 60), "vid_d": ("Validation_Set", 70),
    })


@pytest.fixture
def shared_assets():
    """../shared/assets (real detector weights, images and videos); skipped when absent."""
    path = SHARED / "assets"
    if not path.is_dir():
        pytest.skip(f"shared assets not found at {path}")
    return path
