"""Stage 1 image sets in their official on-disk formats: FERPlus (fer2013.csv + fer2013new.csv,
or the folders of generate_training_data.py) and AffectNet (file lists + face boxes), the
FERPlus PNG cache, box cropping in the loader, and mixing with RAF-DB."""
import os

import cv2
import numpy as np
import pytest
import torch

from fer_pipeline import labels as L
from fer_pipeline.config import AugmentConfig, DataSource, EncoderModelConfig
from fer_pipeline.errors import UsageError
from stage1_image_encoder import sources as D
from stage1_image_encoder.loading import LabelledImages, crop_box
from tests.test_stage1_pretrain import make_rafdb

FER_NEW_HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
AFFECTNET_HEADER = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
                    "expression,valence,arousal")

# (Usage, Image name or "" when FERPlus dropped the row,
#  votes: neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF, expected id)
FER_ROWS = [
    ("Training", "fer0000000.png", [4, 0, 0, 1, 3, 2, 0, 0, 0, 0], L.NEUTRAL),
    ("Training", "fer0000001.png", [1, 0, 0, 0, 0, 0, 0, 6, 3, 0], L.OTHER),      # contempt
    ("Training", "fer0000002.png", [2, 0, 0, 0, 0, 0, 0, 0, 8, 0], L.IGNORE),     # unknown wins
    ("Training", "fer0000003.png", [0, 0, 0, 0, 0, 0, 0, 0, 1, 9], L.IGNORE),     # not a face
    ("Training", "", [0, 0, 0, 0, 0, 0, 0, 0, 0, 10], L.IGNORE),                  # dropped row
    ("Training", "fer0000005.png", [5, 5, 0, 0, 0, 0, 0, 0, 0, 0], L.NEUTRAL),    # tie: first column
    ("Training", "fer0000006.png", [0, 4, 0, 0, 0, 0, 0, 0, 4, 2], L.HAPPINESS),  # tie with unknown
    ("Training", "fer0000007.png", [0, 0, 0, 0, 0, 0, 9, 0, 1, 0], L.FEAR),
    ("Training", "fer0000008.png", [0] * 10, L.IGNORE),                           # no votes
    ("PublicTest", "fer0000009.png", [0, 0, 7, 0, 0, 0, 3, 0, 0, 0], L.SURPRISE),
    ("PublicTest", "fer0000010.png", [0, 0, 0, 2, 6, 2, 0, 0, 0, 0], L.ANGER),
    ("PublicTest", "", [0, 0, 0, 0, 0, 0, 0, 0, 3, 7], L.IGNORE),
    ("PrivateTest", "fer0000012.png", [0, 0, 0, 0, 0, 10, 0, 0, 0, 0], L.DISGUST),
]
# Hand-computed vote distributions over the 8 classes (unknown / NF votes discarded).
FER_SOFT = {
    "fer0000000.png": {L.NEUTRAL: 0.4, L.SADNESS: 0.1, L.ANGER: 0.3, L.DISGUST: 0.2},
    "fer0000001.png": {L.NEUTRAL: 1 / 7, L.OTHER: 6 / 7},
    "fer0000005.png": {L.NEUTRAL: 0.5, L.HAPPINESS: 0.5},
    "fer0000006.png": {L.HAPPINESS: 1.0},
    "fer0000007.png": {L.FEAR: 1.0},
    "fer0000009.png": {L.SURPRISE: 0.7, L.FEAR: 0.3},
    "fer0000010.png": {L.SADNESS: 0.2, L.ANGER: 0.6, L.DISGUST: 0.2},
}


def fer_pixels(k: int) -> np.ndarray:
    """A distinct 48x48 grey image per row."""
    yy, xx = np.mgrid[0:48, 0:48]
    return ((xx * 3 + yy * 2 + 17 * k) % 256).astype(np.uint8)


def make_ferplus(root, rows=FER_ROWS):
    """fer2013.csv (emotion,pixels,Usage) + fer2013new.csv (FERPlus votes), same row order."""
    root.mkdir(parents=True, exist_ok=True)
    fer = ["emotion,pixels,Usage"]
    new = [FER_NEW_HEADER]
    for k, (usage, name, votes, _) in enumerate(rows):
        fer.append(f"{k % 7},{' '.join(str(v) for v in fer_pixels(k).ravel())},{usage}")
        new.append(f"{usage},{name}," + ",".join(str(v) for v in votes))
    (root / "fer2013.csv").write_text("\n".join(fer) + "\n")
    (root / "fer2013new.csv").write_text("\n".join(new) + "\n")
    return root


