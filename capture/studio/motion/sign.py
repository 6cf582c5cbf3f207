"""``sign``: the non-dominant (left) hand holds a base handshape; the dominant hand runs through
handshapes of ``HANDSHAPES`` and touches targets on it (palm, back, fingertips).
"""

from __future__ import annotations

import numpy as np

from capture.studio.motion.handshapes import jittered
from capture.studio.motion.moves import contact_point, go_to_contact, release, run_actions, target_rotation
from capture.studio.motion.script import Script

_SIGN_MARKS = {  # dominant handshape -> the landmarks it touches with
    "point": ["tip_index"], "V": ["tip_index", "tip_middle"], "flat": ["pad_middle", "palm", "edge"],
    "fist": ["knuckles", "edge"], "O": ["tip_thumb"], "C": ["pad_thumb", "tip_index"], "L": ["tip_index", "tip_thumb"],
    "relaxed": ["pad_index", "palm"],
}


def _act_sign_phrase(script: Script, rng: np.random.Generator) -> None:
    """The base (left) hand holds a handshape palm up, palm right or palm towards the subject; the
    dominant hand touches it with 2-4 handshapes, each at a target landmark."""
    base_shape = jittered(["flat", "flat", "fist", "C", "spread"][int(rng.integers(5))], rng, 2)
    palm = [np.array([0.2, 0, 1.0]), np.array([1.0, 0, 0.2]), np.array([0.3, -1.0, 0.3])][int(rng.integers(3))]
    rot_l = target_rotation(0, rng, palm=palm)
    targets = ["palm", "back", "heel", "pad_index", "tip_index", "tip_middle", "side_index"]
    wrist_l = None
    for _ in range(int(rng.integers(2, 5))):
        shape = list(_SIGN_MARKS)[int(rng.integers(len(_SIGN_MARKS)))]
        mark_a = _SIGN_MARKS[shape][int(rng.integers(len(_SIGN_MARKS[shape])))]
        mark_t = targets[int(rng.integers(len(targets)))]
        if wrist_l is None:
            at = contact_point(rng) + np.array([-0.02, 0, 0])
        else:  # the base hand stays where it is
            vl, _ = script.local(np.stack([rot_l, np.eye(3)]), np.stack([base_shape, base_shape]))
            at = wrist_l + vl[0, script.marks.ids[mark_t]]
        key = script.touch(0, rot_l, base_shape, mark_t, at, jittered(shape, rng, 3), mark_a,
                           np.array([0.5, -0.8, -0.2]), tilt=0.35, weights=(0.1, 0.9), margin=0.0)
        if script.failed:
            script.failed = False
            continue
        wrist_l = key.wrist[0]
        gap = rng.uniform(0.02, 0.04) if script.last.contact else rng.uniform(0.04, 0.07)
        if script.last.contact:
            release(script, gap, speed=0.25)
        go_to_contact(script, script.separated(key, gap), key, speed=rng.uniform(0.2, 0.3))
        script.hold(rng.uniform(0.15, 0.4))
    if script.last.contact:
        release(script, rng.uniform(0.04, 0.07))


def choreograph(script: Script, rng: np.random.Generator, until: float) -> None:
    """Append sign's actions, drawn at random, until the script lasts ``until`` seconds."""
    run_actions(script, rng, until, [_act_sign_phrase])
