"""``fer-pipeline predict VIDEO... [--run RUN_DIR]``: new videos -> per-frame expressions.

Chains the stages on videos without labels: stage 0 (detect, track, align; the run's stage-0
settings) -> stage 1 (embed the face crops) -> a model, one of

- a stage-2 run: its temporal model over sliding windows, on the embeddings of the encoder it
  was trained on (found through the store it recorded and checked by encoder key);
- a stage-1 run: frame level, the encoder's own 8-way classifier on every face crop;
- no ``--run``: the same with the real-face encoder shipped in the package (FERPlus-trained,
  see its model card), so predictions work on a fresh install.

Per video it writes (SPEC §8):

* ``<video>.csv``: frame, time_s, has_face, the main face box ``x1, y1, x2, y2`` and its
  detection score, the 8 probabilities (frames without a face get probabilities interpolated
  from the nearest face frames), ``label`` / ``label_name`` (per frame) and ``smoothed_label`` /
  ``smoothed_label_name`` (after Smooth Predicting; argmax, or the run's CFC-SP cascade rule);
* ``<video>_submission.txt``: the ABAW format (SPEC §3), one class id per frame (smoothed label);
* ``<video>_timeline.png``: probabilities over time, the smoothed-label band, a few crops.

Intermediate stage-0 crops and the embedding store live under ``OUT/work`` and are reused by a
re-run (each stage skips complete videos), so an interrupted batch resumes.

The Python API with the same behaviour is ``fer_pipeline.predict`` (and ``fer_pipeline.Predictor``
to load a model once), served from ``fer_pipeline.app.api``.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from fer_pipeline.cliutil import setup_logging, summary
from fer_pipeline.config import Config, load_config
from fer_pipeline.errors import EXIT_INPUTS_FAILED, EXIT_OK, UsageError
from fer_pipeline.io import atomic_write, write_text
from fer_pipeline.labels import CLASSES, SUBMISSION_HEADER
from fer_pipeline.manifest import read_manifest
from fer_pipeline.runs import setup_torch

log = logging.getLogger(__name__)

PROB_COLUMNS = [f"p_{c}" for c in CLASSES]


@dataclass
class VideoPrediction:
    name: str
    path: str
    frames: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def face_pct(self) -> float:
        return 100.0 * float(self.frames["has_face"].mean()) if len(self.frames) else 0.0


@dataclass
class PredictResult:
    videos: list[VideoPrediction]
    failures: list[str]
    out: Path


def _encoder_for(info: dict, run_dir: Path, encoder_run: str | Path | None, cfg: Config):
    """The stage-1 encoder a stage-2 run was trained on; checked by encoder key and dim."""
    import stage1_image_encoder as stage1
    from fer_pipeline.store import EmbeddingStore

    source = encoder_run or info.get("encoder_run")
    if source is None and info.get("store") and Path(info["store"]).is_dir():
        source = EmbeddingStore.open(info["store"]).meta.get("encoder_run")
    if source is not None and not Path(source).is_dir():
        raise UsageError(f"{run_dir}: its encoder run {source} is not there; pass --encoder-run DIR")
    # no recorded stage-1 run: the store was embedded by the config's encoder (seeded init or
    # stage1.model.pretrained), which the key check below confirms or refutes
    model, mcfg = stage1.load_encoder(cfg, source)
    if int(model.num_features) != int(info["in_dim"]):
        raise UsageError(f"{run_dir}: encoder gives {model.num_features}-dim embeddings, the model "
                         f"takes {info['in_dim']}")
    key = stage1.encoder_key(model, mcfg)
    if key != info["encoder_key"]:
        hint = "" if source else " (the run records no stage-1 run; pass --encoder-run DIR)"
        raise UsageError(f"{run_dir}: encoder {source or mcfg.name} has key {key}, the run was "
                         f"trained on embeddings of key {info['encoder_key']}{hint}")
    return model, mcfg


class Predictor:
    """A trained model plus its encoder and stage-0 settings, ready for new videos.

    - a stage-2 run: the temporal model over the embeddings of the stage-1 encoder it was
      trained on (found through the store it recorded, checked by key and dim);
    - a stage-1 run (or ``None`` / ``"bundled"``: the real-face encoder shipped with the
      package): frame level, the encoder's own 8-way classifier on every face crop;
    then no-face interpolation and Smooth Predicting in both cases."""

    def __init__(self, run_dir: str | Path | None = None, encoder_run: str | Path | None = None,
                 config_files: list[str | Path] | None = None, overrides: list[str] | None = None,
                 smooth_window: int | None = None):
        import stage1_image_encoder as stage1
        import stage2_temporal as stage2

        if smooth_window is not None and smooth_window < 0:
            raise UsageError(f"--smooth-window must be >= 0 frames (0 or 1 = no smoothing), got "
                             f"{smooth_window}")
        self.run_dir = stage1.bundled_run() if run_dir in (None, "bundled") else Path(run_dir)
        if not self.run_dir.is_dir():
            raise UsageError(f"{self.run_dir}: no such run directory")
        # the run's resolved config (the stage-0 settings it was made with), then the caller's
        self.cfg = load_config([self.run_dir / "config.yaml", *(config_files or [])], overrides,
                               base=None)
        self.device = setup_torch(self.cfg)
        if (self.run_dir / "stage2.json").is_file():
            self.kind = "stage2"
            self.model, run_cfg, self.info, _ = stage2.load_model(self.run_dir)
            self.cfg = self.cfg.model_copy(update={"stage2": run_cfg.stage2})
            self.encoder, mcfg = _encoder_for(self.info, self.run_dir, encoder_run, self.cfg)
            self.model.to(self.device)
        elif stage1.is_stage1_run(self.run_dir):
            self.kind = "stage1"
            self.model = None
            self.encoder, mcfg = stage1.load_classifier(self.run_dir, self.cfg)
        else:
            raise UsageError(f"{self.run_dir}: neither a stage-2 run (stage2.json) nor a stage-1 "
                             f"run (checkpoint.safetensors + config.yaml)")
        self.cfg = self.cfg.model_copy(update={"stage1": self.cfg.stage1.model_copy(update={"model": mcfg})})
        if smooth_window is None:   # the run's window, else half a second at 30 fps
            smooth_window = self.cfg.stage2.post.smoothing_window()
        self.smooth_window = int(smooth_window)

    @classmethod
    def default(cls, **kw) -> Predictor:
        """Frame-level predictions with the real-face encoder shipped in the package."""
        return cls(None, **kw)

    @classmethod
    def from_run(cls, run_dir: str | Path, **kw) -> Predictor:
        return cls(run_dir, **kw)

    # ------------------------------------------------------------------ API
    def predict_video(self, path: str | Path, out: str | Path | None = None) -> pd.DataFrame:
        """Per-frame predictions of one video as a DataFrame (columns as the CSV). With ``out``
        the CSV, submission and timeline files are written there too."""
        if out is None:
            with tempfile.TemporaryDirectory(prefix="fer-predict-") as tmp:
                res = self.predict([path], tmp, write=False)
        else:
            res = self.predict([path], out)
        if res.failures:
            raise UsageError(res.failures[0])
        return res.videos[0].frames

    @property
    def encoder_run(self) -> Path | None:
        """The stage-1 run this predictor's encoder came from (recorded in the stores it writes)."""
        return self.run_dir if self.kind == "stage1" else self.info.get("encoder_run")

    def embed_manifest(self, manifest: pd.DataFrame, stores: str | Path):
        """The manifest's face crops through this predictor's encoder into
        ``stores/<encoder key>`` (complete videos skipped). Returns the ``EmbedResult``."""
        import stage1_image_encoder as stage1

        key = stage1.encoder_key(self.encoder, self.cfg.stage1.model)
        return stage1.embed_frames(manifest, self.encoder, self.cfg, Path(stores) / key,
                                   self.device, encoder_run=self.encoder_run)

    def predict(self, paths: list[str | Path], out: str | Path, write: bool = True) -> PredictResult:
        import stage0_preprocess as stage0

        out = Path(out)
        work = out / "work"
        videos = stage0.find_videos(paths)
        if not videos:
            raise UsageError("no videos given")
        log.info("predict: %d video(s) -> %s (stage 0, encoder, %s)", len(videos), out, self.run_dir)
        s0, _ = stage0.run_videos(videos, work / "stage0", self.cfg, record_run=False)
        failures = [o.error for o in s0.failed]
        ok = [o for o in s0.outcomes if o.status != "failed"]
        if not ok:
            return PredictResult([], failures, out)
        manifest = read_manifest(s0.manifest)
        emb = self.embed_manifest(manifest, work / "embeddings")
        failures += emb.failures
        results = []
        by_name = {Path(v).stem: str(v) for v in videos}     # stage 0 names videos by stem
        for o in ok:
            if o.name not in emb.written and o.name not in emb.skipped:
                continue
            frames = self._frames(emb.store, o.name, manifest)
            if not frames["has_face"].any():
                log.warning("%s: no face in any of its %d frames; its rows are flagged has_face="
                            "False and carry the model's output without face evidence",
                            by_name[o.name], len(frames))
            res = VideoPrediction(o.name, by_name[o.name], frames)
            if write:
                res.files = self._write(res, out, work / "stage0")
            results.append(res)
        return PredictResult(results, failures, out)

    # ------------------------------------------------------------------ internals
    def _frames(self, store_path: Path, name: str, manifest: pd.DataFrame) -> pd.DataFrame:
        import stage1_image_encoder as stage1
        import stage2_temporal as stage2
        from fer_pipeline.postprocess import interpolate_no_face, smooth
        from fer_pipeline.store import EmbeddingStore

        loaded = EmbeddingStore.open(store_path).load([name])
        face = loaded.face.astype(bool)
        if self.kind == "stage2":
            probs = stage2.predict_video(self.model, loaded, self.cfg, self.device)
            decide = lambda p: stage2.decide(p, self.cfg)       # noqa: E731 - the run's cascade rule
        else:
            probs = stage1.classify_embeddings(self.encoder, loaded.emb)
            probs = interpolate_no_face(probs, face)
            decide = lambda p: p.argmax(-1)                     # noqa: E731
        smoothed = smooth(probs, self.smooth_window, self.cfg.stage2.post.moment_weight)
        rows = manifest[manifest["video"] == name].sort_values("frame")
        df = pd.DataFrame({"frame": rows["frame"].to_numpy(), "time_s": rows["time_s"].to_numpy(),
                           "has_face": face})
        for c in ("x1", "y1", "x2", "y2", "det_score"):        # the main face, as stage 0 found it
            df[c] = rows[c].to_numpy(np.float32)
        for k, c in enumerate(PROB_COLUMNS):
            df[c] = probs[:, k].astype(np.float32)
        df["label"] = decide(probs)
        df["label_name"] = [CLASSES[i] for i in df["label"]]
        df["smoothed_label"] = decide(smoothed)
        df["smoothed_label_name"] = [CLASSES[i] for i in df["smoothed_label"]]
        return df

    def _write(self, res: VideoPrediction, out: Path, stage0_dir: Path) -> dict[str, Path]:
        from fer_pipeline.plots import plot_timeline

        out.mkdir(parents=True, exist_ok=True)
        csv = out / f"{res.name}.csv"
        atomic_write(csv, lambda p: res.frames.to_csv(p, index=False, float_format="%.5f"))
        sub = out / f"{res.name}_submission.txt"
        lines = [SUBMISSION_HEADER]
        lines += [f"{res.name}/{int(k):05d}.jpg,{int(y)}"
                  for k, y in zip(res.frames["frame"], res.frames["smoothed_label"])]
        write_text(sub, "\n".join(lines) + "\n")
        fr = res.frames
        fps = _fps(fr["time_s"].to_numpy())
        png = plot_timeline(fr[PROB_COLUMNS].to_numpy(), out / f"{res.name}_timeline.png",
                            fps=fps, pred=fr["smoothed_label"].to_numpy(),
                            face=fr["has_face"].to_numpy(), thumbnails=_thumbnails(stage0_dir, res),
                            pred_name=f"smoothed\nlabel ({self.smooth_window} f)",
                            title=f"{Path(res.path).name}: {label_shares(fr)} (smoothed label; "
                                  f"{'frame-level encoder' if self.kind == 'stage1' else 'temporal model'})")
        return {"csv": csv, "submission": sub, "timeline": png}


