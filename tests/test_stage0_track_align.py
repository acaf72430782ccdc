"""Main-face tracking and alignment units."""
import numpy as np
import pytest

from fer_pipeline.config import AlignConfig, ConfigError, TrackConfig, load_config
from stage0_preprocess.align import crop_face, margin_crop
from stage0_preprocess.decode import iter_frames
from stage0_preprocess.track import MainFaceTracker, box_iou, plausible_faces


def B(*boxes):
    return np.asarray(boxes, np.float32)


def test_box_iou():
    np.testing.assert_allclose(box_iou(np.array([0, 0, 10, 10.]), B([0, 0, 10, 10], [5, 0, 15, 10],
                                                                      [20, 20, 30, 30])),
                               [1.0, 50 / 150, 0.0])


def test_continues_the_main_face_not_the_most_confident():
    tr = MainFaceTracker(TrackConfig(), fps=25)
    assert tr.update(B([100, 100, 200, 200], [10, 10, 40, 40]), np.array([0.8, 0.9])) == 0
    # the small face is more confident now, but the main face continues by IoU
    assert tr.update(B([12, 10, 42, 40], [104, 102, 204, 202]), np.array([0.99, 0.7])) == 1


def test_background_face_not_taken_during_a_short_miss_but_after_a_cut():
    tr = MainFaceTracker(TrackConfig(patience_s=0.2), fps=25)   # patience 5 frames
    assert tr.update(B([100, 100, 200, 200], [10, 10, 40, 40]), np.array([0.9, 0.95])) == 0
    # main face missed for a few frames; a small background face is visible: not taken
    for _ in range(4):
        assert tr.update(B([10, 10, 40, 40]), np.array([0.95])) == -1
    # it comes back where it was: continued
    assert tr.update(B([10, 10, 40, 40], [102, 100, 202, 200]), np.array([0.95, 0.9])) == 1
    # scene cut: a face elsewhere, new in this frame, is re-acquired at once even if small
    assert tr.update(B([300, 50, 330, 80]), np.array([0.9])) == 0
    # after a long absence even a background face is taken
    tr2 = MainFaceTracker(TrackConfig(patience_s=0.2), fps=25)
    tr2.update(B([100, 100, 200, 200], [10, 10, 40, 40]), np.array([0.9, 0.9]))
    results = [tr2.update(B([10, 10, 40, 40]), np.array([0.9])) for _ in range(6)]
    assert results[:5] == [-1] * 5 and results[5] == 0


def test_left_right_tracks_pick_their_side():
    boxes = B([50, 50, 150, 150], [300, 60, 390, 150], [200, 20, 215, 35])
    scores = np.array([0.9, 0.95, 0.99])
    assert MainFaceTracker(TrackConfig(), side="left").update(boxes, scores) == 0
    assert MainFaceTracker(TrackConfig(), side="right").update(boxes, scores) == 1
    assert MainFaceTracker(TrackConfig()).update(boxes, scores) == 0   # largest * score


# 5 landmarks (left eye, right eye, nose, left / right mouth corner) as shares of the box, as the
# detectors give them for the sample videos' faces: frontal, and a profile (eyes almost on top
# of each other, nose tip just outside the box) as the pianist of short_hamilton_clip at 1.5-2 s
FRONTAL = np.array([[0.27, 0.38], [0.73, 0.38], [0.50, 0.57], [0.32, 0.74], [0.68, 0.74]])
PROFILE = np.array([[0.20, 0.30], [0.23, 0.30], [-0.03, 0.52], [0.23, 0.73], [0.23, 0.73]])
# a gesturing hand found as a face in short_hamilton_clip (frame 158, score 0.66): a wide box,
# the "nose" above the "eyes"
HAND = np.array([[0.45, 0.37], [0.78, 0.32], [0.71, 0.17], [0.57, 0.54], [0.77, 0.47]])


def det(box, rel):
    """A detection: box (x1, y1, x2, y2) and landmarks given as shares of it."""
    box = np.asarray(box, np.float32)
    wh = box[2:] - box[:2]
    return box, (box[:2] + np.asarray(rel) * wh).astype(np.float32)


def dets(*items):
    return np.stack([b for b, _ in items]), np.stack([k for _, k in items])


def test_plausible_face_geometry():
    cfg = TrackConfig()
    face = det([100, 100, 200, 235], FRONTAL)
    ok = lambda box_kps, score=0.95, c=cfg: bool(plausible_faces(  # noqa: E731
        box_kps[0][None], np.array([score]), box_kps[1][None], c)[0])
    assert ok(face) and ok(det([300, 40, 380, 180], PROFILE))
    assert not ok(det([390, 256, 470, 318], HAND), 0.66)
    # each rule on its own
    assert not ok(face, score=cfg.acquire_min_score - 0.01)
    assert ok(face, score=0.55, c=TrackConfig(acquire_min_score=0.5))
    assert not ok(det([100, 100, 200, 175], FRONTAL))                 # aspect 0.75: too wide
    assert not ok(det([100, 100, 130, 200], FRONTAL))                 # aspect 3.33: too narrow
    for point, xy in [(3, (-0.2, 0.74)), (4, (1.2, 0.74)), (0, (0.27, -0.2)), (3, (0.32, 1.2))]:
        out = FRONTAL.copy()                                          # a point outside the box
        out[point] = xy                                               # (beyond the 0.15 margin)
        assert not ok(det([100, 100, 200, 235], out)), (point, xy)
        out[point] = np.clip(xy, -0.1, 1.1)                           # within the margin: fine
        assert ok(det([100, 100, 200, 235], out)), (point, xy)
    nose_up = FRONTAL.copy()
    nose_up[2, 1] = 0.35                                              # nose above the eyes
    mouth_up = FRONTAL.copy()
    mouth_up[3, 1] = 0.55                                             # a mouth corner above the nose
    reversed_eyes = FRONTAL[[1, 0, 2, 3, 4]]                          # right eye far left
    wide_eyes = FRONTAL.copy()
    wide_eyes[:2, 0] = [0.08, 0.92]                                   # 0.84 of the width apart
    for bad in (nose_up, mouth_up, reversed_eyes, wide_eyes):
        assert not ok(det([100, 100, 200, 235], bad))
    # without landmarks only score and box are checked
    assert plausible_faces(face[0][None], np.array([0.9]), None, cfg).tolist() == [True]
    loose = TrackConfig(acquire_eye_dist=[-1.0, 1.0])
    assert ok(det([100, 100, 200, 235], reversed_eyes), c=loose)


