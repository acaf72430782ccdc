"""``fer-pipeline inspect`` on a small store laid out like a pipeline's artifacts folder:
counts, nearest neighbours (+ thumbnail strip from the stage-0 manifest's crops), 2-D
projection, HDF5 export, and one-line errors for bad input."""
import importlib.util
import json
import logging
import re
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fer_pipeline.app.cli import main
from fer_pipeline.app.commands.inspect import PAD, PROJECTION_DPI, PROJECTION_SIZE_IN, TILE, strip_size
from fer_pipeline.labels import CLASSES
from fer_pipeline.manifest import empty_rows, write_manifest
from fer_pipeline.store import EmbeddingStore
from tests.conftest import make_store

CROP_BGR = {"v00": (0, 0, 230), "dups": (0, 230, 0)}     # v00 crops red, dups crops green
N_DUPS = 5


def _query_frame(store):
    face = store.read_video("v00").face
    return int(np.flatnonzero(face[5:])[0] + 5)


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    """``<root>/embeddings/synthkey`` (the store) and ``<root>/stage0/manifest.parquet`` with crops
    for v00 and dups only. ``dups`` holds near-copies of one v00 frame at rows 2..6."""
    root = tmp_path_factory.mktemp("inspect")
    store_path = make_store(root / "embeddings" / "synthkey", n_train=3, n_val=2, seed=3)
    store = EmbeddingStore.open(store_path, mode="a")
    q = _query_frame(store)
    src = store.read_video("v00").emb[q].astype(np.float32)
    rng = np.random.default_rng(7)
    T = 12
    emb = rng.standard_normal((T, store.dim)) * 3
    emb[2:2 + N_DUPS] = src * (1 + 1e-3 * rng.standard_normal((N_DUPS, store.dim)))
    face = np.ones(T, bool)
    face[10] = False
    emb[10] = 0
    label = np.array([0, 1, 4, 4, 4, 4, -1, 2, 3, 5, 6, 7], np.int8)
    store.write_video("dups", emb.astype(np.float16), label, face, {"split": "val", "fps": 30.0})

    s0 = root / "stage0"
    rows = []
    for video, bgr in CROP_BGR.items():
        rec = store.read_video(video)
        r = empty_rows(video, len(rec.label), rec.attrs["split"], np.arange(len(rec.label)) / 25)
        r["has_face"] = rec.face
        r["label"] = rec.label
        for k in np.flatnonzero(rec.face):
            rel = f"crops/{video}/{k + 1:05d}.jpg"      # relative to the manifest's folder
            (s0 / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(s0 / rel), np.full((96, 96, 3), bgr, np.uint8))
            r.loc[k, "crop_path"] = rel
        rows.append(r)
    write_manifest(s0 / "manifest.parquet", rows)
    return {"root": root, "store": store_path, "query": q}


def run(*args):
    """``fer-pipeline inspect ...`` in this process -> exit code. The logging handler the command
    installs is removed afterwards so the next call logs to that test's captured stderr."""
    try:
        return main(["inspect", *map(str, args)])
    finally:
        root = logging.getLogger()
        for h in [h for h in root.handlers if getattr(h, "_fer", False)]:
            root.removeHandler(h)


def _all_videos(store_path):
    store = EmbeddingStore.open(store_path)
    return {v: store.read_video(v) for v in store.videos()}


def test_counts_and_per_video_table_match_the_store(art, tmp_path, capsys):
    assert run(art["store"], "--json", tmp_path / "s.json") == 0
    out = capsys.readouterr().out
    recs = _all_videos(art["store"])
    labels = np.concatenate([r.label for r in recs.values()])
    faces = np.concatenate([r.face for r in recs.values()])
    report = json.loads((tmp_path / "s.json").read_text())

    assert report["videos"] == len(recs) == 6 and report["frames"] == len(labels)
    assert report["dim"] == 16 and report["encoder_key"] == "synthkey" and report["dtype"] == "float16"
    assert report["labels"] == {**{c: int((labels == i).sum()) for i, c in enumerate(CLASSES)},
                                "ignored (-1)": int((labels == -1).sum())}
    assert report["no_face_pct"] == pytest.approx(100 * (~faces).mean())
    assert re.search(rf"^videos\s+{len(recs)}$", out, re.M)
    assert re.search(rf"^frames\s+{len(labels)}\s+\({faces.sum()} with a face, "
                     rf"{100 * (~faces).mean():.1f}% no face\)$", out, re.M)
    assert re.search(r"^embedding\s+dim 16, float16$", out, re.M)
    assert re.search(r"^encoder key\s+synthkey", out, re.M)
    for i, c in enumerate(CLASSES):
        assert re.search(rf"^\s+{c}\s+{(labels == i).sum()}\s", out, re.M), c
    assert re.search(rf"^\s+ignored \(-1\)\s+{(labels == -1).sum()}\s", out, re.M)

    assert [r["video"] for r in report["per_video"]] == sorted(recs)
    for row in report["per_video"]:
        rec = recs[row["video"]]
        annotated = rec.label[rec.label >= 0]
        top = CLASSES[np.bincount(annotated, minlength=8).argmax()]
        assert row["frames"] == len(rec.label) and row["split"] == rec.attrs["split"]
        assert row["face_pct"] == pytest.approx(100 * rec.face.mean())
        assert row["annotated_pct"] == pytest.approx(100 * annotated.size / len(rec.label))
        assert row["fps"] == rec.attrs["fps"] and row["top_label"] == top
        assert re.search(rf"^{row['video']}\s+{row['split']}\s+{row['frames']}\s+"
                         rf"{row['fps']:.2f}\s+{row['face_pct']:.1f}\s+{row['annotated_pct']:.1f}"
                         rf"\s+{top}$", out, re.M), row["video"]
    assert out.splitlines()[-1].startswith(f"inspect: 6 videos, {len(labels)} frames")


