"""``fer-pipeline report`` through the CLI: a tiny stage-2 run trained on a small store, then the
HTML page checked against the run's own files (f1.json, f1.csv, config.yaml, predictions)."""
import base64
import html
import io
import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fer_pipeline.app.cli import main
from fer_pipeline.io import append_jsonl, write_json, write_text
from fer_pipeline.metrics import F1Report
from stage2_temporal.protocols import f1_row
from tests.conftest import make_store
from tests.test_stage2_train import SMALL

N_VAL = 3


class _Page(HTMLParser):
    """Tags, images (alt + decoded bytes) and text of an HTML page."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: dict[str, int] = {}
        self.images: list[tuple[str, bytes]] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "img":
            a = dict(attrs)
            head, data = a["src"].split(",", 1)
            assert head == "data:image/png;base64"
            self.images.append((a.get("alt", ""), base64.b64decode(data)))

    def handle_data(self, data):
        if data.strip():
            self.text.append(data.strip())

    def timelines(self) -> list[str]:
        return [alt for alt, _ in self.images if "over time" in alt]


def _is_png(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        im.verify()
    with Image.open(io.BytesIO(data)) as im:
        return im.size


def report(capsys, *args) -> tuple[int, str, str]:
    rc = main(["report", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished stage-2 run: 2 epochs on 3 train / N_VAL val videos, smoothing on."""
    root = tmp_path_factory.mktemp("report")
    store = make_store(root / "store", n_train=3, n_val=N_VAL)
    run = root / "run"
    rc = main(["stage2", "train", "--store", str(store), "--out", str(run), *SMALL,
               "stage2.train.epochs=2", "stage2.post.smooth_window=5"])
    assert rc == 0
    return run


def test_stage2_page_holds_the_runs_numbers_and_one_timeline_per_video(run, tmp_path, capsys):
    d = tmp_path / "run"
    shutil.copytree(run, d)
    (d / "learning_curve.png").unlink()              # curves are redrawn from metrics.jsonl
    rc, out, _ = report(capsys, d, "--markdown")
    assert rc == 0
    index = d / "report" / "index.html"
    assert out.strip().splitlines()[-1].startswith("report: stage2 run run:")
    assert str(index) in out.strip().splitlines()[-1]
    text = index.read_text()
    page = _Page(text)

    f1 = json.loads((d / "eval" / "f1.json").read_text())
    assert f"{100 * f1['macro_f1']:.2f}" in page.text
    assert f"{100 * f1['post']['macro_f1']:.2f}" in " ".join(page.text)
    for row in pd.read_csv(d / "eval" / "f1.csv").itertuples(index=False):
        assert f"{row.f1:.2f}" in page.text and str(row.support) in page.text
    assert (d / "git_sha.txt").read_text().strip() in page.text
    assert html.escape((d / "config.yaml").read_text()) in text          # inside <details>
    assert page.tags["details"] >= 1 and page.tags["table"] >= 3

    sizes = [_is_png(data) for _, data in page.images]
    assert all(w >= 600 and h >= 300 for w, h in sizes)
    alts = [alt for alt, _ in page.images]
    assert any("per epoch" in a for a in alts) and any("confusion" in a for a in alts)
    assert any("raw and post-processed" in a for a in alts)
    val = json.loads((d / "stage2.json").read_text())["val_videos"]
    assert len(val) == N_VAL
    assert [a.split(":")[0] for a in page.timelines()] == val

    md = (d / "report" / "report.md").read_text()
    linked = [ln[ln.index("](") + 2:-1] for ln in md.splitlines() if ln.startswith("![")]
    assert len(linked) == len(page.images)
    for name in linked:
        assert _is_png((d / "report" / name).read_bytes())


def test_max_videos_caps_the_timelines_not_the_table(run, tmp_path, capsys):
    d = tmp_path / "run"
    shutil.copytree(run, d, ignore=shutil.ignore_patterns("*.pt", "*.safetensors"))
    rc, out, _ = report(capsys, "--max-videos", "1", d, "log_level=WARNING")
    assert rc == 0 and "1 of 3 video timelines" in out
    page = _Page((d / "report" / "index.html").read_text())
    assert len(page.timelines()) == 1
    for v in json.loads((d / "stage2.json").read_text())["val_videos"]:
        assert v in page.text                                        # per-video table row
    assert not (d / "report" / "report.md").exists()
    assert not [p for p in (d / "report").iterdir() if p.name != "index.html"]


