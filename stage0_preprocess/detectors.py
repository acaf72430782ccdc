"""Face detectors for Stage 0: RetinaFace, SCRFD and YuNet ONNX models behind one interface.

    det = build_detector(cfg.stage0.detector)
    for d in det.detect([frame_a, frame_b]):   # BGR uint8, any sizes
        d.boxes, d.scores, d.kps               # image pixels; kps in ArcFace order

Every image is letterboxed into the network input (aspect kept, scaled to fit, zero padding at
the bottom/right) and the outputs are mapped back to the pixels of the image passed in. Boxes
are clipped to the image; landmarks are not (a face cut by the frame edge keeps its geometry for
``norm_crop``). Landmarks come in the ArcFace order: image-left eye, image-right eye, nose tip,
image-left mouth corner, image-right mouth corner.

Backends
--------
``scrfd``
    insightface-layout SCRFD (9 or 15 outputs: score/bbox/kps per stride), loaded and decoded by
    ``insightface.model_zoo.get_model``. ``onnx: null`` means ``det_10g.onnx`` of insightface's
    ``buffalo_l`` pack under ``$INSIGHTFACE_HOME`` (default ``~/.insightface``)/models,
    downloaded by insightface when missing and the machine is online.
``retinaface``
    Either the same insightface layout (then decoded by insightface), or the common
    Pytorch_Retinaface export: three outputs ``loc (B,P,4)``, ``conf (B,P,2)``, ``landms (B,P,10)``
    over SSD-style priors, decoded here. ``onnx: null`` means the bundled mobilenet0.25 export.
``yunet``
    libfacedetection YuNet (``cls/obj/bbox/kps`` at strides 8/16/32, one prior per cell),
    decoded here. ``onnx: null`` means the bundled ``yunet_n_640_640.onnx``.

Models with a dynamic batch axis get up to ``batch_size`` images per session call; fixed
``1x3xHxW`` exports run one image per call. A model with a fixed spatial input runs at that size
whatever ``input_size`` says. ``FER_ORT_THREADS`` sets ONNX Runtime's intra-op thread count (the
caller runs several videos in parallel processes); unset, ONNX Runtime picks.

The bundled weights live in ``weights/`` next to this file (see ``weights/LICENSES.md``) and must
be shipped as package data.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.config import DetectorConfig
from pipeline.errors import UsageError

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
BUNDLED_WEIGHTS = {
    "retinaface": WEIGHTS_DIR / "retinaface_mobilenet0.25.onnx",
    "yunet": WEIGHTS_DIR / "yunet_n_640_640.onnx",
}
SCRFD_PACK, SCRFD_FILE = "buffalo_l", "det_10g.onnx"
# How long the reachability check of the model-zoo host may take before the download is
# given up (an offline machine otherwise waits on DNS / TCP timeouts for a minute or more).
DOWNLOAD_PROBE_TIMEOUT_S = 4.0
THREADS_ENV = "FER_ORT_THREADS"
PRE_NMS_TOP_K = 5000

# Pytorch_Retinaface (mobilenet0.25 / resnet50 configs)
RETINA_MIN_SIZES = ((16, 32), (64, 128), (256, 512))
RETINA_STEPS = (8, 16, 32)
RETINA_VARIANCES = (0.1, 0.2)
RETINA_MEAN_BGR = (104.0, 117.0, 123.0)
YUNET_STRIDES = (8, 16, 32)


@dataclass
class Detections:
    boxes: np.ndarray   # (N, 4) float32 x1 y1 x2 y2, image pixels
    scores: np.ndarray  # (N,) float32, descending
    kps: np.ndarray     # (N, 5, 2) float32 image pixels, ArcFace order

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
                   np.zeros((0, 5, 2), np.float32))


# --------------------------------------------------------------------------------------------
# shared helpers


def ort_providers() -> list[str]:
    """CUDA first when this onnxruntime build has it, always CPU as the fallback."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session_options():
    """``SessionOptions`` with the intra-op thread count from ``FER_ORT_THREADS`` when set."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    raw = os.environ.get(THREADS_ENV, "").strip()
    if raw:
        try:
            n = int(raw)
            if n < 0:
                raise ValueError
        except ValueError:
            raise UsageError(f"{THREADS_ENV}={raw!r}: expected a thread count (integer >= 0; "
                             "0 lets ONNX Runtime choose)") from None
        so.intra_op_num_threads = n
    return so


def letterbox(img: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float, float]:
    """Scale ``img`` to fit ``size = (width, height)`` keeping its aspect, pad bottom/right with
    zeros. Returns the canvas and the x/y scale factors (canvas pixels per image pixel)."""
    tw, th = size
    h, w = img.shape[:2]
    s = min(tw / w, th / h)
    nw = min(tw, max(1, int(round(w * s))))
    nh = min(th, max(1, int(round(h * s))))
    canvas = np.zeros((th, tw, 3), np.uint8)
    canvas[:nh, :nw] = img if (nw, nh) == (w, h) else cv2.resize(img, (nw, nh),
                                                                   interpolation=cv2.INTER_LINEAR)
    return canvas, nw / w, nh / h


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression; indices of the kept boxes, highest score first."""
    order = np.argsort(-scores, kind="stable")
    if len(order) <= 1:
        return order
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        ovr = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[ovr <= iou]
    return np.asarray(keep, np.int64)


