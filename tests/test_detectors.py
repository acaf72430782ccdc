"""Face detectors on real images and video frames: counts, geometry, landmark order,
letterboxing, batching, RetinaFace/SCRFD agreement, and the load/download error paths.

The images, videos and the SCRFD weights come from the shared test assets beside the repo
(``../shared/assets``); tests that need them are skipped when that folder is absent. SCRFD weights
are research-only and are never copied into the repository.
"""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_pipeline.config import DetectorConfig
from fer_pipeline.errors import UsageError
from stage0_preprocess import detectors as D
from stage0_preprocess.detectors import Detections, build_detector
from stage0_preprocess.detectors import weights as W
from stage0_preprocess.track import box_iou

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
IMAGES = ASSETS / "images"
VIDEOS = ASSETS / "videos"
SCRFD_ONNX = ASSETS / "detectors" / "scrfd_500m_bnkps.onnx"
RETINA_SHARED = ASSETS / "detectors" / "retinaface_mobilenet0.25.onnx"
FACES = {"t1": 6, "two_people": 2, "justin": 1}

BACKENDS = {
    "retinaface": lambda: DetectorConfig(name="retinaface"),
    "retinaface-path": lambda: DetectorConfig(name="retinaface", onnx=str(_need(RETINA_SHARED))),
    "scrfd": lambda: DetectorConfig(name="scrfd", onnx=str(_need(SCRFD_ONNX))),
    "yunet": lambda: DetectorConfig(name="yunet"),
}


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared test asset not found: {path} (expected ../shared/assets beside the repo)")
    return path


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    out = {}
    for name in FACES:
        img = cv2.imread(str(_need(IMAGES / f"{name}.jpg")))
        assert img is not None, name
        out[name] = img
    return out


@pytest.fixture(scope="module")
def detector_cache():
    return {}


@pytest.fixture(params=list(BACKENDS))
def det(request, detector_cache):
    key = request.param
    if key not in detector_cache:
        detector_cache[key] = build_detector(BACKENDS[key]())
    return detector_cache[key]


@pytest.fixture(scope="module")
def results_cache():
    return {}


@pytest.fixture
def results(det, images, results_cache) -> dict[str, Detections]:
    """Detections on the three test images, computed once per backend."""
    key = (det.name, str(det.path))
    if key not in results_cache:
        results_cache[key] = dict(zip(images, det.detect(list(images.values()))))
    return results_cache[key]


def _match(a: Detections, b: Detections) -> list[tuple[int, int, float]]:
    """For each face of ``a``: (index in a, best index in b, IoU)."""
    out = []
    for i, box in enumerate(a.boxes):
        iou = box_iou(box, b.boxes)
        j = int(np.argmax(iou))
        out.append((i, j, float(iou[j])))
    return out


def _frame(video: Path, index: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(video))
    try:
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = cap.read()
    finally:
        cap.release()
    assert ok, f"cannot decode frame {index} of {video}"
    return frame


# --------------------------------------------------------------------------------------------
# real images, every backend


def test_face_counts_and_layout(det, results, images):
    for name, n in FACES.items():
        d = results[name]
        assert len(d) == n, f"{det.name} ({det.path.name}) found {len(d)} faces in {name}, expected {n}"
        assert d.boxes.shape == (n, 4) and d.boxes.dtype == np.float32
        assert d.scores.shape == (n,) and d.scores.dtype == np.float32
        assert d.kps.shape == (n, 5, 2) and d.kps.dtype == np.float32
        assert np.all(np.diff(d.scores) <= 0), "scores must be descending"
        assert np.all(d.scores >= 0.5) and np.all(d.scores <= 1)


