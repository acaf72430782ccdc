"""The package's Python face, served lazily as ``fer_pipeline.<name>`` (see ``fer_pipeline``).

- ``predict``: videos -> one DataFrame row per frame (the columns of ``predict``'s CSV);
- ``embed``: videos (or a stage-0 manifest) -> an embedding store of their face crops;
- ``load_store``: an embedding store, as ``inspect`` reads it;
- ``Predictor``: a loaded model for many ``predict`` calls without reloading it;
- ``sample_video``: the real face video shipped with the package, to try things on.

Each does what the command of the same name does (stage 0 -> stage 1 [-> stage 2]) with the
same settings, so a DataFrame here equals the CSV ``fer-pipeline predict`` writes.
"""
from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

from fer_pipeline.app.commands.predict import Predictor
from fer_pipeline.errors import UsageError

__all__ = ["predict", "embed", "load_store", "Predictor", "sample_video"]

log = logging.getLogger(__name__)
PathLike = str | Path


def sample_video() -> Path:
    """``d19.mp4``: 250 frames of one real face (LivePortrait example, MIT; see
    ``fer_pipeline/app/assets/LICENSES.md``), shipped with the package."""
    return Path(__file__).resolve().parent / "assets" / "d19.mp4"


def _paths(video_or_folder: PathLike | Sequence[PathLike]) -> list[Path]:
    if isinstance(video_or_folder, (str, Path)):
        return [Path(video_or_folder)]
    return [Path(p) for p in video_or_folder]


def predict(video_or_folder: PathLike | Sequence[PathLike], run: PathLike | Predictor | None = None,
            *, smooth_window: int | None = None, config: Sequence[PathLike] = (),
            overrides: Sequence[str] = (), out: PathLike | None = None):
    """Per-frame expressions of a video, a folder of videos, or a list of either.

    ``run``: a stage-2 run (temporal model), a stage-1 run (frame level), a ``Predictor``, or
    ``None`` for the real-face encoder shipped with the package. Returns a ``pandas.DataFrame``
    with one row per decoded frame: ``video`` (the file's stem), then the columns of the CSV
    that ``fer-pipeline predict`` writes (``frame``, ``time_s``, ``has_face``, the face box and
    score, ``p_<class>`` for the 8 classes, ``label`` / ``label_name`` and their smoothed
    versions). With ``out`` the CSV, submission and timeline files are written there as well.

    A video that fails (unreadable, truncated) is logged and left out; when none could be
    predicted, ``UsageError`` says why.

    >>> import fer_pipeline
    >>> frames = fer_pipeline.predict(fer_pipeline.sample_video())
    >>> len(frames), bool(frames["has_face"].all())
    (250, True)
    >>> list(frames.columns[:4])
    ['video', 'frame', 'time_s', 'has_face']
    >>> frames["smoothed_label_name"].value_counts().index[0]
    'Neutral'
    """
    import pandas as pd

    predictor = run if isinstance(run, Predictor) else Predictor(
        run, config_files=list(config), overrides=list(overrides), smooth_window=smooth_window)
    paths = _paths(video_or_folder)
    if out is None:
        with tempfile.TemporaryDirectory(prefix="fer-predict-") as tmp:
            res = predictor.predict(paths, tmp, write=False)
    else:
        res = predictor.predict(paths, out)
    if not res.videos:
        raise UsageError("; ".join(res.failures) or f"no video predicted from {paths}")
    return pd.concat([v.frames.assign(video=v.name)[["video", *v.frames.columns]]
                      for v in res.videos], ignore_index=True)


def embed(videos_or_manifest: PathLike | Sequence[PathLike], run: PathLike | None = None, *,
          out: PathLike | None = None, config: Sequence[PathLike] = (),
          overrides: Sequence[str] = ()):
    """Embed the face crops of videos (files and/or folders: stage 0 finds and aligns the
    faces first) or of a stage-0 ``manifest.parquet``, with the encoder of ``run`` (a stage-1
    or stage-2 run; ``None``: the encoder shipped with the package). Writes
    ``out/stage0/`` (videos only) and ``out/embeddings/<encoder key>/`` (default ``out``:
    ``<artifacts_dir>/embed/<run name>``) and returns that store, opened
    (``EmbeddingStore``). Re-running skips what is complete.

    >>> import tempfile, fer_pipeline
    >>> out = tempfile.mkdtemp()
    >>> store = fer_pipeline.embed(fer_pipeline.sample_video(), out=out)
    >>> store.videos(), store.dim, store.read_video("d19").emb.shape
    (['d19'], 512, (250, 512))
    >>> again = fer_pipeline.embed(f"{out}/stage0/manifest.parquet", out=out)  # skips what is complete
    >>> again.path == store.path, fer_pipeline.load_store(store.path).videos()
    (True, ['d19'])
    """
    import stage0_preprocess as stage0
    from fer_pipeline.manifest import read_manifest
    from fer_pipeline.store import EmbeddingStore

    pred = Predictor(run, config_files=list(config), overrides=list(overrides))
    out = Path(out or Path(pred.cfg.artifacts_dir) / "embed" / pred.run_dir.resolve().name)
    paths = _paths(videos_or_manifest)
    if len(paths) == 1 and paths[0].suffix == ".parquet":
        manifest = read_manifest(paths[0])
    else:
        videos = stage0.find_videos(paths)
        if not videos:
            raise UsageError(f"no videos in {', '.join(map(str, paths))}")
        s0, _ = stage0.run_videos(videos, out / "stage0", pred.cfg, record_run=False)
        if s0.manifest is None:
            raise UsageError("; ".join(o.error for o in s0.failed) or "stage 0 wrote no manifest")
        manifest = read_manifest(s0.manifest)
    res = pred.embed_manifest(manifest, out / "embeddings")
    for failure in res.failures:
        log.warning("embed: %s", failure)
    return EmbeddingStore.open(res.store)


def load_store(path: PathLike, *, allow_partial: bool = False):
    """An embedding store (``artifacts/embeddings/<encoder key>``) opened for reading, as
    ``fer-pipeline inspect`` reads it: ``UsageError`` when some of its videos are incomplete,
    unless ``allow_partial`` (then only its complete videos are listed).

    ``store.videos()`` names the videos, ``store.read_video(name)`` gives one video's ``emb``
    (T, D) float16, ``label`` (T,) int8 and ``face`` (T,) bool, ``store.load()`` all of them as
    one (N, D) array with per-video ``offsets``, ``store.export_h5(file)`` one HDF5 file.

    >>> import fer_pipeline
    >>> fer_pipeline.load_store("no/such/store")
    Traceback (most recent call last):
    ...
    fer_pipeline.errors.UsageError: no/such/store: no embedding store here (run `fer-pipeline stage1 embed`)
    """
    from fer_pipeline.store import EmbeddingStore

    store = EmbeddingStore.open(path)
    store.require_complete(allow_partial, flag="allow_partial=True")
    return store
