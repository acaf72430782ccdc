"""The report page as a user sees it: headless Chromium loads ``RUN/report/index.html`` of a tiny
stage-2 run, every figure must decode in the browser (and be the PNG the report embedded), the
page must not scroll sideways, and a screenshot must show something (not one flat colour).

Skipped, with the reason, when no ``chromium`` / ``chromium-browser`` is on PATH or it cannot
start here (sandbox, missing libraries): ``.ci/run`` installs it best-effort.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_pipeline.app.cli import main
from tests.conftest import make_store
from tests.test_stage2_train import SMALL

TIMEOUT = 60
WIDTH, HEIGHT = 1280, 2000
NARROW = 800                      # the DOM check runs at this width: no sideways scrolling there

# Runs after the page's load event and writes what the browser itself saw into the DOM, which
# --dump-dom then prints: each image's decoded size (0 x 0 = broken) and the page's widths.
CHECK_JS = """<script>
window.addEventListener('load', function () {
  var out = document.createElement('pre');
  out.id = 'render-check';
  out.textContent = JSON.stringify({
    images: Array.prototype.map.call(document.images, function (i) {
      return {alt: i.alt, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight};
    }),
    scrollWidth: document.documentElement.scrollWidth,
    clientWidth: document.documentElement.clientWidth});
  document.body.appendChild(out);
});
</script>"""


def _chromium_cmd(exe: str, profile: Path, *args: str) -> list[str]:
    # --no-sandbox: CI and containers run as root; the background-networking flags keep it from
    # waiting on a closed network
    return [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run Chromium in its own session; on timeout the whole process group is killed (the
    renderer and GPU helpers too), then TimeoutExpired is raised."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    """A Chromium that starts and renders a trivial page here, else the module is skipped."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium / chromium-browser not on PATH (apt-get install chromium)")
    d = tmp_path_factory.mktemp("chromium")
    probe = d / "probe.html"
    probe.write_text("<!doctype html><p id=probe>chromium-ok</p>")
    try:
        r = _run(_chromium_cmd(exe, d / "profile", "--dump-dom", probe.as_uri()))
    except (subprocess.TimeoutExpired, OSError) as e:
        pytest.skip(f"{exe} could not start here: {e!r}")
    if r.returncode != 0 or "chromium-ok" not in r.stdout:
        pytest.skip(f"{exe} could not render a trivial page here (rc {r.returncode}): "
                    f"{r.stderr.strip()[-1500:]}")
    return exe, d


@pytest.fixture(scope="module")
def report_page(chromium, tmp_path_factory):
    """index.html of a 1-epoch stage-2 run on 2 train / 2 val videos (5 figures)."""
    root = tmp_path_factory.mktemp("render")
    store = make_store(root / "store", n_train=2, n_val=2)
    run = root / "run"
    assert main(["stage2", "train", "--store", str(store), "--out", str(run), *SMALL,
                 "stage2.train.epochs=1", "stage2.post.smooth_window=5",
                 "log_level=WARNING"]) == 0
    assert main(["report", str(run), "log_level=WARNING"]) == 0
    return run / "report" / "index.html"


class _Images(HTMLParser):
    def __init__(self, text: str):
        super().__init__()
        self.images: list[dict] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))


def _png(src: str) -> Image.Image:
    head, _, data = src.partition(",")
    assert head == "data:image/png;base64", head[:60]
    raw = base64.b64decode(data, validate=True)
    with Image.open(io.BytesIO(raw)) as im:
        assert im.format == "PNG"
        im.verify()
    im = Image.open(io.BytesIO(raw))
    im.load()
    return im


def test_every_figure_decodes_in_chromium_and_the_page_fits(chromium, report_page, tmp_path):
    exe, _ = chromium
    written = report_page.read_text()
    n_figures = written.count("<img ")
    assert n_figures == 5                       # curves, F1 bars, confusion, 2 timelines

    # the same page plus the load-time check (the report itself is left untouched)
    checked = tmp_path / "index.html"
    checked.write_text(written.replace("</body>", CHECK_JS + "</body>"))
    r = _run(_chromium_cmd(exe, tmp_path / "profile", f"--window-size={NARROW},1000",
                           "--dump-dom", checked.as_uri()))
    assert r.returncode == 0, r.stderr[-2000:]
    dom = r.stdout
    assert "<h1>Run report: run</h1>" in dom
    m = re.search(r'<pre id="render-check">(.*?)</pre>', dom, re.S)
    assert m, "the load-time check did not run (page did not finish loading?)"
    seen = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&")
                      .replace("&lt;", "<").replace("&gt;", ">"))

    imgs = _Images(dom).images
    assert len(imgs) == len(seen["images"]) == n_figures
    for tag, browser in zip(imgs, seen["images"]):
        png = _png(tag["src"])
        assert browser["complete"] and (browser["w"], browser["h"]) == png.size, (
            f"{tag.get('alt')!r}: Chromium decoded {browser['w']}x{browser['h']}, "
            f"the embedded PNG is {png.size[0]}x{png.size[1]}")
        assert browser["alt"] == tag["alt"] and tag["alt"]
    # images scale down and long lines wrap: nothing pushes the page sideways at 800 px
    assert seen["scrollWidth"] <= seen["clientWidth"], seen


def test_screenshot_shows_the_page(chromium, report_page, tmp_path):
    exe, _ = chromium
    shot = tmp_path / "page.png"
    r = _run(_chromium_cmd(exe, tmp_path / "profile", f"--window-size={WIDTH},{HEIGHT}",
                           f"--screenshot={shot}", report_page.as_uri()))
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    with Image.open(shot) as im:
        assert im.format == "PNG" and im.size == (WIDTH, HEIGHT)
        rgb = np.asarray(im.convert("RGB"))
    colours = np.unique(rgb.reshape(-1, 3), axis=0)
    assert len(colours) > 100, f"screenshot is nearly blank: {len(colours)} colour(s)"
    # the heading and header facts are drawn in dark text near the top
    assert (rgb[:300].mean(axis=2) < 80).mean() > 0.001
    # figures (coloured bars, curves, confusion cells) fill the rest of the first screen
    saturated = rgb.max(axis=2).astype(int) - rgb.min(axis=2) > 60
    assert saturated.mean() > 0.01, f"only {saturated.mean():.4f} of the pixels are coloured"