def expected_soft(name):
    row = np.zeros(8, np.float32)
    for cid, v in FER_SOFT[name].items():
        row[cid] = v
    return row


def cache_files(root):
    return {p: (p.stat().st_mtime_ns, p.stat().st_ino)
            for p in (root / D.FER_CACHE_DIR).rglob("*") if p.is_file()}


# ------------------------------------------------------------------------------------ FERPlus
def test_ferplus_plurality_labels_splits_and_pixels(tmp_path):
    root = make_ferplus(tmp_path / "FERPlus")
    train = D.ferplus(root, "train", "plurality")
    names = [os.path.basename(p) for p in train.paths]
    assert names == ["fer0000000.png", "fer0000001.png", "fer0000005.png", "fer0000006.png",
                     "fer0000007.png"]
    assert train.labels == [L.NEUTRAL, L.OTHER, L.NEUTRAL, L.HAPPINESS, L.FEAR]
    assert train.soft is None and train.boxes is None
    assert train.skipped == 1                       # fer0000008: no votes
    test = D.ferplus(root, "test", "plurality")
    assert [os.path.basename(p) for p in test.paths] == ["fer0000009.png", "fer0000010.png"]
    assert test.labels == [L.SURPRISE, L.ANGER]
    # PrivateTest is kept out of both splits
    assert not any("fer0000012" in p for p in train.paths + test.paths)
    # the cached PNG is exactly the 48x48 image of the pixel string of its row
    for path in train.paths + test.paths:
        k = int(os.path.basename(path)[3:10])
        assert os.path.basename(os.path.dirname(path)) == FER_ROWS[k][0]
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(img, fer_pixels(k))


def test_ferplus_majority_rule_is_the_default(tmp_path):
    """The FER+ paper's rule: single votes dropped, > half of the rest, unknown / NF dropped."""
    root = make_ferplus(tmp_path / "FERPlus")
    train = D.ferplus(root, "train")
    assert [os.path.basename(p) for p in train.paths] == ["fer0000001.png", "fer0000007.png"]
    assert train.labels == [L.OTHER, L.FEAR]
    test = D.ferplus(root, "test")
    assert test.labels == [L.SURPRISE, L.ANGER]
    # vote_sample keeps the majority images, each with a label drawn from its own votes
    sampled = D.ferplus(root, "train", "vote_sample", sample_seed=3)
    assert sampled.paths == train.paths
    assert sampled.labels[1] == L.FEAR                         # 9 fear votes, 1 unknown
    assert sampled.labels[0] in (L.NEUTRAL, L.OTHER)
    # the configured mode applies to the train split; the test split is scored on majority labels
    src = DataSource(format="ferplus", root=str(root), label_mode="plurality")
    tr, te, _ = D.build_image_sets([src])
    assert len(tr) == 5 and list(te.labels) == [L.SURPRISE, L.ANGER]


def test_ferplus_soft_labels_follow_the_votes(tmp_path):
    root = make_ferplus(tmp_path / "FERPlus")
    for split in ("train", "test"):
        out = D.ferplus(root, split, "soft")
        assert out.soft.shape == (len(out), 8) and out.soft.dtype == np.float32
        np.testing.assert_allclose(out.soft.sum(1), 1.0, rtol=1e-6)
        for path, label, row in zip(out.paths, out.labels, out.soft):
            np.testing.assert_allclose(row, expected_soft(os.path.basename(path)), rtol=1e-6)
            assert row[label] == row.max()


def test_ferplus_cache_built_once_then_reused(tmp_path, monkeypatch):
    root = make_ferplus(tmp_path / "FERPlus")
    first = D.ferplus(root, "train")
    cache_dirs = [p for p in (root / D.FER_CACHE_DIR).iterdir()]
    assert len(cache_dirs) == 1 and (cache_dirs[0] / D.FER_CACHE_INDEX).is_file()
    # every named image (PrivateTest included) is materialised, dropped rows are not
    pngs = sorted(p.name for p in cache_dirs[0].rglob("*.png"))
    assert pngs == sorted(r[1] for r in FER_ROWS if r[1])
    before = cache_files(root)

    def no_write(*a, **k):
        raise AssertionError("cache rewritten")
    monkeypatch.setattr(cv2, "imwrite", no_write)
    again = D.ferplus(root, "train")
    test = D.ferplus(root, "test")
    assert again.paths == first.paths and again.labels == first.labels and len(test) == 2
    assert cache_files(root) == before


