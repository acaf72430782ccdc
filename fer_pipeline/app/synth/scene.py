"""Frame composition: background, people (body, head pose, expression dynamics), occluders,
lighting and sensor noise.

A :class:`Scene` precomputes every per-frame control signal of one video (pose, gaze,
blinks, talking, lighting, noise) so :meth:`Scene.render` only draws, and frame k is the
same whatever was rendered before it.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from fer_pipeline.app.synth.expression import AU, N_AU, apex_vector
from fer_pipeline.app.synth.face import draw_face, face_landmarks
from fer_pipeline.app.synth.identity import Identity
from fer_pipeline.app.synth.paint import Painter, Pose, ellipse_pts, shade
from fer_pipeline.app.synth.plan import (STREAM_MOTION, STREAM_SCENE, PersonPlan, VideoPlan, rng_for)
from fer_pipeline.app.synth.timeline import APPROACH_S, Timeline

HEAD_UNITS = 150.0     # skull top to chin, face units: sets the on-screen head size
D_OCCLUDER = 45.0      # occluders float in front of the face (move most with yaw)
_EDGE = 3.0            # landmarks of a visible face stay this many pixels inside the frame
_NOISE_BANK = 6


# ----------------------------------------------------------------------------------- signals
def wander(rng: np.random.Generator, n: int, fps: float, amp: float,
           freq: tuple[float, float] = (0.03, 0.25), k: int = 3) -> np.ndarray:
    """Smooth random signal in [-amp, amp]: a sum of k slow sinusoids (n,) float64."""
    t = np.arange(n) / fps
    w = rng.uniform(0.3, 1.0, k)
    w /= w.sum()
    out = np.zeros(n)
    for wi in w:
        out += wi * np.sin(2 * np.pi * rng.uniform(*freq) * t + rng.uniform(0, 2 * np.pi))
    return amp * out


def smoothstep(u):
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3 - 2 * u)


def _pulses(rng, n: int, fps: float, every: tuple[float, float], length: tuple[float, float]) -> np.ndarray:
    """Triangular 0..1 pulses at random intervals (blinks)."""
    out = np.zeros(n, np.float32)
    t = rng.uniform(0.2, every[1]) * fps
    while t < n:
        ln = max(3, int(round(rng.uniform(*length) * fps)))
        prof = 1 - np.abs(np.linspace(-1, 1, ln))
        s = int(t)
        out[s:s + ln] = np.maximum(out[s:s + ln], prof[:max(0, min(ln, n - s))])
        t += rng.uniform(*every) * fps
    return out


def _steps(rng, n: int, fps: float, amp: float, hold: tuple[float, float]) -> np.ndarray:
    """Piecewise-constant targets in [-amp, amp] joined by quick (0.12 s) moves (gaze)."""
    ts, vs = [0.0], [rng.uniform(-amp, amp)]
    while ts[-1] < n:
        t_hold = ts[-1] + rng.uniform(*hold) * fps
        ts += [t_hold, t_hold + 0.12 * fps]
        vs += [vs[-1], rng.uniform(-amp, amp)]
    return np.interp(np.arange(n), ts, vs)


def lighting_row(w: int, gain: float, grad: float, contrast: float, tint: np.ndarray) -> np.ndarray:
    """(w, 3) float32 per-column multiplier: contrast * gain * (1 + grad * x) * tint, with x
    running -1..1 from the left to the right edge (a light source off to one side)."""
    x = np.linspace(-1, 1, w, dtype=np.float32)[:, None]
    return (contrast * gain * (1 + grad * x) * tint[None, :]).astype(np.float32)


def apply_lighting(frame: np.ndarray, row: np.ndarray, add: np.ndarray, blur: float) -> np.ndarray:
    """Slight defocus, then out = in * row + add, saturated to uint8. ``row`` (w, 3) from
    :func:`lighting_row`; ``add`` (h, w, 3) float32 holds the contrast offset plus noise."""
    h, w = frame.shape[:2]
    frame = cv2.GaussianBlur(frame, (3, 3), blur)
    gain = cv2.repeat(row.reshape(1, w * 3), h, 1).reshape(h, w, 3)
    return cv2.add(cv2.multiply(frame, gain, dtype=cv2.CV_32F), add, dtype=cv2.CV_8U)


# ----------------------------------------------------------------------------------- background
def make_background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """One random backdrop (h, w, 3) uint8: gradient, room, bokeh or stripes, with texture."""
    kind = rng.choice(["gradient", "room", "bokeh", "stripes"])
    c0, c1 = rng.uniform(30, 230, 3), rng.uniform(30, 230, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    u = ((xx - w / 2) * math.cos(ang) + (yy - h / 2) * math.sin(ang)) / max(w, h) + 0.5
    img = (c0[None, None] * (1 - u[..., None]) + c1[None, None] * u[..., None]).astype(np.float32)
    if kind == "room":
        wall = rng.uniform(90, 220, 3)
        img = img * 0.3 + wall * 0.7
        floor_y = int(h * rng.uniform(0.7, 0.9))
        img[floor_y:] = img[floor_y:] * 0.6 + rng.uniform(40, 140, 3) * 0.4
        for _ in range(int(rng.integers(2, 5))):  # windows, doors, pictures, shelves
            x0, y0 = int(rng.uniform(-0.1, 0.9) * w), int(rng.uniform(0.0, 0.6) * h)
            x1, y1 = x0 + int(rng.uniform(0.1, 0.4) * w), y0 + int(rng.uniform(0.1, 0.5) * h)
            col = rng.uniform(20, 250, 3)
            cv2.rectangle(img, (x0, y0), (x1, y1), col.tolist(), -1)
            cv2.rectangle(img, (x0, y0), (x1, y1), (col * 0.6).tolist(), max(1, w // 120))
            if rng.random() < 0.5:
                xm = (x0 + x1) // 2
                cv2.line(img, (xm, y0), (xm, y1), (col * 0.6).tolist(), max(1, w // 160))
    elif kind == "bokeh":
        img *= rng.uniform(0.3, 0.8)
        for _ in range(int(rng.integers(15, 40))):
            cv2.circle(img, (int(rng.uniform(0, w)), int(rng.uniform(0, h))),
                       int(rng.uniform(0.02, 0.1) * w), rng.uniform(60, 255, 3).tolist(), -1, cv2.LINE_AA)
        img = cv2.GaussianBlur(img, (0, 0), w * 0.02)
    elif kind == "stripes":
        period = rng.uniform(0.05, 0.2) * w
        ang2 = rng.uniform(0, np.pi)
        v = np.sin(2 * np.pi * (xx * math.cos(ang2) + yy * math.sin(ang2)) / period) > 0
        img = np.where(v[..., None], img, img * rng.uniform(0.6, 0.9))
        img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 1.0)
    # Low-frequency mottling and fine grain so backgrounds are not flat.
    lo = rng.normal(0, 1, (6, 6, 3)).astype(np.float32)
    img += cv2.resize(lo, (w, h), interpolation=cv2.INTER_CUBIC) * rng.uniform(3, 14)
    img += rng.normal(0, rng.uniform(1, 5), (h, w, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------- people
def draw_body(img: np.ndarray, idn: Identity, pose: Pose) -> None:
    """Neck and shoulders under the head; they follow the head's position and size only."""
    p = Painter(img, Pose(pose.cx, pose.cy, pose.scale, roll=pose.roll * 0.25))
    neck = np.array([[-23, 20], [23, 20], [26, 96], [-26, 96]], np.float64)
    p.fill(neck, shade(idn.skin, 0.8))
    body = np.array([[-130, 320], [-124, 128], [-100, 100], [-34, 86], [0, 100], [34, 86],
                     [100, 100], [124, 128], [130, 320]], np.float64)
    p.fill(body, idn.shirt)
    p.line(np.array([[-34, 86], [0, 112], [34, 86]]), shade(idn.shirt, 0.7), 2.0)


