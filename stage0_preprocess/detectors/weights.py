"""Where detector weights come from: the bundled ONNX files in ``stage0_preprocess/weights/``
(package data), an explicit ``stage0.detector.onnx`` path, or insightface's ``buffalo_l`` pack
under ``$INSIGHTFACE_HOME`` for SCRFD, downloaded by insightface after a fast reachability
check."""
from __future__ import annotations

import logging
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from fer_pipeline.config import DetectorConfig
from fer_pipeline.errors import UsageError
from stage0_preprocess.detectors.session import short

log = logging.getLogger(__name__)

# stage0_preprocess/weights/, beside this package (not inside it): see weights/LICENSES.md.
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
BUNDLED_WEIGHTS = {
    "retinaface": WEIGHTS_DIR / "retinaface_mobilenet0.25.onnx",
    "yunet": WEIGHTS_DIR / "yunet_n_640_640.onnx",
}
SCRFD_PACK, SCRFD_FILE = "buffalo_l", "det_10g.onnx"
# How long the reachability check of the model-zoo host may take before the download is
# given up (an offline machine otherwise waits on DNS / TCP timeouts for a minute or more).
DOWNLOAD_PROBE_TIMEOUT_S = 4.0


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
                               f"{short(e.reason, 80)}"))
        except Exception as e:  # reported to the caller below
            err.append(OSError(f"cannot reach {urllib.parse.urlsplit(url).hostname}: "
                               f"{short(e, 80)}"))

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
            f"INSIGHTFACE_HOME to use another root); download failed: {short(e, 120)}; "
            f"pass stage0.detector.onnx=/path/to/{SCRFD_FILE}") from None
    return path


def _check_file(path: Path) -> Path:
    if not path.is_file():
        raise UsageError(f"detector weights not found: {path}")
    return path


def resolve_weights(cfg: DetectorConfig) -> Path:
    """The ONNX file for ``cfg``: its ``onnx`` path, else the SCRFD pack or the bundled file."""
    if cfg.onnx:
        return _check_file(Path(cfg.onnx).expanduser())
    if cfg.name == "scrfd":
        return default_scrfd_weights()
    path = BUNDLED_WEIGHTS[cfg.name]
    if not path.is_file():
        raise UsageError(f"detector weights not found: {path} (bundled with the package; "
                         "reinstall it or pass stage0.detector.onnx=/path/to/model.onnx)")
    return path