def _tile_rgb(img, j):
    """Mean RGB of the centre of the j-th thumbnail of a strip."""
    x, y = PAD + j * (TILE + PAD) + TILE // 2, PAD + TILE // 2
    return np.asarray(img)[y - 20:y + 20, x - 20:x + 20].reshape(-1, 3).mean(axis=0)


def test_neighbours_find_the_near_copies_sorted_with_a_strip_of_crops(art, tmp_path, capsys, caplog):
    q, k = art["query"], 8
    assert run(art["store"], "--neighbours", f"v00:{q}", "--k", k, "--out", tmp_path,
               "--json", tmp_path / "n.json") == 0
    out = capsys.readouterr().out
    nb = json.loads((tmp_path / "n.json").read_text())["neighbours"]
    hits = nb["hits"]
    sims = [h["similarity"] for h in hits]

    # brute force over every face frame of the store, query excluded
    recs = _all_videos(art["store"])
    qv = recs["v00"].emb[q].astype(np.float32)
    brute = []
    for v, rec in recs.items():
        x = rec.emb.astype(np.float32)
        s = x @ qv / (np.linalg.norm(x, axis=1) * np.linalg.norm(qv) + 1e-12)
        brute += [(float(s[f]), v, int(f)) for f in np.flatnonzero(rec.face) if (v, f) != ("v00", q)]
    brute.sort(key=lambda t: -t[0])
    assert {(h["video"], h["frame"]) for h in hits} == {(v, f) for _, v, f in brute[:k]}
    by_frame = {(v, f): s for s, v, f in brute}
    np.testing.assert_allclose(sims, [by_frame[h["video"], h["frame"]] for h in hits], atol=1e-4)

    assert len(hits) == k and sims == sorted(sims, reverse=True)
    assert {(h["video"], h["frame"]) for h in hits[:N_DUPS]} == {("dups", f) for f in range(2, 2 + N_DUPS)}
    assert min(sims[:N_DUPS]) > 0.999 and max(sims[N_DUPS:]) < 0.999
    assert all(h["label"] == (CLASSES[recs[h["video"]].label[h["frame"]]]
                              if recs[h["video"]].label[h["frame"]] >= 0 else "unlabelled") for h in hits)
    table = re.findall(r"^\s+(\d+)\s+(\S+)\s+(\d+)\s+([0-9.]+)\s+(\S+)$", out, re.M)
    assert [(t[1], int(t[2])) for t in table] == [(h["video"], h["frame"]) for h in hits]

    # the strip: query (red v00 crop) + near copies (green dups crops) + placeholders for the
    # videos the manifest does not cover, with a warning saying so
    strip = tmp_path / f"neighbours_v00_{q}.png"
    with Image.open(strip) as img:
        img.verify()
    with Image.open(strip) as img:
        assert img.size == strip_size(k + 1)
        rgb = [_tile_rgb(img.convert("RGB"), j) for j in range(k + 1)]
    assert rgb[0][0] > 180 and rgb[0][1] < 60                      # red query crop
    for j, h in enumerate(hits, 1):
        if h["video"] == "dups":
            assert rgb[j][1] > 180 and rgb[j][0] < 60, j            # green dups crop
        elif h["video"] != "v00":
            assert np.all(np.abs(rgb[j] - 200) < 30), j             # grey placeholder
    covered = sum(h["video"] in CROP_BGR for h in hits) + 1
    assert nb["crops_found"] == covered
    warned = any("drawn as placeholders" in r.getMessage() for r in caplog.records)
    assert warned == (covered < k + 1)


