"""Procedural cartoon face: identity, action-unit-like expression parameters and drawing.

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

from pipeline.labels import ANGER, DISGUST, FEAR, HAPPINESS, NEUTRAL, OTHER, SADNESS, SURPRISE

# ----------------------------------------------------------------------------------- AUs
# Continuous expression parameters, loosely after FACS action units, each in [0, 1].
AU_NAMES: tuple[str, ...] = (
    "brow_inner_up",     # AU1
    "brow_outer_up",     # AU2
    "brow_lower",        # AU4 (vertical part)
    "brow_knit",         # AU4 (brows pulled together, glabella furrows)
    "brow_one_up",       # unilateral AU2 (sceptical brow), side = `side`
    "upper_lid_raise",   # AU5, eyes wide open
    "cheek_raise",       # AU6, lower lid pushed up, crow's feet
    "lid_tighten",       # AU7, narrowed eyes
    "lid_droop",         # heavy upper lids (sadness)
    "nose_wrinkle",      # AU9
    "upper_lip_raise",   # AU10
    "lip_corner_pull",   # AU12
    "lip_corner_depress",  # AU15
    "chin_raise",        # AU17
    "lip_stretch",       # AU20
    "lip_press",         # AU23/24
    "lips_part",         # AU25
    "jaw_drop",          # AU26/27
    "lip_pucker",        # AU18/22
    "cheek_puff",        # AU34
    "tongue_out",        # AU19
    "smirk",             # unilateral AU12, side = `side`
    "wink",              # unilateral eye closure, side = -`side`
    "asym",              # one-sided emphasis of nose wrinkle / upper lip raise
    "blink",             # both eyes closed (idle behaviour, not an expression)
)
N_AU = len(AU_NAMES)
AU = {name: i for i, name in enumerate(AU_NAMES)}

# Number of shape variants per class (Other varies among non-basic expressions).
OTHER_VARIANTS = ("smirk_wink", "tongue_out", "puffed_cheeks", "pursed_lips", "sceptical")
N_VARIANTS = {NEUTRAL: 1, ANGER: 2, DISGUST: 2, FEAR: 2, HAPPINESS: 3, SADNESS: 2,
              SURPRISE: 2, OTHER: len(OTHER_VARIANTS)}


def _vec(**kw: float) -> np.ndarray:
    v = np.zeros(N_AU, np.float32)
    for k, x in kw.items():
        v[AU[k]] = x
    return v


# FACS-prototype apex vectors, per class and variant.
_APEX: dict[int, list[np.ndarray]] = {
    NEUTRAL: [_vec()],
    HAPPINESS: [
        _vec(cheek_raise=1.0, lip_corner_pull=1.0, lips_part=0.15, lid_tighten=0.2),   # closed smile
        _vec(cheek_raise=1.0, lip_corner_pull=1.0, lips_part=0.75, jaw_drop=0.1),       # toothy smile
        _vec(cheek_raise=1.0, lip_corner_pull=1.0, lips_part=0.9, jaw_drop=0.45,
             brow_outer_up=0.2),                                                         # laugh
    ],
    SADNESS: [
        _vec(brow_inner_up=1.0, brow_knit=0.35, lid_droop=0.7, lip_corner_depress=1.0,
             chin_raise=0.6),
        _vec(brow_inner_up=1.0, brow_knit=0.25, lid_droop=0.9, lip_corner_depress=0.9,
             chin_raise=0.3, lips_part=0.25),
    ],
    SURPRISE: [
        _vec(brow_inner_up=1.0, brow_outer_up=1.0, upper_lid_raise=1.0, lips_part=0.9,
             jaw_drop=0.85, lip_pucker=0.35),
        _vec(brow_inner_up=1.0, brow_outer_up=1.0, upper_lid_raise=0.9, lips_part=0.8,
             jaw_drop=0.5, lip_pucker=0.1),
    ],
    FEAR: [
        _vec(brow_inner_up=1.0, brow_outer_up=0.5, brow_knit=1.0, upper_lid_raise=1.0,
             lip_stretch=1.0, lips_part=0.7, jaw_drop=0.2, lip_corner_depress=0.35),
        _vec(brow_inner_up=0.9, brow_outer_up=0.4, brow_knit=0.9, upper_lid_raise=1.0,
             lip_stretch=0.9, lips_part=0.35, lip_corner_depress=0.5, chin_raise=0.2),
    ],
    ANGER: [
        _vec(brow_lower=1.0, brow_knit=1.0, lid_tighten=0.7, upper_lid_raise=0.25,
             lip_press=1.0, chin_raise=0.6),
        _vec(brow_lower=1.0, brow_knit=1.0, lid_tighten=0.6, upper_lid_raise=0.3,
             upper_lip_raise=0.5, lips_part=0.7, jaw_drop=0.25, lip_stretch=0.3),   # shouting
    ],
    DISGUST: [
        _vec(nose_wrinkle=1.0, upper_lip_raise=1.0, brow_lower=0.55, brow_knit=0.4,
             lid_tighten=0.5, cheek_raise=0.4, lip_corner_depress=0.45, asym=0.7,
             lips_part=0.2),
        _vec(nose_wrinkle=1.0, upper_lip_raise=0.8, brow_lower=0.6, brow_knit=0.5,
             lid_tighten=0.6, cheek_raise=0.3, lip_corner_depress=0.7, chin_raise=0.4,
             asym=0.5),
    ],
    OTHER: [
        _vec(smirk=1.0, wink=1.0, cheek_raise=0.2),
        _vec(tongue_out=1.0, lips_part=0.6, jaw_drop=0.3, upper_lid_raise=0.2),
        _vec(cheek_puff=1.0, lip_press=0.6, lip_pucker=0.3, upper_lid_raise=0.2),
        _vec(lip_pucker=1.0, brow_outer_up=0.25, lid_tighten=0.2),
        _vec(brow_one_up=1.0, smirk=0.8, lid_tighten=0.3),
    ],
}


def apex_vector(cls: int, variant: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """(N_AU,) apex parameters of class ``cls``; ``rng`` adds +-15% per-event variation."""
    base = _APEX[cls][variant % len(_APEX[cls])].copy()
    if rng is not None:
        base *= rng.uniform(0.85, 1.15, N_AU).astype(np.float32)
    return np.clip(base, 0.0, 1.0)


# ----------------------------------------------------------------------------------- identity
_SKIN_RGB = np.array([(255, 226, 204), (246, 205, 178), (234, 188, 152), (214, 160, 120),
                      (190, 135, 96), (165, 112, 78), (138, 92, 64), (112, 74, 52)], np.float32)
_HAIR_RGB = np.array([(25, 20, 18), (55, 38, 28), (95, 62, 38), (150, 105, 60), (210, 175, 110),
                      (165, 70, 35), (140, 140, 140), (225, 225, 220)], np.float32)
_IRIS_RGB = np.array([(70, 45, 25), (40, 25, 15), (70, 110, 150), (80, 110, 70), (110, 85, 50)],
                     np.float32)
HAIR_STYLES = ("short", "side_part", "long", "bald", "curly", "bun")


def _bgr(rgb) -> tuple[float, float, float]:
    r, g, b = (float(c) for c in rgb)
    return (b, g, r)


def mix(a, b, t: float) -> tuple[float, float, float]:
    """Linear blend of two BGR colours (t=0 -> a)."""
    return tuple(float(x + (y - x) * t) for x, y in zip(a, b))


def shade(c, k: float) -> tuple[float, float, float]:
    return tuple(float(min(255.0, x * k)) for x in c)


@dataclass(frozen=True)
class Identity:
    """Everything that stays fixed for one person (lengths in face units, colours BGR)."""
    skin: tuple
    hair: tuple
    iris: tuple
    lip: tuple
    shirt: tuple
    face_w: float      # half width of the head
    face_top: float    # skull top above the cheekbone line
    face_low: float    # chin below the cheekbone line
    jaw_w: float       # 0 = pointed chin, 1 = square jaw
    eye_sep: float     # half inter-ocular distance
    eye_w: float       # half eye width
    eye_h: float       # upper lid height over the eye axis
    iris_r: float
    brow_th: float
    brow_gap: float    # brow height over the eye axis
    nose_w: float
    nose_len: float
    mouth_w: float     # half mouth width
    lip_up: float
    lip_low: float
    hair_style: str
    hair_len: float
    glasses: int       # 0 none, 1 round, 2 rectangular
    glasses_col: tuple
    beard: int         # 0 none, 1 stubble, 2 full, 3 moustache
    age_lines: float   # baseline visibility of folds/wrinkles
    expressivity: float


def random_identity(rng: np.random.Generator) -> Identity:
    skin_rgb = _SKIN_RGB[rng.integers(len(_SKIN_RGB))] * rng.uniform(0.94, 1.04, 3)
    skin = _bgr(np.clip(skin_rgb, 0, 255))
    hair_i = int(rng.integers(len(_HAIR_RGB)))
    hair = _bgr(_HAIR_RGB[hair_i] * rng.uniform(0.85, 1.15))
    lip = mix(skin, _bgr((190, 70, 80)), float(rng.uniform(0.25, 0.5)))
    lip = shade(lip, rng.uniform(0.8, 0.95))
    shirt = _bgr(rng.uniform(20, 235, 3))
    eye_sep = float(rng.uniform(20.5, 23.5))
    style = HAIR_STYLES[int(rng.choice(len(HAIR_STYLES), p=[.25, .2, .22, .1, .13, .1]))]
    glasses = int(rng.choice(3, p=[0.72, 0.14, 0.14]))
    beard = int(rng.choice(4, p=[0.7, 0.1, 0.12, 0.08]))
    return Identity(
        skin=skin, hair=hair, iris=_bgr(_IRIS_RGB[rng.integers(len(_IRIS_RGB))]), lip=lip,
        shirt=shirt,
        face_w=float(rng.uniform(45, 55)), face_top=float(rng.uniform(70, 80)),
        face_low=float(rng.uniform(70, 78)), jaw_w=float(rng.uniform(0.35, 0.95)),
        eye_sep=eye_sep, eye_w=float(rng.uniform(10.0, 12.0)), eye_h=float(rng.uniform(5.0, 6.5)),
        iris_r=float(rng.uniform(4.3, 5.0)), brow_th=float(rng.uniform(2.2, 5.0)),
        brow_gap=float(rng.uniform(10.5, 14.0)), nose_w=float(rng.uniform(6.5, 9.5)),
        nose_len=float(rng.uniform(0.85, 1.15)), mouth_w=float(rng.uniform(15, 19)),
        lip_up=float(rng.uniform(2.5, 4.5)), lip_low=float(rng.uniform(3.5, 6.0)),
        hair_style=style, hair_len=float(rng.uniform(0.7, 1.3)), glasses=glasses,
        glasses_col=_bgr(rng.choice([20, 60, 120, 160], 3)) if rng.random() < 0.5 else (25, 25, 30),
        beard=beard if style != "bun" else 0, age_lines=float(rng.uniform(0.0, 0.5)),
        expressivity=float(rng.uniform(0.85, 1.15)),
    )


# ----------------------------------------------------------------------------------- pose
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
def _unit_arc(n: int, a0: float, a1: float) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(a0, a1, n)
    c, s = np.cos(t), np.sin(t)
    c.flags.writeable = s.flags.writeable = False
    return c, s


def ellipse_pts(cx, cy, ax, ay, n: int = 24, a0: float = 0.0, a1: float = 2 * math.pi,
                rot: float = 0.0) -> np.ndarray:
    c, s = _unit_arc(n, float(a0), float(a1))
    out = np.empty((n, 2))
    if rot:
        cr, sr = math.cos(rot), math.sin(rot)
        out[:, 0] = cx + ax * c * cr - ay * s * sr
        out[:, 1] = cy + ax * c * sr + ay * s * cr
    else:
        out[:, 0] = cx + ax * c
        out[:, 1] = cy + ay * s
    return out


def _band(curve: np.ndarray, th0: float, th1: float) -> np.ndarray:
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


def _bezier(p0, p1, p2, n: int = 12) -> np.ndarray:
    """(n, 2) points of the quadratic Bezier curve p0 -> p2 pulled toward p1."""
    return _bezier_basis(n) @ np.array([p0, p1, p2], np.float64)


# Depth (face units) of each feature layer for the yaw/pitch shift.
D_EAR, D_OUTLINE, D_HAIR, D_EYE, D_BROW, D_MOUTH, D_NOSE, D_GLASSES = -10, 0, 2, 13, 15, 19, 30, 24
EYE_Y = -24.0
MOUTH_Y = 27.0


# ----------------------------------------------------------------------------------- drawing
def draw_face(img: np.ndarray, idn: Identity, au: np.ndarray, pose: Pose, side: int = 1,
              gaze: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Draw one head with expression ``au`` (N_AU,) into ``img`` (BGR uint8, in place).

    ``side`` (+1/-1) picks the side of unilateral parameters (smirk, wink, one brow, asym).
    Returns the 5 ArcFace landmarks (5, 2) float32 in image coordinates: image-left eye,
    image-right eye, nose tip, image-left mouth corner, image-right mouth corner.
    """
    a = {name: float(au[i]) for i, name in enumerate(AU_NAMES)}
    p = Painter(img, pose)
    # Folds and wrinkles: darker relative shade on dark skin so they stay visible.
    dark = shade(idn.skin, 0.62 if sum(idn.skin) > 360 else 0.42)
    _draw_hair_back(p, idn)
    _draw_ears(p, idn)
    outline = _outline(idn, a)
    p.fill(outline, idn.skin, D_OUTLINE)
    p.line(outline, shade(idn.skin, 0.8), 1.0, D_OUTLINE, closed=True)
    _draw_cheeks(p, idn, a)
    if idn.beard:
        _draw_beard(p, idn, a, outline)
    _draw_forehead(p, idn, a, dark, side)
    _draw_eyes(p, idn, a, side, gaze)
    _draw_brows(p, idn, a, side)
    _draw_nose(p, idn, a, dark, side)
    _draw_mouth(p, idn, a, dark, side)
    _draw_hair_front(p, idn)
    if idn.glasses:
        _draw_glasses(p, idn)
    return _landmarks(idn, a, pose, side)