def test_ferplus_partial_or_stale_cache_is_rebuilt(tmp_path):
    root = make_ferplus(tmp_path / "FERPlus")
    D.ferplus(root, "train")
    key_dir = next((root / D.FER_CACHE_DIR).iterdir())
    # an interrupted build: index missing, an image missing, junk left behind
    (key_dir / D.FER_CACHE_INDEX).unlink()
    (key_dir / "Training" / "fer0000000.png").unlink()
    (key_dir / "Training" / "junk.png").write_bytes(b"")
    # and a temporary folder of another interrupted build, never used
    (root / D.FER_CACHE_DIR / f"{key_dir.name}.partial-1-deadbeef" / "Training").mkdir(parents=True)
    out = D.ferplus(root, "train")
    assert (key_dir / D.FER_CACHE_INDEX).is_file()
    assert (key_dir / "Training" / "fer0000000.png").is_file()
    assert not (key_dir / "Training" / "junk.png").exists()
    assert all(p.startswith(str(key_dir)) for p in out.paths)
    # editing a CSV gives a new cache folder (old PNGs are not reused for new votes)
    new_csv = root / "fer2013new.csv"
    text = new_csv.read_text().replace("Training,fer0000007.png,0,0,0,0,0,0,9,0,1,0",
                                       "Training,fer0000007.png,0,9,0,0,0,0,0,0,1,0")
    new_csv.write_text(text)
    os.utime(new_csv, ns=(1_000_000_000, 1_000_000_000))
    out2 = D.ferplus(root, "train")
    assert out2.labels[-1] == L.HAPPINESS
    assert not out2.paths[0].startswith(str(key_dir))
    assert len([p for p in (root / D.FER_CACHE_DIR).iterdir() if ".partial-" not in p.name]) == 2


def test_ferplus_cache_falls_back_to_user_cache_dir(tmp_path, monkeypatch):
    root = make_ferplus(tmp_path / "FERPlus")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).startswith(str(root))
                        else real_access(p, mode))
    out = D.ferplus(root, "train")
    assert all(p.startswith(str(tmp_path / "xdg" / "fer_pipeline" / "ferplus")) for p in out.paths)
    assert all(os.path.isfile(p) for p in out.paths)


def test_ferplus_generate_training_data_layout(tmp_path):
    """FER2013Train/FER2013Valid folders with label.csv, as written by generate_training_data.py
    (name + 10 votes) or as shipped in the FERPlus repository (name, face box, 10 votes)."""
    root = tmp_path / "data"
    rows = {
        "FER2013Train": ['fer0000000.png,"(0, 0, 48, 48)",4,0,0,1,3,2,0,0,0,0',
                         'fer0000001.png,"(0, 0, 48, 48)",1,0,0,0,0,0,0,6,3,0',
                         'fer0000002.png,"(0, 0, 48, 48)",2,0,0,0,0,0,0,0,8,0'],
        "FER2013Valid": ["fer0000009.png,0,0,7,0,0,0,3,0,0,0"],
    }
    for folder, lines in rows.items():
        (root / folder).mkdir(parents=True)
        (root / folder / "label.csv").write_text("\n".join(lines) + "\n")
        for line in lines:
            name = line.split(",")[0]
            cv2.imwrite(str(root / folder / name), fer_pixels(int(name[3:10])))
    train = D.ferplus(root, "train", "soft")
    assert [os.path.basename(p) for p in train.paths] == ["fer0000000.png", "fer0000001.png"]
    assert all(os.path.dirname(p) == str(root / "FER2013Train") for p in train.paths)
    assert train.labels == [L.NEUTRAL, L.OTHER]
    np.testing.assert_allclose(train.soft[1], expected_soft("fer0000001.png"), rtol=1e-6)
    test = D.ferplus(root, "test")
    assert test.labels == [L.SURPRISE] and test.paths == [str(root / "FER2013Valid" / "fer0000009.png")]
    assert not (root / D.FER_CACHE_DIR).exists()
    for p in (root / "FER2013Train").glob("*.png"):
        p.unlink()
    with pytest.raises(UsageError, match="generate_training_data.py"):
        D.ferplus(root, "train")