def _fps(times: np.ndarray) -> float | None:
    t = times[np.isfinite(times)]
    if len(t) < 2 or t[-1] <= t[0]:
        return None
    return float((len(t) - 1) / (t[-1] - t[0]))


def label_shares(frames: pd.DataFrame) -> str:
    """The smoothed labels of the face frames, most frequent first: 'Happiness 65%, Neutral 35%'."""
    counts = frames.loc[frames["has_face"], "smoothed_label"].value_counts()
    if counts.empty:
        return "no face found"
    return ", ".join(f"{CLASSES[int(k)]} {100 * v / counts.sum():.0f}%" for k, v in counts.head(3).items())


def _thumbnails(stage0_dir: Path, res: VideoPrediction, n: int = 6) -> list[tuple[int, np.ndarray]]:
    """A few evenly spaced face crops of the video (0-based frame index, RGB)."""
    idx = np.flatnonzero(res.frames["has_face"].to_numpy())
    out = []
    for i in idx[np.linspace(0, len(idx) - 1, num=min(n, len(idx)), dtype=int)] if len(idx) else []:
        k = int(res.frames["frame"].iloc[i])
        img = cv2.imread(str(stage0_dir / "crops" / res.name / f"{k:05d}.jpg"))
        if img is not None:
            out.append((int(i), cv2.cvtColor(img, cv2.COLOR_BGR2RGB)))
    return out


