"""Per-person expression timelines: events, true and annotated frame labels, and the stretches
where the face is missing, occluded or unannotated.

Everything here is cheap (no pixels), so whole datasets can be planned and their label
statistics checked without rendering.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fer_pipeline.config import SynthConfig
from fer_pipeline.labels import (ANGER, CLASSES, DISGUST, FEAR, HAPPINESS, IGNORE, NEUTRAL, NUM_CLASSES,
                             OTHER, SADNESS, SURPRISE)
from fer_pipeline.app.synth.expression import N_VARIANTS

# Event class frequencies, shaped after the Aff-Wild2 EXPR training set: Other and Happiness
# common, Sadness/Surprise medium, Anger lower, Fear and Disgust rare. Neutral fills the gaps.
EVENT_WEIGHTS: dict[int, float] = {
    OTHER: 0.34, HAPPINESS: 0.27, SADNESS: 0.15, SURPRISE: 0.11, ANGER: 0.06, FEAR: 0.035,
    DISGUST: 0.035,
}
EXPRESSIONS: tuple[int, ...] = tuple(sorted(EVENT_WEIGHTS))  # the 7 non-neutral classes

# Classes annotators mix up on the weak ends of an expression.
CONFUSABLE: dict[int, int] = {
    FEAR: SURPRISE, SURPRISE: FEAR, ANGER: DISGUST, DISGUST: ANGER, SADNESS: NEUTRAL,
    HAPPINESS: OTHER, OTHER: HAPPINESS,
}

LABEL_THRESHOLD = 0.35          # intensity from which a frame shows the event's class
EVENT_S = (1.2, 5.0)            # event length (onset + apex + offset), seconds
REQUIRED_EVENT_S = (1.5, 3.5)   # shorter events for classes a split must contain
GAP_S = (0.4, 1.5)              # neutral stretch between events
MEAN_CYCLE_S = (sum(EVENT_S) + sum(GAP_S)) / 2
NO_FACE_S = (0.5, 2.0)
OCCLUSION_S = (1.0, 3.0)
UNANNOTATED_S = (0.5, 3.0)
NO_FACE_UNLABELLED_P = 0.3      # share of no-face stretches annotated -1 (else running label)
APPROACH_S = 0.5                # frames this close to a no-face stretch stay free of occluders

EXIT_MODES = ("exit_left", "exit_right", "exit_down", "cut")
OCCLUDER_KINDS = ("hand_mouth", "hand_cheek", "hand_eye", "phone", "mug", "mic", "paper")


@dataclass(frozen=True)
class Event:
    cls: int
    start: int        # first frame (0-based)
    onset: int        # frames ramping up
    apex: int         # frames held
    offset: int       # frames ramping down
    peak: float       # apex intensity, 0..1
    variant: int      # shape variant of the class (see face.N_VARIANTS)
    side: int         # +1/-1: side of one-sided movements
    required: bool    # placed to guarantee the class occurs in its split

    @property
    def apex_start(self) -> int:
        return self.start + self.onset

    @property
    def apex_end(self) -> int:
        return self.start + self.onset + self.apex

    @property
    def end(self) -> int:
        return self.start + self.onset + self.apex + self.offset


@dataclass(frozen=True)
class Stretch:
    start: int
    end: int          # exclusive
    kind: str


@dataclass
class Timeline:
    fps: int
    n_frames: int
    events: list[Event]
    intensity: np.ndarray          # (n,) float32, 0..1
    event_of: np.ndarray           # (n,) int16, index into events, -1 in neutral gaps
    true: np.ndarray               # (n,) int8, class actually shown
    annotated: np.ndarray          # (n,) int8, noisy annotation, -1 = not annotated
    face: np.ndarray               # (n,) bool, face visible (a crop exists)
    occluded: np.ndarray           # (n,) bool
    no_face: list[Stretch] = field(default_factory=list)
    occlusions: list[Stretch] = field(default_factory=list)
    unannotated: list[Stretch] = field(default_factory=list)


# ----------------------------------------------------------------------------------- events
def _sample_class(rng: np.random.Generator) -> int:
    w = np.array([EVENT_WEIGHTS[c] for c in EXPRESSIONS])
    return int(EXPRESSIONS[rng.choice(len(EXPRESSIONS), p=w / w.sum())])


def _make_event(rng, cls, start, length, required) -> Event:
    onset = max(1, int(round(length * rng.uniform(0.2, 0.35))))
    offset = max(1, int(round(length * rng.uniform(0.2, 0.4))))
    apex = max(1, length - onset - offset)
    return Event(cls=cls, start=start, onset=onset, apex=apex, offset=offset,
                 peak=float(rng.uniform(0.6, 1.0)), variant=int(rng.integers(N_VARIANTS[cls])),
                 side=int(rng.choice((-1, 1))), required=required)


def place_events(n_frames: int, fps: int, rng: np.random.Generator,
                 required: tuple[int, ...] = ()) -> list[Event]:
    """Alternate neutral gaps and events until the video ends. ``required`` classes are
    spread over the timeline (more likely the fewer events are left). When time runs short
    they come back to back with minimal gaps and shortened (down to EVENT_S[0]); ones that
    still do not fit are dropped (only in videos of a few seconds)."""
    pending = list(required)
    rng.shuffle(pending)
    events: list[Event] = []
    min_len = int(round(EVENT_S[0] * fps))
    min_gap = int(round(GAP_S[0] * fps))
    req_cycle = (sum(REQUIRED_EVENT_S) + sum(GAP_S)) / 2 * fps
    lead_in = (0.2, 0.3) if n_frames < len(pending) * req_cycle else (0.3, GAP_S[1])
    t = int(round(rng.uniform(*lead_in) * fps))
    while True:
        room = n_frames - t - int(0.2 * fps)
        if room < min_len:
            break
        tight = bool(pending) and room < len(pending) * req_cycle
        # Time a random event (and the gap after it) must leave free for the required ones
        # still pending.
        reserve = len(pending) * int(round((REQUIRED_EVENT_S[0] + GAP_S[0]) * fps)) \
            + (int(round(GAP_S[1] * fps)) if pending else 0)
        expected_left = room / (MEAN_CYCLE_S * fps)
        if pending and (tight or room - reserve < min_len
                        or rng.random() < len(pending) / max(expected_left, 1e-6)):
            share = room // len(pending) - min_gap  # this event's fair part of what is left
            cls, req = pending.pop(), True
            length = int(round(rng.uniform(*REQUIRED_EVENT_S) * fps))
            if tight:
                length = min(length, max(min_len, share))
        else:
            cls, req = _sample_class(rng), False
            length = min(int(round(rng.uniform(*EVENT_S) * fps)), room - reserve)
        ev = _make_event(rng, cls, t, min(length, room), req)
        events.append(ev)
        t = ev.end + (min_gap if tight else int(round(rng.uniform(*GAP_S) * fps)))
    return events


def intensity_curve(events: list[Event], n_frames: int, fps: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame intensity (smoothstep onset/offset ramps, apex with a slight wobble) and
    the index of the event each frame belongs to."""
    inten = np.zeros(n_frames, np.float32)
    owner = np.full(n_frames, -1, np.int16)
    for i, ev in enumerate(events):
        up = np.arange(1, ev.onset + 1) / ev.onset
        down = np.arange(ev.offset - 1, -1, -1) / ev.offset
        ramp = lambda u: u * u * (3 - 2 * u)  # noqa: E731
        phase = rng.uniform(0, 2 * np.pi)
        hold = 1.0 + 0.04 * np.sin(phase + np.arange(ev.apex) * 2 * np.pi * 0.7 / fps)
        prof = np.concatenate([ramp(up), np.minimum(hold, 1.0 / ev.peak), ramp(down)]) * ev.peak
        stop = min(ev.end, n_frames)
        inten[ev.start:stop] = prof[:stop - ev.start]
        owner[ev.start:stop] = i
    return inten, owner