def _generated(root, lines):
    (root / "FER2013Train").mkdir(parents=True)
    (root / "FER2013Train" / "label.csv").write_text("\n".join(lines) + "\n")
    for line in lines:
        name = line.split(",")[0]
        cv2.imwrite(str(root / "FER2013Train" / name), fer_pixels(int(name[3:10])))
    return root / "FER2013Train" / "label.csv"


def test_ferplus_generated_layout_bad_rows(tmp_path, caplog):
    """A label.csv with a wrong column count or non-integer votes is a usage error naming the
    file and line; votes summing to 0 and a missing PNG are data errors: the row is skipped,
    counted and named."""
    good = 'fer0000000.png,"(0, 0, 48, 48)",0,8,0,0,0,0,0,0,2,0'
    label_csv = _generated(tmp_path / "a", [good, 'fer0000001.png,"(0, 0, 48, 48)",0,8,0,0,0,0,0,0,2'])
    with pytest.raises(UsageError, match=rf"{label_csv}: line 2: expected .* got 11 fields"):
        D.ferplus(tmp_path / "a", "train")
    label_csv = _generated(tmp_path / "b", [good, "fer0000001.png,0,7.5,0,0,0,0,0,0,2.5,0"])
    with pytest.raises(UsageError, match=rf"{label_csv}: line 2: vote counts must be integers"):
        D.ferplus(tmp_path / "b", "train")
    label_csv = _generated(tmp_path / "c", [good, "fer0000001.png,0,x,0,0,0,0,0,0,0,0"])
    with pytest.raises(UsageError, match=rf"{label_csv}: line 2: vote counts must be numbers"):
        D.ferplus(tmp_path / "c", "train")
    label_csv = _generated(tmp_path / "d", [good, "fer0000001.png,0,0,0,0,0,0,0,0,0,0",
                                            "fer0000002.png,0,9,0,0,0,0,0,0,1,0"])
    (tmp_path / "d" / "FER2013Train" / "fer0000002.png").unlink()
    with caplog.at_level("WARNING"):
        out = D.ferplus(tmp_path / "d", "train")
    assert [os.path.basename(p) for p in out.paths] == ["fer0000000.png"] and out.skipped == 2
    assert f"{label_csv}: line 2: fer0000001.png has no votes" in caplog.text
    assert "line 3: image" in caplog.text and "fer0000002.png not found" in caplog.text


def test_ferplus_errors_name_file_and_line(tmp_path):
    with pytest.raises(UsageError, match=r"fer2013\.csv not found"):
        D.ferplus(tmp_path, "train")
    root = make_ferplus(tmp_path / "a")
    (root / "fer2013new.csv").unlink()
    with pytest.raises(UsageError, match=r"fer2013new\.csv not found"):
        D.ferplus(root, "train")

    root = make_ferplus(tmp_path / "b")
    new = root / "fer2013new.csv"
    new.write_text(new.read_text().replace(",unknown,NF", ",unknown"))
    with pytest.raises(UsageError, match=r"fer2013new\.csv: line 1: header must have the columns "
                                         r"Usage,Image name,neutral,.*,NF \(missing NF"):
        D.ferplus(root, "train")

    root = make_ferplus(tmp_path / "c")
    fer = root / "fer2013.csv"
    fer.write_text(fer.read_text().replace("emotion,pixels,Usage", "emotion,pixel,Usage", 1))
    with pytest.raises(UsageError, match=r"fer2013\.csv: line 1: header must have the columns "
                                         r"emotion,pixels,Usage \(missing pixels"):
        D.ferplus(root, "train")

    root = make_ferplus(tmp_path / "d")
    new = root / "fer2013new.csv"
    new.write_text(new.read_text() + "PrivateTest,fer0000013.png,10,0,0,0,0,0,0,0,0,0\n")
    with pytest.raises(UsageError, match=r"fer2013\.csv has 13 image rows but .*fer2013new\.csv has 14"):
        D.ferplus(root, "train")
    fer = root / "fer2013.csv"
    lines = fer.read_text().splitlines()
    fer.write_text("\n".join(lines + lines[-1:] * 2) + "\n")
    with pytest.raises(UsageError, match=r"fer2013\.csv has 15 image rows but .*fer2013new\.csv has 14"):
        D.ferplus(root, "train")

    root = make_ferplus(tmp_path / "e")
    fer = root / "fer2013.csv"
    lines = fer.read_text().splitlines()
    lines[2] = lines[2].replace(",", ",0 ", 1)     # row of line 3 gets 2305 values
    fer.write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError, match=r"fer2013\.csv: line 3: pixels has 2305 values, expected 2304"):
        D.ferplus(root, "train")
    # a failed build leaves no cache behind
    assert not [p for p in (root / D.FER_CACHE_DIR).iterdir()]

    root = make_ferplus(tmp_path / "f")
    fer = root / "fer2013.csv"
    fer.write_text(fer.read_text().replace(",PublicTest\n", ",Validation\n", 1))
    with pytest.raises(UsageError, match=r"fer2013\.csv: line 11: Usage 'Validation'"):
        D.ferplus(root, "train")