def _check_inputs(paths: list[str]) -> None:
    """Before any model is loaded: folders that hold no video (searched as stage 0 searches
    them) are a usage error when nothing else was given. A named file is taken as it is; if it
    is no video, stage 0 fails it alone."""
    from fer_pipeline.media import VIDEO_EXTENSIONS

    def holds_video(folder: Path) -> bool:
        return any(f.suffix.lower() in VIDEO_EXTENSIONS and f.is_file() for f in folder.rglob("*"))

    given = [Path(p) for p in paths]
    if any(not p.is_dir() for p in given) or any(holds_video(p) for p in given):
        return
    raise UsageError(f"no video files in {', '.join(map(str, given))} (looked for "
                     f"{', '.join(VIDEO_EXTENSIONS)})")


def predict_command(args: argparse.Namespace) -> int:
    """``fer-pipeline predict`` (its arguments are declared in ``fer_pipeline.app.cli``). A failed
    input is reported once, by the stage that failed it, as it happens; the summary counts."""
    videos = args.videos
    setup_logging()
    _check_inputs(videos)
    pred = Predictor(args.run, encoder_run=args.encoder_run, config_files=args.config,
                     overrides=args.overrides, smooth_window=args.smooth_window)
    setup_logging(pred.cfg.log_level)
    out = Path(args.out or Path(pred.cfg.artifacts_dir) / "predict" / pred.run_dir.resolve().name)
    res = pred.predict(videos, out)
    for v in res.videos:
        print(f"{v.name}: {len(v.frames)} frames, face in {v.face_pct:.1f}%, {label_shares(v.frames)}"
              f" -> {v.files.get('csv')}")
    write_json_summary(res)
    failed = f" (errors above; listed in {out / 'predict_summary.json'})" if res.failures else ""
    summary(f"predict: {len(res.videos)} video(s) predicted, {len(res.failures)} failed{failed} -> {out}")
    return EXIT_INPUTS_FAILED if res.failures else EXIT_OK


def write_json_summary(res: PredictResult) -> None:
    from fer_pipeline.io import write_json

    write_json(res.out / "predict_summary.json", {
        "videos": [{"name": v.name, "path": v.path, "frames": len(v.frames),
                    "face_pct": round(v.face_pct, 2),
                    "files": {k: str(p) for k, p in v.files.items()}} for v in res.videos],
        "failures": res.failures})

