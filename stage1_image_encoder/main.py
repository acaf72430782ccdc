"""Stage 1 entry.

    fer-pipeline stage1 train --out RUN_DIR [stage1.data.sources='[{format: rafdb, root: RAF}]']
    fer-pipeline stage1 embed --manifest DIR/manifest.parquet [--run RUN_DIR] [--store STORE]
                              [--export-h5 FILE]
    torchrun --nproc_per_node=8 -m pipeline stage1 embed --manifest ... --run ... --store ...
    python -m stage1_image_encoder embed --manifest ... stage1.embed.batch_size=256

Without ``--run`` the encoder is built from ``stage1.model`` (weights from
``stage1.model.pretrained``, else a seeded random init). The store defaults to
``<artifacts_dir>/embeddings/<encoder-key>``; complete videos already in it are skipped.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from pipeline import distributed
from pipeline.cliutil import add_config_args, resolve_config, summary
from pipeline.config import Config, load_config
from pipeline.errors import EXIT_INPUTS_FAILED, EXIT_OK, UsageError
from pipeline.manifest import read_manifest
from pipeline.io import write_json
from pipeline.runs import default_run_dir, init_run_dir, setup_rank

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stage1", help="image encoder: pretrain (NLA), embed crops into the store")
    s1 = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    tr = add_config_args(s1.add_parser("train", help="pretrain the encoder on still images (NLA)"))
    tr.add_argument("--out", metavar="RUN_DIR", help="run dir (default artifacts/runs/stage1/<id>)")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    tr.add_argument("--nproc", type=int, default=1, metavar="N",
                    help="self-spawn N DDP processes on this machine (or launch with torchrun)")
    tr.set_defaults(handler=train_command)
    emb = add_config_args(s1.add_parser("embed", help="embed every manifest frame into the store"))
    emb.add_argument("--manifest", required=True, metavar="FILE")
    emb.add_argument("--run", "--run-dir", dest="run", metavar="RUN_DIR",
                     help="stage-1 run dir whose encoder to use (--run-dir under torchrun)")
    emb.add_argument("--store", metavar="DIR", help="store path (default: artifacts/embeddings/<key>)")
    emb.add_argument("--export-h5", metavar="FILE", help="also write the store as one HDF5 file")
    emb.set_defaults(handler=embed_command)


def encoder_from(cfg: Config, run_dir: str | Path | None = None):
    """(model, model config) from a stage-1 run dir, or from ``cfg.stage1.model``."""
    from stage1_image_encoder.model import build_encoder

    if run_dir is None:
        torch.manual_seed(cfg.seed)
        return build_encoder(cfg.stage1.model), cfg.stage1.model
    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoint.safetensors"
    if not ckpt.is_file():
        raise UsageError(f"{run_dir}: no checkpoint.safetensors (not a finished stage-1 run)")
    mcfg = load_config([run_dir / "config.yaml"], base=None).stage1.model
    return build_encoder(mcfg, checkpoint=ckpt), mcfg


def run_embed(manifest_path: str | Path, cfg: Config, run_dir=None, store: str | Path | None = None):
    from stage1_image_encoder.embed import embed_manifest
    from stage1_image_encoder.model import encoder_key

    dist, device = setup_rank(cfg)
    manifest = read_manifest(manifest_path)
    model, mcfg = encoder_from(cfg, run_dir)
    cfg = cfg.model_copy(update={"stage1": cfg.stage1.model_copy(update={"model": mcfg})})
    key = encoder_key(model, mcfg)
    store = Path(store) if store else Path(cfg.artifacts_dir) / "embeddings" / key
    log.info("encoder %s (key %s, dim %d) -> %s", mcfg.name, key, model.num_features, store)
    return embed_manifest(manifest, model, cfg, store, device, encoder_run=run_dir)


def run_pretrain(cfg: Config, run_dir: str | Path, resume: bool = False):
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


def _train_worker(args: argparse.Namespace) -> None:
    cfg = resolve_config(args)
    res = run_pretrain(cfg, args.out, args.resume)
    if distributed.is_primary():
        acc = "n/a" if res.val_acc is None else f"{100 * res.val_acc:.1f}%"
        summary(f"stage1 train: {res.train_images} images, val accuracy {acc} on "
                f"{res.val_images} images -> {res.run_dir} (learning_curve.png, "
                f"checkpoint.safetensors)")


def train_command(args: argparse.Namespace) -> int:
    if args.resume and not args.out:
        raise UsageError("--resume needs --out RUN_DIR")
    if not args.out:
        args.out = str(default_run_dir(resolve_config(args), "stage1"))
    if args.nproc > 1 and not distributed.launched_by_torchrun():
        distributed.spawn(_train_worker, args.nproc, (args,))
    else:
        _train_worker(args)
        distributed.cleanup()
    return EXIT_OK


def embed_command(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    res = run_embed(args.manifest, cfg, args.run, args.store)
    parts = distributed.all_gather_objects(
        (len(res.written), len(res.skipped), list(res.failures), res.frames))
    written = sum(p[0] for p in parts)
    skipped = sum(p[1] for p in parts)
    failures = [f for p in parts for f in p[2]]
    frames = sum(p[3] for p in parts)
    if args.export_h5 and distributed.is_primary():
        from pipeline.store import EmbeddingStore

        EmbeddingStore.open(res.store).export_h5(args.export_h5)
    distributed.barrier()
    if distributed.is_primary():
        ranks = distributed.info().world_size
        summary(f"stage1 embed: {written} video(s) written, {skipped} already complete, "
                f"{len(failures)} failed, {frames} crops embedded"
                f"{f' on {ranks} ranks' if ranks > 1 else ''} -> {res.store}"
                f"{f' (+ {args.export_h5})' if args.export_h5 else ''}")
    distributed.cleanup()
    return EXIT_INPUTS_FAILED if failures else EXIT_OK