# ---------------------------------------------------------------------------------- AffectNet
BOX_BGR = (0, 0, 255)        # red in the box, grey elsewhere


def make_affectnet(root, rows):
    """rows: (split file, expression, box (x, y, w, h), image size (w, h))."""
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True, exist_ok=True)
    out = {"training.csv": [AFFECTNET_HEADER], "validation.csv": [AFFECTNET_HEADER]}
    for k, (split, expr, (x, y, w, h), (iw, ih)) in enumerate(rows):
        rel = f"{100 + k % 3}/{k:04d}abc.jpg"
        img = np.full((ih, iw, 3), 90, np.uint8)
        img[max(y, 0):y + h, max(x, 0):x + w] = BOX_BGR
        (root / "Manually_Annotated_Images" / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "Manually_Annotated_Images" / rel), img, [cv2.IMWRITE_JPEG_QUALITY, 100,
                    cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444])
        landmarks = ";".join(f"{x + i % w}.5" for i in range(136))
        out[split].append(f"{rel},{x},{y},{w},{h},{landmarks},{expr},{0.1 * (k % 5):.3f},-0.25")
    for name, lines in out.items():
        (lists / name).write_text("\n".join(lines) + "\n")
    return root


AFFECTNET_ROWS = [("training.csv", e, (30 + e, 20, 40, 50), (120, 100)) for e in range(11)] + [
    ("validation.csv", 7, (-10, -5, 60, 70), (100, 100)),      # box partly outside: clipped
    ("validation.csv", 9, (10, 10, 20, 20), (100, 100)),
    ("validation.csv", 8, (5, 5, 30, 30), (80, 90)),
]


def test_affectnet_labels_boxes_and_splits(tmp_path):
    root = make_affectnet(tmp_path / "AffectNet", AFFECTNET_ROWS)
    train = D.affectnet(root, "train")
    # 0..10 = Neutral, Happy, Sad, Surprise, Fear, Disgust, Anger, Contempt, None, (Uncertain, Non-Face)
    assert train.labels == [L.NEUTRAL, L.HAPPINESS, L.SADNESS, L.SURPRISE, L.FEAR, L.DISGUST,
                            L.ANGER, L.OTHER, L.OTHER]
    assert train.paths[0] == str(root / "Manually_Annotated_Images" / "100" / "0000abc.jpg")
    assert train.boxes.dtype == np.float32
    np.testing.assert_array_equal(train.boxes, [[30 + e, 20, 40, 50] for e in range(9)])
    strict = D.affectnet(root, "train", none_to_other=False)
    assert strict.labels == train.labels[:-1] and len(strict.boxes) == 8
    test = D.affectnet(root, "test")
    assert test.labels == [L.OTHER, L.OTHER]        # Contempt, None; Uncertain dropped
    np.testing.assert_array_equal(test.boxes, [[-10, -5, 60, 70], [5, 5, 30, 30]])
    assert D.affectnet(root, "test", none_to_other=False).labels == [L.OTHER]


def _denorm(x, cfg):
    mean = torch.tensor(cfg.mean).view(3, 1, 1)
    std = torch.tensor(cfg.std).view(3, 1, 1)
    return (x * std + mean) * 255.0       # RGB, 0..255