def face_landmarks(idn: Identity, au: np.ndarray, pose: Pose, side: int = 1) -> np.ndarray:
    """The 5 landmarks ``draw_face`` would return, without drawing (5, 2) float32."""
    return _landmarks(idn, {name: float(au[i]) for i, name in enumerate(AU_NAMES)}, pose, side)


_LM_DEPTH = np.array([D_EYE, D_EYE, D_NOSE, D_MOUTH, D_MOUTH], np.float64)


def _landmarks(idn: Identity, a: dict, pose: Pose, side: int) -> np.ndarray:
    half_w, dy = _mouth_corners(idn, a, side)
    lm = np.array([[-idn.eye_sep, EYE_Y], [idn.eye_sep, EYE_Y], [0.0, _nose_tip_y(idn, a)],
                   [-half_w[0], MOUTH_Y + dy[0]], [half_w[1], MOUTH_Y + dy[1]]], np.float64)
    return pose.apply(lm, _LM_DEPTH).astype(np.float32)


def _outline(idn: Identity, a: dict, n: int = 56) -> np.ndarray:
    # Widest at the cheekbone line (y=-20); lower half tapers toward the chin by jaw_w.
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    y0 = -20.0
    low = idn.face_low + 10.0 * a["jaw_drop"] + 1.5 * a["chin_raise"]
    x = idn.face_w * c
    y = np.where(s < 0, idn.face_top * s, low * s) + y0
    lower = s > 0
    sl = np.where(lower, s, 0.0)
    taper = 1.0 - (1.0 - idn.jaw_w) * 0.55 * sl ** 1.5
    bulge = 1.0 + a["cheek_puff"] * 0.16 * np.sin(np.pi * np.clip(sl * 1.3, 0, 1))
    xs = np.sign(c) * np.abs(c) ** np.where(lower, 0.8 - 0.25 * idn.jaw_w, 1.0)
    x = np.where(lower, idn.face_w * xs * taper * bulge, x)
    return np.stack([x, y], 1)