def _to_image(boxes, scores, kps, sx: float, sy: float, shape) -> Detections:
    """Canvas-pixel detections (already thresholded and suppressed) -> image pixels, clipped
    boxes, degenerate ones dropped, sorted by score."""
    if len(scores) == 0:
        return Detections.empty()
    h, w = shape[:2]
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4) / np.array([sx, sy, sx, sy], np.float32)
    kps = np.asarray(kps, np.float32).reshape(-1, 5, 2) / np.array([sx, sy], np.float32)
    scores = np.asarray(scores, np.float32).reshape(-1)
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h)
    ok = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
    order = np.argsort(-scores[ok], kind="stable")
    keep = np.flatnonzero(ok)[order]
    return Detections(np.ascontiguousarray(boxes[keep]), np.ascontiguousarray(scores[keep]),
                      np.ascontiguousarray(kps[keep]))


def _select(boxes, scores, kps, threshold: float, iou: float):
    """Threshold, keep the top ``PRE_NMS_TOP_K``, NMS."""
    m = scores >= threshold
    boxes, scores, kps = boxes[m], scores[m], kps[m]
    if len(scores) > PRE_NMS_TOP_K:
        top = np.argpartition(-scores, PRE_NMS_TOP_K)[:PRE_NMS_TOP_K]
        boxes, scores, kps = boxes[top], scores[top], kps[top]
    keep = nms(boxes, scores, iou)
    return boxes[keep], scores[keep], kps[keep]


def _dim(d) -> int | None:
    return d if isinstance(d, int) and d > 0 else None


def _onnx_signature(path: Path) -> tuple[list, list]:
    """``([(name, shape)] inputs, [(name, shape)] outputs)`` of an ONNX graph without building a
    session; unknown dims are ``None``. Raises ``UsageError`` for a file that is not ONNX."""
    import onnx

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as e:  # DecodeError, OSError, ...
        raise UsageError(f"{path}: not a loadable ONNX model ({type(e).__name__}: "
                         f"{_short(e)})") from None

    def shapes(values):
        out = []
        for v in values:
            dims = v.type.tensor_type.shape.dim
            out.append((v.name, [int(d.dim_value) if d.dim_value > 0 else None for d in dims]))
        return out

    init = {t.name for t in model.graph.initializer}
    inputs = shapes(v for v in model.graph.input if v.name not in init)
    outputs = shapes(model.graph.output)
    if not inputs or not outputs:
        raise UsageError(f"{path}: not a loadable ONNX model (no graph inputs/outputs)")
    return inputs, outputs


def _short(e: BaseException, n: int = 160) -> str:
    s = " ".join(str(e).split()) or type(e).__name__
    return s if len(s) <= n else s[: n - 3] + "..."


