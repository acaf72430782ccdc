"""Main-face tracking and alignment units."""
import numpy as np

from pipeline.config import AlignConfig, TrackConfig
from stage0_preprocess.align import crop_face, margin_crop
from stage0_preprocess.decode import iter_frames
from stage0_preprocess.track import MainFaceTracker, box_iou


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
    from pipeline.media import probe_video

    path = shared_assets / "videos" / "short_hamilton_clip.mp4"
    frames = [(f.index, f.time_s, f.image.shape) for f in iter_frames(path)]
    info = probe_video(path)
    assert len(frames) == 275 == info.n_frames            # not the 300 of a CFR pipe
    np.testing.assert_allclose([t for _, t, _ in frames], info.times, atol=1e-3)
    assert frames[0][1] > 0.8 and frames[0][2] == (360, 640, 3)