def _draw_ears(p: Painter, idn: Identity) -> None:
    x = idn.face_w + 1.5
    p.fill([ellipse_pts(-x, -14, 6.5, 12, 16), ellipse_pts(x, -14, 6.5, 12, 16)],
           shade(idn.skin, 0.9), D_EAR)
    p.line([ellipse_pts(-x - 1, -14, 3, 7, 10, math.pi - 1.2, math.pi + 1.2),
            ellipse_pts(x + 1, -14, 3, 7, 10, -1.2, 1.2)], shade(idn.skin, 0.7), 1.0, D_EAR)


def _draw_cheeks(p: Painter, idn: Identity, a: dict) -> None:
    raise_ = a["cheek_raise"] + 0.5 * a["lip_corner_pull"]
    puff = a["cheek_puff"]
    blush = mix(idn.skin, shade(idn.lip, 1.08), 0.18 + 0.22 * raise_ + 0.2 * puff)
    cy = 4 - 6 * raise_ + 4 * puff
    r = 9 + 3 * raise_ + 6 * puff
    cx = [s * (idn.eye_sep + 4 + 4 * puff) for s in (-1, 1)]
    p.fill([ellipse_pts(x, cy, r * 1.1, r * 0.8, 16) for x in cx], blush, D_EYE)
    if puff > 0.3:  # highlight on the inflated cheeks
        p.fill([ellipse_pts(x - s * 2, cy - 3, r * 0.35, r * 0.25, 10) for x, s in zip(cx, (-1, 1))],
               mix(blush, (255, 255, 255), 0.35 * puff), D_EYE)


