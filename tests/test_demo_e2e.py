"""The embedded default end to end, through the CLI users run, on a smaller generated set."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from fer_pipeline.labels import CLASSES
from fer_pipeline.manifest import read_manifest
from fer_pipeline.store import EmbeddingStore
from stage0_preprocess.annotations import parse_expr_annotation

SMALL = ["synth.n_videos=4", "synth.n_val=2", "synth.duration_s=[8,10]",
         "synth.stills_train_per_class=2", "synth.stills_test_per_class=1",
         "stage2.train.epochs=4", "stage2.data.clip_len=50", "stage1.embed.workers=0"]


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "fer_pipeline", "demo", "--out", str(out), "--folds",
                           "2", *SMALL], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    # the per-class table: one row per class and the average, then the one-line summary
    for name in CLASSES:
        assert any(ln.startswith(name) for ln in lines), name
    assert any(ln.startswith("Avg") for ln in lines)
    assert lines[-1].startswith("demo: macro-F1 ")

    summary = json.loads((out / "demo_summary.json").read_text())
    run_dir = out / "runs" / "stage2" / "official"
    # the Table-1-shaped report: official + 2 random video splits, 8 classes + Avg
    kf = pd.read_csv(out / "runs" / "stage2" / "kfold.csv")
    assert list(kf.val_set) == ["official", "fold-1", "fold-2"]
    assert list(kf.columns) == ["val_set", *CLASSES, "Avg"]
    assert "| official |" in proc.stdout and "| fold-2 |" in proc.stdout
    assert kf.Avg.iloc[0] == pytest.approx(100 * summary["macro_f1"], abs=0.01)
    for name in ("config.yaml", "git_sha.txt", "metrics.jsonl", "checkpoint.safetensors",
                 "stage2.json", "eval/f1.csv", "eval/f1.md", "eval/f1.json", "eval/confusion.png"):
        assert (run_dir / name).is_file(), name
    f1 = pd.read_csv(run_dir / "eval" / "f1.csv")
    assert list(f1["class"]) == list(CLASSES) + ["Avg"]
    assert f1["f1"].iloc[-1] == pytest.approx(100 * summary["macro_f1"], abs=0.01)
    epochs = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [0, 1, 2, 3]

    # the manifest is frame-exact against the generated annotation files
    manifest = read_manifest(out / "stage0" / "manifest.parquet")
    data = out / "data"
    ann_files = sorted((data / "annotations").rglob("*.txt"))
    assert sorted(manifest.video.unique()) == sorted(p.stem for p in ann_files)
    for p in ann_files:
        rows = manifest[manifest.video == p.stem]
        np.testing.assert_array_equal(rows.label.to_numpy(), parse_expr_annotation(p))

    # every annotated frame of the validation videos was scored
    store = EmbeddingStore.open(summary["store"])
    val = [v for v in store.videos() if store.video_attrs(v)["split"] == "val"]
    assert len(val) >= 2
    n_labelled = sum(int((store.read_video(v).label >= 0).sum()) for v in val)
    assert int(f1["support"].iloc[-1]) == n_labelled
    preds = pd.read_parquet(run_dir / "eval" / "predictions.parquet")
    assert len(preds) == sum(store.read_video(v).label.size for v in val)

    # the report page and the predictions on the bundled sample + a generated validation video
    assert (run_dir / "report" / "index.html").is_file()
    assert "report/index.html" in proc.stdout
    d19 = pd.read_csv(out / "predict" / "d19.csv")
    assert len(d19) == 250 and d19["has_face"].mean() > 0.95
    raw_val = sorted(p.stem for p in (out / "predict").glob("synth_*.csv"))
    assert len(raw_val) == 1
    gen = pd.read_csv(out / "predict" / f"{raw_val[0]}.csv")
    tracks = [v for v in manifest.video.unique() if v.removesuffix("_left").removesuffix("_right") == raw_val[0]]
    assert tracks and len(gen) == int((manifest.video == tracks[0]).sum())   # every frame of the raw video
    for name in ("d19", raw_val[0]):
        assert (out / "predict" / f"{name}_timeline.png").is_file()
        sub = (out / "predict" / f"{name}_submission.txt").read_text().splitlines()
        assert sub[0].startswith("image_location,Neutral") and len(sub) == 1 + len(pd.read_csv(out / "predict" / f"{name}.csv"))
    assert "d19.mp4 (the bundled real-face encoder, frame level): 250 frames" in proc.stdout
    # the real video is predicted by the real-face encoder: its broad smiles come out Happiness
    smiles = d19[d19.frame.isin([*range(160, 177), *range(232, 251)]) & d19.has_face]
    assert (smiles.smoothed_label_name == "Happiness").mean() > 0.8

    # a second run reuses the data, the manifest's crops and the complete store entries
    again = subprocess.run([sys.executable, "-m", "fer_pipeline", "demo", "--out", str(out), "--folds",
                            "0", *SMALL],
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "is current, reusing it" in again.stderr
    assert "already complete" in again.stderr
