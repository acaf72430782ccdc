"""Dataset plan: which videos exist, their split, size, frame rate, people and timelines.

Planning is pixel-free and fully determined by (seed, video index), so label statistics can be
checked without rendering and videos can be rendered in any order or in parallel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fer_pipeline.config import SynthConfig
from fer_pipeline.labels import ANGER, DISGUST, FEAR
from fer_pipeline.app.synth.identity import Identity, random_identity
from fer_pipeline.app.synth.timeline import EXIT_MODES, EXPRESSIONS, Timeline, build_timeline

TRAIN, VAL = "Train_Set", "Validation_Set"
NAME_PREFIX = "synth_"

# Independent random streams: rng_for(seed, STREAM_x, video index, ...).
STREAM_LAYOUT, STREAM_REQUIRED, STREAM_TIMELINE, STREAM_IDENTITY, STREAM_SCENE, STREAM_MOTION, \
    STREAM_STILLS = range(7)

# Seconds of video per required event when deciding how many of each class a split must hold.
_SECONDS_PER_REQUIRED = 4.0


def rng_for(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) % (1 << 63), *keys])


@dataclass
class PersonPlan:
    track: str            # annotation file / crop folder name
    slot: int             # 0 alone in the picture, -1 left, +1 right of a two-person video
    identity: Identity
    timeline: Timeline


@dataclass
class VideoPlan:
    index: int
    name: str             # mp4 stem
    split: str            # TRAIN or VAL
    fps: int
    width: int
    height: int
    n_frames: int
    seed: int
    persons: list[PersonPlan]


def video_name(i: int) -> str:
    return f"{NAME_PREFIX}{i:03d}"


def plan_videos(cfg: SynthConfig, seed: int) -> list[VideoPlan]:
    """Plan every video. The last ``n_val`` videos form the validation split; the last
    training video shows two people (tracks ``<name>_left`` / ``<name>_right``)."""
    n = cfg.n_videos
    val = set(range(n - cfg.n_val, n))
    duo = n - cfg.n_val - 1
    widest = max(cfg.frame_sizes, key=lambda s: s[0] / s[1])
    layout = []
    for i in range(n):
        r = rng_for(seed, STREAM_LAYOUT, i)
        dur = float(r.uniform(*cfg.duration_s))
        fps = int(r.choice(cfg.fps))
        w, h = widest if i == duo else cfg.frame_sizes[int(r.integers(len(cfg.frame_sizes)))]
        slots = (-1, 1) if i == duo else (0,)
        layout.append((max(1, int(round(dur * fps))), fps, int(w), int(h), slots))

    required = _assign_required(seed, layout, val)
    plans = []
    for i, (n_frames, fps, w, h, slots) in enumerate(layout):
        name = video_name(i)
        persons = []
        for slot in slots:
            track = name if slot == 0 else f"{name}_{'left' if slot < 0 else 'right'}"
            exits = EXIT_MODES if slot == 0 else ("exit_left" if slot < 0 else "exit_right", "exit_down")
            tl = build_timeline(n_frames, fps, cfg, rng_for(seed, STREAM_TIMELINE, i, slot + 1),
                                required=tuple(required[(i, slot)]), exits=exits)
            idn = random_identity(rng_for(seed, STREAM_IDENTITY, i, slot + 1))
            persons.append(PersonPlan(track=track, slot=slot, identity=idn, timeline=tl))
        plans.append(VideoPlan(index=i, name=name, split=VAL if i in val else TRAIN, fps=fps,
                               width=w, height=h, n_frames=n_frames, seed=int(seed), persons=persons))
    return plans


def _assign_required(seed: int, layout, val: set[int]) -> dict[tuple[int, int], list[int]]:
    """Spread 1-2 events of each expression class over the people of each split, each to the
    person with the most unclaimed time, so every class occurs in every split however the
    random class draw turns out."""
    out: dict[tuple[int, int], list[int]] = {}
    for split_id, members in enumerate((
            [i for i in range(len(layout)) if i not in val], sorted(val))):
        people = [(i, slot) for i in members for slot in layout[i][4]]
        room = {p: layout[p[0]][0] / layout[p[0]][1] for p in people}
        for p in people:
            out[p] = []
        if not people:
            continue
        # One event of every class; a second one of the rare classes when the split is long
        # enough (the frequent ones get more from the random draw anyway).
        classes = list(EXPRESSIONS)
        if sum(room.values()) >= 2 * len(EXPRESSIONS) * _SECONDS_PER_REQUIRED:
            classes += [ANGER, DISGUST, FEAR]
        rng_for(seed, STREAM_REQUIRED, split_id).shuffle(classes)
        for c in classes:
            p = max(people, key=lambda q: (room[q], -q[0], -q[1]))
            out[p].append(c)
            room[p] -= _SECONDS_PER_REQUIRED
    return out