def test_run_without_eval_or_metrics_still_gets_a_page(run, tmp_path, capsys):
    d = tmp_path / "run"
    shutil.copytree(run, d, ignore=shutil.ignore_patterns("*.pt", "*.safetensors", "eval"))
    (d / "metrics.jsonl").unlink()
    rc, out, _ = report(capsys, d)
    assert rc == 0 and "missing piece(s) noted" in out
    page = _Page((d / "report" / "index.html").read_text())
    joined = " ".join(page.text)
    assert "no evaluation yet" in joined and "no per-epoch metrics yet" in joined
    assert "no per-frame predictions" in joined
    assert page.images == []
    assert (d / "git_sha.txt").read_text().strip() in page.text


def test_cut_metrics_line_is_noted_and_the_rest_plotted(run, tmp_path, capsys):
    d = tmp_path / "run"
    shutil.copytree(run, d, ignore=shutil.ignore_patterns("*.pt", "*.safetensors", "eval"))
    with open(d / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_lo')                            # a write cut by a kill
    rc, _, _ = report(capsys, d)
    assert rc == 0
    page = _Page((d / "report" / "index.html").read_text())
    assert "metrics.jsonl: 1 line(s) could not be read and are left out" in page.text
    assert len(page.images) == 1 and _is_png(page.images[0][1])
    rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()[:-1]]
    assert str(len(rows)) in page.text                               # epochs logged


def test_kfold_dir_gets_a_table_and_a_line_per_split(run, tmp_path, capsys):
    out = tmp_path / "kf"
    rows = []
    for name in ("official", "fold-1"):
        shutil.copytree(run, out / name, ignore=shutil.ignore_patterns("*.pt", "*.safetensors"))
        f1 = json.loads((out / name / "eval" / "f1.json").read_text())
        rows.append(f1_row(name, F1Report(np.asarray(f1["confusion"]))))
    pd.DataFrame(rows).to_csv(out / "kfold.csv", index=False)
    rc, summary, _ = report(capsys, out)
    assert rc == 0 and summary.startswith("report: kfold run kf:")
    page = _Page((out / "report" / "index.html").read_text())
    assert page.text.index("official") < page.text.index("fold-1")
    assert f"{rows[0]['Avg']:.2f}" in page.text
    assert len(page.images) == 2 and all(_is_png(data) for _, data in page.images)

    (out / "kfold.csv").unlink()                 # an unfinished kfold: still a folder of runs
    rc, summary, _ = report(capsys, out)
    assert rc == 0 and summary.startswith("report: runs run kf:")
    page = _Page((out / "report" / "index.html").read_text())
    assert {"official", "fold-1"} <= set(page.text) and len(page.images) == 2


def test_stage1_run_gets_config_curves_and_result(tmp_path, capsys):
    d = tmp_path / "s1"
    d.mkdir()
    write_json(d / "run.json", {"stage": "stage1", "created": "2026-01-02T03:04:05",
                                "argv": ["fer-pipeline", "stage1", "pretrain"]})
    write_text(d / "git_sha.txt", "abc123\n")
    write_text(d / "config.yaml", "seed: 3\nstage1:\n  nla: {enabled: true, ce_epochs: 2}\n")
    for e in range(4):
        append_jsonl(d / "metrics.jsonl", {"epoch": e, "train_loss": 2.0 - 0.3 * e,
                                           "val_acc": 0.2 + 0.1 * e, "val_macro_f1": 0.1 * e})
    write_json(d / "result.json", {"val_acc": 0.5, "train_images": 560})
    rc, out, _ = report(capsys, d)
    assert rc == 0 and out.startswith("report: stage1 run s1:")
    page = _Page((d / "report" / "index.html").read_text())
    assert "abc123" in page.text and "2026-01-02T03:04:05" in page.text
    assert "0.5000" in page.text and "560" in page.text
    assert len(page.images) == 1 and _is_png(page.images[0][1])


def test_a_dir_that_is_not_a_run_exits_2_with_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    r = subprocess.run([sys.executable, "-m", "fer_pipeline", "report", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"error: {tmp_path}: not a run directory (no run.json, config.yaml, metrics.jsonl, "
        f"stage2.json, kfold.csv or ablation_runs.csv)"]
    assert not (tmp_path / "report").exists()
    assert main(["report", str(tmp_path / "absent")]) == 2
