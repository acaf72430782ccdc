"""``fer-pipeline inspect STORE``: what an embedding store holds and what its space looks like.

    fer-pipeline inspect artifacts/embeddings/<key>                         counts + per-video table
    fer-pipeline inspect STORE --json stats.json                            the same as JSON
    fer-pipeline inspect STORE --neighbours synth_003:120 --k 10 --out DIR  nearest frames + strip
    fer-pipeline inspect STORE --project --out DIR                          2-D map of face frames
    fer-pipeline inspect STORE --export-h5 store.h5                         one HDF5 file

The store is read into memory once (``EmbeddingStore.load``); every report works on that copy.
Images and CSVs go to ``--out`` (default: the current folder). Crops for the thumbnail strip come
from the stage-0 frame manifest (``--manifest``, or one found beside the store's artifacts
folder) or from a ``<video>/<k:05d>.jpg`` folder (``--crops``); frames whose crop cannot be found
are drawn as labelled placeholders.
"""
from __future__ import annotations

import argparse
import difflib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.cliutil import add_config_args, resolve_config, summary
from pipeline.errors import EXIT_OK, UsageError
from pipeline.io import atomic_path, write_json
from pipeline.labels import CLASSES, IGNORE, NUM_CLASSES
from pipeline.progress import progress
from pipeline.store import EmbeddingStore, LoadedStore

log = logging.getLogger(__name__)

SIMILARITY_CHUNK = 32768       # rows converted to float32 at a time for the cosine scan
TILE = 112                     # thumbnail side (px) in the neighbour strip
CAPTION = 44                   # caption band under each thumbnail (px)
PAD = 4
PROJECTION_SIZE_IN, PROJECTION_DPI = (8.0, 7.0), 100   # -> 800 x 700 px


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="counts, nearest neighbours, 2-D projection, HDF5 export "
                       "of an embedding store",
                       description="Print what an embedding store holds (videos, frames, labels, "
                       "faces, per-video table) and optionally: the nearest frames of one frame, "
                       "a 2-D projection of the face frames, an HDF5 export.")
    p.add_argument("store", metavar="STORE", help="embedding store folder "
                   "(artifacts/embeddings/<encoder-key>)")
    p.add_argument("--json", metavar="FILE", help="also write the counts and tables as JSON")
    p.add_argument("--neighbours", "--neighbors", metavar="VIDEO:FRAME",
                   help="list the --k most cosine-similar face frames of the store to this frame; "
                   "FRAME is the 0-based row in that video's arrays (manifest frame k, crop "
                   "<k:05d>.jpg, is row k-1); also writes a thumbnail strip PNG to --out")
    p.add_argument("--k", type=int, default=10, help="number of neighbours (default 10)")
    p.add_argument("--project", action="store_true",
                   help="2-D projection of the face frames coloured by label: PNG + CSV in --out")
    p.add_argument("--method", choices=("auto", "pca", "umap"), default="auto",
                   help="projection method; auto = UMAP when the umap package is installed, "
                   "else PCA (default auto)")
    p.add_argument("--max-points", type=int, default=20000, metavar="N",
                   help="project at most N face frames, drawn at random with the config seed "
                   "(default 20000)")
    p.add_argument("--out", metavar="DIR", default=".",
                   help="folder for image and CSV outputs (default: the current folder)")
    p.add_argument("--manifest", metavar="FILE",
                   help="stage-0 manifest.parquet whose crop_path gives the thumbnails (default: "
                   "a manifest.parquet in the store's artifacts folder or one level below it)")
    p.add_argument("--crops", metavar="DIR",
                   help="crop folder laid out as DIR/<video>/<k:05d>.jpg (instead of a manifest)")
    p.add_argument("--export-h5", metavar="FILE", help="write the store as one HDF5 file")
    add_config_args(p)
    p.set_defaults(handler=inspect_command)


# ---------------------------------------------------------------------------------------- stats
def label_name(label: int) -> str:
    return CLASSES[label] if 0 <= label < NUM_CLASSES else "unlabelled"


