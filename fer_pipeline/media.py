"""ffmpeg plumbing shared by the demo-data generator and stage 0.

The ffmpeg binary comes from ``$FFMPEG_BINARY``, the system ``PATH``, or the static build
shipped by the ``imageio-ffmpeg`` wheel (which has no ffprobe, so metadata is read from
``ffmpeg -i`` and ``-f framecrc`` output instead).
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import ffmpeg  # ffmpeg-python
import numpy as np

from fer_pipeline.errors import InputError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")
# an mp4/mov whose index (moov atom, written at the end unless +faststart) was cut off
MOOV_MISSING = "truncated or missing its index (moov atom)"
# top-level ISO-BMFF box types an mp4/mov file starts with; anything else is not an mp4 at all
_MP4_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid"}


def moov_reason(path: str | Path, fallback: str) -> str:
    """ffmpeg says "moov atom not found" for any file its mp4 demuxer cannot index, including
    a text file named .mp4. Blame the index only when the file really starts like an mp4."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return fallback
    return MOOV_MISSING if head[4:8] in _MP4_BOXES else fallback


@functools.cache
def ffmpeg_exe() -> str:
    env = os.environ.get("FFMPEG_BINARY")
    if env:
        return env
    system = shutil.which("ffmpeg")
    if system:
        return system
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def check_readable(path: str | Path) -> Path:
    """The path, or ``InputError`` saying why it cannot be read as a file."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise InputError(path, "broken symbolic link")
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a folder, not a video file")
    if not os.access(path, os.R_OK):
        raise InputError(path, "permission denied")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty (0 bytes)")
    return path


@dataclass(frozen=True)
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float
    n_frames: int
    times: np.ndarray  # (n_frames,) presentation time of each coded frame, seconds


def _stream_header(path: Path) -> tuple[int, int, float]:
    """Width, height and nominal fps of the first video stream, parsed from ``ffmpeg -i``."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                          capture_output=True, text=True)
    text = proc.stderr
    line = next((ln for ln in text.splitlines() if re.search(r"Stream #\S+.*: Video:", ln)), None)
    if line is None:
        if "moov atom not found" in text:
            raise InputError(path, moov_reason(path, "not a readable video (no video container "
                                                     "header)"))
        reason = text.strip().splitlines()[-1] if text.strip() else "ffmpeg could not open it"
        if "At least one output file" in reason:
            reason = "no video stream"
        raise InputError(path, f"not a readable video ({reason})")
    size = re.search(r", (\d{2,5})x(\d{2,5})", line)
    fps = re.search(r", ([\d.]+) fps", line) or re.search(r", ([\d.]+) tbr", line)
    if not size:
        raise InputError(path, "video stream has no frame size")
    return int(size.group(1)), int(size.group(2)), float(fps.group(1)) if fps else 0.0


def probe_video(path: str | Path) -> VideoInfo:
    """Exact coded-frame count and per-frame timestamps without decoding pixels.

    Uses ``-c copy -f framecrc``: one line per video packet with its pts, which is the set of
    frames a ``-fps_mode passthrough`` decode yields (no duplicated or dropped frames).
    """
    path = check_readable(path)
    width, height, fps = _stream_header(path)
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0",
         "-c", "copy", "-f", "framecrc", "-"], capture_output=True, text=True)
    if proc.returncode != 0:
        msg = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "ffmpeg failed"
        raise InputError(path, f"cannot read video packets ({msg})")
    tb = re.search(r"^#tb 0: (\d+)/(\d+)", proc.stdout, re.M)
    num, den = (int(tb.group(1)), int(tb.group(2))) if tb else (1, 1)
    pts = [int(ln.split(",")[2]) for ln in proc.stdout.splitlines()
           if ln and not ln.startswith("#")]
    if not pts:
        raise InputError(path, "video stream has no frames")
    times = np.sort(np.asarray(pts, dtype=np.float64)) * num / den
    if fps <= 0 and len(times) > 1:
        fps = float((len(times) - 1) / max(times[-1] - times[0], 1e-9))
    return VideoInfo(str(path), width, height, fps, len(times), times)


class VideoWriter:
    """Stream BGR uint8 frames into an H.264 mp4 through an ffmpeg pipe (constant frame rate).

    ``threads=1`` keeps the encoded bytes identical from run to run.
    """

    def __init__(self, path: str | Path, width: int, height: int, fps: float, crf: int = 20,
                 threads: int = 1):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.size = (width, height)
        stream = (
            ffmpeg.input("pipe:", format="rawvideo", pix_fmt="bgr24", s=f"{width}x{height}",
                         framerate=fps)
            .output(str(self.path), vcodec="libx264", pix_fmt="yuv420p", crf=crf,
                    preset="veryfast", threads=threads, movflags="+faststart",
                    **{"fflags": "+bitexact", "flags": "+bitexact", "map_metadata": -1})
            .overwrite_output()
            .global_args("-hide_banner", "-nostdin", "-loglevel", "error")
        )
        self._proc = stream.run_async(cmd=ffmpeg_exe(), pipe_stdin=True, pipe_stderr=True)

    def write(self, frame: np.ndarray) -> None:
        if frame.shape[:2] != (self.size[1], self.size[0]) or frame.dtype != np.uint8:
            raise ValueError(f"frame must be uint8 {self.size[1]}x{self.size[0]}x3, got "
                             f"{frame.dtype} {frame.shape}")
        self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())

    def close(self) -> None:
        self._proc.stdin.close()
        err = self._proc.stderr.read().decode(errors="replace")
        if self._proc.wait() != 0:
            raise RuntimeError(f"ffmpeg failed writing {self.path}: {err.strip()}")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        else:
            self._proc.kill()
            self._proc.wait()