def _describe(outputs, limit: int = 6) -> str:
    text = ", ".join(f"{n}{list(s)}" for n, s in outputs[:limit])
    return text + (f", ... ({len(outputs)} outputs)" if len(outputs) > limit else "")


def _network_size(path: Path, input_shape, requested: int) -> tuple[int, int]:
    """``(width, height)`` the network runs at: the model's own when its spatial input is fixed,
    otherwise ``requested`` rounded up to a multiple of 32 (the coarsest stride)."""
    if len(input_shape) != 4 or (input_shape[1] not in (None, 3)):
        raise UsageError(f"{path}: expected one NCHW image input (N, 3, H, W), got {input_shape}")
    fh, fw = _dim(input_shape[2]), _dim(input_shape[3])
    if fh and fw:
        if (fw, fh) != (requested, requested):
            log.warning("%s has a fixed %dx%d input; detector input_size=%d is ignored",
                        path.name, fw, fh, requested)
        return fw, fh
    s = int(math.ceil(requested / 32) * 32)
    if s != requested:
        log.warning("detector input_size=%d rounded up to %d (a multiple of 32)", requested, s)
    return s, s


def _check_file(path: Path) -> Path:
    if not path.is_file():
        raise UsageError(f"detector weights not found: {path}")
    return path


# --------------------------------------------------------------------------------------------
# backends decoded here (Pytorch_Retinaface export, YuNet)


class _OnnxDetector:
    """An ONNX Runtime session on a letterboxed float NCHW batch; subclasses decode."""

    def __init__(self, name: str, path: Path, cfg: DetectorConfig, input_shape):
        import onnxruntime as ort

        self.name = name
        self.path = path
        self.threshold = float(cfg.threshold)
        self.nms_iou = float(cfg.nms)
        self.input_size = _network_size(path, input_shape, cfg.input_size)
        self.batch_size = int(cfg.batch_size) if _dim(input_shape[0]) is None else 1
        try:
            self.session = ort.InferenceSession(str(path), sess_options=session_options(),
                                                providers=ort_providers())
        except Exception as e:
            raise UsageError(f"{path}: ONNX Runtime cannot load it ({_short(e)})") from None
        self.input_name = self.session.get_inputs()[0].name

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, path='{self.path}', "
                f"input_size={self.input_size}, batch_size={self.batch_size})")

    def _blob(self, canvases: list[np.ndarray]) -> np.ndarray:
        return np.ascontiguousarray(np.stack(canvases).transpose(0, 3, 1, 2), dtype=np.float32)

    def _run(self, blob: np.ndarray) -> dict[str, np.ndarray]:
        outs = self.session.run(None, {self.input_name: blob})
        return {o.name: v for o, v in zip(self.session.get_outputs(), outs)}

    def _decode(self, outs: dict[str, np.ndarray], b: int):
        """Batch item ``b`` -> thresholded, suppressed ``(boxes, scores, kps)`` in canvas pixels."""
        raise NotImplementedError

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        results: list[Detections] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            boxed = [letterbox(_as_bgr(img), self.input_size) for img in chunk]
            outs = self._run(self._blob([c for c, _, _ in boxed]))
            for b, (img, (_, sx, sy)) in enumerate(zip(chunk, boxed)):
                results.append(_to_image(*self._decode(outs, b), sx, sy, img.shape))
        return results


def retinaface_priors(width: int, height: int) -> np.ndarray:
    """Pytorch_Retinaface prior boxes ``(P, 4)`` as ``cx, cy, w, h`` in input pixels: per level,
    cells row-major, the level's two min sizes innermost (16 800 priors at 640x640)."""
    levels = []
    for step, sizes in zip(RETINA_STEPS, RETINA_MIN_SIZES):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        ys, xs = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        centres = np.stack([(xs.ravel() + 0.5) * step, (ys.ravel() + 0.5) * step], -1)
        n, k = len(centres), len(sizes)
        wh = np.asarray(sizes, np.float64)[:, None].repeat(2, 1)
        levels.append(np.concatenate([np.repeat(centres, k, 0), np.tile(wh, (n, 1))], 1))
    return np.concatenate(levels).astype(np.float32)