def _draw_beard(p: Painter, idn: Identity, a: dict, outline: np.ndarray) -> None:
    col = idn.hair if idn.beard != 1 else mix(idn.skin, idn.hair, 0.4)
    jaw = 10.0 * a["jaw_drop"]
    if idn.beard in (1, 2):
        # Outer edge: the jaw line from one sideburn to the other; inner edge: down the cheek
        # and around the mouth, so the beard follows the chin when the jaw drops.
        lower = outline[outline[:, 1] > -16]
        lower = lower[np.argsort(-np.arctan2(lower[:, 1] + 20, lower[:, 0]))]   # image-left first
        w, mw = idn.face_w, idn.mouth_w
        half = [(w - 5, -16), (w - 9, 4), (mw + 8, MOUTH_Y - 3), (mw + 4, MOUTH_Y + 7 + jaw * 0.8),
                (mw * 0.4, MOUTH_Y + 11 + jaw)]
        inner = [(x, y) for x, y in half] + [(-x, y) for x, y in half[::-1]]
        p.fill(np.concatenate([lower, np.array(inner, np.float64)]), col, D_OUTLINE)
    if idn.beard in (2, 3):  # moustache
        m = _bezier((-idn.mouth_w - 2, MOUTH_Y + 1), (0, MOUTH_Y - 10), (idn.mouth_w + 2, MOUTH_Y + 1), 12)
        p.fill(_band(m, 3.5, 3.5) + [0, -2.5], col, D_MOUTH)


def _draw_forehead(p: Painter, idn: Identity, a: dict, dark, side: int) -> None:
    raise_ = max(a["brow_outer_up"], 0.8 * a["brow_inner_up"], 0.6 * a["brow_one_up"])
    for i, y in enumerate((-50, -57, -64)):
        strength = raise_ * (1.0 - 0.2 * i) + 0.3 * idn.age_lines - 0.1
        xs = np.linspace(-22 + 3 * i, 22 - 3 * i, 9)
        ys = y + 2.2 * np.cos(xs / 22 * math.pi) - 3 * raise_
        p.faint_line(np.stack([xs, ys], 1), idn.skin, dark, strength * 0.9, 1.0, D_BROW)
    knit = max(a["brow_knit"], 0.7 * a["brow_lower"])
    x = 2.5 + 1.5 * (1 - knit)  # vertical glabella furrows
    p.faint_line([np.array([[s * x, -36 + 2 * a["brow_lower"]], [s * x * 1.3, -27]]) for s in (-1, 1)],
                 idn.skin, dark, knit * 1.1 - 0.15, 1.2, D_BROW)
    if a["brow_inner_up"] > 0.3 and a["brow_knit"] > 0.3:  # fear/sadness: short central creases
        p.faint_line([_bezier((-8, y + 2), (0, y - 1.5), (8, y + 2), 6) for y in (-46, -51)], idn.skin,
                     dark, min(a["brow_inner_up"], a["brow_knit"]), 1.0, D_BROW)


def _eye_curves(idn: Identity, a: dict, s: int, side: int):
    """Upper and lower lid curves (x, yu, yl arrays) of the eye on image side s (-1/1)."""
    n = 15
    ew = idn.eye_w * (1 - 0.05 * a["lid_tighten"] + 0.04 * a["upper_lid_raise"])
    xs = np.linspace(-1, 1, n)
    closure = a["blink"] + (a["wink"] if s == -side else 0.0)
    open_up = (1 + 0.85 * a["upper_lid_raise"] - 0.45 * a["lid_tighten"] - 0.45 * a["lid_droop"]
               - 0.3 * a["cheek_raise"]) * (1 - min(1.0, closure))
    open_up = max(open_up, 0.0)
    lift = 0.95 * a["cheek_raise"] + 0.35 * a["lid_tighten"] + 0.4 * a["nose_wrinkle"]
    open_low = (1 + 0.4 * a["upper_lid_raise"] - lift) * (1 - min(1.0, closure))
    # Inner corner (toward the nose) is a bit lower; droop pulls the outer upper lid down.
    inner = -s  # direction of the nose in local x
    prof_u = (1 - xs ** 2) ** 0.75 * (1 + 0.12 * xs * inner)
    prof_l = (1 - xs ** 2) ** 0.9
    yu = -idn.eye_h * open_up * prof_u + 0.8 * a["lid_droop"] * (xs * s > 0) * (xs * s) ** 2
    yl = idn.eye_h * 0.8 * open_low * prof_l - 1.5 * a["cheek_raise"] * (1 - xs ** 2)
    yl = np.maximum(yl, yu)
    cx = s * idn.eye_sep
    return cx + xs * ew, yu + EYE_Y, yl + EYE_Y, ew