def _hand(p: Painter, skin, x: float, y: float, ang: float, size: float = 1.0) -> None:
    """Back of a hand: palm at (x, y), fingers pointing along ``ang`` (radians, 0 = +x)."""
    edge = shade(skin, 0.7)
    c, s = math.cos(ang), math.sin(ang)
    rot = np.array([[c, -s], [s, c]])
    palm = ellipse_pts(0, 0, 20 * size, 17 * size, 20) @ rot.T + [x, y]
    fingers = []
    for i, (off, ln) in enumerate(((-12, 30), (-4, 35), (4, 33), (12, 27))):
        base = np.array([10 * size, off * size])
        tip = base + [ln * size, 0.2 * off * size]
        fingers.append(np.array([base, tip]) @ rot.T + [x, y])
    thumb = np.array([[0, 14 * size], [14 * size, 30 * size]]) @ rot.T + [x, y]
    for f in fingers + [thumb]:
        p.line(f, edge, 9.5 * size, D_OCCLUDER)
    p.fill(palm, edge, D_OCCLUDER)
    p.fill(palm * 0.97 + np.array([x, y]) * 0.03, skin, D_OCCLUDER)
    for f in fingers + [thumb]:
        p.line(f, skin, 8.0 * size, D_OCCLUDER)
    for f in fingers[:3]:  # knuckle creases
        mid = f[0] * 0.5 + f[1] * 0.5
        p.line(np.array([mid - [s * 3, -c * 3], mid + [s * 3, -c * 3]]), edge, 0.8, D_OCCLUDER)