def true_labels(events: list[Event], intensity: np.ndarray, owner: np.ndarray) -> np.ndarray:
    cls = np.array([e.cls for e in events] + [NEUTRAL], np.int8)
    return np.where(intensity >= LABEL_THRESHOLD, cls[owner], NEUTRAL).astype(np.int8)


# ----------------------------------------------------------------------------------- stretches
def _lengths(rng, n_frames: int, fps: int, fraction: float, span: tuple[float, float]) -> list[int]:
    """Stretch lengths adding up to ~fraction * n_frames in expectation (the last one is
    trimmed, or kept with a probability that keeps the expected total right)."""
    target = fraction * n_frames
    lo = int(round(span[0] * fps))
    out, total = [], 0
    while total < target:
        ln = int(round(rng.uniform(*span) * fps))
        left = target - total
        if ln > left:
            if left >= lo:
                ln = int(round(left))
            elif rng.random() >= left / ln:
                break
        out.append(ln)
        total += ln
    return out


def _place(rng, n_frames: int, lengths: list[int], blocked: np.ndarray, margin: int) -> list[tuple[int, int]]:
    """Random non-overlapping positions avoiding ``blocked`` (grown by ``margin``)."""
    placed = []
    busy = blocked.copy()
    for ln in lengths:
        if ln >= n_frames:
            continue
        for _ in range(60):
            s = int(rng.integers(0, n_frames - ln + 1))
            lo, hi = max(0, s - margin), min(n_frames, s + ln + margin)
            if not busy[lo:hi].any():
                placed.append((s, s + ln))
                busy[s:s + ln] = True
                break
    return sorted(placed)