def test_exclude_query_video_finds_similar_frames_in_other_videos_only(art, tmp_path, capsys):
    """``dups`` rows 2..6 are near copies of one v00 frame: from dups:2 the plain search returns
    its own video's copies (and the original) first; with --exclude-query-video no dups frame is
    left and the v00 original comes first, the hits being exactly the brute-force top k of the other videos."""
    k = 6
    assert run(art["store"], "--neighbours", "dups:2", "--k", k, "--out", tmp_path,
               "--json", tmp_path / "plain.json") == 0
    plain = json.loads((tmp_path / "plain.json").read_text())["neighbours"]
    assert plain["exclude_query_video"] is False
    assert {(h["video"], h["frame"]) for h in plain["hits"][:N_DUPS]} == \
        {("dups", f) for f in range(3, 2 + N_DUPS)} | {("v00", art["query"])}
    capsys.readouterr()

    assert run(art["store"], "--neighbours", "dups:2", "--k", k, "--exclude-query-video",
               "--out", tmp_path, "--json", tmp_path / "other.json") == 0
    out = capsys.readouterr().out
    nb = json.loads((tmp_path / "other.json").read_text())["neighbours"]
    hits = nb["hits"]
    assert nb["exclude_query_video"] is True and len(hits) == k
    assert all(h["video"] != "dups" for h in hits)
    assert (hits[0]["video"], hits[0]["frame"]) == ("v00", art["query"]) and hits[0]["similarity"] > 0.999

    recs = _all_videos(art["store"])
    qv = recs["dups"].emb[2].astype(np.float32)
    brute = []
    for v, rec in recs.items():
        if v == "dups":
            continue
        x = rec.emb.astype(np.float32)
        sim = x @ qv / (np.linalg.norm(x, axis=1) * np.linalg.norm(qv) + 1e-12)
        brute += [(float(sim[f]), v, int(f)) for f in np.flatnonzero(rec.face)]
    brute.sort(key=lambda t: -t[0])
    assert [(h["video"], h["frame"]) for h in hits] == [(v, f) for _, v, f in brute[:k]]
    assert f"{k} nearest face frames in videos other than dups to dups:2" in out
    table = re.findall(r"^\s+(\d+)\s+(\S+)\s+(\d+)\s+([0-9.]+)\s+(\S+)$", out, re.M)
    assert [(t[1], int(t[2])) for t in table] == [(h["video"], h["frame"]) for h in hits]
    with Image.open(tmp_path / "neighbours_dups_2.png") as img:   # query + k hits
        assert img.size == strip_size(k + 1)


def test_exclude_query_video_in_a_one_video_store_is_a_usage_error(tmp_path, capsys):
    store = make_store(tmp_path / "one", n_train=1, n_val=0, seed=5)
    frame = int(np.flatnonzero(EmbeddingStore.open(store).read_video("v00").face)[0])
    assert run(store, "--neighbours", f"v00:{frame}", "--exclude-query-video") == 2
    cap = capsys.readouterr()
    assert cap.out == "" and "no face frame outside v00" in cap.err


def test_no_crops_anywhere_gives_placeholders_and_a_warning(art, tmp_path, caplog):
    empty = tmp_path / "nocrops"
    empty.mkdir()
    assert run(art["store"], "--neighbours", "dups:3", "--k", 3, "--crops", empty,
               "--out", tmp_path) == 0
    with Image.open(tmp_path / "neighbours_dups_3.png") as img:
        assert img.size == strip_size(4)
        assert all(np.all(np.abs(_tile_rgb(img.convert("RGB"), j) - 200) < 30) for j in range(4))
    warn = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"no crop image for 4 of 4 frames in {empty}" in m for m in warn), warn


def test_projection_png_and_csv(art, tmp_path, capsys):
    from sklearn.decomposition import PCA

    assert run(art["store"], "--project", "--method", "pca", "--max-points", 300,
               "--out", tmp_path) == 0
    assert "pca projection of 300 face frames" in capsys.readouterr().out.splitlines()[-1]
    with Image.open(tmp_path / "projection_pca.png") as img:
        img.verify()
    with Image.open(tmp_path / "projection_pca.png") as img:
        w, h = PROJECTION_SIZE_IN
        assert img.size == (round(w * PROJECTION_DPI), round(h * PROJECTION_DPI))
    table = pd.read_csv(tmp_path / "projection_pca.csv")
    assert len(table) == 300 and not table.duplicated(["video", "frame"]).any()
    recs = _all_videos(art["store"])
    assert all(recs[v].face[f] for v, f in zip(table.video, table.frame))
    assert all(recs[v].label[f] == lab for v, f, lab in zip(table.video, table.frame, table.label))
    # the coordinates are the first two principal components of exactly these frames
    x = np.stack([recs[v].emb[f].astype(np.float64) for v, f in zip(table.video, table.frame)])
    ref = PCA(2).fit_transform(x)
    got = table[["x", "y"]].to_numpy()
    np.testing.assert_allclose(np.abs(got), np.abs(ref), atol=1e-6)

    again = tmp_path / "again"
    assert run(art["store"], "--project", "--method", "pca", "--max-points", 300, "--out", again) == 0
    pd.testing.assert_frame_equal(pd.read_csv(again / "projection_pca.csv"), table)