def _clip_between(pts: np.ndarray, x: np.ndarray, yu: np.ndarray, yl: np.ndarray) -> np.ndarray:
    """Clamp a convex shape's boundary points vertically between two curves (x ascending):
    the result is the shape's intersection with the region between the curves."""
    px = np.clip(pts[:, 0], x[0], x[-1])
    lo, hi = np.interp(px, x, yu), np.interp(px, x, yl)
    return np.stack([px, np.clip(pts[:, 1], lo, hi)], 1)


def _draw_eyes(p: Painter, idn: Identity, a: dict, side: int, gaze) -> None:
    """Both eyes, each primitive type drawn for the two eyes in one call."""
    lid_col = shade(idn.skin, 0.55)
    line_col = mix(idn.hair, (20, 20, 25), 0.6)
    crease_y = EYE_Y - idn.eye_h - 3.0 - 2.5 * a["upper_lid_raise"] + 1.5 * a["lid_droop"]
    creases, closed, sclera, iris, pupil, glint, upper, lower = [], [], [], [], [], [], [], []
    feet = [[], [], []]
    bags = []
    for s in (-1, 1):
        x, yu, yl, ew = _eye_curves(idn, a, s, side)
        cx = s * idn.eye_sep
        # Lid crease, rising with upper_lid_raise and sinking with droop.
        creases.append(_bezier((cx - s * ew * 0.9, EYE_Y - 1), (cx + s * ew * 0.1, crease_y - 2.5),
                               (cx + s * ew * 1.05, EYE_Y - 1.5 + 1.5 * a["lid_droop"]), 10))
        if float(np.max(yl - yu)) < 0.9:  # closed: a single lash line curving down
            closed.append(np.stack([x, EYE_Y + 1.2 + 1.5 * (1 - ((x - cx) / ew) ** 2)], 1))
            continue
        sclera.append(np.concatenate([np.stack([x, yu], 1), np.stack([x, yl], 1)[::-1]]))
        ix = cx + gaze[0] * ew * 0.3
        iy = EYE_Y + 0.3 + gaze[1]
        iris.append(_clip_between(ellipse_pts(ix, iy, idn.iris_r, idn.iris_r, 20), x, yu, yl))
        pupil.append(_clip_between(ellipse_pts(ix, iy, idn.iris_r * 0.45, idn.iris_r * 0.45, 12), x, yu, yl))
        hx, hy = ix + 1.3, iy - 1.3
        if np.interp(hx, x, yu) < hy < np.interp(hx, x, yl):
            glint.append(ellipse_pts(hx, hy, 0.9, 0.9, 8))
        upper.append(np.stack([x, yu], 1))
        lower.append(np.stack([x, yl], 1))
        ox = cx + s * (ew + 2)
        for k, dy in enumerate((-2.5, 0.5, 3.5)):  # crow's feet at the outer corner
            feet[k].append(np.array([[ox, EYE_Y + dy * 0.6], [ox + s * 4, EYE_Y + dy * 1.2]]))
        bags.append(_bezier((cx - ew * 0.8, EYE_Y + 4), (cx, EYE_Y + 7 - 1.5 * a["cheek_raise"]),
                            (cx + ew * 0.8, EYE_Y + 4), 8))
    p.faint_line(creases, idn.skin, lid_col, 0.55 + 0.3 * a["lid_droop"], 0.9, D_EYE)
    if closed:
        p.line(closed, line_col, 1.6, D_EYE)
    if not sclera:
        return
    p.fill(sclera, (236, 240, 242), D_EYE)
    p.fill(iris, idn.iris, D_EYE)
    p.fill(pupil, (15, 15, 15), D_EYE)
    if glint:
        p.fill(glint, (250, 250, 250), D_EYE)
    p.line(upper, line_col, 1.5, D_EYE)            # upper lid + lashes
    p.line(lower, lid_col, 0.7, D_EYE)
    if a["cheek_raise"] > 0.2:
        for k in range(3):
            p.faint_line(feet[k], idn.skin, lid_col, a["cheek_raise"] * 0.8 - 0.1 * k, 0.8, D_EYE)
        p.faint_line(bags, idn.skin, lid_col, a["cheek_raise"] * 0.6, 0.8, D_EYE)


