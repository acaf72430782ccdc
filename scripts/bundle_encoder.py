"""Package a finished stage-1 run as the encoder shipped with the project
(``stage1.model.pretrained: bundled``, ``fer-pipeline predict`` without ``--run``).

    python scripts/bundle_encoder.py RUN_DIR --ferplus ../shared/data/ferplus \
        --command "fer-pipeline stage1 train ..."

Writes ``stage1_image_encoder/bundled/<name>/``: ``checkpoint.safetensors`` (the run's weights
in float16, with their metadata), ``config.yaml`` (the run's resolved config), ``bundled.json``
(SHA-256 of the weights, the training command, the measured figures) and ``MODEL_CARD.md``.
The figures are measured here, on the float16 weights as shipped: ``fer-pipeline stage1 eval``
on FER2013Valid with majority labels.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CARD = """# {name}: a real-face expression encoder (FERPlus)

A {model} trained on FERPlus with `fer-pipeline stage1 train` ({origin}) and shipped so that
`fer-pipeline predict VIDEO` gives per-frame expressions on a fresh install (no training, no
download) and the demo starts from real faces. Select it with `stage1.model.pretrained: bundled`.

| | |
|---|---|
| architecture | timm `{model}`, 8-way linear head over the pooled {dim}-d feature (the embedding) |
| input | {size} x {size} face crop (stage 0's 5-point alignment, resized){grey}, ImageNet mean/std |
| classes | {classes} (Aff-Wild2 order; FERPlus contempt -> Other) |
| training data | {data} (labels MIT, Microsoft; images: FER2013, Kaggle ICML 2013 challenge terms, research use) |
| loss | {loss} |
| FER2013Valid (majority labels, {n} images) | accuracy **{acc:.2f} %**, macro-F1 over the classes present {f1:.2f} % |
{aligned_row}| weights | `checkpoint.safetensors`, float16, {mb:.1f} MB, SHA-256 `{sha}` |
| trained | {date}, {epochs} epochs, {minutes} on a 2-core CPU{history} |

Per class on FER2013Valid (F1 %): {per_class}.

## Command

```
{command}
python scripts/bundle_encoder.py RUN_DIR --ferplus ../shared/data/ferplus{aligned_arg} --command "..."
fer-pipeline stage1 eval --run bundled --out DIR 'stage1.data.sources=[{{format: ferplus, root: ../shared/data/ferplus}}]'{aligned_cmd}
```

## Intended use

A starting point: for fine-tuning on other face data (`stage1.model.pretrained: bundled`), for
demos, and for frame-level predictions of clearly visible expressions in real video. It is
small and was trained at {size} px on{grey_words} FER2013 faces, so it is far from the state of the
art (FER+ paper: about 84 % on FER2013Test with VGG-13 at 64 px; 88-91 % with pretrained
backbones): expect confusions between Fear / Surprise and Disgust / Anger, weak Contempt
(Other), and no knowledge of Aff-Wild2's "Other" beyond contempt. Do not use it to make
decisions about people.
"""


def main(argv: list[str] | None = None) -> int:
    from safetensors.torch import save_file

    from fer_pipeline.checkpoint import load_checkpoint
    from fer_pipeline.config import DataSource, load_config
    from fer_pipeline.labels import CLASSES
    from stage1_image_encoder.api import evaluate, evaluation_summary
    from stage1_image_encoder.model import build_encoder, encoder_key
    from stage1_image_encoder.pretrained import BUNDLED_DIR, BUNDLED_NAME, sha256

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="finished stage-1 run dir")
    ap.add_argument("--ferplus", type=Path, required=True, help="FERPlus folder for the evaluation")
    ap.add_argument("--command", required=True, help="the stage1 train command that made the run")
    ap.add_argument("--aligned", type=Path,
                    help="FERPlus re-cropped by `fer-pipeline stage0 recrop-ferplus`: also score FER2013Valid there")
    ap.add_argument("--data", default="FERPlus `FER2013Train`, 25,045 images kept by the FER+ majority rule",
                    help="the training data, in words, for the model card")
    ap.add_argument("--init", default=None, metavar="TEXT",
                    help="the run was fine-tuned from another encoder: say which, in words, for the model card "
                         "(e.g. 'the 48 px encoder, 8 epochs, 72 min'); its command goes first in --command")
    ap.add_argument("--name", default=BUNDLED_NAME)
    ap.add_argument("--grayscale", action="store_true",
                    help="record stage1.model.grayscale: true (a model trained on greyscale faces only)")
    args = ap.parse_args(argv)

    cfg = load_config([args.run / "config.yaml"], base=None)
    if args.grayscale:
        cfg = cfg.model_copy(update={"stage1": cfg.stage1.model_copy(update={
            "model": cfg.stage1.model.model_copy(update={"grayscale": True})})})
    state, meta = load_checkpoint(args.run / "checkpoint.safetensors")
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    model = build_encoder(cfg.stage1.model.model_copy(update={"pretrained": None}))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in half.items()})
    out = BUNDLED_DIR / args.name
    out.mkdir(parents=True, exist_ok=True)
    key = encoder_key(model, cfg.stage1.model)
    meta = {**meta, "encoder_key": key, "bundled_from": str(args.run.resolve()), "dtype": "float16"}
    save_file(half, str(out / "checkpoint.safetensors"), metadata={"meta": json.dumps(meta, default=str)})
    (out / "checkpoint.safetensors").chmod(0o644)
    (out / "config.yaml").write_text(cfg.to_yaml())
    digest = sha256(out / "checkpoint.safetensors")
    (out / "bundled.json").write_text(json.dumps({"name": args.name, "sha256": digest}, indent=1) + "\n")

    def score(root: Path) -> dict:
        src = DataSource(format="ferplus", root=str(root.resolve()))
        ecfg = cfg.model_copy(update={"stage1": cfg.stage1.model_copy(update={
            "data": cfg.stage1.data.model_copy(update={"sources": [src]})})})
        report = evaluate(ecfg, out)
        return evaluation_summary(report, int(report.confusion.sum()))

    result = score(args.ferplus)
    aligned = score(args.aligned) if args.aligned else None
    aligned_row = aligned_cmd = ""
    if aligned:
        aligned_row = (f"| FER2013Valid re-cropped by stage 0 (`stage0 recrop-ferplus`, {aligned['n']} images) "
                       f"| accuracy **{100 * aligned['accuracy']:.2f} %**, macro-F1 {100 * aligned['macro_f1']:.2f} % |\n")
        aligned_cmd = ("\nfer-pipeline stage0 recrop-ferplus --ferplus ../shared/data/ferplus --out ALIGNED\n"
                       "fer-pipeline stage1 eval --run bundled --out DIR 'stage1.data.sources=[{format: ferplus, "
                       "root: ALIGNED}]'")
    rows = [json.loads(x) for x in (args.run / "metrics.jsonl").read_text().splitlines()]
    timing = json.loads((args.run / "timing.json").read_text()) if (args.run / "timing.json").is_file() else {}
    nla = cfg.stage1.nla
    forms = {"release": "NLA, release form (official code: 0.5 CE + 0.5 w CE + 0.5 JSD with the flipped view)",
             "paper": f"NLA, paper form ({nla.lam_paper} (1 + w) CE + {1 - nla.lam_paper:g} JSD with the flipped view)",
             "weighted_ce": "(1 + w) CE, the weighted_ce variant (no consistency term)"}
    loss = forms[nla.form] if nla.enabled else "cross-entropy"
    per_class = ", ".join(f"{c} {100 * v['f1']:.1f}" for c, v in result["per_class"].items()
                          if v["support"] > 0)
    card = CARD.format(
        name=args.name, model=cfg.stage1.model.name, dim=int(model.num_features),
        origin=f"fine-tuned from {args.init}" if args.init else "from scratch",
        history=f", after {args.init}" if args.init else "",
        grey_words=" greyscale" if cfg.stage1.model.grayscale else "",
        size=cfg.stage1.model.img_size, grey=", turned grey" if cfg.stage1.model.grayscale else "",
        classes=", ".join(CLASSES), loss=loss, n=result["n"],
        acc=100 * result["accuracy"], f1=100 * result["macro_f1"],
        mb=(out / "checkpoint.safetensors").stat().st_size / 1e6, sha=digest,
        date=_dt.date.today().isoformat(), epochs=len(rows),
        minutes=f"{timing['wall_min']:.0f} min" if timing else f"{sum(r['epoch_s'] for r in rows) / 60:.0f} min",
        per_class=per_class, command=args.command, data=args.data, aligned_row=aligned_row,
        aligned_cmd=aligned_cmd, aligned_arg=" --aligned ALIGNED" if aligned else "")
    (out / "MODEL_CARD.md").write_text(card)
    (out / "bundled.json").write_text(json.dumps({
        "name": args.name, "sha256": digest, "encoder_key": key, "model": cfg.stage1.model.name,
        "img_size": cfg.stage1.model.img_size, "command": args.command,
        "fer2013valid": {k: result[k] for k in ("accuracy", "macro_f1", "n")},
        **({"fer2013valid_aligned": {k: aligned[k] for k in ("accuracy", "macro_f1", "n")}} if aligned else {})},
        indent=1) + "\n")
    print(f"bundled {args.run} -> {out} ({(out / 'checkpoint.safetensors').stat().st_size / 1e6:.1f} MB, "
          f"FER2013Valid accuracy {100 * result['accuracy']:.2f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
