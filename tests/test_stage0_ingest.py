"""Aff-Wild2 annotation parsing and ingestion into the frame manifest."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from fer_pipeline.config import load_config
from fer_pipeline.errors import InputError
from fer_pipeline.manifest import COLUMNS, read_manifest
from stage0_preprocess.annotations import parse_expr_annotation, write_expr_annotation
from stage0_preprocess import ingest_affwild2 as run_ingest
from tests.conftest import make_affwild2

HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n"


def test_parse_roundtrip(tmp_path):
    labels = np.array([-1, 0, 3, 7, 4, 4])
    write_expr_annotation(tmp_path / "v.txt", labels)
    assert (tmp_path / "v.txt").read_text().splitlines()[0] == HEADER.strip()
    np.testing.assert_array_equal(parse_expr_annotation(tmp_path / "v.txt"), labels)


@pytest.mark.parametrize("body,needle", [
    (HEADER + "0\n1\n8\n", "line 4: label 8 is outside -1..7"),
    (HEADER + "0\n-2\n", "line 3: label -2 is outside -1..7"),
    (HEADER + "0\nhappy\n", "line 3: 'happy' is not an integer label"),
    ("0\n1\n", "line 1 must be the class header"),
    ("", "annotation file is empty"),
    (HEADER, "header but no frame labels"),
    (HEADER + "0\n\n1\n", "line 3 is empty"),
])
def test_parse_errors_name_file_and_line(tmp_path, body, needle):
    f = tmp_path / "bad_video.txt"
    f.write_text(body)
    with pytest.raises(InputError) as e:
        parse_expr_annotation(f)
    assert str(f) in str(e.value) and needle in str(e.value)
    assert "\n" not in str(e.value)


def test_ingest_is_frame_exact(affwild2_tree, tmp_path):
    cfg = load_config()
    result, manifest = run_ingest(affwild2_tree, tmp_path / "s0", cfg)
    assert not result.failures
    df = read_manifest(manifest)
    assert list(df.columns) == COLUMNS
    assert sorted(df.video.unique()) == ["vid_a", "vid_b", "vid_c_left", "vid_c_right", "vid_d"]
    for video, g in df.groupby("video"):
        split = "Validation_Set" if video == "vid_d" else "Train_Set"
        ann = parse_expr_annotation(
            affwild2_tree / "annotations/EXPR_Recognition_Challenge" / split / f"{video}.txt")
        assert len(g) == len(ann)
        np.testing.assert_array_equal(g.frame.to_numpy(), np.arange(1, len(ann) + 1))
        np.testing.assert_array_equal(g.label.to_numpy(), ann)  # line k+1 <-> frame k, no shift
        # has_face <=> crop file k exists, and crop_path points at frame k's crop
        for row in g.itertuples():
            crop = affwild2_tree / "cropped_aligned" / video / f"{row.frame:05d}.jpg"
            assert row.has_face == crop.exists()
            if row.has_face:
                assert row.crop_path == str(crop.resolve())
        assert set(g.split) == {"val" if video == "vid_d" else "train"}
    # timestamps come from the raw video (25 fps); _left/_right share the raw vid_c.mp4
    a = df[df.video == "vid_a"].time_s.to_numpy()
    np.testing.assert_allclose(np.diff(a), 0.04, atol=1e-6)
    summary = pd.read_csv(tmp_path / "s0" / "summary.csv")
    assert set(summary.status) == {"ok"}
    assert summary.set_index("video").loc["vid_a", "frames"] == 120


def test_count_mismatch_and_bad_label_fail_only_that_video(affwild2_tree, tmp_path):
    ann = affwild2_tree / "annotations/EXPR_Recognition_Challenge"
    # vid_b: annotation one frame longer than the video
    lines = (ann / "Train_Set/vid_b.txt").read_text() + "0\n"
    (ann / "Train_Set/vid_b.txt").write_text(lines)
    # vid_d: a label out of range
    body = (ann / "Validation_Set/vid_d.txt").read_text().splitlines()
    body[5] = "9"
    (ann / "Validation_Set/vid_d.txt").write_text("\n".join(body) + "\n")
    out = tmp_path / "s0"
    proc = subprocess.run([sys.executable, "-m", "fer_pipeline", "stage0", "ingest", "--affwild2",
                           str(affwild2_tree), "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert "vid_b.txt: 91 frame labels but video vid_b.mp4 has 90 frames" in proc.stderr
    assert "vid_d.txt: line 6: label 9 is outside -1..7" in proc.stderr
    df = read_manifest(out / "manifest.parquet")
    assert sorted(df.video.unique()) == ["vid_a", "vid_c_left", "vid_c_right"]
    summary = pd.read_csv(out / "summary.csv").set_index("video")
    assert summary.loc["vid_b", "status"] == "failed" and "90 frames" in summary.loc["vid_b", "error"]
    assert summary.loc["vid_d", "status"] == "failed"
    assert "2 failed" in proc.stdout


def test_crops_beyond_annotation_without_video(tmp_path):
    root = make_affwild2(tmp_path / "aw", {"v": ("Train_Set", 40)}, write_videos=False)
    import shutil

    shutil.copy(root / "cropped_aligned/v/00001.jpg", root / "cropped_aligned/v/00045.jpg")
    result, _ = run_ingest(root, tmp_path / "s0", load_config())
    assert len(result.failures) == 1
    assert "40 frame labels but" in result.failures[0] and "crops up to frame 45" in result.failures[0]


def test_missing_root_is_usage_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fer_pipeline", "stage0", "ingest", "--affwild2",
                           str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: Aff-Wild2 root not found: {tmp_path / 'nope'}"
    assert not (tmp_path / "o").exists()


def test_rerun_keeps_previous_outputs_intact_on_usage_error(affwild2_tree, tmp_path):
    out = tmp_path / "s0"
    run_ingest(affwild2_tree, out, load_config())
    before = (out / "manifest.parquet").read_bytes()
    proc = subprocess.run([sys.executable, "-m", "fer_pipeline", "stage0", "ingest", "--affwild2",
                           str(affwild2_tree), "--out", str(out), "stage0.parallel.jobz=2"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "did you mean 'stage0.parallel.jobs'" in proc.stderr
    assert (out / "manifest.parquet").read_bytes() == before
