"""The by-eye segment annotations of the sample videos and their scorer (bench/video_segments.py):
the file is well formed and matches the videos, the scorer counts hits, agreement and ambiguous
segments as documented. ``predict`` itself is scored in tests/test_bundled.py."""
from __future__ import annotations

import pandas as pd
import pytest

from bench.video_segments import SEGMENTS, load_segments, score, summary
from fer_pipeline.labels import CLASSES
from tests.conftest import SHARED

# decoded frames per sample video (../shared/assets/MANIFEST.md; the .mov files: 169 each)
FRAMES = {"short_hamilton_clip": 275, "woman2": 464, "d0": 78, "d19": 250, "face_noface": 169,
          "noface_face": 169}


def test_segment_file_covers_the_six_videos_within_their_frames():
    seg = load_segments()
    assert set(seg.video) == set(FRAMES)
    assert (seg.end_frame <= seg.video.map(FRAMES)).all()
    assert {"Happiness", "Neutral", "Surprise", "Anger", "ambiguous"} <= set(seg.expression)
    assert seg.note.notna().all()
    videos = SHARED / "assets" / "videos"
    if videos.is_dir():
        assert {p.stem for p in videos.iterdir()} >= set(FRAMES)


def test_bad_segment_rows_are_named(tmp_path):
    rows = SEGMENTS.read_text().splitlines()[:3]
    for bad, match in ((rows + ["d0,5,3,Neutral,x"], "row 4 .*start <= end"),
                       (rows + ["d0,70,71,Joy,x"], "'Joy' is none of"),
                       (rows + ["d0,10,20,Neutral,x"], "segments of d0 overlap")):
        (tmp_path / "s.csv").write_text("\n".join(bad) + "\n")
        with pytest.raises(ValueError, match=match):
            load_segments(tmp_path / "s.csv")


def test_score_takes_the_top_smoothed_label_over_face_frames(tmp_path):
    seg = pd.DataFrame({"video": ["v"] * 3, "start_frame": [1, 6, 11], "end_frame": [5, 10, 12],
                        "expression": ["Happiness", "Neutral", "ambiguous"]})
    labels = ["Happiness"] * 3 + ["Neutral"] * 2 + ["Neutral"] * 4 + ["Anger"] + ["Fear"] * 2
    face = [True] * 4 + [False] + [True] * 7
    pd.DataFrame({"frame": range(1, 13), "has_face": face, "smoothed_label_name": labels}).to_csv(
        tmp_path / "v.csv", index=False)
    got = score(seg, tmp_path)
    assert got.face_frames.tolist() == [4, 5, 2]                    # frame 5 has no face
    assert got.top.tolist() == ["Happiness", "Neutral", "Fear"]
    assert got.agree.tolist()[:2] == [0.75, 0.8] and pd.isna(got.agree[2])
    assert got.hit.tolist()[:2] == [True, True] and got.hit[2] is None
    s = summary(got)
    assert s["segments"] == 2 and s["hits"] == 2 and s["frame_agreement"] == pytest.approx(7 / 9)
    assert set(s["per_expression"]) == {"Happiness", "Neutral"} and set(CLASSES) >= set(s["per_expression"])
    # a video without predictions is left out
    assert score(seg.assign(video="w"), tmp_path).empty
