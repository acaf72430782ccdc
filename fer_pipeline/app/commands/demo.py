"""``fer-pipeline demo``: the embedded default, end to end, no downloads.

generate Aff-Wild2-layout data -> stage 1: the real-face encoder shipped with the package,
fine-tuned on the generated RAF-DB-layout stills (``--encoder finetuned``, the default: it
measured 57.8 macro-F1 on the demo's validation videos against 38.0 frozen) or used as it is
(``--encoder frozen``) -> stage 0 ingest -> stage 1 embed -> stage 2 train + full-video
evaluation -> per-class F1 table -> HTML report -> predictions on a generated validation video
(the demo's run) and on a bundled real video (the bundled real-face encoder: the demo's
temporal model has only seen drawn faces). Each step reuses what a previous run of the same configuration
already produced, so an interrupted demo resumes.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

from fer_pipeline.cliutil import add_config_args, resolve_config, summary
from fer_pipeline.config import Config
from fer_pipeline.errors import EXIT_INPUTS_FAILED, EXIT_OK
from fer_pipeline.io import write_json
from fer_pipeline.metrics import to_markdown

log = logging.getLogger(__name__)
ENCODERS = ("frozen", "finetuned")
SAMPLE_VIDEO = Path(__file__).resolve().parent.parent / "assets" / "d19.mp4"   # MIT, see LICENSES.md


def register(sub: argparse._SubParsersAction) -> None:
    p = add_config_args(sub.add_parser("demo", help="the embedded default, end to end"))
    p.add_argument("--out", metavar="DIR", help="output folder (default artifacts/demo)")
    p.add_argument("--folds", type=int, default=3, metavar="K",
                   help="disjoint video folds reported beside the official split (0 = none)")
    p.add_argument("--encoder", choices=ENCODERS, default="finetuned",
                   help="finetuned = the bundled FERPlus encoder fine-tuned on the generated "
                        "stills first; frozen = the bundled encoder as it is")
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
    from fer_pipeline.config import load_config

    done = load_config([run_dir / "config.yaml"], base=None)
    return done.seed == cfg.seed and done.stage1.model_dump() == cfg.stage1.model_dump()


def run_demo(cfg: Config, out: Path, folds: int = 3, encoder: str = "finetuned") -> dict:
    import stage0_preprocess as stage0
    import stage1_image_encoder as stage1
    import stage2_temporal as stage2
    from fer_pipeline.app.commands.predict import Predictor
    from fer_pipeline.app.commands.report import write_report
    from fer_pipeline.app.synth import generate
    from fer_pipeline.config import DataSource
    from fer_pipeline.manifest import read_manifest

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
        log.info("[1/7] generating demo data -> %s", data)
        generate(cfg.synth, data, cfg.seed)
    timings["synth_s"] = round(time.time() - t0, 1)

    t = time.time()
    if encoder == "frozen":
        log.info("[2/7] stage 1: the bundled real-face encoder, as it is")
        s1_run = stage1.bundled_run()
        report = stage1.evaluate(cfg, "bundled")      # on the generated stills' test split
        pre = {"val_acc": report.accuracy, "val_images": int(report.confusion.sum())}
    else:
        s1_run = out / "runs" / "stage1" / "demo"
        if _pretrain_is_current(s1_run, cfg):
            log.info("stage-1 encoder in %s is current, reusing it", s1_run)
            pre = json.loads((s1_run / "result.json").read_text())
        else:
            log.info("[2/7] stage 1: fine-tune the bundled encoder on the still images")
            if s1_run.exists():
                shutil.rmtree(s1_run)
            res1 = stage1.train(cfg, s1_run)
            pre = {"val_acc": res1.val_acc, "val_images": res1.val_images}
    timings["stage1_pretrain_s"] = round(time.time() - t, 1)

    t = time.time()
    log.info("[3/7] stage 0: ingest the Aff-Wild2 layout")
    ingest, manifest = stage0.ingest_affwild2(data, out / "stage0", cfg)
    timings["stage0_s"] = round(time.time() - t, 1)

    t = time.time()
    log.info("[4/7] stage 1: embed every crop with the encoder")
    emb = stage1.embed_manifest(manifest, cfg, run_dir=s1_run)  # -> <out>/embeddings/<encoder-key>
    timings["stage1_embed_s"] = round(time.time() - t, 1)

    t = time.time()
    log.info("[5/7] stage 2: train Transformer + V-NAW on the cached embeddings; official split"
             "%s", f" and {folds} disjoint video folds" if folds else "")
    stage2_dir = out / "runs" / "stage2"
    if folds:
        table, runs = stage2.kfold(emb.store, stage2_dir, cfg, folds, "kfold")
        res = runs["official"]
    else:
        table, res = None, stage2.train(emb.store, stage2_dir / "official", cfg)
    timings["stage2_s"] = round(time.time() - t, 1)

    t = time.time()
    log.info("[6/7] report: one HTML page for the official run")
    index, _, _ = write_report(res.run_dir, manifest=read_manifest(manifest))
    timings["report_s"] = round(time.time() - t, 1)

    t = time.time()
    # The demo's temporal model has only seen drawn faces: it predicts the generated video. The
    # real video gets the real-face model a user gets without training (predict without --run).
    generated = _first_val_raw_video(data, res.run_dir)
    log.info("[7/7] predict: %s with the demo's run (stage 0 -> 1 -> 2); %s with the bundled "
             "real-face encoder (stage 0 -> 1, frame level)",
             ", ".join(v.name for v in generated) or "-", SAMPLE_VIDEO.name)
    pred = Predictor.from_run(res.run_dir).predict(generated, out / "predict")
    real = Predictor.default().predict([SAMPLE_VIDEO], out / "predict")
    pred = type(pred)(pred.videos + real.videos, pred.failures + real.failures, pred.out)
    timings["predict_s"] = round(time.time() - t, 1)
    timings["total_s"] = round(time.time() - t0, 1)
    return {"ingest": ingest, "embed": emb, "train": res, "pretrain": pre, "timings": timings,
            "stage1_run": s1_run, "table": table, "report": index, "predict": pred,
            "encoder": encoder}


def _first_val_raw_video(data: Path, run_dir: Path) -> list[Path]:
    """The raw mp4 of the run's first validation video (a generated one), if present."""
    from stage0_preprocess import raw_video_name

    val = json.loads((run_dir / "stage2.json").read_text()).get("val_videos") or []
    raw = [data / "videos" / f"{raw_video_name(v)}.mp4" for v in val[:1]]
    return [p for p in raw if p.is_file()]


