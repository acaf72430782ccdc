"""Decoding: containers, odd sizes, rotation metadata, exact frames, bad files."""
import subprocess

import numpy as np
import pytest

from fer_pipeline.errors import InputError
from fer_pipeline.media import VideoWriter, ffmpeg_exe, probe_video
from stage0_preprocess.decode import iter_frames


def ffmpeg(*args):
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *map(str, args)],
                   check=True)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 40-frame 160x120 mp4 whose frames are numbered by brightness."""
    path = tmp_path_factory.mktemp("dec") / "src.mp4"
    with VideoWriter(path, 160, 120, 25) as w:
        for k in range(40):
            img = np.zeros((120, 160, 3), np.uint8)
            img[:, :80] = 5 * k + 20          # left half: brightness encodes the frame index
            w.write(img)
    return path


@pytest.mark.parametrize("ext,codec", [("avi", ["-c:v", "mpeg4", "-q:v", "2"]),
                                       ("mkv", ["-c:v", "ffv1"]),
                                       ("webm", ["-c:v", "libvpx-vp9", "-deadline", "realtime",
                                                 "-cpu-used", "8", "-b:v", "400k"]),
                                       ("mp4", ["-c:v", "copy"])])
def test_containers_give_every_frame_in_order(source, tmp_path, ext, codec):
    out = tmp_path / f"v.{ext}"
    ffmpeg("-i", source, *codec, out)
    frames = list(iter_frames(out))
    assert len(frames) == 40 == probe_video(out).n_frames
    assert [f.index for f in frames] == list(range(40))
    levels = np.array([f.image[60, 40].mean() for f in frames])
    assert np.all(np.diff(levels) > 0)                       # order preserved, none repeated
    times = np.array([f.time_s for f in frames])
    np.testing.assert_allclose(np.diff(times), 0.04, atol=2e-3)


def test_odd_frame_size(source, tmp_path):
    out = tmp_path / "odd.mkv"
    ffmpeg("-i", source, "-vf", "scale=161:121", "-c:v", "ffv1", out)
    frames = list(iter_frames(out))
    assert len(frames) == 40 and frames[0].image.shape == (121, 161, 3)


def test_rotation_metadata_is_applied(source, tmp_path):
    out = tmp_path / "rot.mp4"
    ffmpeg("-display_rotation", "90", "-i", source, "-c", "copy", out)
    frames = list(iter_frames(out))
    assert len(frames) == 40
    img = frames[10].image
    assert img.shape == (160, 120, 3)                        # upright: width and height swap
    # the bright half was the left half; after a 90-degree display rotation it is top or bottom
    top, bottom = img[:80].mean(), img[80:].mean()
    assert abs(top - bottom) > 20


def test_late_start_stream_keeps_coded_frames(shared_assets):
    path = shared_assets / "videos" / "short_hamilton_clip.mp4"
    assert sum(1 for _ in iter_frames(path)) == 275


@pytest.mark.parametrize("content,needle", [(b"", "file is empty"),
                                            (b"plain text, not a video\n", "not a readable video")])
def test_bad_files(tmp_path, content, needle):
    p = tmp_path / "bad.mp4"
    p.write_bytes(content)
    with pytest.raises(InputError, match=needle) as e:
        list(iter_frames(p))
    assert str(p) in str(e.value)
    with pytest.raises(InputError, match="file not found"):
        list(iter_frames(tmp_path / "nope.mp4"))


def test_truncated_file_reports_where_it_stopped(source, tmp_path):
    # a faststart mp4 cut in half: the readable frames come first, then a clear error
    out = tmp_path / "fs.mp4"
    ffmpeg("-i", source, "-c", "copy", "-movflags", "+faststart", out)
    data = out.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    got = []
    with pytest.raises(InputError) as e:
        for f in iter_frames(cut):
            got.append(f.index)
    assert str(cut) in str(e.value)
    assert got == list(range(len(got)))