def draw_occluder(img: np.ndarray, kind: str, idn: Identity, pose: Pose, side: int,
                  enter: float, rng_vals: np.ndarray) -> None:
    """Something in front of the face, in face units so it follows the head. ``enter`` (0..1)
    slides it in from below; ``rng_vals`` (4,) are fixed per stretch (colour, tilt)."""
    p = Painter(img, pose)
    dy = (1.0 - enter) * 140.0
    skin = shade(idn.skin, 0.96)
    tilt = (rng_vals[0] - 0.5) * 0.4
    if kind == "hand_mouth":
        _hand(p, skin, side * 10, 52 + dy, -math.pi / 2 - side * (0.5 + tilt), 1.0)
    elif kind == "hand_cheek":
        _hand(p, skin, side * (idn.face_w - 2), 45 + dy, -math.pi / 2 - side * (0.15 + tilt), 1.0)
    elif kind == "hand_eye":
        _hand(p, skin, side * (idn.eye_sep + 38), -14 + dy, math.pi if side > 0 else 0.0, 0.95)
    elif kind == "phone":
        col = tuple(float(v) for v in 30 + 60 * rng_vals[1:4])
        t = np.linspace(0, 2 * np.pi, 28)
        centre = np.array([side * 18, 40 + dy])
        shape = np.stack([16 * np.clip(1.3 * np.cos(t), -1, 1), 30 * np.clip(1.15 * np.sin(t), -1, 1)], 1)
        p.fill(shape + centre, col, D_OCCLUDER)                           # rounded case
        p.fill(shape * [0.8, 0.85] + centre, (70, 60, 50), D_OCCLUDER)     # screen
        _hand(p, skin, side * 20, 78 + dy, -math.pi / 2, 0.8)
    elif kind == "mug":
        col = tuple(float(v) for v in 40 + 200 * rng_vals[1:4])
        body = np.array([[-20, 28], [20, 28], [18, 80], [-18, 80]]) + [side * 8, dy]
        p.line(ellipse_pts(side * 8 + side * 22, 48 + dy, 9, 12, 16), shade(col, 0.8), 5.0, D_OCCLUDER)
        p.fill(body, col, D_OCCLUDER)
        p.fill(ellipse_pts(side * 8, 28 + dy, 20, 5, 18), shade(col, 0.75), D_OCCLUDER)
    elif kind == "mic":
        p.line(np.array([[side * 6, 55 + dy], [side * 10, 140 + dy]]), (40, 40, 45), 7.0, D_OCCLUDER)
        p.fill(ellipse_pts(side * 6, 42 + dy, 12, 13, 20), (90, 90, 95), D_OCCLUDER)
        for k in (-6, 0, 6):
            p.line(np.array([[side * 6 - 11, 42 + k + dy], [side * 6 + 11, 42 + k + dy]]), (60, 60, 65),
                   0.8, D_OCCLUDER)
    elif kind == "paper":
        col = tuple(float(v) for v in 200 + 50 * rng_vals[1:4])
        c, s = math.cos(tilt), math.sin(tilt)
        sheet = np.array([[-45, -32], [45, -32], [45, 32], [-45, 32]]) @ np.array([[c, -s], [s, c]]).T
        p.fill(sheet + [side * 32, 58 + dy], col, D_OCCLUDER)
        for k in range(4):
            y = -20 + 10 * k
            line = np.array([[-35, y], [30, y]]) @ np.array([[c, -s], [s, c]]).T + [side * 32, 58 + dy]
            p.line(line, shade(col, 0.6), 0.8, D_OCCLUDER)