def test_loader_crops_with_the_face_box(tmp_path):
    root = make_affectnet(tmp_path / "AffectNet", AFFECTNET_ROWS)
    cfg = EncoderModelConfig(img_size=32)
    train, test = D.affectnet(root, "train"), D.affectnet(root, "test")
    ds = LabelledImages(train.paths, train.labels, cfg, boxes=train.boxes)
    whole = LabelledImages(train.paths, train.labels, cfg)
    for i in (0, 5):
        x, y = ds[i]
        assert y == train.labels[i] and x.shape == (3, 32, 32)
        rgb = _denorm(x, cfg)
        # every pixel of the crop is the box colour (red), none of the grey surround
        assert (rgb[0] > 235).all() and (rgb[1] < 20).all() and (rgb[2] < 20).all()
        grey = _denorm(whole[i][0], cfg)
        assert (grey[0] < 120).float().mean() > 0.5
    # with augmentation the crop is taken inside the box as well
    aug = LabelledImages(train.paths, train.labels, cfg,
                         AugmentConfig(color_jitter=0.0, erase=0.0), boxes=train.boxes)
    rgb = _denorm(aug[3][0], cfg)
    assert (rgb[0] > 235).all() and (rgb[1] < 20).all()
    # a box partly outside the image is clipped to it
    tds = LabelledImages(test.paths, test.labels, cfg, boxes=test.boxes)
    rgb = _denorm(tds[0][0], cfg)
    assert tds[0][1] == L.OTHER and (rgb[0] > 235).all() and (rgb[2] < 20).all()
    # a box entirely outside the image makes the item unreadable
    outside = np.asarray([[500, 500, 20, 20]], np.float32)
    x, y = LabelledImages(test.paths[:1], [L.OTHER], cfg, boxes=outside)[0]
    assert y == -1 and not x.any()


def test_crop_box_clipping():
    img = np.arange(100 * 80 * 3, dtype=np.int32).reshape(100, 80, 3)
    np.testing.assert_array_equal(crop_box(img, (10, 20, 30, 40)), img[20:60, 10:40])
    np.testing.assert_array_equal(crop_box(img, (-10, -5, 30, 40)), img[0:35, 0:20])
    np.testing.assert_array_equal(crop_box(img, (70, 90, 30, 40)), img[90:100, 70:80])
    assert crop_box(img, (np.nan,) * 4) is img and crop_box(img, None) is img
    assert crop_box(img, (80, 0, 10, 10)) is None        # starts at the right edge
    assert crop_box(img, (-20, 10, 15, 10)) is None      # ends left of the image
    assert crop_box(img, (10, 10, 0, 10)) is None        # no area


def test_affectnet_errors(tmp_path):
    with pytest.raises(UsageError, match=r"Manually_Annotated_file_lists/training\.csv not found"):
        D.affectnet(tmp_path, "train")
    root = make_affectnet(tmp_path / "a", AFFECTNET_ROWS)
    lst = root / "Manually_Annotated_file_lists" / "validation.csv"
    lst.write_text(lst.read_text().replace("face_width,face_height", "width,height", 1))
    with pytest.raises(UsageError, match=r"validation\.csv: line 1: header must have the columns "
                                         r"subDirectory_filePath,face_x,.*arousal "
                                         r"\(missing face_width,face_height"):
        D.affectnet(root, "test")
    lst = root / "Manually_Annotated_file_lists" / "training.csv"
    lines = lst.read_text().splitlines()
    parts = lines[3].split(",")
    parts[6] = "11"
    lines[3] = ",".join(parts)
    lst.write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError, match=r"training\.csv: line 4: expression 11 is outside 0\.\.10"):
        D.affectnet(root, "train")
    parts[6] = "-1"
    lines[3] = ",".join(parts)
    lst.write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError, match=r"training\.csv: line 4: expression -1 is outside 0\.\.10"):
        D.affectnet(root, "train")