class RetinaFacePriorBox(_OnnxDetector):
    """The Pytorch_Retinaface ONNX export (``loc``, ``conf``, ``landms``): BGR minus
    (104, 117, 123), SSD priors, variances (0.1, 0.2)."""

    def __init__(self, path: Path, cfg: DetectorConfig, signature):
        inputs, outputs = signature
        super().__init__("retinaface", path, cfg, inputs[0][1])
        by_last = {s[-1]: n for n, s in outputs}
        self.out_loc, self.out_conf, self.out_landms = by_last[4], by_last[2], by_last[10]
        self.priors = retinaface_priors(*self.input_size)
        for n, s in outputs:
            if _dim(s[1]) and s[1] != len(self.priors):
                raise UsageError(f"{path}: output {n} has {s[1]} priors, expected "
                                 f"{len(self.priors)} for a {self.input_size[0]}x"
                                 f"{self.input_size[1]} Pytorch_Retinaface export")
        self.mean = np.asarray(RETINA_MEAN_BGR, np.float32)

    def _blob(self, canvases):
        x = np.stack(canvases).astype(np.float32)
        x -= self.mean
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def _decode(self, outs, b):
        conf = outs[self.out_conf][b]
        if conf.min() < 0 or conf.max() > 1:  # exported without the final softmax
            e = np.exp(conf - conf.max(1, keepdims=True))
            conf = e / e.sum(1, keepdims=True)
        scores = conf[:, 1]
        if len(scores) != len(self.priors):
            raise UsageError(f"{self.path}: {len(scores)} predictions for "
                             f"{len(self.priors)} priors")
        m = scores >= self.threshold
        pri, scores = self.priors[m], scores[m]
        loc, lm = outs[self.out_loc][b][m], outs[self.out_landms][b][m]
        v0, v1 = RETINA_VARIANCES
        c = pri[:, :2] + loc[:, :2] * v0 * pri[:, 2:]
        wh = pri[:, 2:] * np.exp(loc[:, 2:] * v1)
        boxes = np.concatenate([c - wh / 2, c + wh / 2], 1)
        kps = pri[:, None, :2] + lm.reshape(-1, 5, 2) * v0 * pri[:, None, 2:]
        return _select(boxes, scores, kps, self.threshold, self.nms_iou)


YUNET_OUTPUTS = [f"{k}_{s}" for k in ("cls", "obj", "bbox", "kps") for s in YUNET_STRIDES]


