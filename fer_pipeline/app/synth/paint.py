"""Drawing in face units: the :class:`Pose` that maps them to image pixels, the anti-aliased
:class:`Painter`, curve primitives (ellipse arcs, quadratic Beziers, tapered bands), colour
blends, and the face layout every drawing module shares.

A face is described in canonical *face units*: x to the image right, y down, origin at the
nose base, inter-ocular distance ~44 units (the eye line is at y=-24, the mouth at y=+27, the
chin near y=+54, the skull top near y=-95). A :class:`Pose` maps face units to image pixels,
so every primitive, at any scale/roll/yaw, is drawn straight into the frame with sub-pixel
anti-aliased cv2 calls, and the 5 ArcFace landmarks come out of the very same transform.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

# Depth (face units) of each feature layer for the yaw/pitch shift.
D_EAR, D_OUTLINE, D_HAIR, D_EYE, D_BROW, D_MOUTH, D_NOSE, D_GLASSES = -10, 0, 2, 13, 15, 19, 30, 24
EYE_Y = -24.0
MOUTH_Y = 27.0


def mix(a, b, t: float) -> tuple[float, float, float]:
    """Linear blend of two BGR colours (t=0 -> a)."""
    return tuple(float(x + (y - x) * t) for x, y in zip(a, b))


def shade(c, k: float) -> tuple[float, float, float]:
    return tuple(float(min(255.0, x * k)) for x in c)


@dataclass
class Pose:
    """Face units -> image pixels: yaw/pitch by depth-dependent shift (a cheap stand-in for
    3-D rotation: nose tip moves most, the outline not at all), then roll, scale, translate."""
    cx: float
    cy: float
    scale: float
    roll: float = 0.0   # radians, positive = clockwise on screen
    yaw: float = 0.0    # radians, positive = features shift to the image right
    pitch: float = 0.0  # radians, positive = features shift down

    def __post_init__(self):
        c, s = math.cos(self.roll) * self.scale, math.sin(self.roll) * self.scale
        cyaw, syaw = math.cos(self.yaw), math.sin(self.yaw)
        cp, sp = math.cos(self.pitch), math.sin(self.pitch)
        # x' = c*(x*cyaw + d*syaw) - s*(y*cp + d*sp) + cx, y' likewise: linear in (x, y, d).
        self._ax, self._ay, self._ad = c * cyaw, -s * cp, c * syaw - s * sp
        self._bx, self._by, self._bd = s * cyaw, c * cp, s * syaw + c * sp

    def apply(self, pts: np.ndarray, depth=0.0) -> np.ndarray:
        """(N, 2) face units at ``depth`` (scalar or (N,)) -> (N, 2) image coordinates."""
        p = np.asarray(pts, np.float64).reshape(-1, 2)
        out = p @ np.array([[self._ax, self._bx], [self._ay, self._by]])
        out[:, 0] += depth * self._ad + self.cx
        out[:, 1] += depth * self._bd + self.cy
        return out


class Painter:
    """Anti-aliased, sub-pixel (4 fractional bits) polygon drawing through a Pose."""

    SHIFT = 4

    def __init__(self, img: np.ndarray, pose: Pose):
        self.img, self.pose = img, pose

    def _pix(self, pts, depth) -> list[np.ndarray]:
        """Fixed-point pixel polygons of one (N, 2) array or a list of them (transformed in
        one call: Python overhead, not pixels, dominates drawing cost)."""
        if isinstance(pts, np.ndarray):
            parts = [pts]
        else:
            parts = list(pts)
        out = self.pose.apply(np.concatenate(parts) if len(parts) > 1 else parts[0], depth)
        out *= 1 << self.SHIFT
        np.rint(out, out=out)
        out = out.astype(np.int32)
        if len(parts) == 1:
            return [out]
        polys, i = [], 0
        for q in parts:
            polys.append(out[i:i + len(q)])
            i += len(q)
        return polys

    def fill(self, pts, color, depth: float = 0.0) -> None:
        """Fill one polygon, or several non-overlapping ones (overlaps would cancel out)."""
        cv2.fillPoly(self.img, self._pix(pts, depth), color, cv2.LINE_AA, self.SHIFT)

    def line(self, pts, color, width: float, depth: float = 0.0, closed: bool = False) -> None:
        """Stroke one polyline or a list of them."""
        th = max(1, int(round(width * self.pose.scale)))
        cv2.polylines(self.img, self._pix(pts, depth), closed, color, th, cv2.LINE_AA, self.SHIFT)

    def faint_line(self, pts, base, dark, strength: float, width: float, depth: float = 0.0):
        """Wrinkle/fold line(s) whose contrast grows with ``strength`` (skipped when tiny)."""
        if strength > 0.08:
            self.line(pts, mix(base, dark, min(1.0, strength)), width, depth)


@functools.lru_cache(maxsize=None)
def unit_arc(n: int, a0: float, a1: float) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(a0, a1, n)
    c, s = np.cos(t), np.sin(t)
    c.flags.writeable = s.flags.writeable = False
    return c, s


def ellipse_pts(cx, cy, ax, ay, n: int = 24, a0: float = 0.0, a1: float = 2 * math.pi,
                rot: float = 0.0) -> np.ndarray:
    c, s = unit_arc(n, float(a0), float(a1))
    out = np.empty((n, 2))
    if rot:
        cr, sr = math.cos(rot), math.sin(rot)
        out[:, 0] = cx + ax * c * cr - ay * s * sr
        out[:, 1] = cy + ax * c * sr + ay * s * cr
    else:
        out[:, 0] = cx + ax * c
        out[:, 1] = cy + ay * s
    return out


def band(curve: np.ndarray, th0: float, th1: float) -> np.ndarray:
    """Closed polygon of a stroke along ``curve`` (N,2) whose width tapers th0 -> th1."""
    d = np.gradient(curve, axis=0)
    nrm = np.stack([-d[:, 1], d[:, 0]], 1)
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True) + 1e-9
    w = np.linspace(th0, th1, len(curve))[:, None] / 2
    return np.concatenate([curve + nrm * w, (curve - nrm * w)[::-1]])


@functools.lru_cache(maxsize=None)
def _bezier_basis(n: int) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    b = np.concatenate([(1 - t) ** 2, 2 * (1 - t) * t, t ** 2], 1)
    b.flags.writeable = False
    return b


def bezier(p0, p1, p2, n: int = 12) -> np.ndarray:
    """(n, 2) points of the quadratic Bezier curve p0 -> p2 pulled toward p1."""
    return _bezier_basis(n) @ np.array([p0, p1, p2], np.float64)
