"""The inner face: forehead folds, eyes, brows, nose and mouth as the expression parameters
move them, and the 5 ArcFace landmarks (eye centres, nose tip, mouth corners) of the same
geometry."""
from __future__ import annotations

import math

import numpy as np

from fer_pipeline.app.synth.identity import Identity
from fer_pipeline.app.synth.paint import (D_BROW, D_EYE, D_MOUTH, D_NOSE, EYE_Y, MOUTH_Y, Painter, Pose,
                                      band, bezier, ellipse_pts, mix, shade)

_LM_DEPTH = np.array([D_EYE, D_EYE, D_NOSE, D_MOUTH, D_MOUTH], np.float64)


def draw_features(p: Painter, idn: Identity, a: dict, dark, side: int, gaze) -> None:
    """Forehead, eyes, brows, nose and mouth, in that order (``a``: parameter name -> value)."""
    _draw_forehead(p, idn, a, dark, side)
    _draw_eyes(p, idn, a, side, gaze)
    _draw_brows(p, idn, a, side)
    _draw_nose(p, idn, a, dark, side)
    _draw_mouth(p, idn, a, dark, side)


def landmarks(idn: Identity, a: dict, pose: Pose, side: int) -> np.ndarray:
    """(5, 2) float32 image coordinates: image-left eye, image-right eye, nose tip, image-left
    mouth corner, image-right mouth corner."""
    half_w, dy = _mouth_corners(idn, a, side)
    lm = np.array([[-idn.eye_sep, EYE_Y], [idn.eye_sep, EYE_Y], [0.0, _nose_tip_y(idn, a)],
                   [-half_w[0], MOUTH_Y + dy[0]], [half_w[1], MOUTH_Y + dy[1]]], np.float64)
    return pose.apply(lm, _LM_DEPTH).astype(np.float32)


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
        p.faint_line([bezier((-8, y + 2), (0, y - 1.5), (8, y + 2), 6) for y in (-46, -51)], idn.skin,
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
        creases.append(bezier((cx - s * ew * 0.9, EYE_Y - 1), (cx + s * ew * 0.1, crease_y - 2.5),
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
        bags.append(bezier((cx - ew * 0.8, EYE_Y + 4), (cx, EYE_Y + 7 - 1.5 * a["cheek_raise"]),
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
        curve = bezier((inner_x, inner_y), (ex + s * 1.0, mid_y), (outer_x, outer_y), 12)
        bands.append(band(curve, idn.brow_th * 1.15, idn.brow_th * 0.55))
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
    p.line(bezier((-3, EYE_Y + 4), (-4.5, -12), (-3.5, tip_y - 4), 8), shade(idn.skin, 0.88), 1.0,
           D_NOSE * 0.6)
    p.line([bezier((s * (w * 0.55), tip_y - 5), (s * (w + 1.5), tip_y), (s * (w * 0.45), tip_y + 2.5), 8)
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
    pucker, press = a["lip_pucker"], a["lip_press"]
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
        curve = bezier((s * (idn.nose_w + 3.5), -2.0 - 2.0 * ulr),
                        (s * (idn.nose_w + 12 + 2 * pull), MOUTH_Y - 10 - 2 * pull),
                        (cx + s * 4.0, cy + 4.0 + 3 * dep), 10)
        p.faint_line(curve, idn.skin, dark, f, 1.1, D_MOUTH * 0.7)
        if a["smirk"] > 0.2 and s == side:  # dimple at the pulled corner, opening outward
            a0 = -1.2 if s > 0 else math.pi - 1.2
            dimple = ellipse_pts(cx + s * 3, cy, 2.0, 2.5, 6, a0, a0 + 2.4)
            p.faint_line(dimple, idn.skin, dark, a["smirk"], 1.0, D_MOUTH)
    if a["chin_raise"] > 0.2:  # chin boss under a pushed-up lower lip
        cy = float(lo_out.max()) + 6 + 10 * jaw
        p.faint_line(bezier((-7, cy), (0, cy + 3), (7, cy), 8), idn.skin, dark, a["chin_raise"] * 0.8,
                     0.9, D_MOUTH * 0.8)
    if dep > 0.3:  # marionette lines under dropped corners
        for i, s in enumerate((-1, 1)):
            cx, cy = s * half_w[i], MOUTH_Y + dy[i]
            p.faint_line(np.array([[cx + s * 0.5, cy + 1.5], [cx + s * 2.5, cy + 8]]), idn.skin, dark,
                         dep * 0.75, 0.9, D_MOUTH * 0.8)
