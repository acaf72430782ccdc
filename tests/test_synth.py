"""Demo-data generator: Aff-Wild2 / RAF-DB layouts, frame-exact annotations, crops only for
face frames, determinism, label noise and the class balance of the default config."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_pipeline.config import SynthConfig
from fer_pipeline.labels import (AFFWILD2_HEADER, CLASSES, DISGUST, FEAR, HAPPINESS, ID_TO_RAFDB, IGNORE,
                             NEUTRAL, NUM_CLASSES, OTHER)
from fer_pipeline.media import probe_video
from fer_pipeline.app.synth import generate
from fer_pipeline.app.synth.plan import TRAIN, VAL, plan_videos, rng_for
from fer_pipeline.app.synth.timeline import CONFUSABLE, build_timeline

SMALL = dict(n_videos=3, n_val=1, duration_s=[4.0, 6.0], stills_train_per_class=3,
             stills_test_per_class=2, no_face_fraction=0.15, occlusion_fraction=0.15,
             unannotated_fraction=0.05)
SEED = 7
ANN = Path("annotations") / "EXPR_Recognition_Challenge"


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    cfg = SynthConfig(**SMALL)
    out = tmp_path_factory.mktemp("synth")
    summary = generate(cfg, out, seed=SEED)
    return cfg, out, summary


def test_layout_and_names(small):
    cfg, out, summary = small
    assert sorted(p.name for p in (out / "videos").iterdir()) == \
        ["synth_000.mp4", "synth_001.mp4", "synth_002.mp4"]
    # The last training video holds two people; the last n_val videos are validation.
    assert sorted(p.name for p in (out / ANN / "Train_Set").iterdir()) == \
        ["synth_000.txt", "synth_001_left.txt", "synth_001_right.txt"]
    assert sorted(p.name for p in (out / ANN / "Validation_Set").iterdir()) == ["synth_002.txt"]
    assert sorted(p.name for p in (out / "cropped_aligned").iterdir()) == \
        ["synth_000", "synth_001_left", "synth_001_right", "synth_002"]
    assert json.loads((out / "synth.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["seed"] == SEED and summary["config"] == cfg.model_dump(mode="json")
    totals = summary["totals"]
    assert totals["videos"] == 3 and totals["tracks"] == 4
    assert totals["frames"] == sum(probe_video(p).n_frames for p in (out / "videos").iterdir())
    assert totals["track_frames"] == sum(e["n_frames"] for e in summary["videos"])
    assert totals["face_frames"] == sum(1 for _ in (out / "cropped_aligned").rglob("*.jpg"))
    assert totals["stills"] == 7 * (cfg.stills_train_per_class + cfg.stills_test_per_class)
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] >= NUM_CLASSES * 112
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".*partial*"))


def test_two_person_video_shares_one_mp4(small):
    _, out, summary = small
    duo = [e for e in summary["videos"] if e["video"] == "synth_001"]
    assert [e["name"] for e in duo] == ["synth_001_left", "synth_001_right"]
    assert duo[0]["n_frames"] == duo[1]["n_frames"] == probe_video(out / "videos" / "synth_001.mp4").n_frames
    assert not (out / ANN / "Train_Set" / "synth_001.txt").exists()
    assert not any(p.stem.startswith("synth_001_") for p in (out / "videos").iterdir())
    # Two independent timelines.
    a = np.loadtxt(out / ANN / "Train_Set" / "synth_001_left.txt", skiprows=1, dtype=int)
    b = np.loadtxt(out / ANN / "Train_Set" / "synth_001_right.txt", skiprows=1, dtype=int)
    assert not np.array_equal(a, b)


def test_annotation_files_match_video_frames(small):
    _, out, summary = small
    for e in summary["videos"]:
        raw = (out / ANN / e["split"] / f"{e['name']}.txt").read_bytes()
        assert b"\r" not in raw and raw.endswith(b"\n")
        lines = raw.decode().split("\n")[:-1]
        assert lines[0] == AFFWILD2_HEADER
        info = probe_video(out / "videos" / f"{e['video']}.mp4")
        assert len(lines) - 1 == info.n_frames == e["n_frames"]
        assert (info.width, info.height) == (e["width"], e["height"])
        assert round(info.fps) == e["fps"] and e["fps"] in (25, 30)
        labels = np.array([int(v) for v in lines[1:]])
        assert labels.min() >= IGNORE and labels.max() < NUM_CLASSES
        counts = {"-1": int(np.sum(labels == -1)), **{c: int(np.sum(labels == i)) for i, c in enumerate(CLASSES)}}
        assert counts == e["labels"]
        assert 4 * e["fps"] - 1 <= e["n_frames"] <= 6 * e["fps"] + 1


def test_crops_exist_exactly_for_face_frames(small):
    cfg, out, summary = small
    plans = plan_videos(cfg, SEED)
    missing_somewhere = False
    for vp in plans:
        for person in vp.persons:
            face = person.timeline.face
            expected = [f"{k + 1:05d}.jpg" for k in np.flatnonzero(face)]
            got = sorted(p.name for p in (out / "cropped_aligned" / person.track).iterdir())
            assert got == expected, person.track
            entry = next(e for e in summary["videos"] if e["name"] == person.track)
            assert entry["n_face_frames"] == len(expected)
            missing_somewhere |= len(expected) < vp.n_frames
            for name in got[::7]:
                img = cv2.imread(str(out / "cropped_aligned" / person.track / name))
                assert img.shape == (cfg.crop_size, cfg.crop_size, 3)
                assert img.std() > 10  # a drawn face, not an empty warp
    assert missing_somewhere, "the small config should contain at least one no-face stretch"


def test_stills_rafdb_layout(small):
    cfg, out, summary = small
    root = out / "stills" / "rafdb" / "basic"
    lines = (root / "EmoLabel" / "list_patition_label.txt").read_text().splitlines()
    n_train, n_test = 7 * cfg.stills_train_per_class, 7 * cfg.stills_test_per_class
    assert len(lines) == n_train + n_test
    names, labels = zip(*(ln.split(" ") for ln in lines))
    assert list(names[:n_train]) == [f"train_{i:05d}.jpg" for i in range(1, n_train + 1)]
    assert list(names[n_train:]) == [f"test_{i:04d}.jpg" for i in range(1, n_test + 1)]
    labels = [int(v) for v in labels]
    for part, sl, per in (("train", slice(0, n_train), cfg.stills_train_per_class),
                          ("test", slice(n_train, None), cfg.stills_test_per_class)):
        assert sorted(labels[sl]) == sorted(list(ID_TO_RAFDB.values()) * per), part
    images = sorted(p.name for p in (root / "Image" / "aligned").iterdir())
    assert images == sorted(n.replace(".jpg", "_aligned.jpg") for n in names)
    img = cv2.imread(str(root / "Image" / "aligned" / images[0]))
    assert img.shape == (cfg.still_size, cfg.still_size, 3)
    assert summary["stills"]["train"] == n_train and summary["stills"]["test"] == n_test


def test_same_seed_same_bytes_even_in_parallel_and_other_seed_differs(small, tmp_path):
    cfg, out, _ = small
    reference = _tree_digest(out)
    assert any(k.endswith(".mp4") for k in reference) and any(k.endswith(".jpg") for k in reference)
    # Same seed, rendered by two joblib workers: identical annotation, crop, mp4 bytes.
    generate(cfg.model_copy(update={"jobs": 2}), tmp_path / "again", seed=SEED)
    again = _tree_digest(tmp_path / "again")
    again = {k: v for k, v in again.items() if k != "synth.json"}
    assert again == {k: v for k, v in reference.items() if k != "synth.json"}

    generate(cfg, tmp_path / "other", seed=SEED + 1)
    other = _tree_digest(tmp_path / "other")
    for key in ("videos/synth_000.mp4", "cropped_aligned/synth_000/00001.jpg",
                "stills/rafdb/basic/Image/aligned/train_00001_aligned.jpg"):
        if key in other:
            assert other[key] != reference.get(key), key
    ann = [k for k in reference if k.startswith("annotations/")]
    assert any(other.get(k) != reference[k] for k in ann)


def test_rerun_in_place_replaces_previous_output(small, tmp_path):
    cfg, _, _ = small
    out = tmp_path / "rerun"
    generate(cfg, out, seed=1)
    generate(cfg.model_copy(update={"n_videos": 2, "n_val": 1}), out, seed=2)
    assert sorted(p.name for p in (out / "videos").iterdir()) == ["synth_000.mp4", "synth_001.mp4"]
    plans = plan_videos(cfg.model_copy(update={"n_videos": 2, "n_val": 1}), 2)
    for vp in plans:
        for person in vp.persons:
            n = len(list((out / "cropped_aligned" / person.track).iterdir()))
            assert n == int(person.timeline.face.sum())
    assert not (out / "cropped_aligned" / "synth_002").exists()


def test_odd_frame_size_is_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match="even"):
        generate(SynthConfig(**{**SMALL, "frame_sizes": [[321, 240]]}), tmp_path / "odd", seed=0)
    assert not (tmp_path / "odd").exists()


def test_label_noise_is_applied():
    cfg = SynthConfig()
    fps, n = 25, 25 * 120
    tl = build_timeline(n, fps, cfg, rng_for(3, 99))
    labelled = tl.annotated >= 0
    differ = labelled & (tl.annotated != tl.true)
    assert differ.sum() > 0.01 * labelled.sum()
    assert (tl.annotated[labelled] == tl.true[labelled]).mean() > 0.75
    # Each disagreement is a shifted boundary (Neutral vs the event's class) or a confusion.
    for k in np.flatnonzero(differ):
        a, t = int(tl.annotated[k]), int(tl.true[k])
        near = tl.event_of[max(0, k - 3 * fps):k + 3 * fps]
        event_classes = {tl.events[i].cls for i in set(near.tolist()) if i >= 0}
        assert NEUTRAL in (a, t) or CONFUSABLE.get(t) == a or CONFUSABLE.get(a) == t, (k, a, t)
        assert ({a, t} - {NEUTRAL}) <= event_classes | {CONFUSABLE[c] for c in event_classes}
    assert (tl.annotated == IGNORE).any() and not tl.face.all() and tl.occluded.any()

    quiet = cfg.model_copy(update=dict(boundary_jitter_s=0.0, ambiguous_rate=0.0, no_face_fraction=0.0,
                                       unannotated_fraction=0.0))
    tl0 = build_timeline(n, fps, quiet, rng_for(3, 99))
    assert np.array_equal(tl0.annotated, tl0.true) and tl0.face.all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_config_class_balance(seed):
    plans = plan_videos(SynthConfig(), seed)
    assert len(plans) == 12 and sum(len(v.persons) for v in plans) == 13
    assert sum(v.split == VAL for v in plans) == 4
    for split in (TRAIN, VAL):
        ann = np.concatenate([p.timeline.annotated for v in plans if v.split == split for p in v.persons])
        counts = np.bincount(ann[ann >= 0], minlength=NUM_CLASSES)
        frac = counts / counts.sum()
        assert (counts > 0).all(), (split, dict(zip(CLASSES, counts)))
        assert frac[[NEUTRAL, OTHER, HAPPINESS]].sum() > 0.5
        assert frac.argmax() == NEUTRAL
        assert frac[FEAR] < frac[HAPPINESS] and frac[DISGUST] < frac[OTHER]
    durations = [v.n_frames / v.fps for v in plans]
    assert all(10 - 0.1 <= d <= 40 + 0.1 for d in durations)


@pytest.mark.parametrize("seed", range(10))
def test_short_splits_still_hold_every_class(seed):
    # A demo-sized set: two ~9 s validation videos must still contain all 8 classes.
    plans = plan_videos(SynthConfig(n_videos=4, n_val=2, duration_s=[8.0, 10.0]), seed)
    for split in (TRAIN, VAL):
        ann = np.concatenate([p.timeline.annotated for v in plans if v.split == split for p in v.persons])
        assert (np.bincount(ann[ann >= 0], minlength=NUM_CLASSES) > 0).all(), split
        # ... and every class has visible, unoccluded frames to learn from.
        shown = set()
        for v in plans:
            if v.split == split:
                for p in v.persons:
                    tl = p.timeline
                    shown |= set(tl.true[tl.face & ~tl.occluded].tolist())
        assert shown == set(range(NUM_CLASSES)), split


def test_annotation_line_format_is_plain_integers(small):
    _, out, _ = small
    for path in (out / ANN).rglob("*.txt"):
        body = path.read_text().split("\n")[1:-1]
        assert all(re.fullmatch(r"-1|[0-7]", ln) for ln in body), path
