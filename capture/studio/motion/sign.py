"""``sign``: the non-dominant (left) hand holds a base handshape; the dominant hand runs through
handshapes of ``HANDSHAPES`` and touches targets on it (palm, back, fingertips).
"""

from __future__ import annotations

import numpy as np

from capture.studio.motion.handshapes import jittered
from capture.studio.motion.moves import (APPROACH_GAP, contact_point, dwell, go_to_contact, release, run_actions,
                                         slide, target_rotation)
from capture.studio.motion.sampling import Key
from capture.studio.motion.script import Script

_SIGN_MARKS = {  # dominant handshape -> the landmarks it touches with
    "point": ["tip_index"], "V": ["tip_index", "tip_middle"], "flat": ["pad_middle", "palm", "edge"],
    "fist": ["knuckles", "edge"], "O": ["tip_thumb"], "C": ["pad_thumb", "tip_index"], "L": ["tip_index", "tip_thumb"],
    "relaxed": ["pad_index", "palm"],
}


def _act_sign_phrase(script: Script, rng: np.random.Generator) -> None:
    """The base (left) hand holds a handshape palm up, palm right or palm towards the subject; the
    dominant hand touches it with 4-8 handshapes, each at a target landmark."""
    base_shape = jittered(["flat", "flat", "fist", "C", "spread"][int(rng.integers(5))], rng, 2)
    palm = [np.array([0.2, 0, 1.0]), np.array([1.0, 0, 0.2]), np.array([0.3, -1.0, 0.3])][int(rng.integers(3))]
    rot_l = target_rotation(0, rng, palm=palm)
    targets = ["palm", "back", "heel", "pad_index", "tip_index", "tip_middle", "side_index"]
    wrist_l = None
    shape = None
    for _ in range(int(rng.integers(4, 9))):
        if shape is None or rng.random() < 0.5:  # else the next sign keeps the handshape
            shape = list(_SIGN_MARKS)[int(rng.integers(len(_SIGN_MARKS)))]
        mark_a = _SIGN_MARKS[shape][int(rng.integers(len(_SIGN_MARKS[shape])))]
        if wrist_l is None or rng.random() < 0.5:  # else the next sign is made at the same place
            mark_t = targets[int(rng.integers(len(targets)))]
        if wrist_l is None:
            at = contact_point(rng) + np.array([-0.02, 0, 0])
        else:  # the base hand stays where it is
            vl, _ = script.local(np.stack([rot_l, np.eye(3)]), np.stack([base_shape, base_shape]))
            at = wrist_l + vl[0, script.marks.ids[mark_t]]
        key = script.touch(0, rot_l, base_shape, mark_t, at, jittered(shape, rng, 3), mark_a,
                           np.array([0.5, -0.8, -0.2]), tilt=0.35, weights=(0.1, 0.9), margin=0.0)
        gap = rng.uniform(0.01, 0.025) if script.last.contact else rng.uniform(*APPROACH_GAP)
        lifted = script.separated(script.last, gap)
        if script.failed or (script.last.contact and script.collides(lifted, script.separated(key, gap))):
            script.failed = False  # no placement, or on the base hand's far side: another sign
            continue
        wrist_l = key.wrist[0]
        if script.last.contact:
            script.add(lifted, speed=0.25)
        go_to_contact(script, script.separated(key, gap), key, speed=rng.uniform(0.2, 0.3))
        _in_contact(script, rng, key, mark_t in ("palm", "back", "heel"))
    if script.last.contact:
        release(script, rng.uniform(*APPROACH_GAP))


def _in_contact(script: Script, rng: np.random.Generator, key: Key, flat: bool) -> None:
    """What a sign does at its contact: holds it, taps again (a repeated movement), both hands move
    on together, or (on a ``flat`` target: palm, back, heel) brushes along the base hand."""
    kind = int(rng.choice(4, p=[0.25, 0.15, 0.3, 0.3] if flat else [0.35, 0.2, 0.45, 0.0]))
    if kind == 0:
        script.hold(rng.uniform(0.7, 1.2))
    elif kind == 1:
        for _ in range(int(rng.integers(1, 3))):
            script.hold(rng.uniform(0.2, 0.35))
            release(script, rng.uniform(0.004, 0.008), speed=0.12)
            script.add(key, speed=0.12)
        script.hold(rng.uniform(0.3, 0.5))
    elif kind == 2:
        dwell(script, rng, rng.uniform(1.0, 1.6), turn_deg=12.0, drift=0.02)
    else:
        slide(script, rng, key, 1, script.last.rot[0] @ np.array([1.0, 0, 0]), int(rng.integers(2, 5)),
              length=(0.01, 0.02))
        script.hold(rng.uniform(0.3, 0.5))


def choreograph(script: Script, rng: np.random.Generator, until: float) -> None:
    """Append sign's actions, drawn at random, until the script lasts ``until`` seconds."""
    run_actions(script, rng, until, [_act_sign_phrase])
