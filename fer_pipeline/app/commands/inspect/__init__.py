"""``fer-pipeline inspect STORE``: what an embedding store holds and what its space looks like.

    fer-pipeline inspect artifacts/embeddings/<key>                         counts + per-video table
    fer-pipeline inspect STORE --json stats.json                            the same as JSON
    fer-pipeline inspect STORE --neighbours synth_003:120 --k 10 --out DIR  nearest frames + strip
    fer-pipeline inspect STORE --neighbours synth_003:120 --exclude-query-video    ... other videos
    fer-pipeline inspect STORE --project --out DIR                          2-D map of face frames
    fer-pipeline inspect STORE --export-h5 store.h5                         one HDF5 file

The store is read into memory once (``EmbeddingStore.load``); every report works on that copy.
Images and CSVs go to ``--out`` (default: the current folder). Crops for the thumbnail strip come
from the stage-0 frame manifest (``--manifest``, or one found beside the store's artifacts
folder) or from a ``<video>/<k:05d>.jpg`` folder (``--crops``); frames whose crop cannot be found
are drawn as labelled placeholders.

The code: ``stats`` counts and tabulates the store, ``neighbours`` finds the nearest frames and
draws their strip, ``crops`` finds the crop images for it, ``projection`` makes the 2-D map; this
module runs the parts asked for (the command's arguments are declared in ``fer_pipeline.app.cli``,
so ``--help`` loads none of this).
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
from pathlib import Path

import numpy as np

from fer_pipeline.app.commands.inspect.crops import CropFinder, find_crops
from fer_pipeline.app.commands.inspect.neighbours import (CAPTION, PAD, SIMILARITY_CHUNK, TILE,
                                                      locate, nearest, parse_query, strip_size,
                                                      thumbnail_strip, video_rows)
from fer_pipeline.app.commands.inspect.projection import (PROJECTION_DPI, PROJECTION_SIZE_IN, pca_2d,
                                                      plot_projection, project)
from fer_pipeline.app.commands.inspect.stats import format_stats, label_name, store_stats
from fer_pipeline.cliutil import resolve_config, summary
from fer_pipeline.errors import EXIT_OK, UsageError
from fer_pipeline.io import atomic_path, write_json
from fer_pipeline.store import EmbeddingStore

__all__ = ["CAPTION", "PAD", "PROJECTION_DPI", "PROJECTION_SIZE_IN", "SIMILARITY_CHUNK", "TILE",
           "CropFinder", "find_crops", "format_stats", "inspect_command", "label_name", "locate",
           "nearest", "parse_query", "pca_2d", "plot_projection", "project",
           "store_stats", "strip_size", "thumbnail_strip", "video_rows"]

log = logging.getLogger(__name__)


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
    store.require_complete(args.allow_partial)      # incomplete videos: error, or left out
    data = store.check_finite(store.load(), cfg.stage2.data.bad_frames)   # NaN/Inf rows
    query = parse_query(args.neighbours, data) if args.neighbours else None
    if args.exclude_query_video:
        if query is None:
            raise UsageError("--exclude-query-video: only with --neighbours VIDEO:FRAME")
        start, end = video_rows(data, query)
        if not (data.face[:start].any() or data.face[end:].any()):
            raise UsageError(f"--exclude-query-video: no face frame outside "
                             f"{locate(data, query)[0]} in the store")
    if args.project and not data.face.any():
        raise UsageError(f"{store_path}: no face frames to project")
    out = Path(args.out)

    stats = store_stats(data, store.meta)
    print(format_stats(stats, store_path))
    report: dict = {"store": str(store_path), **stats}
    done = []

    if query is not None:
        rows, sims = nearest(data, query, args.k, exclude_video=args.exclude_query_video)
        q_video, q_frame = locate(data, query)
        hits = []
        for r, sim in zip(rows.tolist(), sims.tolist()):
            video, frame = locate(data, r)
            hits.append({"video": video, "frame": frame, "similarity": round(float(sim), 6),
                         "label": label_name(int(data.label[r]))})
        q_label = label_name(int(data.label[query]))
        scope = f" in videos other than {q_video}" if args.exclude_query_video else ""
        print(f"\n{len(hits)} nearest face frames{scope} to {q_video}:{q_frame} ({q_label}) by "
              f"cosine similarity:")
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
                                "k": args.k, "exclude_query_video": args.exclude_query_video,
                                "hits": hits, "strip": str(strip),
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
