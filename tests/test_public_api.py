"""The package's face: the import name is the distribution's, ``import fer_pipeline`` is light,
and the documented examples of the top-level API run as written (doctest)."""
from __future__ import annotations

import doctest
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"fer_pipeline", "stage0_preprocess", "stage1_image_encoder", "stage2_temporal"}


def test_the_wheel_installs_fer_pipeline_and_no_generic_top_level_package(tmp_path):
    """What ``pip install`` puts into site-packages: the core under its distribution's name
    (no top-level ``pipeline``), the three stage packages, and the data files the package
    needs at run time (presets, the sample video, detector weights, the bundled encoder)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "artifacts", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel, = (tmp_path / "dist").glob("fer_pipeline-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == PACKAGES
    import fer_pipeline

    assert wheel.name.startswith(f"fer_pipeline-{fer_pipeline.__version__}-")
    for needed in ("fer_pipeline/presets/demo.yaml", "fer_pipeline/app/assets/d19.mp4",
                   "stage0_preprocess/weights/retinaface_mobilenet0.25.onnx",
                   "stage1_image_encoder/bundled/ferplus_resnet10t/checkpoint.safetensors"):
        assert needed in names, needed


def test_import_fer_pipeline_is_light_and_serves_the_api_on_first_use():
    code = ("import sys, fer_pipeline as f\n"
            "heavy = sorted(m for m in ('torch', 'pandas', 'cv2', 'fer_pipeline.app') if m in sys.modules)\n"
            "print(f.__version__, heavy)\n"
            "print(callable(f.predict), callable(f.embed), callable(f.load_store), f.Predictor.__name__)\n"
            "print(sorted(set(f.__all__) - set(dir(f))))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stderr
    import fer_pipeline

    assert r.stdout.splitlines() == [f"{fer_pipeline.__version__} []", "True True True Predictor", "[]"]


def test_an_unknown_top_level_name_is_an_attribute_error():
    import fer_pipeline

    with pytest.raises(AttributeError, match="no attribute 'predcit'"):
        fer_pipeline.predcit


def test_nothing_a_user_needs_is_only_below_the_app_layer():
    """The app's Python door is served whole at the top: every name of
    ``fer_pipeline.app.api.__all__`` is ``fer_pipeline.<name>``."""
    import fer_pipeline
    from fer_pipeline.app import api

    assert set(api.__all__) <= set(fer_pipeline.__all__)
    for name in api.__all__:
        assert getattr(fer_pipeline, name) is getattr(api, name)


@pytest.mark.slow
@pytest.mark.parametrize("module", ["fer_pipeline", "fer_pipeline.app.api"])
def test_the_documented_examples_run(module, monkeypatch, tmp_path):
    """The docstrings' examples (``predict`` and ``embed`` on the bundled real video,
    ``load_store``'s error) give what they show."""
    import importlib

    monkeypatch.setenv("FER_NO_PROGRESS", "1")
    monkeypatch.chdir(tmp_path)
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted >= (3 if module == "fer_pipeline" else 12)
    assert result.failed == 0


def test_predict_leaves_out_a_bad_video_and_fails_when_none_is_left(tmp_path):
    import fer_pipeline

    bad = tmp_path / "broken.mp4"
    bad.write_text("not a video")
    with pytest.raises(fer_pipeline.UsageError, match="broken.mp4"):
        fer_pipeline.predict(bad)
    with pytest.raises(fer_pipeline.UsageError, match="no such run directory"):
        fer_pipeline.predict(bad, run=tmp_path / "no_run")


def test_load_store_refuses_incomplete_videos_unless_asked(tmp_path):
    import numpy as np

    import fer_pipeline
    from fer_pipeline.store import EmbeddingStore

    store = EmbeddingStore.create_or_open(tmp_path / "s", "k", {"name": "m"}, 4)
    store.write_video("a", np.ones((3, 4), np.float16), np.zeros(3, np.int8), np.ones(3, bool), {})
    store.expect_videos(["a", "b"])                     # b: asked for, never finished
    with pytest.raises(fer_pipeline.UsageError, match=r"1 video\(s\) incomplete.*\(b\).*allow_partial=True"):
        fer_pipeline.load_store(tmp_path / "s")
    assert fer_pipeline.load_store(tmp_path / "s", allow_partial=True).videos() == ["a"]