class PersonTrack:
    """Per-frame control signals of one person in one video."""

    def __init__(self, person: PersonPlan, vp: VideoPlan, rng: np.random.Generator):
        tl: Timeline = person.timeline
        n, fps, w, h = vp.n_frames, vp.fps, vp.width, vp.height
        self.person, self.tl, self.idn = person, tl, person.identity
        slot = person.slot
        if slot == 0:
            head_px = h * rng.uniform(0.5, 0.66)
            cx0, cy0 = w * rng.uniform(0.4, 0.6), h * rng.uniform(0.42, 0.5)
        else:
            head_px = min(h * rng.uniform(0.38, 0.46), w * 0.36)
            cx0, cy0 = w * (0.5 + slot * rng.uniform(0.22, 0.27)), h * rng.uniform(0.42, 0.52)
        s0 = head_px / HEAD_UNITS
        move = 0.6 if slot else 1.0
        self.cx = cx0 + wander(rng, n, fps, w * rng.uniform(0.02, 0.07) * move)
        self.cy = cy0 + wander(rng, n, fps, h * rng.uniform(0.01, 0.04))
        self.scale = s0 * (1 + wander(rng, n, fps, rng.uniform(0.03, 0.1)))
        self.roll = wander(rng, n, fps, rng.uniform(0.03, 0.14))
        self.yaw = wander(rng, n, fps, rng.uniform(0.1, 0.45), (0.04, 0.3))
        self.pitch = wander(rng, n, fps, rng.uniform(0.03, 0.12))
        self.gaze = np.stack([_steps(rng, n, fps, 0.6, (0.4, 3.0)), _steps(rng, n, fps, 0.5, (0.4, 3.0))], 1)
        self.lm_noise = rng.normal(0, 0.35, (n, 5, 2)).astype(np.float32)  # detector jitter, px

        # Expression parameters: event apexes blended by intensity, plus idle behaviour.
        apexes = np.stack([apex_vector(e.cls, e.variant, rng) for e in tl.events]
                          + [np.zeros(N_AU, np.float32)])     # last row: neutral gaps (event_of -1)
        # Perceived change grows faster than linearly at low intensity (a 0.4 expression is
        # already clearly visible), hence the 0.75 power.
        inten = np.clip(tl.intensity * self.idn.expressivity, 0, 1) ** 0.75
        au = inten[:, None] * apexes[tl.event_of]
        rest = 1.0 - np.clip(tl.intensity / 0.5, 0, 1)
        talk_amt = rng.choice([0.0, 0.0, rng.uniform(0.3, 1.0)])
        if talk_amt:
            t = np.arange(n) / fps
            rate = rng.uniform(2.0, 3.5)  # syllables per second
            syll = np.abs(np.sin(2 * np.pi * rate * t + wander(rng, n, fps, 2.0, (0.3, 1.0))))
            turns = wander(rng, n, fps, 1.0, (0.05, 0.2)) > 0
            talk = talk_amt * syll * turns * rest
            au[:, AU["lips_part"]] = np.maximum(au[:, AU["lips_part"]], 0.45 * talk)
            au[:, AU["jaw_drop"]] = np.maximum(au[:, AU["jaw_drop"]], 0.12 * talk)
        for name, amp in (("brow_inner_up", 0.12), ("brow_outer_up", 0.1), ("lip_corner_pull", 0.08)):
            au[:, AU[name]] += np.clip(wander(rng, n, fps, amp, (0.1, 0.5)), 0, None) * rest
        au[:, AU["blink"]] = _pulses(rng, n, fps, (1.5, 6.0), (0.12, 0.25))
        self.au = np.clip(au, 0, 1).astype(np.float32)
        self.side = np.array([e.side for e in tl.events] + [1])[tl.event_of]

        # Leaving the picture: frames of each no-face stretch and the approach around it.
        self.exit_mode = np.array([""] * n, dtype=object)
        self.exit_depth = np.zeros(n)        # 0..1 inside a stretch: how far beyond the edge
        self.approach = np.zeros(n)          # 0..1 near a stretch: how close to the edge
        self.approach_mode = np.array([""] * n, dtype=object)
        ramp = max(1, int(round(APPROACH_S * fps)))
        for st in tl.no_face:
            self.exit_mode[st.start:st.end] = st.kind
            k = np.arange(st.start, st.end)
            self.exit_depth[st.start:st.end] = np.minimum(smoothstep((k - st.start + 1) / (0.3 * fps)),
                                                          smoothstep((st.end - k) / (0.3 * fps)))
            if st.kind == "cut":
                continue
            for a, b, up in ((st.start - ramp, st.start, True), (st.end, st.end + ramp, False)):
                ks = np.arange(max(0, a), min(n, b))
                u = (ks - a + 1) / ramp if up else (b - ks) / ramp
                better = smoothstep(u) > self.approach[ks]
                self.approach[ks[better]] = smoothstep(u)[better]
                self.approach_mode[ks[better]] = st.kind
        self.occ_kind = np.array([""] * n, dtype=object)
        self.occ_enter = np.zeros(n)
        self.occ_vals = np.zeros((n, 4))
        for st in tl.occlusions:
            k = np.arange(st.start, st.end)
            self.occ_kind[st.start:st.end] = st.kind
            self.occ_enter[st.start:st.end] = np.minimum(smoothstep((k - st.start + 1) / (0.35 * fps)),
                                                         smoothstep((st.end - k) / (0.35 * fps)))
            self.occ_vals[st.start:st.end] = rng.random(4)
        self.w, self.h = w, h

    def pose(self, k: int) -> tuple[Pose | None, np.ndarray | None]:
        """Pose of frame k and the 5 landmarks, or (None, None) when the camera cut away.
        A visible face keeps its landmarks inside the frame; a face that left has all of
        them outside, so a crop exists exactly for the planned face frames."""
        if self.exit_mode[k] == "cut":
            return None, None
        pose = Pose(float(self.cx[k]), float(self.cy[k]), float(self.scale[k]), float(self.roll[k]),
                    float(self.yaw[k]), float(self.pitch[k]))
        side = int(self.side[k])
        lm = face_landmarks(self.idn, self.au[k], pose, side)
        w, h = self.w, self.h
        dx = dy = 0.0
        if self.tl.face[k]:
            mode, f = self.approach_mode[k], self.approach[k]
            if mode == "exit_left":
                dx = f * (_EDGE + 1 - lm[:, 0].min())
            elif mode == "exit_right":
                dx = f * (w - _EDGE - 2 - lm[:, 0].max())
            elif mode == "exit_down":
                dy = f * (h - _EDGE - 2 - lm[:, 1].max())
            lo, hi = lm.min(0) + [dx, dy], lm.max(0) + [dx, dy]
            dx += max(0.0, _EDGE - lo[0]) - max(0.0, hi[0] - (w - 1 - _EDGE))
            dy += max(0.0, _EDGE - lo[1]) - max(0.0, hi[1] - (h - 1 - _EDGE))
        else:
            mode, f = self.exit_mode[k], self.exit_depth[k]
            size = HEAD_UNITS * pose.scale
            if mode == "exit_left":
                dx = -(lm[:, 0].max() + 2) - f * size * 0.6
            elif mode == "exit_right":
                dx = (w + 1 - lm[:, 0].min()) + f * size * 0.6
            else:
                dy = (h + 1 - lm[:, 1].min()) + f * size * 0.3
        if dx or dy:
            pose = Pose(pose.cx + dx, pose.cy + dy, pose.scale, pose.roll, pose.yaw, pose.pitch)
            lm = lm + np.array([dx, dy], np.float32)
        return pose, lm

    def draw(self, img: np.ndarray, k: int) -> np.ndarray | None:
        """Draw the person into frame k; returns the detector's 5 landmarks when the face is
        in the picture, else None."""
        pose, lm = self.pose(k)
        if pose is None:
            return None
        side = int(self.side[k])
        draw_body(img, self.idn, pose)
        lm_drawn = draw_face(img, self.idn, self.au[k], pose, side, tuple(self.gaze[k]))
        if self.occ_kind[k]:
            draw_occluder(img, self.occ_kind[k], self.idn, pose, side,
                          float(self.occ_enter[k]), self.occ_vals[k])
        if not self.tl.face[k]:
            return None
        return lm_drawn + self.lm_noise[k]