def _draw_brows(p: Painter, idn: Identity, a: dict, side: int) -> None:
    bands = []
    for s in (-1, 1):
        ex = s * idn.eye_sep
        base = EYE_Y - idn.brow_gap
        one = a["brow_one_up"] if s == side else 0.0
        lower = 5.5 * a["brow_lower"] - (2.0 * a["smirk"] * (s == -side))
        # Knitting pulls the inner ends together (and down unless the inner brow is raised).
        inner_x = ex - s * (idn.eye_w + 0.5) - s * 4.0 * a["brow_knit"]
        inner_y = base + lower + 3.5 * a["brow_knit"] * (1 - a["brow_inner_up"]) \
            - 9 * a["brow_inner_up"] - 4 * one
        outer_x = ex + s * (idn.eye_w + 4)
        outer_y = base + 2.5 + lower * 0.4 - 8 * a["brow_outer_up"] - 9 * one \
            + 2.5 * a["brow_inner_up"] * (1 - a["brow_outer_up"])
        mid_y = min(inner_y, outer_y) - 3.5 - 3 * a["brow_outer_up"] - 4 * one \
            + 2.5 * a["brow_knit"] * a["brow_inner_up"]
        curve = _bezier((inner_x, inner_y), (ex + s * 1.0, mid_y), (outer_x, outer_y), 12)
        bands.append(_band(curve, idn.brow_th * 1.15, idn.brow_th * 0.55))
    if sum(idn.skin) < 360:  # dark skin: near-black brows whatever the hair colour
        col = mix(idn.hair, (12, 10, 10), 0.65)
    else:
        col = mix(idn.hair, (25, 20, 20), 0.3) if idn.hair[0] < 180 else shade(idn.hair, 0.8)
    p.fill(bands, col, D_BROW)


def _nose_tip_y(idn: Identity, a: dict) -> float:
    return -1.0 - 2.5 * a["nose_wrinkle"] + (1 - idn.nose_len) * 4


def _draw_nose(p: Painter, idn: Identity, a: dict, dark, side: int) -> None:
    wr = a["nose_wrinkle"]
    tip_y = _nose_tip_y(idn, a)
    w = idn.nose_w * (1 + 0.15 * wr + 0.05 * a["upper_lip_raise"])
    nose_col = shade(idn.skin, 0.72)
    # Bridge hint on the shadow side and the nose wing curves.
    p.line(_bezier((-3, EYE_Y + 4), (-4.5, -12), (-3.5, tip_y - 4), 8), shade(idn.skin, 0.88), 1.0,
           D_NOSE * 0.6)
    p.line([_bezier((s * (w * 0.55), tip_y - 5), (s * (w + 1.5), tip_y), (s * (w * 0.45), tip_y + 2.5), 8)
            for s in (-1, 1)], nose_col, 1.0, D_NOSE * 0.8)
    p.fill([ellipse_pts(s * w * 0.42, tip_y + 1.5, 1.9, 1.1, 10, rot=s * 0.3) for s in (-1, 1)],
           shade(idn.skin, 0.45), D_NOSE * 0.85)
    p.fill(ellipse_pts(0, tip_y - 1.0, 3.3, 2.4, 12), shade(idn.skin, 1.06), D_NOSE)  # tip highlight
    if wr > 0.1:  # wrinkles across the bridge
        xs = np.linspace(-5.5, 5.5, 7)
        ys = -1.4 * np.cos(xs / 5.5 * 1.6) - 1.0 * wr
        p.faint_line([np.stack([xs, y + ys], 1) for y in (-15.0, -11.0, -7.5)], idn.skin, dark, wr,
                     0.9, D_NOSE * 0.7)


def _mouth_corners(idn: Identity, a: dict, side: int) -> tuple[list[float], list[float]]:
    """Half widths and vertical corner offsets, index 0 = image-left corner, 1 = right."""
    pull, dep, stretch, asym = a["lip_corner_pull"], a["lip_corner_depress"], a["lip_stretch"], a["asym"]
    half_w, dy = [], []
    for s in (-1, 1):
        smirk = a["smirk"] if s == side else 0.0
        one = 1.0 + (asym * 0.6 if s == side else -asym * 0.4)
        hw = idn.mouth_w * (1 + 0.22 * pull + 0.38 * stretch - 0.55 * a["lip_pucker"]
                            - 0.12 * a["lip_press"] - 0.25 * a["cheek_puff"]
                            - 0.18 * a["jaw_drop"] * (1 - stretch) + 0.12 * smirk)
        d = -7.5 * pull + 7.5 * dep * one - 1.5 * stretch - 8.0 * smirk + 1.5 * a["chin_raise"] \
            - 2.0 * a["upper_lip_raise"] * one
        half_w.append(hw)
        dy.append(d)
    return half_w, dy


