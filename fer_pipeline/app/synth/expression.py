"""Expression parameters of the synthetic face: continuous action-unit-like values (loosely
after FACS), each in [0, 1], and the apex vectors that make up each class and its variants."""
from __future__ import annotations

import numpy as np

from fer_pipeline.labels import ANGER, DISGUST, FEAR, HAPPINESS, NEUTRAL, OTHER, SADNESS, SURPRISE

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
