"""Stream the frames of a video through ffmpeg, exactly as coded.

``-fps_mode passthrough`` keeps ffmpeg from duplicating or dropping frames to fit a constant
rate (a plain rawvideo pipe repeats the first frame of a stream that starts late); a ``showinfo``
filter reports each decoded frame's timestamp and size on stderr, read by a thread, so every
frame comes with its own presentation time even on variable-rate video. Rotation metadata is
applied by ffmpeg (frames arrive upright); frames stream one at a time, never the whole video.
ffmpeg dies with the thread that started it (Linux ``PR_SET_PDEATHSIG``), and ``kill_decoders``
stops every live one (a worker whose parent died).
"""
from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np

from fer_pipeline.errors import InputError
from fer_pipeline.media import MOOV_MISSING, check_readable, ffmpeg_exe, moov_reason

_live: weakref.WeakSet = weakref.WeakSet()     # running ffmpeg decoders of this process


def _die_with_parent() -> None:        # runs in the forked ffmpeg child, before exec
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)    # PR_SET_PDEATHSIG


def kill_decoders() -> None:
    """Kill every ffmpeg decoder this process started."""
    for proc in list(_live):
        try:
            proc.kill()
        except OSError:
            pass


_SHOWINFO = re.compile(r"\bn:\s*(\d+)\s+pts:\s*(-?\d+)\s+pts_time:(-?[\d.e+-]+).*?\bs:(\d+)x(\d+)")


@dataclass(frozen=True)
class Frame:
    index: int       # 0-based decode order (manifest frame = index + 1)
    time_s: float    # presentation time in seconds
    image: np.ndarray  # (H, W, 3) uint8 BGR


def _read_stderr(stream, out: queue.Queue, tail: list[str]) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip()
        m = _SHOWINFO.search(line)
        if m:
            out.put((float(m.group(3)), int(m.group(4)), int(m.group(5))))
        elif line and "Parsed_showinfo" not in line:
            tail.append(line)
            del tail[:-20]
    out.put(None)


def iter_frames(path: str | Path) -> Iterator[Frame]:
    """Yield every coded frame of the first video stream in order, upright, with its time.

    Raises ``InputError`` for a missing/empty/unreadable file, or when ffmpeg fails before the
    end (a truncated file yields its readable frames first, then the error).
    """
    path = check_readable(path)
    cmd = (
        ffmpeg.input(str(path))
        .output("pipe:", format="rawvideo", pix_fmt="bgr24", vf="showinfo",
                map="0:v:0", fps_mode="passthrough", an=None, sn=None)
        .global_args("-hide_banner", "-nostdin", "-nostats", "-loglevel", "info")
        .compile(cmd=ffmpeg_exe())
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    _live.add(proc)
    infos: queue.Queue = queue.Queue()
    tail: list[str] = []
    reader = threading.Thread(target=_read_stderr, args=(proc.stderr, infos, tail), daemon=True)
    reader.start()
    index = 0
    ended = False
    try:
        while True:
            info = infos.get()
            if info is None:
                break
            time_s, w, h = info
            buf = proc.stdout.read(w * h * 3)
            if len(buf) < w * h * 3:
                break
            yield Frame(index, time_s, np.frombuffer(buf, np.uint8).reshape(h, w, 3))
            index += 1
        ended = True
    finally:
        if not ended:            # the consumer stopped early: do not leave ffmpeg running
            proc.kill()
        proc.stdout.close()
        rc = proc.wait()
        _live.discard(proc)
        reader.join(timeout=5)
    if rc != 0 or index == 0:
        reason = _reason(tail)
        if reason == MOOV_MISSING:
            reason = moov_reason(path, "no video container header")
        reason = reason or ("no decodable video frames" if rc == 0 else f"ffmpeg exit {rc}")
        if index:
            raise InputError(path, f"decoding stopped after {index} frames ({reason})")
        raise InputError(path, f"not a readable video ({reason})")


def _reason(tail: list[str]) -> str:
    if any("moov atom not found" in ln for ln in tail):
        return MOOV_MISSING
    interesting = [ln for ln in tail if re.search(r"error|invalid|corrupt|fail|no such|moov", ln, re.I)]
    line = (interesting or tail or [""])[-1]
    return re.sub(r"^\[[^\]]+\]\s*", "", line).strip()[:160]
