"""ONNX Runtime plumbing shared by the detector backends: providers, session options
(``FER_ORT_THREADS``), reading a graph's signature without a session, the network input size,
and ``OnnxDetector``, a session on a letterboxed float NCHW batch whose subclasses decode."""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np

from fer_pipeline.config import DetectorConfig
from fer_pipeline.errors import UsageError
from stage0_preprocess.detectors.base import Detections, as_bgr, letterbox, to_image

log = logging.getLogger(__name__)

THREADS_ENV = "FER_ORT_THREADS"


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


def short(e: BaseException, n: int = 160) -> str:
    """An exception's message on one line, at most ``n`` characters."""
    s = " ".join(str(e).split()) or type(e).__name__
    return s if len(s) <= n else s[: n - 3] + "..."


def describe(outputs, limit: int = 6) -> str:
    """``name[shape], ...`` of a graph's outputs, for error messages."""
    text = ", ".join(f"{n}{list(s)}" for n, s in outputs[:limit])
    return text + (f", ... ({len(outputs)} outputs)" if len(outputs) > limit else "")


def dim(d) -> int | None:
    """A fixed dimension, or ``None`` for a dynamic one."""
    return d if isinstance(d, int) and d > 0 else None


def onnx_signature(path: Path) -> tuple[list, list]:
    """``([(name, shape)] inputs, [(name, shape)] outputs)`` of an ONNX graph without building a
    session; unknown dims are ``None``. Raises ``UsageError`` for a file that is not ONNX."""
    import onnx

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as e:  # DecodeError, OSError, ...
        raise UsageError(f"{path}: not a loadable ONNX model ({type(e).__name__}: "
                         f"{short(e)})") from None

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


def network_size(path: Path, input_shape, requested: int) -> tuple[int, int]:
    """``(width, height)`` the network runs at: the model's own when its spatial input is fixed,
    otherwise ``requested`` rounded up to a multiple of 32 (the coarsest stride)."""
    if len(input_shape) != 4 or (input_shape[1] not in (None, 3)):
        raise UsageError(f"{path}: expected one NCHW image input (N, 3, H, W), got {input_shape}")
    fh, fw = dim(input_shape[2]), dim(input_shape[3])
    if fh and fw:
        if (fw, fh) != (requested, requested):
            log.warning("%s has a fixed %dx%d input; detector input_size=%d is ignored",
                        path.name, fw, fh, requested)
        return fw, fh
    s = int(math.ceil(requested / 32) * 32)
    if s != requested:
        log.warning("detector input_size=%d rounded up to %d (a multiple of 32)", requested, s)
    return s, s


class OnnxDetector:
    """An ONNX Runtime session on a letterboxed float NCHW batch; subclasses decode."""

    def __init__(self, name: str, path: Path, cfg: DetectorConfig, input_shape):
        import onnxruntime as ort

        self.name = name
        self.path = path
        self.threshold = float(cfg.threshold)
        self.nms_iou = float(cfg.nms)
        self.input_size = network_size(path, input_shape, cfg.input_size)
        self.batch_size = int(cfg.batch_size) if dim(input_shape[0]) is None else 1
        try:
            self.session = ort.InferenceSession(str(path), sess_options=session_options(),
                                                providers=ort_providers())
        except Exception as e:
            raise UsageError(f"{path}: ONNX Runtime cannot load it ({short(e)})") from None
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
            boxed = [letterbox(as_bgr(img), self.input_size) for img in chunk]
            outs = self._run(self._blob([c for c, _, _ in boxed]))
            for b, (img, (_, sx, sy)) in enumerate(zip(chunk, boxed)):
                results.append(to_image(*self._decode(outs, b), sx, sy, img.shape))
        return results