def test_projection_colours_are_the_project_class_colours(art, tmp_path, monkeypatch):
    """Each class is drawn in its colour of ``fer_pipeline.plots.CLASS_COLOR`` (the timelines' and F1
    bars' colours), unlabelled frames in ``UNLABELLED_COLOR``: recorded from the scatter calls
    the command makes."""
    from matplotlib.axes import Axes
    from matplotlib.colors import to_rgb

    from fer_pipeline.plots import CLASS_COLOR, UNLABELLED_COLOR

    drawn = {}
    scatter = Axes.scatter

    def record(self, *a, **kw):
        drawn[kw["label"].rsplit(" (", 1)[0]] = to_rgb(kw["color"])
        return scatter(self, *a, **kw)

    monkeypatch.setattr(Axes, "scatter", record)
    assert run(art["store"], "--project", "--method", "pca", "--out", tmp_path) == 0
    present = set(pd.read_csv(tmp_path / "projection_pca.csv").label_name)
    assert set(CLASSES) <= present                          # every class is drawn
    assert {n: c for n, c in drawn.items() if n in CLASSES} == \
        {n: to_rgb(CLASS_COLOR[n]) for n in CLASSES}
    assert drawn["unlabelled (-1)"] == to_rgb(UNLABELLED_COLOR)


def test_export_h5_round_trips(art, tmp_path):
    import h5py

    assert run(art["store"], "--export-h5", tmp_path / "s.h5") == 0
    recs = _all_videos(art["store"])
    with h5py.File(tmp_path / "s.h5") as f:
        assert f.attrs["encoder_key"] == "synthkey" and sorted(f["videos"]) == sorted(recs)
        for v, rec in recs.items():
            np.testing.assert_array_equal(f["videos"][v]["emb"][:], rec.emb)
            np.testing.assert_array_equal(f["videos"][v]["label"][:], rec.label)
            np.testing.assert_array_equal(f["videos"][v]["face"][:], rec.face)
            assert f["videos"][v].attrs["split"] == rec.attrs["split"]


BAD = [
    (["{tmp}"], "no embedding store here"),
    (["{store}", "--neighbours", "nope:3"], "video 'nope' is not in the store"),
    (["{store}", "--neighbours", "v000:3"], "close names: v00"),
    (["{store}", "--neighbours", "dups:12"], "frame 12 is out of range for dups (0..11"),
    (["{store}", "--neighbours", "dups:-1"], "frame -1 is out of range"),
    (["{store}", "--neighbours", "dups:10"], "dups frame 10 has no face"),
    (["{store}", "--neighbours", "dups"], "expected VIDEO:FRAME"),
    (["{store}", "--neighbours", "dups:x"], "FRAME must be an integer"),
    (["{store}", "--neighbours", "dups:3", "--k", "0"], "--k 0: must be at least 1"),
    (["{store}", "--neighbours", "dups:3", "--manifest", "{tmp}/none.parquet"], "file not found"),
    (["{store}", "--neighbours", "dups:3", "--crops", "{tmp}/none"], "not a folder"),
    (["{store}", "--exclude-query-video"], "--exclude-query-video: only with --neighbours"),
]
if importlib.util.find_spec("umap") is None:
    BAD.append((["{store}", "--project", "--method", "umap"], "umap package is not installed"))


@pytest.mark.parametrize("argv, message", BAD, ids=[m for _, m in BAD])
def test_bad_input_is_one_line_and_exit_2(art, tmp_path, capsys, argv, message):
    rc = run(*[a.format(tmp=tmp_path, store=art["store"]) for a in argv])
    cap = capsys.readouterr()
    assert rc == 2
    assert cap.err.strip().splitlines() == [cap.err.strip()] and cap.err.startswith("error: ")
    assert message in cap.err
    assert cap.out == ""                                  # nothing printed before the error


def test_console_run_prints_the_summary(art, tmp_path):
    cmd = [sys.executable, "-m", "fer_pipeline", "inspect", str(art["store"]),
           "--neighbours", "dups:2", "--k", "3", "--out", str(tmp_path)]
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert ok.stdout.splitlines()[-1].startswith("inspect: 6 videos,")
    assert "3 neighbours of dups:2" in ok.stdout.splitlines()[-1]
    with Image.open(tmp_path / "neighbours_dups_2.png") as img:
        assert img.size == strip_size(4)