class Scene:
    """One video: backdrop with a slowly panning camera, moving background objects, the
    people, then lighting (brightness/contrast/tint and a left-right gradient), slight
    defocus and per-frame sensor noise."""

    def __init__(self, vp: VideoPlan):
        rng = rng_for(vp.seed, STREAM_SCENE, vp.index)
        n, fps, w, h = vp.n_frames, vp.fps, vp.width, vp.height
        self.vp, self.n, self.w, self.h = vp, n, w, h
        self.margin = m = max(8, int(0.05 * w))
        self.bg = make_background(rng, w + 2 * m, h + 2 * m)
        self.pan = np.stack([m + wander(rng, n, fps, m * 0.9, (0.02, 0.1)),
                             m + wander(rng, n, fps, m * 0.5, (0.02, 0.1))], 1)
        self.movers = []
        for _ in range(int(rng.choice([0, 0, 1, 2]))):
            self.movers.append(dict(
                col=tuple(float(v) for v in rng.uniform(20, 220, 3)), y=rng.uniform(0.1, 0.9) * h,
                r=rng.uniform(0.05, 0.15) * h, speed=rng.uniform(0.05, 0.3) * w / fps * rng.choice([-1, 1]),
                x0=rng.uniform(0, w), kind=int(rng.integers(2))))
        base = rng.uniform(0.82, 1.18)
        self.gain = base * (1 + wander(rng, n, fps, rng.uniform(0.02, 0.1), (0.02, 0.15)))
        self.grad = rng.uniform(-0.35, 0.35) + wander(rng, n, fps, 0.1, (0.02, 0.15))
        self.contrast = rng.uniform(0.8, 1.15)
        self.tint = rng.uniform(0.9, 1.1, 3).astype(np.float32)
        self.blur = rng.uniform(0.3, 0.9)
        sigma = rng.uniform(1.5, 4.5)
        # Sensor noise bank; a random bank and offset per frame keeps it changing cheaply.
        # The contrast offset (what keeps mid-grey fixed) is folded in once here.
        self.noise = rng.standard_normal((_NOISE_BANK, h + 16, w + 16, 3), dtype=np.float32) * sigma
        self.noise += np.float32(128 * (1 - self.contrast) * base)
        self.noise_pick = np.stack([rng.integers(0, _NOISE_BANK, n), rng.integers(0, 16, n),
                                    rng.integers(0, 16, n)], 1)
        self.people = [PersonTrack(p, vp, rng_for(vp.seed, STREAM_MOTION, vp.index, p.slot + 1))
                       for p in vp.persons]

    def render(self, k: int) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """Frame k (h, w, 3) uint8 BGR and, per person, the 5 landmarks or None."""
        ox, oy = (int(round(v)) for v in self.pan[k])
        frame = self.bg[oy:oy + self.h, ox:ox + self.w].copy()
        for mv in self.movers:
            span = self.w + 4 * mv["r"]
            x = (mv["x0"] + mv["speed"] * k) % span - 2 * mv["r"]
            c = (int(round(x * 16)), int(round(mv["y"] * 16)))
            ax = (int(mv["r"] * 16 * (0.6 if mv["kind"] else 1.0)),
                  int(mv["r"] * 16 * (1.6 if mv["kind"] else 1.0)))
            cv2.ellipse(frame, c, ax, 0, 0, 360, mv["col"], -1, cv2.LINE_AA, 4)
        lms = [person.draw(frame, k) for person in self.people]
        bank, nx, ny = self.noise_pick[k]
        add = self.noise[bank, ny:ny + self.h, nx:nx + self.w]
        row = lighting_row(self.w, float(self.gain[k]), float(self.grad[k]), self.contrast, self.tint)
        return apply_lighting(frame, row, add, self.blur), lms