def test_a_hand_is_never_acquired_at_the_start_or_after_a_cut():
    """The hand scores more (area x score) than the face, but only a plausible face is acquired:
    at the start, after a cut, and when the track was lost; a tracked face is continued even
    when its landmarks stop looking frontal (head turned, partly covered)."""
    tr = MainFaceTracker(TrackConfig(), fps=25)
    hand, face = det([300, 200, 460, 320], HAND), det([100, 60, 160, 140], FRONTAL)
    boxes, kps = dets(hand, face)
    scores = np.array([0.9, 0.8], np.float32)
    assert tr.update(boxes, scores, kps=kps) == 1
    # a hand covers the tracked face and scrambles its landmarks: the face is still continued
    covered = det([102, 60, 162, 140], HAND)
    b2, k2 = dets(hand, covered)
    assert not plausible_faces(b2, scores, k2, TrackConfig()).any()
    assert tr.update(b2, scores, kps=k2) == 1
    # scene cut: only the hand is visible -> no main face (the hand is not taken)
    hb, hk = dets(hand)
    assert tr.update(hb, scores[:1], cut=True, kps=hk) == -1
    assert tr.update(hb, scores[:1], kps=hk) == -1
    # a face appears: acquired at once (the hand, larger and more confident, is passed over)
    assert tr.update(boxes, scores, kps=kps) == 1
    # without landmarks (and the hand's box allowed) the largest confident detection wins
    wide = TrackConfig(acquire_aspect=[0.5, 3.0])
    assert MainFaceTracker(wide).update(boxes, scores) == 0
    # two-person tracks choose their side among plausible faces only
    right_face = det([500, 60, 560, 140], FRONTAL)
    b3, k3 = dets(hand, face, right_face)
    s3 = np.array([0.99, 0.8, 0.8], np.float32)
    assert MainFaceTracker(TrackConfig(), side="left").update(b3, s3, kps=k3) == 1
    assert MainFaceTracker(TrackConfig(), side="right").update(b3, s3, kps=k3) == 2


@pytest.mark.parametrize("override", ["stage0.track.acquire_aspect=[3.0, 1.0]",
                                      "stage0.track.acquire_aspect=[0.0, 2.0]",
                                      "stage0.track.acquire_eye_dist=[0.5]"])
def test_acquire_ranges_are_validated(override):
    with pytest.raises(ConfigError, match=override.split("=")[0].rsplit(".", 1)[0]):
        load_config(overrides=[override])


def test_five_point_alignment_puts_landmarks_on_the_template():
    from insightface.utils.face_align import arcface_dst

    img = np.zeros((300, 400, 3), np.uint8)
    # landmarks = template scaled by 2 and shifted: the aligned crop must map them back
    kps = arcface_dst * 2 + np.array([60, 40], np.float32)
    for (x, y) in kps:
        img[int(round(y)) - 1:int(round(y)) + 2, int(round(x)) - 1:int(round(x)) + 2] = 255
    for size in (112, 224):
        crop = crop_face(img, np.zeros(4), kps, AlignConfig(size=size))
        assert crop.shape == (size, size, 3)
        for (x, y) in arcface_dst * size / 112:
            assert crop[int(round(y)), int(round(x))].max() > 100


def test_margin_crop_is_centred_and_square():
    img = np.zeros((200, 300, 3), np.uint8)
    img[80:120, 130:170] = 255                       # a 40x40 white box
    crop = margin_crop(img, np.array([130, 80, 170, 120.]), 100, margin=0.5)
    assert crop.shape == (100, 100, 3)
    # side = 40 * 2 = 80 px -> the box covers the central half of the crop
    assert crop[50, 50].min() == 255 and crop[30, 30].min() == 255 and crop[20, 20].max() == 0
    cfg = AlignConfig(size=112, mode="margin", margin=0.5)
    assert crop_face(img, np.array([130, 80, 170, 120.]), np.zeros((5, 2)), cfg).shape == (112, 112, 3)


def test_decode_exact_frames_and_timestamps(shared_assets):
    from fer_pipeline.media import probe_video

    path = shared_assets / "videos" / "short_hamilton_clip.mp4"
    frames = [(f.index, f.time_s, f.image.shape) for f in iter_frames(path)]
    info = probe_video(path)
    assert len(frames) == 275 == info.n_frames            # not the 300 of a CFR pipe
    np.testing.assert_allclose([t for _, t, _ in frames], info.times, atol=1e-3)
    assert frames[0][1] > 0.8 and frames[0][2] == (360, 640, 3)