def store_stats(data: LoadedStore, meta: dict) -> dict:
    """Counts over the whole store and one row per video."""
    n = len(data.label)
    counts = np.bincount(data.label.astype(np.int64) - IGNORE, minlength=NUM_CLASSES + 1)
    per_video = []
    for i, video in enumerate(data.videos):
        s, e = int(data.offsets[i]), int(data.offsets[i + 1])
        lab, face = data.label[s:e], data.face[s:e]
        annotated = lab[lab != IGNORE]
        top = int(np.bincount(annotated.astype(np.int64), minlength=NUM_CLASSES).argmax()) \
            if annotated.size else IGNORE
        T = e - s
        per_video.append({
            "video": video, "split": data.split_of(i), "frames": T,
            "fps": float(data.attrs[i].get("fps", 0.0) or 0.0),
            "face_pct": 100.0 * face.sum() / T if T else 0.0,
            "annotated_pct": 100.0 * annotated.size / T if T else 0.0,
            "top_label": label_name(top),
        })
    return {
        "videos": len(data), "frames": n, "dim": data.dim, "encoder_key": data.encoder_key,
        "encoder": (meta.get("encoder") or {}).get("name", ""),
        "dtype": str(meta.get("dtype", data.emb.dtype)),
        "labels": {**{c: int(counts[1 + i]) for i, c in enumerate(CLASSES)},
                   "ignored (-1)": int(counts[0])},
        "face_frames": int(data.face.sum()),
        "no_face_pct": 100.0 * (n - int(data.face.sum())) / n if n else 0.0,
        "per_video": per_video,
    }