def _draw_mouth(p: Painter, idn: Identity, a: dict, dark, side: int) -> None:
    n = 21
    sg = np.linspace(-1, 1, n)
    pull, dep, stretch = a["lip_corner_pull"], a["lip_corner_depress"], a["lip_stretch"]
    pucker, press, puff = a["lip_pucker"], a["lip_press"], a["cheek_puff"]
    jaw, part, ulr = a["jaw_drop"], a["lips_part"], a["upper_lip_raise"]
    asym = a["asym"]
    half_w, dy = _mouth_corners(idn, a, side)
    hw_s = np.where(sg < 0, half_w[0], half_w[1])
    dy_s = np.where(sg < 0, dy[0], dy[1])
    x = sg * hw_s
    yc = MOUTH_Y + dy_s * np.abs(sg) ** 2.0 + 1.5 * dep * (1 - np.abs(sg)) * 0.5
    # Opening: lips part + jaw drop; stretch makes it rectangular, pucker round.
    gap = 2.2 * part + 15.0 * jaw
    gap *= (1 - 0.7 * press)
    q = 0.5 + 1.6 * stretch + 0.6 * pull
    env = np.clip(1 - np.abs(sg) ** (2 + 2 * stretch + pull), 0, 1) ** (0.5 / max(q, 0.5))
    raise_prof = np.clip(1 - ((np.abs(sg) - 0.45) / 0.45) ** 2, 0, 1)  # snarl peaks lateral
    raise_side = np.where(sg * side > 0, 1 + asym * 0.6, 1 - asym * 0.4)
    up_in = yc - (0.35 * gap + 0.4) * env - 3.5 * ulr * raise_prof * raise_side * (part + 0.4)
    lo_in = yc + 0.65 * gap * env
    thick = 1 - 0.75 * press + 0.6 * pucker
    t_up = idn.lip_up * thick * (1 - 0.25 * pull)
    t_lo = idn.lip_low * thick * (1 - 0.2 * pull) * (1 + 0.2 * a["chin_raise"])
    bow = 1 - 0.35 * np.exp(-(sg / 0.18) ** 2)
    lip_env = np.clip(1 - np.abs(sg) ** 1.6, 0, 1) ** 0.55
    up_out = up_in - t_up * lip_env * bow - 0.8 * ulr * raise_prof
    lo_out = lo_in + t_lo * lip_env
    if pucker > 0.3:  # pursed lips protrude: rounder, fuller outer contour
        rnd = (pucker - 0.3) * 1.4
        up_out -= rnd * 2.5 * (1 - sg ** 2)
        lo_out += rnd * 2.5 * (1 - sg ** 2)
    xs = x
    lips = np.concatenate([np.stack([xs, up_out], 1), np.stack([xs, lo_out], 1)[::-1]])
    p.fill(lips, idn.lip, D_MOUTH)
    open_ = float(np.max(lo_in - up_in))
    if open_ > 1.6:
        inner = np.concatenate([np.stack([xs, up_in], 1), np.stack([xs, lo_in], 1)[::-1]])
        p.fill(inner, (40, 30, 70), D_MOUTH)
        teeth_h = 3.4 + 1.0 * ulr
        show = min(1.0, 0.6 * pull + 0.6 * ulr + 0.5 * stretch + 0.5 * part)
        if show > 0.25:
            ti = sg * 0.92
            tx = ti * np.interp(ti, sg, hw_s)
            top = np.interp(tx, xs, up_in)
            bot = np.minimum(top + teeth_h, np.interp(tx, xs, lo_in))
            teeth = np.concatenate([np.stack([tx, top], 1), np.stack([tx, bot], 1)[::-1]])
            p.fill(teeth, (225, 235, 240), D_MOUTH)
            if stretch > 0.5 or ulr > 0.6:  # lower teeth show in fear/anger shouting
                bot2 = np.interp(tx, xs, lo_in)
                top2 = np.maximum(bot2 - 2.5, top + teeth_h)
                p.fill(np.concatenate([np.stack([tx, top2], 1), np.stack([tx, bot2], 1)[::-1]]),
                       (205, 215, 222), D_MOUTH)
        if a["tongue_out"] > 0.05:
            tg = a["tongue_out"]
            ty = float(np.interp(0, xs, lo_in))
            tongue = ellipse_pts(side * 1.5, ty + 4 * tg, 6.5, 5 + 6 * tg, 18, 0, math.pi)
            tongue = np.concatenate([[[-6.5 + side * 1.5, ty - 2]], tongue, [[6.5 + side * 1.5, ty - 2]]])
            p.fill(tongue, (120, 110, 230), D_MOUTH + 2)
            p.line(np.array([[side * 1.5, ty], [side * 1.5, ty + 4 + 7 * tg]]), (90, 80, 190), 0.8,
                   D_MOUTH + 2)
    lip_line = mix(idn.lip, (20, 10, 25), 0.55 if sum(idn.skin) > 360 else 0.75)
    p.line(np.stack([xs, (up_in + lo_in) / 2 if open_ <= 1.6 else up_in], 1), lip_line, 1.0, D_MOUTH)
    if open_ > 1.6:
        p.line(np.stack([xs, lo_in], 1), lip_line, 0.8, D_MOUTH)
    # Nasolabial folds deepen with smiling, disgust and cheek raise.
    fold = max(0.9 * pull + 0.3 * a["cheek_raise"], 0.85 * ulr + 0.3 * a["nose_wrinkle"],
               0.5 * stretch) + 0.4 * idn.age_lines - 0.05
    for i, s in enumerate((-1, 1)):
        cx, cy = s * half_w[i], MOUTH_Y + dy[i]
        f = fold * (1 + (0.4 * asym if s == side else -0.3 * asym))
        curve = _bezier((s * (idn.nose_w + 3.5), -2.0 - 2.0 * ulr),
                        (s * (idn.nose_w + 12 + 2 * pull), MOUTH_Y - 10 - 2 * pull),
                        (cx + s * 4.0, cy + 4.0 + 3 * dep), 10)
        p.faint_line(curve, idn.skin, dark, f, 1.1, D_MOUTH * 0.7)
        if a["smirk"] > 0.2 and s == side:  # dimple at the pulled corner, opening outward
            a0 = -1.2 if s > 0 else math.pi - 1.2
            dimple = ellipse_pts(cx + s * 3, cy, 2.0, 2.5, 6, a0, a0 + 2.4)
            p.faint_line(dimple, idn.skin, dark, a["smirk"], 1.0, D_MOUTH)
    if a["chin_raise"] > 0.2:  # chin boss under a pushed-up lower lip
        cy = float(lo_out.max()) + 6 + 10 * jaw
        p.faint_line(_bezier((-7, cy), (0, cy + 3), (7, cy), 8), idn.skin, dark, a["chin_raise"] * 0.8,
                     0.9, D_MOUTH * 0.8)
    if dep > 0.3:  # marionette lines under dropped corners
        for i, s in enumerate((-1, 1)):
            cx, cy = s * half_w[i], MOUTH_Y + dy[i]
            p.faint_line(np.array([[cx + s * 0.5, cy + 1.5], [cx + s * 2.5, cy + 8]]), idn.skin, dark,
                         dep * 0.75, 0.9, D_MOUTH * 0.8)