def test_boxes_inside_image_and_landmarks_inside_box(det, results, images):
    for name, d in results.items():
        h, w = images[name].shape[:2]
        b = d.boxes
        assert np.all(b[:, 0] >= 0) and np.all(b[:, 1] >= 0), name
        assert np.all(b[:, 2] <= w) and np.all(b[:, 3] <= h), name
        assert np.all(b[:, 2] - b[:, 0] > 10) and np.all(b[:, 3] - b[:, 1] > 10), name
        tol = 2.0
        x, y = d.kps[..., 0], d.kps[..., 1]
        assert np.all(x >= b[:, :1] - tol) and np.all(x <= b[:, 2:3] + tol), name
        assert np.all(y >= b[:, 1:2] - tol) and np.all(y <= b[:, 3:4] + tol), name


def test_landmarks_in_arcface_order(det, results):
    """image-left eye, image-right eye, nose, image-left mouth corner, image-right mouth corner."""
    for name, d in results.items():
        k = d.kps
        assert np.all(k[:, 0, 0] < k[:, 1, 0]), f"{name}: left eye must be left of right eye"
        assert np.all(k[:, 3, 0] < k[:, 4, 0]), f"{name}: left mouth corner left of right one"
        eyes_y = k[:, :2, 1].mean(1)
        mouth_y = k[:, 3:, 1].mean(1)
        assert np.all(eyes_y < k[:, 2, 1]) and np.all(k[:, 2, 1] < mouth_y), \
            f"{name}: eyes, nose, mouth from top to bottom"
    for name in ("two_people", "justin"):  # frontal faces: nose between the eyes and mouth corners
        k = results[name].kps
        assert np.all(k[:, 0, 0] < k[:, 2, 0]) and np.all(k[:, 2, 0] < k[:, 1, 0]), name
        assert np.all(k[:, 3, 0] < k[:, 2, 0]) and np.all(k[:, 2, 0] < k[:, 4, 0]), name