def format_stats(stats: dict, store: Path) -> str:
    n = stats["frames"]
    lines = [f"store        {store}",
             f"videos       {stats['videos']}",
             f"frames       {n}  ({stats['face_frames']} with a face, "
             f"{stats['no_face_pct']:.1f}% no face)",
             f"embedding    dim {stats['dim']}, {stats['dtype']}",
             f"encoder key  {stats['encoder_key']}"
             + (f"  ({stats['encoder']})" if stats["encoder"] else ""),
             "", "labels (all frames):"]
    width = max(len(k) for k in stats["labels"])
    for name, count in stats["labels"].items():
        lines.append(f"  {name:<{width}}  {count:>9}  {100.0 * count / n if n else 0.0:5.1f}%")
    rows = stats["per_video"]
    vw = max([len("video")] + [len(r["video"]) for r in rows])
    sw = max([len("split")] + [len(r["split"]) for r in rows])
    lines += ["", f"{'video':<{vw}}  {'split':<{sw}}  {'frames':>7}  {'fps':>6}  {'face %':>6}  "
              f"{'annotated %':>11}  most frequent label"]
    for r in rows:
        lines.append(f"{r['video']:<{vw}}  {r['split']:<{sw}}  {r['frames']:>7}  {r['fps']:>6.2f}  "
                     f"{r['face_pct']:>6.1f}  {r['annotated_pct']:>11.1f}  {r['top_label']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- neighbours
def parse_query(spec: str, data: LoadedStore) -> int:
    """``VIDEO:FRAME`` -> row of the loaded store; every bad query is a UsageError."""
    video, sep, frame_s = spec.rpartition(":")
    if not sep or not video:
        raise UsageError(f"--neighbours {spec!r}: expected VIDEO:FRAME, e.g. "
                         f"{data.videos[0] if data.videos else 'video'}:0")
    try:
        frame = int(frame_s)
    except ValueError:
        raise UsageError(f"--neighbours {spec!r}: FRAME must be an integer (0-based row)") from None
    if video not in data.videos:
        close = difflib.get_close_matches(video, data.videos, n=3)
        hint = f"; close names: {', '.join(close)}" if close else f" ({len(data)} videos in the store)"
        raise UsageError(f"--neighbours: video {video!r} is not in the store{hint}")
    i = data.index(video)
    s, T = int(data.offsets[i]), int(data.lengths()[i])
    if not 0 <= frame < T:
        raise UsageError(f"--neighbours: frame {frame} is out of range for {video} "
                         f"(0..{T - 1}, 0-based)")
    if not data.face[s + frame]:
        faces = np.flatnonzero(data.face[s:s + T])
        if faces.size:
            near = faces[np.argsort(np.abs(faces - frame), kind="stable")[:2]]
            hint = f"; nearest face frames: {', '.join(map(str, sorted(near.tolist())))}"
        else:
            hint = "; this video has no face frame at all"
        raise UsageError(f"--neighbours: {video} frame {frame} has no face (no embedding){hint}")
    return s + frame


def nearest(data: LoadedStore, row: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` face rows most cosine-similar to ``row`` (itself excluded): (rows, similarity),
    most similar first, ties by row."""
    q = data.emb[row].astype(np.float32)
    q /= max(float(np.linalg.norm(q)), 1e-12)
    cand_rows, cand_sims = [], []
    n = len(data.label)
    with progress(total=n, desc="neighbours", unit="frame") as bar:
        for s in range(0, n, SIMILARITY_CHUNK):
            e = min(n, s + SIMILARITY_CHUNK)
            x = data.emb[s:e].astype(np.float32)                      # (C, D)
            norms = np.linalg.norm(x, axis=1)
            sim = (x @ q) / np.maximum(norms, 1e-12)                  # (C,)
            sim[~data.face[s:e]] = -np.inf
            if s <= row < e:
                sim[row - s] = -np.inf
            keep = np.flatnonzero(np.isfinite(sim))
            if keep.size > k:
                keep = keep[np.argpartition(-sim[keep], k - 1)[:k]]
            cand_rows.append(keep + s)
            cand_sims.append(sim[keep])
            bar.update(e - s)
    rows, sims = np.concatenate(cand_rows), np.concatenate(cand_sims)
    order = np.lexsort((rows, -sims))[:k]
    return rows[order], sims[order]


def locate(data: LoadedStore, row: int) -> tuple[str, int]:
    """Row of the loaded store -> (video, 0-based frame)."""
    i = int(np.searchsorted(data.offsets, row, side="right") - 1)
    return data.videos[i], row - int(data.offsets[i])


# ------------------------------------------------------------------------------------- crops
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
        # crop_path is relative to the manifest's folder unless absolute (pipeline.manifest)
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


def strip_size(n_tiles: int) -> tuple[int, int]:
    """(width, height) in px of a thumbnail strip of ``n_tiles`` frames."""
    return n_tiles * (TILE + PAD) + PAD, TILE + CAPTION + 2 * PAD


def thumbnail_strip(tiles: list[dict], path: Path) -> Path:
    """One row of thumbnails, the query first (blue frame), each captioned with video, frame,
    similarity and label; a frame without a crop is a grey placeholder saying so."""
    from PIL import Image, ImageDraw, ImageFont

    W, H = strip_size(len(tiles))
    img = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for j, t in enumerate(tiles):
        x0, y0 = PAD + j * (TILE + PAD), PAD
        thumb = None
        if t["crop"] is not None:
            try:
                with Image.open(t["crop"]) as im:
                    thumb = im.convert("RGB").resize((TILE, TILE), Image.BILINEAR)
            except OSError as e:
                log.warning("%s: unreadable crop (%s); drawn as a placeholder", t["crop"], e)
        if thumb is None:
            draw.rectangle([x0, y0, x0 + TILE - 1, y0 + TILE - 1], fill=(200, 200, 200))
            draw.text((x0 + 6, y0 + TILE // 2 - 6), "no crop found", fill=(80, 80, 80), font=font)
        else:
            img.paste(thumb, (x0, y0))
        if j == 0:
            draw.rectangle([x0, y0, x0 + TILE - 1, y0 + TILE - 1], outline=(30, 90, 220), width=3)
        head = "query" if j == 0 else f"#{j}  sim {t['similarity']:.4f}"
        caption = [head, f"{t['video']}:{t['frame']}", t["label"]]
        for li, text in enumerate(caption):
            draw.text((x0 + 2, y0 + TILE + 2 + 13 * li), _fit(draw, text, font), fill="black",
                      font=font)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path


def _fit(draw, text: str, font) -> str:
    """Shorten ``text`` with an ellipsis until it fits a tile's width."""
    while len(text) > 1 and draw.textlength(text, font=font) > TILE - 4:
        text = text[:-2] + "…"
    return text


# ---------------------------------------------------------------------------------- projection
def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) -> (N, 2) scores on the first two principal axes, and their explained-variance
    ratios. Axis signs are fixed (largest loading positive) so reruns give the same picture."""
    x = x.astype(np.float64)
    x = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    axes = vt[:2]                                                   # (2, D)
    axes *= np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])[:, None]
    var = s ** 2
    ratio = var[:2] / var.sum() if var.sum() > 0 else np.zeros(2)
    coords = x @ axes.T
    if coords.shape[1] < 2:                                         # D == 1 or N == 1
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
        ratio = np.pad(ratio, (0, 2 - len(ratio)))
    return coords, ratio


def project(x: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, str, str]:
    """(coords (N, 2), method used, axis note)."""
    if method in ("auto", "umap"):
        try:
            import umap
        except ImportError:
            pass
        else:
            reducer = umap.UMAP(n_components=2, metric="cosine", random_state=seed)
            return reducer.fit_transform(x.astype(np.float32)), "umap", ""
    coords, ratio = pca_2d(x)
    return coords, "pca", f"PC1 {100 * ratio[0]:.1f}%, PC2 {100 * ratio[1]:.1f}% of variance"


def plot_projection(coords: np.ndarray, labels: np.ndarray, path: Path, title: str,
                    axis_note: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=PROJECTION_SIZE_IN)
    tab10 = plt.get_cmap("tab10").colors
    colours = [tab10[i] for i in (0, 1, 2, 3, 4, 5, 6, 9)]     # tab10's grey (7) marks -1 only
    groups = [(IGNORE, "unlabelled (-1)", (0.75, 0.75, 0.75))] + \
        [(c, CLASSES[c], colours[c]) for c in range(NUM_CLASSES)]
    size = max(2.0, min(12.0, 6000.0 / max(len(coords), 1)))
    for cid, name, colour in groups:
        m = labels == cid
        if m.any():
            ax.scatter(coords[m, 0], coords[m, 1], s=size, color=colour, alpha=0.6,
                       linewidths=0, label=f"{name} ({int(m.sum())})")
    ax.set_title(title)
    ax.set_xlabel("dim 1" + (f"  ({axis_note})" if axis_note else ""))
    ax.set_ylabel("dim 2")
    ax.legend(loc="best", fontsize=8, markerscale=max(1.0, 20.0 / size) ** 0.5)
    ax.grid(alpha=0.2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=PROJECTION_DPI, format="png")
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------- command
def inspect_command(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    if args.k < 1:
        raise UsageError(f"--k {args.k}: must be at least 1")
    if args.max_points < 2:
        raise UsageError(f"--max-points {args.max_points}: must be at least 2")
    if args.crops and not Path(args.crops).is_dir():
        raise UsageError(f"--crops {args.crops}: not a folder")
    if args.manifest and not Path(args.manifest).is_file():
        raise UsageError(f"--manifest {args.manifest}: file not found")
    if args.project and args.method == "umap" and importlib.util.find_spec("umap") is None:
        raise UsageError("--method umap: the umap package is not installed (use --method pca)")
    store_path = Path(args.store)
    store = EmbeddingStore.open(store_path)
    data = store.load()
    query = parse_query(args.neighbours, data) if args.neighbours else None
    if args.project and not data.face.any():
        raise UsageError(f"{store_path}: no face frames to project")
    out = Path(args.out)

    stats = store_stats(data, store.meta)
    print(format_stats(stats, store_path))
    report: dict = {"store": str(store_path), **stats}
    done = []

    if query is not None:
        rows, sims = nearest(data, query, args.k)
        q_video, q_frame = locate(data, query)
        hits = []
        for r, sim in zip(rows.tolist(), sims.tolist()):
            video, frame = locate(data, r)
            hits.append({"video": video, "frame": frame, "similarity": round(float(sim), 6),
                         "label": label_name(int(data.label[r]))})
        q_label = label_name(int(data.label[query]))
        print(f"\n{len(hits)} nearest face frames to {q_video}:{q_frame} ({q_label}) by cosine "
              f"similarity:")
        vw = max([len("video")] + [len(h["video"]) for h in hits])
        print(f"{'rank':>4}  {'video':<{vw}}  {'frame':>6}  {'similarity':>10}  label")
        for j, h in enumerate(hits, 1):
            print(f"{j:>4}  {h['video']:<{vw}}  {h['frame']:>6}  {h['similarity']:>10.4f}  "
                  f"{h['label']}")
        finder = find_crops(store_path, data, sorted({q_video, *(h["video"] for h in hits)}),
                            args.manifest, args.crops)
        tiles = [{"video": q_video, "frame": q_frame, "label": q_label, "similarity": 1.0}] + hits
        for t in tiles:
            t["crop"] = finder(t["video"], t["frame"])
        missing = sum(t["crop"] is None for t in tiles)
        if missing:
            where = f"in {finder.source}" if finder.source else \
                "(no manifest found beside the store; pass --manifest FILE or --crops DIR)"
            log.warning("no crop image for %d of %d frames %s; drawn as placeholders",
                        missing, len(tiles), where)
        strip = thumbnail_strip(tiles, out / f"neighbours_{q_video}_{q_frame}.png")
        report["neighbours"] = {"query": {"video": q_video, "frame": q_frame, "label": q_label},
                                "k": args.k, "hits": hits, "strip": str(strip),
                                "crops_found": len(tiles) - missing}
        done.append(f"{len(hits)} neighbours of {q_video}:{q_frame} -> {strip}")

    if args.project:
        faces = np.flatnonzero(data.face)
        rng = np.random.default_rng(cfg.seed)
        picked = np.sort(rng.choice(faces, size=args.max_points, replace=False)) \
            if faces.size > args.max_points else faces
        coords, method, note = project(data.emb[picked], args.method, cfg.seed)
        labels = data.label[picked].astype(np.int64)
        png = plot_projection(coords, labels, out / f"projection_{method}.png",
                              f"{store.encoder_key}: {len(picked)} of {faces.size} face frames "
                              f"({method.upper()})", note)
        import pandas as pd

        owner = np.searchsorted(data.offsets, picked, side="right") - 1
        table = pd.DataFrame({"video": np.asarray(data.videos, dtype=object)[owner],
                              "frame": picked - data.offsets[owner],
                              "label": labels, "label_name": [label_name(int(x)) for x in labels],
                              "x": coords[:, 0], "y": coords[:, 1]})
        csv = out / f"projection_{method}.csv"
        with atomic_path(csv) as tmp:
            table.to_csv(tmp, index=False)
        report["projection"] = {"method": method, "points": int(len(picked)),
                                "face_frames": int(faces.size), "seed": cfg.seed, "png": str(png),
                                "csv": str(csv), "note": note}
        done.append(f"{method} projection of {len(picked)} face frames -> {png}, {csv.name}")

    if args.export_h5:
        h5 = store.export_h5(args.export_h5)
        report["export_h5"] = str(h5)
        done.append(f"HDF5 -> {h5}")
    if args.json:
        write_json(args.json, report)
        done.append(f"JSON -> {args.json}")

    summary(f"inspect: {stats['videos']} videos, {stats['frames']} frames "
            f"({stats['no_face_pct']:.1f}% no face), dim {stats['dim']}, key "
            f"{stats['encoder_key']}" + "".join(f"; {d}" for d in done))
    return EXIT_OK
