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

The bundled weights live in ``stage0_preprocess/weights/``, beside this package (see
``weights/LICENSES.md``), and must be shipped as package data.

Modules: ``base`` (``Detections``, letterbox, NMS, mapping back to the image), ``session`` (ONNX
Runtime options and graph signatures), ``retinaface`` (Pytorch_Retinaface export decoder),
``yunet``, ``insightface_backend`` (SCRFD / insightface-layout RetinaFace) and ``weights``
(bundled files, the SCRFD pack and its download). Their public names are importable from here.
"""
from __future__ import annotations

from fer_pipeline.config import DetectorConfig
from fer_pipeline.errors import UsageError
from stage0_preprocess.detectors.base import PRE_NMS_TOP_K, Detections, letterbox, nms
from stage0_preprocess.detectors.insightface_backend import (InsightFaceDetector,
                                                             is_insightface_layout)
from stage0_preprocess.detectors.retinaface import (RETINA_MEAN_BGR, RETINA_MIN_SIZES,
                                                    RETINA_STEPS, RETINA_VARIANCES,
                                                    RetinaFacePriorBox, is_priorbox_layout,
                                                    retinaface_priors)
from stage0_preprocess.detectors.session import (THREADS_ENV, describe, onnx_signature,
                                                 ort_providers, session_options)
from stage0_preprocess.detectors.weights import (BUNDLED_WEIGHTS, DOWNLOAD_PROBE_TIMEOUT_S,
                                                 SCRFD_FILE, SCRFD_PACK, WEIGHTS_DIR,
                                                 default_scrfd_weights, insightface_root,
                                                 resolve_weights)
from stage0_preprocess.detectors.yunet import YUNET_OUTPUTS, YUNET_STRIDES, YuNet

__all__ = [
    "build_detector", "Detections", "letterbox", "nms", "PRE_NMS_TOP_K",
    "ort_providers", "session_options", "THREADS_ENV",
    "RetinaFacePriorBox", "retinaface_priors", "RETINA_MIN_SIZES", "RETINA_STEPS",
    "RETINA_VARIANCES", "RETINA_MEAN_BGR",
    "YuNet", "YUNET_OUTPUTS", "YUNET_STRIDES", "InsightFaceDetector",
    "resolve_weights", "default_scrfd_weights", "insightface_root", "WEIGHTS_DIR",
    "BUNDLED_WEIGHTS", "SCRFD_PACK", "SCRFD_FILE", "DOWNLOAD_PROBE_TIMEOUT_S",
]


def build_detector(cfg: DetectorConfig):
    """A detector for ``cfg``: an object with ``name`` and ``detect(images) -> [Detections]``."""
    path = resolve_weights(cfg)
    signature = onnx_signature(path)
    inputs, outputs = signature
    if len(inputs) != 1:
        raise UsageError(f"{path}: expected a single image input, got {[n for n, _ in inputs]}")
    if cfg.name == "yunet":
        missing = sorted(set(YUNET_OUTPUTS) - {n for n, _ in outputs})
        if missing:
            raise UsageError(f"{path}: not a YuNet model (expected outputs cls/obj/bbox/kps_"
                             f"{{8,16,32}}; missing {', '.join(missing)})")
        return YuNet(path, cfg, signature)
    if is_insightface_layout(outputs):
        return InsightFaceDetector(cfg.name, path, cfg, signature)
    if cfg.name == "retinaface" and is_priorbox_layout(outputs):
        return RetinaFacePriorBox(path, cfg, signature)
    expected = ("insightface layout (9 or 15 outputs: score/bbox/kps per stride)"
                if cfg.name == "scrfd" else
                "Pytorch_Retinaface export (loc (1,P,4), conf (1,P,2), landms (1,P,10)) or the "
                "insightface layout (9 or 15 outputs: score/bbox/kps per stride)")
    raise UsageError(f"{path}: unexpected outputs for a {cfg.name} detector: "
                     f"{describe(outputs)}; expected the {expected}")