# ----------------------------------------------------------------------------------- annotation
def annotate(true: np.ndarray, events: list[Event], intensity: np.ndarray, owner: np.ndarray,
             fps: int, cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Noisy annotation of ``true``: every labelled span's boundaries move by
    N(0, boundary_jitter_s), and with ``ambiguous_rate`` an onset/offset ramp is given the
    class annotators confuse it with. Spans never cross the midpoint to a neighbour."""
    n = len(true)
    ann = true.copy()
    spans = []
    for i, ev in enumerate(events):
        idx = np.flatnonzero((owner == i) & (intensity >= LABEL_THRESHOLD))
        spans.append((int(idx[0]), int(idx[-1]) + 1) if idx.size else None)
    for i, ev in enumerate(events):
        if spans[i] is None:
            continue
        a, b = spans[i]
        prev_b = next((s[1] for s in reversed(spans[:i]) if s), None)
        next_a = next((s[0] for s in spans[i + 1:] if s), None)
        lo = 0 if prev_b is None else (prev_b + a) // 2
        hi = n if next_a is None else (b + next_a + 1) // 2
        sd = cfg.boundary_jitter_s * fps
        a2 = int(np.clip(a + round(rng.normal(0, sd)), lo, b - 1))
        b2 = int(np.clip(b + round(rng.normal(0, sd)), max(a2 + 1, a + 1), hi))
        ann[a:b] = NEUTRAL
        ann[a2:b2] = ev.cls
        for r0, r1 in ((a2, min(ev.apex_start, b2)), (max(ev.apex_end, a2), b2)):
            if r1 > r0 and rng.random() < cfg.ambiguous_rate:
                ann[r0:r1] = CONFUSABLE[ev.cls]
    return ann


# ----------------------------------------------------------------------------------- builder
def build_timeline(n_frames: int, fps: int, cfg: SynthConfig, rng: np.random.Generator,
                   required: tuple[int, ...] = (), exits: tuple[str, ...] = EXIT_MODES) -> Timeline:
    """One person's timeline. ``required`` classes get (protected) events; ``exits`` are the
    ways this person may leave the picture (a person on the left of a two-shot exits left)."""
    events = place_events(n_frames, fps, rng, required)
    inten, owner = intensity_curve(events, n_frames, fps, rng)
    true = true_labels(events, inten, owner)

    # Apexes of required events stay visible, unoccluded and annotated, so every split keeps
    # every class in its labels and in its crops.
    protect = np.zeros(n_frames, bool)
    for ev in events:
        if ev.required:
            protect[ev.apex_start:min(ev.apex_end, n_frames)] = True
    approach = int(round(APPROACH_S * fps))

    nf_spans = _place(rng, n_frames, _lengths(rng, n_frames, fps, cfg.no_face_fraction, NO_FACE_S),
                      protect, margin=approach)
    no_face = [Stretch(s, e, str(rng.choice(exits))) for s, e in nf_spans]
    blocked = protect.copy()
    for st in no_face:
        blocked[st.start:st.end] = True
    occ_spans = _place(rng, n_frames, _lengths(rng, n_frames, fps, cfg.occlusion_fraction, OCCLUSION_S),
                       blocked, margin=approach)
    occlusions = [Stretch(s, e, str(rng.choice(OCCLUDER_KINDS))) for s, e in occ_spans]
    un_spans = _place(rng, n_frames, _lengths(rng, n_frames, fps, cfg.unannotated_fraction, UNANNOTATED_S),
                      protect, margin=0)
    unannotated = [Stretch(s, e, "unannotated") for s, e in un_spans]

    ann = annotate(true, events, inten, owner, fps, cfg, rng)
    face = np.ones(n_frames, bool)
    for st in no_face:
        face[st.start:st.end] = False
        if rng.random() < NO_FACE_UNLABELLED_P:
            ann[st.start:st.end] = IGNORE
    for st in unannotated:
        ann[st.start:st.end] = IGNORE
    occluded = np.zeros(n_frames, bool)
    for st in occlusions:
        occluded[st.start:st.end] = True
    return Timeline(fps=fps, n_frames=n_frames, events=events, intensity=inten, event_of=owner,
                    true=true, annotated=ann.astype(np.int8), face=face, occluded=occluded,
                    no_face=no_face, occlusions=occlusions, unannotated=unannotated)


def label_counts(labels: np.ndarray) -> dict[str, int]:
    """Counts keyed "-1" and by class name (the summary's format)."""
    out = {"-1": int(np.sum(labels == IGNORE))}
    out.update({CLASSES[c]: int(np.sum(labels == c)) for c in range(NUM_CLASSES)})
    return out