def _hair_cap(idn: Identity, part: float = 0.0, low: float = 0.0) -> np.ndarray:
    """Hair on top of the head: outer arc over the skull, inner hairline over the forehead."""
    w, top, y0 = idn.face_w, idn.face_top, -20.0
    vol = 5 + 4 * idn.hair_len
    t = np.linspace(math.pi, 2 * math.pi, 20)
    outer = np.stack([(w + vol * 0.7) * np.cos(t), y0 - 6 + (top + vol) * np.sin(t)], 1)
    outer[0, 1] = outer[-1, 1] = y0 - 4 + low
    hx = np.linspace(w * 0.98, -w * 0.98, 16)
    u = hx / w
    arch = (0.55 + 0.15 * np.abs(u) ** 0.5) * np.sqrt(np.clip(1 - u ** 2, 0, 1))
    hairline = y0 - 18 - (top - 30) * arch + low * 0.5
    hairline = np.where(np.abs(u) > 0.9, y0 - 4 + low, hairline)
    if part:  # swept fringe dipping toward one side
        hairline += 9 * np.clip(1 - np.abs(u - 0.35 * np.sign(part)), 0, 1) * abs(part)
    return np.concatenate([outer, np.stack([hx, hairline], 1)])


def _draw_hair_back(p: Painter, idn: Identity) -> None:
    w, top = idn.face_w, idn.face_top
    if idn.hair_style == "long":
        ln = 55 + 30 * idn.hair_len  # how far below the cheekbone line the hair falls
        back = np.concatenate([ellipse_pts(0, -20, w + 9, top + 8, 20, math.pi, 2 * math.pi),
                               [[w + 10, -20 + ln], [w + 3, -10 + ln], [-w - 3, -10 + ln], [-w - 10, -20 + ln]]])
        p.fill(back, shade(idn.hair, 0.85), D_EAR)
    elif idn.hair_style == "curly":
        t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        r = 1 + 0.05 * np.cos(12 * t)
        squash = np.where(np.sin(t) > 0, 0.55, 1.0)  # less volume below the ears
        blob = np.stack([(w + 14 + 6 * idn.hair_len) * r * np.cos(t),
                         -30 + (top + 12 + 5 * idn.hair_len) * r * np.sin(t) * squash], 1)
        p.fill(blob, idn.hair, D_EAR)
    elif idn.hair_style == "bun":
        p.fill(ellipse_pts(0, -20 - top - 6, 15, 12, 18), idn.hair, D_EAR)


def _draw_hair_front(p: Painter, idn: Identity) -> None:
    st = idn.hair_style
    if st == "bald":
        for s in (-1, 1):  # fringes over the ears only
            p.fill(ellipse_pts(s * (idn.face_w - 1), -30, 5.5, 13, 14, rot=s * 0.25), idn.hair, D_HAIR)
        return
    part = {"side_part": 1.0, "long": 0.0, "curly": 0.0}.get(st, 0.0)
    cap = _hair_cap(idn, part=part, low=3.0 if st == "curly" else 0.0)
    p.fill(cap, idn.hair, D_HAIR)
    p.line(cap[20:], shade(idn.hair, 0.7), 0.8, D_HAIR)
    # A few strands so the hair reads as hair, not a cap; they sweep toward the part side.
    w, top = idn.face_w, idn.face_top
    sweep = 10.0 * part
    strands = [_bezier((u * w * 0.25, -18 - top), (u * w * 0.6 + sweep, -28 - top * 0.8),
                       (u * w * 0.75 + sweep * 1.5, -22 - top * 0.55), 8)
                for u in (-0.9, -0.45, 0.0, 0.45, 0.9)]
    p.line(strands, shade(idn.hair, 0.78 if sum(idn.hair) > 150 else 1.6), 0.8, D_HAIR)
    if st == "long":
        for s in (-1, 1):
            strand = np.array([[s * (idn.face_w - 6), -40], [s * (idn.face_w + 9), -38],
                               [s * (idn.face_w + 10), 15 + 20 * idn.hair_len],
                               [s * (idn.face_w + 1), 10 + 20 * idn.hair_len], [s * (idn.face_w - 3), -15]])
            p.fill(strand, idn.hair, D_HAIR)


def _draw_glasses(p: Painter, idn: Identity) -> None:
    col = idn.glasses_col
    rw, rh = idn.eye_w + 5.0, 8.0
    c, sn = _unit_arc(28, 0.0, 2 * math.pi)
    rims, temples = [], []
    for s in (-1, 1):
        cx = s * idn.eye_sep
        if idn.glasses == 1:
            rims.append(ellipse_pts(cx, EYE_Y, rw, rh + 1, 28))
        else:  # rounded rectangle (superellipse)
            rims.append(np.stack([cx + rw * np.sign(c) * np.abs(c) ** 0.4,
                                  EYE_Y + rh * np.sign(sn) * np.abs(sn) ** 0.4], 1))
        temples.append(np.array([[cx + s * rw, EYE_Y - 3], [s * (idn.face_w + 1), EYE_Y - 1]]))
    bridge = _bezier((-idn.eye_sep + rw, EYE_Y - 2), (0, EYE_Y - 5), (idn.eye_sep - rw, EYE_Y - 2), 6)
    p.line(temples, col, 1.2, D_GLASSES * 0.3)
    p.line(rims + [bridge], col, 1.3, D_GLASSES)
