"""Stage 1's public door: what the app layer and the benchmarks call.

- ``train``: pretrain the encoder on still images (NLA) into a run dir (DDP-aware);
- ``load_encoder``: the encoder of a stage-1 run dir, or the one ``stage1.model`` describes;
- ``encoder_key``: the store key of an encoder (hash of weights + preprocessing);
- ``embed_manifest``: every frame of a manifest file into the embedding store, with the
  encoder of a run (``embed_frames`` does the same for a manifest table and a loaded model);
- ``evaluate``: accuracy / macro-F1 of an encoder's classifier on the sources' test split;
- ``register_cli``: the ``stage1`` sub-commands.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from pipeline import distributed
from pipeline.config import Config, load_config
from pipeline.errors import UsageError
from pipeline.io import write_json
from pipeline.manifest import read_manifest
from pipeline.runs import init_run_dir, setup_rank
from stage1_image_encoder.embed import EmbedResult, embed_manifest as embed_frames
from stage1_image_encoder.main import register as register_cli
from stage1_image_encoder.model import build_encoder, embed as embed_images, encoder_key

log = logging.getLogger(__name__)

__all__ = ["train", "load_encoder", "encoder_key", "embed_manifest", "embed_frames", "embed_images",
           "evaluate", "register_cli", "EmbedResult"]


def load_encoder(cfg: Config, run_dir: str | Path | None = None):
    """``(model, model config)`` from a stage-1 run dir, or from ``cfg.stage1.model`` (weights
    of ``stage1.model.pretrained``, else a random init seeded by ``cfg.seed``)."""
    if run_dir is None:
        torch.manual_seed(cfg.seed)
        return build_encoder(cfg.stage1.model), cfg.stage1.model
    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoint.safetensors"
    if not ckpt.is_file():
        raise UsageError(f"{run_dir}: no checkpoint.safetensors (not a finished stage-1 run)")
    mcfg = load_config([run_dir / "config.yaml"], base=None).stage1.model
    return build_encoder(mcfg, checkpoint=ckpt), mcfg


def embed_manifest(manifest_path: str | Path, cfg: Config, run_dir=None,
                   store: str | Path | None = None) -> EmbedResult:
    """Embed every frame of a manifest with the encoder of ``run_dir`` (or ``stage1.model``)
    into ``store`` (default ``<artifacts_dir>/embeddings/<encoder key>``). DDP-aware."""
    _, device = setup_rank(cfg)
    manifest = read_manifest(manifest_path)
    model, mcfg = load_encoder(cfg, run_dir)
    cfg = cfg.model_copy(update={"stage1": cfg.stage1.model_copy(update={"model": mcfg})})
    key = encoder_key(model, mcfg)
    store = Path(store) if store else Path(cfg.artifacts_dir) / "embeddings" / key
    log.info("encoder %s (key %s, dim %d) -> %s", mcfg.name, key, model.num_features, store)
    return embed_frames(manifest, model, cfg, store, device, encoder_run=run_dir)


def train(cfg: Config, run_dir: str | Path, resume: bool = False):
    """Pretrain into ``run_dir`` (config.yaml, metrics.jsonl, checkpoint.safetensors,
    learning_curve.png, result.json). Returns ``PretrainResult``."""
    from stage1_image_encoder.engine import pretrain

    dist, device = setup_rank(cfg)
    run_dir = Path(run_dir)
    if resume:
        if not (run_dir / "config.yaml").is_file():
            raise UsageError(f"{run_dir}: not a stage-1 run to resume")
        cfg = load_config([run_dir / "config.yaml"], base=None)
    elif dist.primary:
        init_run_dir(run_dir, cfg, "stage1")
    distributed.barrier()
    result = pretrain(cfg, run_dir, device, resume=resume)
    if dist.primary:
        write_json(run_dir / "result.json", {
            "val_acc": result.val_acc, "val_macro_f1_present_classes": result.val_macro_f1,
            "train_images": result.train_images, "val_images": result.val_images,
            "ranks": dist.world_size})
    return result


def evaluate(cfg: Config, run_dir: str | Path | None = None):
    """F1 report (confusion counts all-reduced over ranks) of the encoder's 8-way classifier on
    the test split of ``cfg.stage1.data.sources``."""
    from stage1_image_encoder.engine import evaluate_images
    from stage1_image_encoder.sources import build_image_sets

    _, device = setup_rank(cfg)
    model, mcfg = load_encoder(cfg, run_dir)
    cfg = cfg.model_copy(update={"stage1": cfg.stage1.model_copy(update={"model": mcfg})})
    _, test, _ = build_image_sets(cfg.stage1.data.sources)
    if not len(test):
        raise UsageError("the configured stage-1 sources have no test images")
    return evaluate_images(model.to(device), test, cfg, device)
