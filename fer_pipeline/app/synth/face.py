"""Procedural cartoon face: :func:`draw_face` draws one head (outline, ears, cheeks, beard,
hair, glasses here; the inner features in :mod:`features`) through a :class:`Pose` and returns
its 5 ArcFace landmarks. Face units, the pose and the painter are described in :mod:`paint`."""
from __future__ import annotations

import math

import numpy as np

from fer_pipeline.app.synth.expression import AU_NAMES
from fer_pipeline.app.synth.features import draw_features, landmarks
from fer_pipeline.app.synth.identity import Identity
from fer_pipeline.app.synth.paint import (D_EAR, D_EYE, D_GLASSES, D_HAIR, D_MOUTH, D_OUTLINE, EYE_Y,
                                      MOUTH_Y, Painter, Pose, band, bezier, ellipse_pts, mix,
                                      shade, unit_arc)


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
    draw_features(p, idn, a, dark, side, gaze)
    _draw_hair_front(p, idn)
    if idn.glasses:
        _draw_glasses(p, idn)
    return landmarks(idn, a, pose, side)


def face_landmarks(idn: Identity, au: np.ndarray, pose: Pose, side: int = 1) -> np.ndarray:
    """The 5 landmarks ``draw_face`` would return, without drawing (5, 2) float32."""
    return landmarks(idn, {name: float(au[i]) for i, name in enumerate(AU_NAMES)}, pose, side)


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
        m = bezier((-idn.mouth_w - 2, MOUTH_Y + 1), (0, MOUTH_Y - 10), (idn.mouth_w + 2, MOUTH_Y + 1), 12)
        p.fill(band(m, 3.5, 3.5) + [0, -2.5], col, D_MOUTH)


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
    strands = [bezier((u * w * 0.25, -18 - top), (u * w * 0.6 + sweep, -28 - top * 0.8),
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
    c, sn = unit_arc(28, 0.0, 2 * math.pi)
    rims, temples = [], []
    for s in (-1, 1):
        cx = s * idn.eye_sep
        if idn.glasses == 1:
            rims.append(ellipse_pts(cx, EYE_Y, rw, rh + 1, 28))
        else:  # rounded rectangle (superellipse)
            rims.append(np.stack([cx + rw * np.sign(c) * np.abs(c) ** 0.4,
                                  EYE_Y + rh * np.sign(sn) * np.abs(sn) ** 0.4], 1))
        temples.append(np.array([[cx + s * rw, EYE_Y - 3], [s * (idn.face_w + 1), EYE_Y - 1]]))
    bridge = bezier((-idn.eye_sep + rw, EYE_Y - 2), (0, EYE_Y - 5), (idn.eye_sep - rw, EYE_Y - 2), 6)
    p.line(temples, col, 1.2, D_GLASSES * 0.3)
    p.line(rims + [bridge], col, 1.3, D_GLASSES)
