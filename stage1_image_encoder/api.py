"""Stage 1's public door: what the app layer and the benchmarks call.

- ``train``: pretrain the encoder on still images (NLA) into a run dir (DDP-aware);
- ``load_encoder``: the encoder of a stage-1 run dir, or the one ``stage1.model`` describes;
- ``encoder_key``: the store key of an encoder (hash of weights + preprocessing);
- ``embed_manifest``: every frame of a manifest file into the embedding store, with the
  encoder of a run (``embed_frames`` does the same for a manifest table and a loaded model);
- ``evaluate``: accuracy / macro-F1 of an encoder's classifier on the sources' test split;
- ``load_classifier`` / ``classify_embeddings``: an encoder with its trained 8-way head, and
  per-frame class probabilities from cached embeddings (frame-level prediction);
- ``bundled_run``: the real-face encoder shipped with the package (``pretrained: bundled``).

The ``stage1`` sub-commands live in ``main.py``, which calls this door; the package serves its
``register`` as ``register_cli`` (``fer_pipeline.lazy``), so this module never imports ``main``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from fer_pipeline import distributed
from fer_pipeline.config import Config, load_config
from fer_pipeline.errors import UsageError
from fer_pipeline.io import write_json
from fer_pipeline.manifest import read_manifest
from fer_pipeline.outdir import check_output_dir
from fer_pipeline.runs import init_run_dir, resume_config, setup_rank
from stage1_image_encoder.embed import EmbedResult, embed_manifest as embed_frames
from stage1_image_encoder.model import build_encoder, embed as embed_images, encoder_key
from stage1_image_encoder.pretrained import bundled_run, resolve, verified_bundled_checkpoint

log = logging.getLogger(__name__)

__all__ = ["train", "load_encoder", "load_classifier", "classify_embeddings", "encoder_key",
           "embed_manifest", "embed_frames", "embed_images", "evaluate", "evaluation_summary",
           "bundled_run", "is_stage1_run", "EmbedResult"]


def load_encoder(cfg: Config, run_dir: str | Path | None = None):
    """``(model, model config)`` from a stage-1 run dir (or ``"bundled"``), or from
    ``cfg.stage1.model`` (weights of ``stage1.model.pretrained``, else a random init seeded by
    ``cfg.seed``)."""
    if run_dir == "bundled":
        run_dir = bundled_run()
    if run_dir is None:
        cfg = resolve(cfg)
        torch.manual_seed(cfg.seed)
        return build_encoder(cfg.stage1.model), cfg.stage1.model
    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoint.safetensors"
    if not ckpt.is_file():
        raise UsageError(f"{run_dir}: no checkpoint.safetensors (not a finished stage-1 run)")
    if run_dir == bundled_run():
        ckpt = verified_bundled_checkpoint()
    mcfg = resolve(load_config([run_dir / "config.yaml"], base=None)).stage1.model
    return build_encoder(mcfg, checkpoint=ckpt), mcfg


def embed_manifest(manifest_path: str | Path, cfg: Config, run_dir=None,
                   store: str | Path | None = None) -> EmbedResult:
    """Embed every frame of a manifest with the encoder of ``run_dir`` (or ``stage1.model``)
    into ``store`` (default ``<artifacts_dir>/embeddings/<encoder key>``). DDP-aware."""
    _, device = setup_rank(cfg)
    manifest = read_manifest(manifest_path)
    run_dir = bundled_run() if run_dir == "bundled" else run_dir
    model, mcfg = load_encoder(cfg, run_dir)
    cfg = cfg.model_copy(update={"stage1": cfg.stage1.model_copy(update={"model": mcfg})})
    key = encoder_key(model, mcfg)
    store = Path(store) if store else Path(cfg.artifacts_dir) / "embeddings" / key
    longest = int(manifest.groupby("video").size().max()) if len(manifest) else 0
    check_output_dir(store, "--store", need_bytes=longest * int(model.num_features) * 2 + (64 << 10),
                     unit="video's embeddings")
    log.info("encoder %s (key %s, dim %d) -> %s", mcfg.name, key, model.num_features, store)
    return embed_frames(manifest, model, cfg, store, device, encoder_run=run_dir)


def train(cfg: Config, run_dir: str | Path, resume: bool = False):
    """Pretrain into ``run_dir`` (config.yaml, metrics.jsonl, checkpoint.safetensors,
    learning_curve.png, result.json). Returns ``PretrainResult``."""
    from stage1_image_encoder.engine import pretrain

    cfg = resolve(cfg)
    dist, device = setup_rank(cfg)
    run_dir = Path(run_dir)
    if resume:
        cfg = resume_config(run_dir, "config.yaml", "stage-1")
    elif dist.primary:
        init_run_dir(run_dir, cfg, "stage1", fresh=True)
    distributed.barrier()
    result = pretrain(cfg, run_dir, device, resume=resume)
    if dist.primary:
        write_json(run_dir / "result.json", {
            "val_acc": result.val_acc, "val_macro_f1_present_classes": result.val_macro_f1,
            "train_images": result.train_images, "val_images": result.val_images,
            "ranks": dist.world_size})
    return result


def evaluate(cfg: Config, run_dir: str | Path | None = None, flip: bool = False):
    """F1 report (confusion counts all-reduced over ranks) of the encoder's 8-way classifier on
    the test split of ``cfg.stage1.data.sources``; ``flip``: test-time mirror averaging."""
    from stage1_image_encoder.engine import evaluate_images
    from stage1_image_encoder.sources import build_image_sets

    _, device = setup_rank(cfg)
    model, mcfg = load_encoder(cfg, run_dir)
    cfg = cfg.model_copy(update={"stage1": cfg.stage1.model_copy(update={"model": mcfg})})
    _, test, _ = build_image_sets(cfg.stage1.data.sources)
    if not len(test):
        raise UsageError("the configured stage-1 sources have no test images")
    return evaluate_images(model.to(device), test, cfg, device, flip=flip)


def is_stage1_run(run_dir: str | Path) -> bool:
    run_dir = Path(run_dir)
    return (run_dir / "checkpoint.safetensors").is_file() and (run_dir / "config.yaml").is_file() \
        and not (run_dir / "stage2.json").is_file()


def load_classifier(run_dir: str | Path, cfg: Config | None = None):
    """``(model, model config)`` of a stage-1 run (or ``"bundled"``) whose checkpoint holds a
    trained 8-way classifier head; a checkpoint without one is a one-line ``UsageError``."""
    from fer_pipeline.checkpoint import load_checkpoint
    from stage1_image_encoder.model import has_classifier

    run = bundled_run() if run_dir == "bundled" else Path(run_dir)
    if not is_stage1_run(run):
        raise UsageError(f"{run}: not a stage-1 run (needs checkpoint.safetensors and config.yaml)")
    model, mcfg = load_encoder(cfg or load_config([run / "config.yaml"], base=None), run)
    state, _ = load_checkpoint(run / "checkpoint.safetensors")
    if not has_classifier(state.keys(), model):
        raise UsageError(f"{run}: its encoder has no trained classifier head (no "
                         f"{type(model.get_classifier()).__name__} weights in the checkpoint); "
                         f"predict needs a stage-1 run trained with its 8-way head, or a stage-2 run")
    return model.eval(), mcfg


@torch.inference_mode()
def classify_embeddings(model: torch.nn.Module, emb) -> np.ndarray:
    """(T, D) cached pooled embeddings -> (T, 8) class probabilities from the encoder's own
    classifier head (timm's pre-logits feature is exactly the head's input)."""
    x = torch.as_tensor(np.asarray(emb), dtype=torch.float32)
    head = model.get_classifier()
    device = next(head.parameters()).device
    return head(x.to(device)).float().softmax(-1).cpu().numpy()


def evaluation_summary(report, n_images: int) -> dict:
    """What ``stage1 eval`` writes: accuracy, macro-F1 over the classes present in the test
    split, the number of images and per-class precision / recall / F1 / support."""
    present = report.support > 0
    return {
        "accuracy": report.accuracy,
        "macro_f1": float(report.f1[present].mean()) if present.any() else 0.0,
        "n": int(n_images),
        "per_class": {c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
                      for c, p, r, f, n in zip(report.class_names, report.precision, report.recall,
                                               report.f1, report.support)},
        "absent_classes": report.absent,
        "confusion": report.confusion.tolist(),
    }
