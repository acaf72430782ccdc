"""FERPlus re-cropped through stage 0 (``fer-pipeline stage0 recrop-ferplus``): real faces get
stage 0's aligned framing, the result reads back through the FERPlus adapter, faces stage 0
cannot find keep their framing and are counted, bad input is named, re-running skips finished
splits and other settings are refused."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from fer_pipeline.config import load_config
from fer_pipeline.errors import UsageError
from tests.conftest import ROOT, SHARED

FERPLUS = SHARED / "data" / "ferplus"
needs_ferplus = pytest.mark.skipif(not (FERPLUS / "FER2013Valid" / "label.csv").is_file(),
                                   reason="../shared/data/ferplus not found")


def small_ferplus(root, n=12, blank=1, broken=1):
    """``n`` real FER2013Valid faces, then ``blank`` flat grey images (no face to find) and
    ``broken`` files that are not images; FER2013Train holds 2 faces."""
    (root / "FER2013Train").mkdir(parents=True)
    train = (FERPLUS / "FER2013Train" / "label.csv").read_text().splitlines()[:2]
    for line in train:
        shutil.copy(FERPLUS / "FER2013Train" / line.split(",")[0], root / "FER2013Train")
    (root / "FER2013Train" / "label.csv").write_text("\n".join(train) + "\n")
    split = root / "FER2013Valid"
    split.mkdir(parents=True)
    lines = (FERPLUS / "FER2013Valid" / "label.csv").read_text().splitlines()[:n]
    for line in lines:
        shutil.copy(FERPLUS / "FER2013Valid" / line.split(",")[0], split)
    votes = '"(0, 0, 48, 48)",10,0,0,0,0,0,0,0,0,0'
    for i in range(blank):
        cv2.imwrite(str(split / f"blank{i}.png"), np.full((48, 48), 128, np.uint8))
        lines.append(f"blank{i}.png,{votes}")
    for i in range(broken):
        (split / f"broken{i}.png").write_bytes(b"not a png")
        lines.append(f"broken{i}.png,{votes}")
    (split / "label.csv").write_text("\n".join(lines) + "\n")
    return lines


def cli(*args):
    return subprocess.run([sys.executable, "-m", "fer_pipeline", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


@needs_ferplus
def test_recrop_aligns_real_faces_counts_the_rest_and_reads_back(tmp_path):
    from stage1_image_encoder.sources import build_image_sets

    lines = small_ferplus(tmp_path / "src")
    out = tmp_path / "aligned"
    r = cli("stage0", "recrop-ferplus", "--ferplus", tmp_path / "src", "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "broken0.png: unreadable image, left out" in r.stderr
    assert r.stdout.strip().endswith(f"-> {out}")
    spec = json.loads((out / "recrop.json").read_text())
    assert spec["counts"]["FER2013Valid"] == {"aligned": 12, "original": 1, "unreadable": 1}
    assert spec["weights_sha256"] and spec["align"]["mode"] == "five_point"
    with open(out / "recrop.csv", newline="") as f:
        table = {row["name"]: row for row in csv.DictReader(f)}
    assert table["blank0.png"]["framing"] == "original" and table["broken0.png"]["framing"] == "unreadable"
    # label.csv keeps every readable image with its own votes, box = the whole crop
    written = (out / "FER2013Valid" / "label.csv").read_text().splitlines()
    assert len(written) == len(lines) - 1
    first = lines[0].split(",")
    assert written[0].split(",")[0] == first[0] and written[0].split(",")[-10:] == first[-10:]
    size = load_config().stage0.align.size
    assert f'"(0, 0, {size}, {size})"' in written[0]
    crop = cv2.imread(str(out / "FER2013Valid" / first[0]), cv2.IMREAD_UNCHANGED)
    assert crop.shape == (size, size)
    # stage 0's alignment moves the face: the crop is not the original image enlarged
    orig = cv2.resize(cv2.imread(str(tmp_path / "src" / "FER2013Valid" / first[0]), 0), (size, size))
    assert np.abs(crop.astype(int) - orig).mean() > 10
    # the FERPlus adapter reads the re-crop as it reads the original
    src = load_config(overrides=[f"stage1.data.sources=[{{format: ferplus, root: {tmp_path / 'src'}}}]"])
    new = load_config(overrides=[f"stage1.data.sources=[{{format: ferplus, root: {out}}}]"])
    _, test_src, _ = build_image_sets(src.stage1.data.sources)
    _, test_new, _ = build_image_sets(new.stage1.data.sources)
    names = lambda lst: [p.rsplit("/", 1)[-1] for p in lst.paths]         # noqa: E731
    kept = [n for n in names(test_src) if n != "broken0.png"]
    assert names(test_new) == kept and list(test_new.labels) == [
        lab for n, lab in zip(names(test_src), test_src.labels) if n != "broken0.png"]


@needs_ferplus
def test_recrop_resumes_skips_finished_splits_and_refuses_other_settings(tmp_path, monkeypatch):
    from stage0_preprocess import stills

    small_ferplus(tmp_path / "src", n=4, blank=0, broken=0)
    cfg = load_config()
    out = tmp_path / "aligned"
    # an interrupted build leaves no split behind and is redone
    real = stills.cv2.imwrite
    calls = {"n": 0}

    def dying(path, img):
        calls["n"] += 1
        if calls["n"] == 2:           # the second of FER2013Train's two faces
            raise KeyboardInterrupt
        return real(path, img)

    monkeypatch.setattr(stills.cv2, "imwrite", dying)
    with pytest.raises(KeyboardInterrupt):
        stills.recrop_ferplus(tmp_path / "src", out, cfg)
    assert not (out / "FER2013Train").exists() and not list(out.glob("*.partial-*"))
    monkeypatch.setattr(stills.cv2, "imwrite", real)
    first = stills.recrop_ferplus(tmp_path / "src", out, cfg)
    assert first.built == ["FER2013Train", "FER2013Valid"] and first.counts["FER2013Valid"]["aligned"] == 4
    again = stills.recrop_ferplus(tmp_path / "src", out, cfg)
    assert again.built == [] and again.counts == first.counts
    with pytest.raises(UsageError, match="made with other settings"):
        stills.recrop_ferplus(tmp_path / "src", out, cfg, upscale=3)


def test_recrop_without_label_csv_is_one_line(tmp_path):
    (tmp_path / "FER2013Valid").mkdir()
    r = cli("stage0", "recrop-ferplus", "--ferplus", tmp_path, "--out", tmp_path / "out")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "FER2013Train/label.csv or FER2013Valid/label.csv" in r.stderr and str(tmp_path) in r.stderr