class YuNet(_OnnxDetector):
    """libfacedetection YuNet: BGR 0-255, score = sqrt(cls * obj), one prior per cell."""

    def __init__(self, path: Path, cfg: DetectorConfig, signature):
        inputs, _ = signature
        super().__init__("yunet", path, cfg, inputs[0][1])
        w, h = self.input_size
        self.grids = []
        for s in YUNET_STRIDES:
            ys, xs = np.meshgrid(np.arange(h // s), np.arange(w // s), indexing="ij")
            self.grids.append((s, np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float32)))

    def _decode(self, outs, b):
        boxes, scores, kps = [], [], []
        for s, cells in self.grids:
            cls = np.clip(outs[f"cls_{s}"][b].reshape(-1), 0, 1)
            obj = np.clip(outs[f"obj_{s}"][b].reshape(-1), 0, 1)
            sc = np.sqrt(cls * obj)
            if len(sc) != len(cells):
                raise UsageError(f"{self.path}: cls_{s} has {len(sc)} cells, expected "
                                 f"{len(cells)} at input {self.input_size}")
            m = sc >= self.threshold
            if not m.any():
                continue
            bb, kp, cell = outs[f"bbox_{s}"][b][m], outs[f"kps_{s}"][b][m], cells[m]
            c = (cell + bb[:, :2]) * s
            wh = np.exp(bb[:, 2:]) * s
            boxes.append(np.concatenate([c - wh / 2, c + wh / 2], 1))
            kps.append((kp.reshape(-1, 5, 2) + cell[:, None, :]) * s)
            scores.append(sc[m])
        if not scores:
            empty = Detections.empty()
            return empty.boxes, empty.scores, empty.kps
        return _select(np.concatenate(boxes), np.concatenate(scores), np.concatenate(kps),
                       self.threshold, self.nms_iou)


# --------------------------------------------------------------------------------------------
# backend decoded by insightface (SCRFD, insightface-layout RetinaFace)


def _is_insightface_layout(outputs) -> bool:
    """score/bbox/kps per stride: 9 outputs (3 strides) or 15 (5 strides), 2-D or 3-D, with
    last dims 1 / 4 / 10 in insightface's order."""
    n = len(outputs)
    if n not in (9, 15):
        return False
    fmc = n // 3
    for i, (_, shape) in enumerate(outputs):
        if len(shape) not in (2, 3):
            return False
        want = (1, 4, 10)[i // fmc]
        if shape[-1] is not None and shape[-1] != want:
            return False
    return True


class InsightFaceDetector:
    """An insightface ``model_zoo`` detector (SCRFD, or insightface-format RetinaFace), fed our
    letterboxed canvas so that its own resize is the identity; one image per session call."""

    def __init__(self, name: str, path: Path, cfg: DetectorConfig, signature):
        from insightface import model_zoo

        inputs, outputs = signature
        self.name = name
        self.path = path
        self.input_size = _network_size(path, inputs[0][1], cfg.input_size)
        self.batch_size = 1
        if path.suffix.lower() != ".onnx":  # insightface treats other names as model-zoo names
            raise UsageError(f"{path}: insightface loads detector files named *.onnx only")
        try:
            model = model_zoo.get_model(str(path), providers=ort_providers(),
                                        sess_options=session_options())
        except UsageError:
            raise
        except Exception as e:
            raise UsageError(f"{path}: insightface cannot load it ({_short(e)})") from None
        if model is None or getattr(model, "taskname", None) != "detection":
            raise UsageError(f"{path}: insightface does not load it as a face detector "
                             f"(outputs: {_describe(outputs)})")
        if not getattr(model, "use_kps", False):
            raise UsageError(f"{path}: detector has no 5-point landmark outputs "
                             "(expected 9 or 15 outputs: score/bbox/kps per stride)")
        model.det_thresh = float(cfg.threshold)
        model.nms_thresh = float(cfg.nms)
        self.model = model

    def __repr__(self) -> str:
        return (f"InsightFaceDetector(name={self.name!r}, path='{self.path}', "
                f"model={type(self.model).__name__}, input_size={self.input_size})")

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        results = []
        for img in images:
            canvas, sx, sy = letterbox(_as_bgr(img), self.input_size)
            det, kpss = self.model.detect(canvas, input_size=self.input_size, max_num=0)
            if det is None or len(det) == 0:
                results.append(Detections.empty())
                continue
            results.append(_to_image(det[:, :4], det[:, 4], kpss, sx, sy, img.shape))
        return results


# --------------------------------------------------------------------------------------------
# weights


def insightface_root() -> Path:
    return Path(os.environ.get("INSIGHTFACE_HOME") or "~/.insightface").expanduser()


def _probe(url: str, timeout: float) -> None:
    """Raise ``OSError`` unless ``url`` answers a HEAD request within ``timeout`` seconds, DNS
    lookup and proxies (``https_proxy`` ...) included."""
    err: list[BaseException] = []

    def head():
        try:
            request = urllib.request.Request(url, method="HEAD")
            urllib.request.urlopen(request, timeout=timeout).close()
        except urllib.error.HTTPError as e:
            err.append(OSError(f"HTTP {e.code} from {url}"))
        except urllib.error.URLError as e:
            err.append(OSError(f"cannot reach {urllib.parse.urlsplit(url).hostname}: "
                               f"{_short(e.reason, 80)}"))
        except Exception as e:  # reported to the caller below
            err.append(OSError(f"cannot reach {urllib.parse.urlsplit(url).hostname}: "
                               f"{_short(e, 80)}"))

    t = threading.Thread(target=head, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise OSError(f"no answer from {urllib.parse.urlsplit(url).hostname} within {timeout:g} s")
    if err:
        raise err[0]


def _download_scrfd_pack(root: Path) -> None:
    """insightface's own download of the ``buffalo_l`` pack into ``root/models``; fails fast
    when the model-zoo host cannot be reached."""
    from insightface.utils import storage

    url_of = getattr(storage, "model_zoo_download_url", None)
    url = url_of(f"{SCRFD_PACK}.zip") if url_of else f"{storage.BASE_REPO_URL}/{SCRFD_PACK}.zip"
    _probe(url, DOWNLOAD_PROBE_TIMEOUT_S)
    log.info("downloading insightface's %s pack into %s", SCRFD_PACK, root / "models")
    storage.download("models", SCRFD_PACK, force=True, root=str(root))


def default_scrfd_weights() -> Path:
    """``det_10g.onnx`` of insightface's ``buffalo_l`` pack; downloaded when missing."""
    root = insightface_root()
    path = root / "models" / SCRFD_PACK / SCRFD_FILE
    if path.is_file():
        return path
    try:
        _download_scrfd_pack(root)
        if not path.is_file():
            raise FileNotFoundError(f"the {SCRFD_PACK} pack has no {SCRFD_FILE}")
    except Exception as e:
        raise UsageError(
            f"SCRFD weights not found: {path} (insightface's {SCRFD_PACK} pack; set "
            f"INSIGHTFACE_HOME to use another root); download failed: {_short(e, 120)}; "
            f"pass stage0.detector.onnx=/path/to/{SCRFD_FILE}") from None
    return path


def resolve_weights(cfg: DetectorConfig) -> Path:
    if cfg.onnx:
        return _check_file(Path(cfg.onnx).expanduser())
    if cfg.name == "scrfd":
        return default_scrfd_weights()
    path = BUNDLED_WEIGHTS[cfg.name]
    if not path.is_file():
        raise UsageError(f"detector weights not found: {path} (bundled with the package; "
                         "reinstall it or pass stage0.detector.onnx=/path/to/model.onnx)")
    return path


# --------------------------------------------------------------------------------------------


def build_detector(cfg: DetectorConfig):
    """A detector for ``cfg``: an object with ``name`` and ``detect(images) -> [Detections]``."""
    path = resolve_weights(cfg)
    signature = _onnx_signature(path)
    inputs, outputs = signature
    if len(inputs) != 1:
        raise UsageError(f"{path}: expected a single image input, got {[n for n, _ in inputs]}")
    if cfg.name == "yunet":
        missing = sorted(set(YUNET_OUTPUTS) - {n for n, _ in outputs})
        if missing:
            raise UsageError(f"{path}: not a YuNet model (expected outputs cls/obj/bbox/kps_"
                             f"{{8,16,32}}; missing {', '.join(missing)})")
        return YuNet(path, cfg, signature)
    if _is_insightface_layout(outputs):
        return InsightFaceDetector(cfg.name, path, cfg, signature)
    if cfg.name == "retinaface" and len(outputs) == 3 and all(len(s) == 3 for _, s in outputs) \
            and sorted(s[-1] or 0 for _, s in outputs) == [2, 4, 10]:
        return RetinaFacePriorBox(path, cfg, signature)
    expected = ("insightface layout (9 or 15 outputs: score/bbox/kps per stride)"
                if cfg.name == "scrfd" else
                "Pytorch_Retinaface export (loc (1,P,4), conf (1,P,2), landms (1,P,10)) or the "
                "insightface layout (9 or 15 outputs: score/bbox/kps per stride)")
    raise UsageError(f"{path}: unexpected outputs for a {cfg.name} detector: "
                     f"{_describe(outputs)}; expected the {expected}")


def _as_bgr(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or 0 in img.shape[:2]:
        raise ValueError(f"expected a non-empty (H, W, 3) uint8 BGR image, got "
                         f"{img.shape} {img.dtype}")
    return img
