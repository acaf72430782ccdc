"""Where the face crops of the thumbnail strip come from: a ``<video>/<k:05d>.jpg`` folder, a
given stage-0 manifest, or manifests found beside the store's artifacts folder.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fer_pipeline.store import LoadedStore

log = logging.getLogger(__name__)


@dataclass
class CropFinder:
    """(video, 0-based frame) -> crop JPEG path, from a manifest's rows or a crop folder."""
    by_video: dict[str, list]      # video -> crop path (or None) per row, manifest order
    folder: Path | None = None
    source: str = ""

    def __call__(self, video: str, frame: int) -> Path | None:
        if self.folder is not None:
            path = self.folder / video / f"{frame + 1:05d}.jpg"
            return path if path.is_file() else None
        paths = self.by_video.get(video)
        if paths is None or not 0 <= frame < len(paths) or not paths[frame]:
            return None
        path = Path(paths[frame])
        return path if path.is_file() else None


def _manifest_rows(path: Path, data: LoadedStore, videos: list[str]) -> dict[str, list]:
    """Crop paths per store row of ``videos`` from a stage-0 manifest; a video whose row count
    differs from the store's is left out (its rows would not line up)."""
    import pandas as pd
    import pyarrow

    try:
        df = pd.read_parquet(path, columns=["video", "frame", "crop_path"],
                             filters=[("video", "in", videos)])
    except (OSError, ValueError, KeyError, pyarrow.ArrowException) as e:
        log.warning("%s: not readable as a frame manifest (%s)", path, e)
        return {}
    base = path.parent.resolve()
    out = {}
    for video, g in df.groupby("video", sort=False):
        g = g.sort_values("frame")
        if len(g) != int(data.lengths()[data.index(video)]):
            log.warning("%s: %d manifest rows for %s, the store has %d; its crops are not used",
                        path, len(g), video, int(data.lengths()[data.index(video)]))
            continue
        # crop_path is relative to the manifest's folder unless absolute (fer_pipeline.manifest)
        out[str(video)] = [None if pd.isna(p) else str(base / p) for p in g["crop_path"]]
    return out


def _candidate_manifests(store: Path) -> list[Path]:
    """manifest.parquet files where the pipeline puts them relative to a store at
    ``<artifacts>/embeddings/<key>``: in ``<artifacts>`` or one folder below it, and under the
    ``artifacts_dir`` recorded in the store's config.yaml."""
    bases = [store.resolve().parent.parent]
    cfg = store / "config.yaml"
    if cfg.is_file():
        import yaml

        try:
            art = (yaml.safe_load(cfg.read_text()) or {}).get("artifacts_dir")
        except yaml.YAMLError:
            art = None
        if art and Path(art).resolve() not in bases:
            bases.append(Path(art).resolve())
    found = []
    for base in bases:
        if base.is_dir():
            found += [base / "manifest.parquet"] + sorted(base.glob("*/manifest.parquet"))
    return [p for p in dict.fromkeys(found) if p.is_file()]


def find_crops(store: Path, data: LoadedStore, videos: list[str], manifest: str | None,
               crops: str | None) -> CropFinder:
    if crops:
        return CropFinder({}, folder=Path(crops), source=str(crops))
    if manifest:
        return CropFinder(_manifest_rows(Path(manifest), data, videos), source=str(manifest))
    by_video: dict[str, list] = {}
    sources = []
    for path in _candidate_manifests(store):
        rows = _manifest_rows(path, data, [v for v in videos if v not in by_video])
        if rows:
            by_video.update(rows)
            sources.append(str(path))
        if len(by_video) == len(videos):
            break
    return CropFinder(by_video, source=", ".join(sources))