def test_letterbox_maps_back_to_original_pixels(det, images):
    """A non-square image and its 2x upscale see almost the same network input: the boxes must
    scale by 2 (a wrong padding side or scale factor would shift or stretch them)."""
    img = images["two_people"]                       # 1126 x 661: padded at the bottom
    up = cv2.resize(img, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    a, b = det.detect([img, up])
    assert len(a) == len(b) == 2
    for i, j, iou in _match(a, Detections(b.boxes / 2, b.scores, b.kps / 2)):
        assert iou > 0.95
        assert np.abs(b.boxes[j] / 2 - a.boxes[i]).max() < 3.0
        assert np.abs(b.kps[j] / 2 - a.kps[i]).max() < 3.0


def test_portrait_crop_padded_on_the_right(det, images, results):
    """A tall crop (padding on the right) finds its faces where the full image has them."""
    x0 = 400
    crop = images["t1"][:, x0:900]                   # 500 x 886
    d = det.detect([crop])[0]
    assert len(d) == 2
    shifted = Detections(d.boxes + np.float32([x0, 0, x0, 0]), d.scores, d.kps + np.float32([x0, 0]))
    for i, j, iou in _match(shifted, results["t1"]):
        assert iou > 0.85
        w = shifted.boxes[i, 2] - shifted.boxes[i, 0]
        assert np.linalg.norm(shifted.kps[i] - results["t1"].kps[j], axis=1).max() < 0.1 * w


def test_batch_of_mixed_sizes_matches_one_by_one(det, images):
    batch = [images["t1"], images["justin"], images["two_people"],
             cv2.resize(images["justin"], (200, 320)), images["t1"][100:500, 200:1100]]
    together = det.detect(batch)
    assert len(together) == len(batch)
    for img, got in zip(batch, together):
        ref = det.detect([img])[0]
        assert len(got) == len(ref)
        np.testing.assert_allclose(got.boxes, ref.boxes, atol=1e-3)
        np.testing.assert_allclose(got.scores, ref.scores, atol=1e-5)
        np.testing.assert_allclose(got.kps, ref.kps, atol=1e-3)
    assert det.detect([]) == []


def test_no_face_gives_no_detections(det, images):
    grey = np.full((480, 640, 3), 128, np.uint8)
    table = images["t1"][600:, :]                    # the poker table, below all faces
    dark = np.zeros((100, 300, 3), np.uint8)
    for d in det.detect([grey, table, dark]):
        assert len(d) == 0
        assert d.boxes.shape == (0, 4) and d.kps.shape == (0, 5, 2)


@pytest.mark.parametrize("video", ["woman2", "d0", "d19"])
def test_one_face_on_a_video_frame(det, video):
    frame = _frame(_need(VIDEOS / f"{video}.mp4"), 10)
    d = det.detect([frame])[0]
    assert len(d) == 1, f"{det.name}: {len(d)} faces on frame 10 of {video}"
    h, w = frame.shape[:2]
    bw, bh = d.boxes[0, 2] - d.boxes[0, 0], d.boxes[0, 3] - d.boxes[0, 1]
    assert bh > 0.25 * h and bw < w


def test_faces_on_the_hamilton_clip(det):
    frame = _frame(_need(VIDEOS / "short_hamilton_clip.mp4"), 10)
    assert len(det.detect([frame])[0]) >= 1


def test_grey_and_bgra_images_are_accepted(det, images):
    img = images["justin"]
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(img, cv2.COLOR_BGR2BGRA)
    a, b = det.detect([grey, bgra])
    assert len(a) == 1 and len(b) == 1
    with pytest.raises(ValueError, match="uint8"):
        det.detect([img.astype(np.float32)])


# --------------------------------------------------------------------------------------------
# cross-check, batching through the network, configuration


def test_retinaface_agrees_with_scrfd(images):
    retina = build_detector(DetectorConfig(name="retinaface"))
    scrfd = build_detector(DetectorConfig(name="scrfd", onnx=str(_need(SCRFD_ONNX))))
    for name, img in images.items():
        r, s = retina.detect([img])[0], scrfd.detect([img])[0]
        assert len(s) == FACES[name]
        for i, j, iou in _match(s, r):
            assert iou > 0.5, f"{name}: SCRFD face {i} has no RetinaFace match (IoU {iou:.2f})"
            w = s.boxes[i, 2] - s.boxes[i, 0]
            dist = np.linalg.norm(s.kps[i] - r.kps[j], axis=1).max()
            assert dist < 0.15 * w, f"{name}: landmarks differ by {dist:.1f} px on a {w:.0f} px face"


def _dynamic_batch_copy(src: Path, dst: Path) -> Path:
    """The same network with a dynamic batch axis: reshapes that hard-code batch 1 copy it."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    consts = {t.name: t for t in model.graph.initializer}
    consts.update({n.output[0]: n.attribute[0].t for n in model.graph.node if n.op_type == "Constant"})
    for node in model.graph.node:
        t = consts.get(node.input[1]) if node.op_type == "Reshape" else None
        if t is not None:
            shape = numpy_helper.to_array(t).copy()
            if shape.size and shape[0] == 1:
                shape[0] = 0
                t.CopyFrom(numpy_helper.from_array(shape, t.name))
    for v in list(model.graph.input) + list(model.graph.output):
        v.type.tensor_type.shape.dim[0].dim_param = "batch"
    del model.graph.value_info[:]
    onnx.save(model, str(dst))
    return dst


class _SessionSpy:
    """Records the batch size of every session call."""

    def __init__(self, session):
        self.session, self.batch_sizes = session, []

    def run(self, names, feed):
        self.batch_sizes.append(len(next(iter(feed.values()))))
        return self.session.run(names, feed)

    def get_outputs(self):
        return self.session.get_outputs()


@pytest.mark.parametrize("name", ["retinaface", "yunet"])
def test_dynamic_batch_export_runs_batched(name, images, tmp_path):
    fixed = build_detector(DetectorConfig(name=name))
    dyn = build_detector(DetectorConfig(
        name=name, batch_size=3,
        onnx=str(_dynamic_batch_copy(D.BUNDLED_WEIGHTS[name], tmp_path / f"{name}_dyn.onnx"))))
    assert fixed.batch_size == 1 and dyn.batch_size == 3
    batch = [images["t1"], images["justin"], images["two_people"], images["justin"][:, ::-1].copy()]
    dyn.session = spy = _SessionSpy(dyn.session)
    got = dyn.detect(batch)
    assert spy.batch_sizes == [3, 1]
    for img, g, ref in zip(batch, got, fixed.detect(batch)):
        assert len(g) == len(ref)
        np.testing.assert_allclose(g.boxes, ref.boxes, atol=0.05)
        np.testing.assert_allclose(g.kps, ref.kps, atol=0.05)


def test_threshold_and_nms_from_config(images):
    img = images["t1"]
    loose = build_detector(DetectorConfig(name="retinaface", threshold=0.02, nms=0.4)).detect([img])[0]
    strict = build_detector(DetectorConfig(name="retinaface", threshold=0.999)).detect([img])[0]
    no_nms = build_detector(DetectorConfig(name="retinaface", threshold=0.5, nms=1.0)).detect([img])[0]
    assert len(loose) > 6 and len(strict) < 6
    assert np.all(loose.scores >= 0.02) and np.all(strict.scores >= 0.999)
    assert len(no_nms) > 6 * 2  # overlapping priors all survive without suppression


def test_fixed_input_model_ignores_other_input_size():
    det = build_detector(DetectorConfig(name="retinaface", input_size=320))
    assert det.input_size == (640, 640) and len(det.priors) == 16800


def test_ort_threads_from_env(monkeypatch):
    monkeypatch.setenv("FER_ORT_THREADS", "1")
    assert D.session_options().intra_op_num_threads == 1
    monkeypatch.setenv("FER_ORT_THREADS", "two")
    with pytest.raises(UsageError, match="FER_ORT_THREADS"):
        D.session_options()
    monkeypatch.delenv("FER_ORT_THREADS")
    assert D.session_options().intra_op_num_threads == 0
    assert D.ort_providers()[-1] == "CPUExecutionProvider"


# --------------------------------------------------------------------------------------------
# building blocks


def test_retinaface_priors_layout():
    p = D.retinaface_priors(640, 640)
    assert p.shape == (16800, 4)
    np.testing.assert_allclose(p[:3], [[4, 4, 16, 16], [4, 4, 32, 32], [12, 4, 16, 16]])
    np.testing.assert_allclose(p[2 * 80], [4, 12, 16, 16])           # second row of stride 8
    np.testing.assert_allclose(p[2 * 6400], [8, 8, 64, 64])          # first prior of stride 16
    np.testing.assert_allclose(p[-1], [624, 624, 512, 512])
    assert len(D.retinaface_priors(320, 320)) == 4200


def test_letterbox_pads_bottom_right():
    img = np.full((100, 200, 3), 200, np.uint8)
    canvas, sx, sy = D.letterbox(img, (640, 640))
    assert canvas.shape == (640, 640, 3) and sx == sy == 3.2
    assert canvas[:320].min() == 200 and canvas[320:].max() == 0
    canvas, sx, sy = D.letterbox(img.transpose(1, 0, 2).copy(), (640, 640))
    assert canvas[:, :320].min() == 200 and canvas[:, 320:].max() == 0


def test_nms_keeps_highest_of_overlapping():
    boxes = np.float32([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10.5]])
    scores = np.float32([0.8, 0.9, 0.7, 0.6])
    np.testing.assert_array_equal(D.nms(boxes, scores, 0.4), [1, 2])
    np.testing.assert_array_equal(D.nms(boxes, scores, 1.0), [1, 0, 2, 3])
    assert len(D.nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.4)) == 0


# --------------------------------------------------------------------------------------------
# errors


def test_missing_weights_file(tmp_path):
    path = tmp_path / "nope.onnx"
    with pytest.raises(UsageError, match=r"^detector weights not found: .*nope\.onnx$"):
        build_detector(DetectorConfig(name="retinaface", onnx=str(path)))


@pytest.mark.parametrize("content", [b"not a model\n" * 10, b"\xff\xd8\xff\xe0 jpeg bytes", b""])
def test_not_an_onnx_file(tmp_path, content):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(UsageError, match="model.onnx") as e:
        build_detector(DetectorConfig(name="scrfd", onnx=str(path)))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name,file,expected", [
    ("scrfd", "yunet_n_640_640.onnx", "insightface layout"),
    ("yunet", "retinaface_mobilenet0.25.onnx", "not a YuNet model"),
])
def test_weights_of_another_detector(name, file, expected):
    with pytest.raises(UsageError, match=expected) as e:
        build_detector(DetectorConfig(name=name, onnx=str(D.WEIGHTS_DIR / file)))
    assert file in str(e.value)


def test_retinaface_accepts_insightface_layout():
    det = build_detector(DetectorConfig(name="retinaface", onnx=str(_need(SCRFD_ONNX))))
    assert isinstance(det, D.InsightFaceDetector) and det.name == "retinaface"


def test_bundled_weights_are_next_to_the_module():
    for name, path in D.BUNDLED_WEIGHTS.items():
        assert path.parent == Path(D.__file__).resolve().parents[1] / "weights"
        assert path.is_file(), name
    assert (D.WEIGHTS_DIR / "LICENSES.md").is_file()


def test_scrfd_default_uses_insightface_pack(tmp_path, monkeypatch):
    pack = tmp_path / "models" / "buffalo_l"
    pack.mkdir(parents=True)
    (pack / "det_10g.onnx").symlink_to(_need(SCRFD_ONNX))
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path))
    det = build_detector(DetectorConfig(name="scrfd"))
    assert det.path == pack / "det_10g.onnx"


def test_scrfd_default_offline_error(tmp_path, monkeypatch):
    """No weights and no network: one line saying what is missing, where, why the download
    failed, and how to pass a file."""
    from insightface.utils import storage

    def offline(*args, **kwargs):
        raise ConnectionError("network is unreachable")

    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path))
    monkeypatch.setattr(W, "_probe", lambda url, timeout: None)
    monkeypatch.setattr(storage, "download", offline)
    with pytest.raises(UsageError) as e:
        build_detector(DetectorConfig(name="scrfd"))
    msg = str(e.value)
    assert "\n" not in msg
    assert str(tmp_path / "models" / "buffalo_l" / "det_10g.onnx") in msg
    assert "download failed: network is unreachable" in msg
    assert "stage0.detector.onnx=/path/to/det_10g.onnx" in msg


def test_scrfd_default_download_fails_fast(tmp_path, monkeypatch):
    """The real reachability check runs (offline here: it fails at once; online: the stubbed
    download fails), never a long wait."""
    from insightface.utils import storage

    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path))
    monkeypatch.setattr(W, "DOWNLOAD_PROBE_TIMEOUT_S", 2.0)
    monkeypatch.setattr(storage, "download", lambda *a, **k: (_ for _ in ()).throw(OSError("stub")))
    t0 = time.monotonic()
    with pytest.raises(UsageError, match="download failed"):
        build_detector(DetectorConfig(name="scrfd"))
    assert time.monotonic() - t0 < 5


def test_probe_gives_up_on_a_hanging_connection(monkeypatch):
    def hang(*args, **kwargs):
        time.sleep(30)

    monkeypatch.setattr(W.urllib.request, "urlopen", hang)
    t0 = time.monotonic()
    with pytest.raises(OSError, match="no answer from example.invalid within 0.5 s"):
        W._probe("https://example.invalid/pack.zip", timeout=0.5)
    assert time.monotonic() - t0 < 2


def test_probe_reports_an_unknown_host():
    with pytest.raises(OSError, match="nonexistent.invalid"):
        W._probe("https://nonexistent.invalid/pack.zip", timeout=3)
