"""Identity of a synthetic person: skin, hair and eye colours, head and feature proportions,
hair style, glasses, beard; drawn once per person from a random generator."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fer_pipeline.app.synth.paint import mix, shade

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