def predict_vs_cached(run_dir: Path, pred) -> dict[str, float]:
    """Per generated video predicted from its raw mp4: the share of frames with a face in both
    paths where predict's per-frame label equals the cached evaluation's prediction
    (``eval/predictions.parquet``: the generator's own crops, embedded in the store). Stage 0
    re-detects and re-aligns the faces, so this measures what alignment differences cost."""
    import pandas as pd

    cached = pd.read_parquet(run_dir / "eval" / "predictions.parquet")
    out = {}
    for v in pred.videos:
        ev = cached[cached.video == v.name]
        if ev.empty:
            continue
        both = v.frames.merge(ev[["frame", "pred", "face"]], on="frame")
        both = both[both.has_face & both.face]
        if len(both):
            out[v.name] = float((both.label == both.pred).mean())
    return out


def demo_command(args: argparse.Namespace) -> int:
    cfg = resolve_config(args, presets=["demo"])
    out = Path(args.out or Path(cfg.artifacts_dir) / "demo")
    result = run_demo(cfg, out, args.folds, args.encoder)
    res, emb, ingest = result["train"], result["embed"], result["ingest"]
    report = res.report
    pre = result["pretrain"]
    print()
    if pre.get("val_acc") is not None:
        what = ("the bundled FERPlus encoder, as it is" if result["encoder"] == "frozen"
                else f"fine-tuned from the bundled encoder; curve {result['stage1_run']}/learning_curve.png")
        print(f"Stage-1 encoder ({what}): {100 * pre['val_acc']:.1f}% accuracy on "
              f"{pre['val_images']} held-out generated stills of new identities (7 classes, "
              f"chance 14.3%)")
    print(f"Per-class F1 on the {len(json.loads((res.run_dir / 'stage2.json').read_text())['val_videos'])}"
          f" validation videos (every annotated frame):")
    print(report.text())
    if result["table"] is not None:
        print("\nF1 (%) per validation set (official split + disjoint video folds; V-NAW Table 1 shape):")
        print(to_markdown(result["table"]))
    pred = result["predict"]
    print("\nPredictions on new videos (CSV, ABAW submission, timeline PNG; smoothed labels over "
          "the face frames):")
    from fer_pipeline.app.commands.predict import label_shares

    agreement = predict_vs_cached(res.run_dir, pred)
    for v in pred.videos:
        same = (f"; per-frame label equals the cached evaluation's on {100 * agreement[v.name]:.1f}% "
                f"of its face frames" if v.name in agreement else "")
        model = ("the bundled real-face encoder, frame level" if Path(v.path) == SAMPLE_VIDEO
                 else "the demo's run")
        print(f"  {Path(v.path).name} ({model}): {len(v.frames)} frames, face in {v.face_pct:.1f}%, "
              f"{label_shares(v.frames)}{same} -> {v.files['timeline']}")
    for f in pred.failures:
        print(f"  failed: {f}")
    failed = len(ingest.failures) + len(emb.failures) + len(pred.failures)
    write_json(out / "demo_summary.json", {
        "macro_f1": report.macro_f1, "f1": report.to_dict()["f1"], "best_epoch": res.best_epoch,
        "last_epoch_macro_f1": res.last_f1, "run_dir": str(res.run_dir), "store": str(emb.store),
        "stage1_val_acc": pre.get("val_acc"), "stage1_run": str(result["stage1_run"]),
        "kfold": None if result["table"] is None else result["table"].to_dict(orient="records"),
        "timings": result["timings"], "failed_inputs": failed, "encoder": result["encoder"],
        "predict_vs_cached_agreement": agreement})
    print(f"\nfiles: report {result['report']}; {res.run_dir}/eval/f1.csv, f1.md, confusion.png; "
          f"metrics {res.run_dir}/metrics.jsonl; contact sheet {out}/data/contact_sheet.png")
    selected = json.loads((res.run_dir / "stage2.json").read_text()).get("select_videos")
    chosen = ((", chosen on held-out training videos" if selected else ", chosen on val")
              if cfg.stage2.train.keep == "best" else "")
    summary(f"demo: macro-F1 {100 * report.macro_f1:.2f} on the official validation videos "
            f"(checkpoint of epoch {res.best_epoch}{chosen}; last epoch "
            f"{100 * (res.last_f1 or 0):.2f}) in {result['timings']['total_s']:.0f} s -> {out}")
    return EXIT_INPUTS_FAILED if failed else EXIT_OK