# ------------------------------------------------------------------------------------- mixing
def test_mix_ferplus_affectnet_rafdb_weights_soft_and_boxes(tmp_path):
    fer = make_ferplus(tmp_path / "FERPlus")
    aff = make_affectnet(tmp_path / "AffectNet", AFFECTNET_ROWS)
    raf = make_rafdb(tmp_path / "RAF-DB", n_train=1, n_test=1)
    train, test, w = D.build_image_sets([
        DataSource(format="ferplus", root=str(fer), weight=3.0, soft_labels=True),
        DataSource(format="affectnet", root=str(aff), weight=2.0, none_to_other=False),
        DataSource(format="rafdb", root=str(raf), weight=1.0)])
    assert np.bincount(train.source).tolist() == [5, 8, 7]
    assert np.bincount(test.source).tolist() == [2, 1, 7]
    for s, mass in enumerate((3.0, 2.0, 1.0)):
        assert w[train.source == s].sum() == pytest.approx(mass)
    assert len(w) == len(train) == len(train.labels) == len(train.soft) == len(train.boxes)
    # soft rows: FERPlus vote distributions, one-hot labels for the other sources
    np.testing.assert_allclose(train.soft.sum(1), 1.0, rtol=1e-6)
    fer_rows = train.source == 0
    for path, row in zip(np.asarray(train.paths)[fer_rows], train.soft[fer_rows]):
        np.testing.assert_allclose(row, expected_soft(os.path.basename(path)), rtol=1e-6)
    other = ~fer_rows
    np.testing.assert_array_equal(train.soft[other], np.eye(8)[train.labels[other]])
    # boxes: AffectNet rows carry theirs, the others are NaN (whole image)
    assert np.isnan(train.boxes[train.source != 1]).all()
    np.testing.assert_array_equal(train.boxes[train.source == 1],
                                  D.affectnet(aff, "train", False).boxes)
    assert train.labels.dtype == np.int64 and train.soft.dtype == np.float32
    # the mixed list feeds the loader: (image, label, soft row), boxes applied per row
    cfg = EncoderModelConfig(img_size=32)
    ds = LabelledImages(train.paths, train.labels, cfg, boxes=train.boxes, soft=train.soft)
    loader = torch.utils.data.DataLoader(ds, batch_size=len(ds))
    x, y, soft = next(iter(loader))
    assert x.shape == (len(ds), 3, 32, 32) and soft.shape == (len(ds), 8)
    assert torch.equal(y, torch.as_tensor(train.labels))
    torch.testing.assert_close(soft, torch.as_tensor(train.soft))
    aff_idx = int(np.flatnonzero(train.source == 1)[0])
    assert (_denorm(x[aff_idx], cfg)[0] > 235).all()


def test_rafdb_only_mix_has_no_extras_and_unreadable_soft_rows_are_zero(tmp_path):
    raf = make_rafdb(tmp_path / "RAF-DB", n_train=1, n_test=1)
    train, _, _ = D.build_image_sets([DataSource(format="rafdb", root=str(raf))])
    assert train.soft is None and train.boxes is None
    cfg = EncoderModelConfig(img_size=32)
    soft = np.eye(8, dtype=np.float32)[[L.HAPPINESS, L.SADNESS]]
    ds = LabelledImages([train.paths[0], str(tmp_path / "missing.jpg")], [L.HAPPINESS, L.SADNESS],
                        cfg, soft=soft)
    x, y, s = ds[0]
    assert y == L.HAPPINESS and torch.equal(s, torch.as_tensor(soft[0]))
    x, y, s = ds[1]
    assert y == -1 and not x.any() and not s.any()
    assert len(LabelledImages(train.paths, train.labels, cfg)[0]) == 2
    with pytest.raises(ValueError, match="boxes"):
        LabelledImages(train.paths, train.labels, cfg, boxes=np.zeros((1, 4)))


def test_rotation_and_blur_augmentation_move_and_soften_the_face(tmp_path):
    """``stage1.augment.rotate`` turns the image (corners filled black), ``blur`` smooths edges;
    both off by default."""
    img = np.zeros((48, 48, 3), np.uint8)
    img[:, 24:] = 255                                       # a hard vertical edge
    cv2.imwrite(str(tmp_path / "edge.png"), img)
    cfg = EncoderModelConfig(img_size=48)
    base = dict(hflip=0.0, crop_scale=[1.0, 1.0], color_jitter=0.0, erase=0.0)
    plain = LabelledImages([str(tmp_path / "edge.png")], [0], cfg, AugmentConfig(**base))
    assert AugmentConfig().rotate == 0 and AugmentConfig().blur == 0
    torch.manual_seed(0)
    rotated = _denorm(LabelledImages([str(tmp_path / "edge.png")], [0], cfg,
                                     AugmentConfig(**base, rotate=45))[0][0], cfg)
    blurred = _denorm(LabelledImages([str(tmp_path / "edge.png")], [0], cfg,
                                     AugmentConfig(**base, blur=1.0))[0][0], cfg)
    still = _denorm(plain[0][0], cfg)
    mid = lambda x: ((x[0] > 20) & (x[0] < 235)).float().mean().item()      # noqa: E731
    assert mid(still) < 0.01                                # the edge stays hard without either
    assert mid(blurred) > 0.02                              # blur: grey pixels along the edge
    top_right = rotated[0, :4, -4:]
    assert (still[0, :4, -4:] > 235).all() and not (top_right > 235).all()   # the corner moved
