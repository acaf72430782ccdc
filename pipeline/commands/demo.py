"""``fer-pipeline demo``: the embedded default, end to end, no downloads.

generate Aff-Wild2-layout data -> stage 1 pretraining of a tiny Swin on the generated
RAF-DB-layout stills -> stage 0 ingest -> stage 1 embed -> stage 2 train + full-video
evaluation -> per-class F1 table. Each step reuses what a previous run of
the same configuration already produced, so an interrupted demo resumes.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

from pipeline.cliutil import add_config_args, resolve_config, summary
from pipeline.config import Config
from pipeline.errors import EXIT_INPUTS_FAILED, EXIT_OK
from pipeline.io import write_json
from pipeline.metrics import to_markdown

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_config_args(sub.add_parser("demo", help="the embedded default, end to end"))
    p.add_argument("--out", metavar="DIR", help="output folder (default artifacts/demo)")
    p.add_argument("--folds", type=int, default=3, metavar="K",
                   help="random 7:3 video splits reported beside the official one (0 = none)")
    p.set_defaults(handler=demo_command)


def _synth_is_current(data: Path, cfg: Config) -> bool:
    meta = data / "synth.json"
    if not meta.is_file():
        return False
    info = json.loads(meta.read_text())
    return info.get("seed") == cfg.seed and info.get("config") == cfg.synth.model_dump(mode="json")


def _pretrain_is_current(run_dir: Path, cfg: Config) -> bool:
    """A finished stage-1 run of the same seed and stage-1 configuration."""
    if not (run_dir / "result.json").is_file() or not (run_dir / "config.yaml").is_file():
        return False
    from pipeline.config import load_config

    done = load_config([run_dir / "config.yaml"], base=None)
    return done.seed == cfg.seed and done.stage1.model_dump() == cfg.stage1.model_dump()


def run_demo(cfg: Config, out: Path, folds: int = 3) -> dict:
    from pipeline.config import DataSource
    from pipeline.synth import generate
    from stage0_preprocess.main import run_ingest
    from stage1_image_encoder.main import run_embed, run_pretrain
    from stage2_temporal.train import kfold, train

    out = out.resolve()
    data = out / "data"
    stills = DataSource(format="rafdb", root=str(data / "stills" / "rafdb"))
    s1 = cfg.stage1.model_copy(update={"data": cfg.stage1.data.model_copy(update={"sources": [stills]})})
    cfg = cfg.model_copy(update={"artifacts_dir": str(out), "stage1": s1})
    t0 = time.time()
    timings = {}
    if _synth_is_current(data, cfg):
        log.info("demo data in %s is current, reusing it", data)
    else:
        log.info("[1/5] generating demo data -> %s", data)
        generate(cfg.synth, data, cfg.seed)
    timings["synth_s"] = round(time.time() - t0, 1)

    t = time.time()
    s1_run = out / "runs" / "stage1" / "demo"
    if _pretrain_is_current(s1_run, cfg):
        log.info("stage-1 encoder in %s is current, reusing it", s1_run)
        pre = json.loads((s1_run / "result.json").read_text())
    else:
        log.info("[2/5] stage 1: pretrain the encoder on the still images")
        if s1_run.exists():
            shutil.rmtree(s1_run)
        res1 = run_pretrain(cfg, s1_run)
        pre = {"val_acc": res1.val_acc, "val_images": res1.val_images}
    timings["stage1_pretrain_s"] = round(time.time() - t, 1)

    t = time.time()
    log.info("[3/5] stage 0: ingest the Aff-Wild2 layout")
    ingest, manifest = run_ingest(data, out / "stage0", cfg)
    timings["stage0_s"] = round(time.time() - t, 1)

    t = time.time()
    log.info("[4/5] stage 1: embed every crop with the pretrained encoder")
    emb = run_embed(manifest, cfg, run_dir=s1_run)  # -> <out>/embeddings/<encoder-key>
    timings["stage1_embed_s"] = round(time.time() - t, 1)

    t = time.time()
    log.info("[5/5] stage 2: train Transformer + V-NAW on the cached embeddings; official split"
             "%s", f" and {folds} random 7:3 video splits" if folds else "")
    stage2_dir = out / "runs" / "stage2"
    if folds:
        table, runs = kfold(emb.store, stage2_dir, cfg, folds)
        res = runs["official"]
    else:
        table, res = None, train(emb.store, stage2_dir / "official", cfg)
    timings["stage2_s"] = round(time.time() - t, 1)
    timings["total_s"] = round(time.time() - t0, 1)
    return {"ingest": ingest, "embed": emb, "train": res, "pretrain": pre, "timings": timings,
            "stage1_run": s1_run, "table": table}


def demo_command(args: argparse.Namespace) -> int:
    cfg = resolve_config(args, presets=["demo"])
    out = Path(args.out or Path(cfg.artifacts_dir) / "demo")
    result = run_demo(cfg, out, args.folds)
    res, emb, ingest = result["train"], result["embed"], result["ingest"]
    report = res.report
    pre = result["pretrain"]
    print()
    if pre.get("val_acc") is not None:
        print(f"Stage-1 encoder: {100 * pre['val_acc']:.1f}% accuracy on {pre['val_images']} held-out "
              f"still images of new identities (7 classes, chance 14.3%); curve "
              f"{result['stage1_run']}/learning_curve.png")
    print(f"Per-class F1 on the {len(json.loads((res.run_dir / 'stage2.json').read_text())['val_videos'])}"
          f" validation videos (every annotated frame):")
    print(report.text())
    if result["table"] is not None:
        print("\nF1 (%) per validation set (official split + random 7:3 video splits; V-NAW Table 1 shape):")
        print(to_markdown(result["table"]))
    failed = len(ingest.failures) + len(emb.failures)
    write_json(out / "demo_summary.json", {
        "macro_f1": report.macro_f1, "f1": report.to_dict()["f1"], "best_epoch": res.best_epoch,
        "last_epoch_macro_f1": res.last_f1, "run_dir": str(res.run_dir), "store": str(emb.store),
        "stage1_val_acc": pre.get("val_acc"), "stage1_run": str(result["stage1_run"]),
        "kfold": None if result["table"] is None else result["table"].to_dict(orient="records"),
        "timings": result["timings"], "failed_inputs": failed})
    print(f"\nfiles: {res.run_dir}/eval/f1.csv, f1.md, confusion.png; metrics {res.run_dir}/metrics.jsonl;"
          f" contact sheet {out}/data/contact_sheet.png")
    chosen = ", chosen on val" if cfg.stage2.train.keep == "best" else ""
    summary(f"demo: macro-F1 {100 * report.macro_f1:.2f} on the official validation videos "
            f"(checkpoint of epoch {res.best_epoch}{chosen}; last epoch "
            f"{100 * (res.last_f1 or 0):.2f}) in {result['timings']['total_s']:.0f} s -> {out}")
    return EXIT_INPUTS_FAILED if failed else EXIT_OK
