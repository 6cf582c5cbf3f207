"""``communication``: clapping, a handshake-like clasp, pointing at the other palm, counting on the
other hand's fingers, rubbing the palms.
"""

from __future__ import annotations

import numpy as np

from capture.studio.motion.forearm import hand_rotation
from capture.studio.motion.handshapes import jittered
from capture.studio.motion.moves import (APPROACH_GAP, act_palms, contact_point, dwell, feasible_touch, go_to_contact,
                                         grip_and_release, release, run_actions, slide, target_rotation)
from capture.studio.motion.rotations import unit
from capture.studio.motion.script import Script


def _act_clasp(script: Script, rng: np.random.Generator) -> None:
    """Handshake-like: palms together crosswise, the fingers close around the other hand, and the
    clasped pair shakes up and down a few times."""
    def make():
        f_l = unit(np.array([-rng.uniform(0.05, 0.3), -rng.uniform(0.4, 0.7), -rng.uniform(0.6, 0.9)]))
        rot_l = hand_rotation(0, f_l, unit(np.array([1.0, 0.0, rng.uniform(-0.2, 0.2)])))
        return script.touch(0, rot_l, jittered("relaxed", rng), "palm", contact_point(rng), jittered("relaxed", rng),
                            "palm", np.array([0.4, -0.7, 0.35]), tilt=0.1, weights=(0.5, 0.5))

    grip_and_release(script, rng, make, (1, 0), (0.5, 1.0), shakes=int(rng.integers(2, 5)))


def _act_point(script: Script, rng: np.random.Generator) -> None:
    """The right index points at the left palm and touches it, tapping 0-2 times, and now and then
    draws on it."""
    palm = [np.array([0.3, 0.0, 1.0]), np.array([1.0, 0.0, 0.2]), np.array([0.3, -1.0, 0.3])][int(rng.integers(3))]

    def make():
        rot_l = target_rotation(0, rng, palm=palm)
        return script.touch(0, rot_l, jittered(rng.choice(["flat", "relaxed"]), rng), "palm", contact_point(rng),
                            jittered("point", rng), "tip_index", np.array([0.5, -0.8, -0.2]), tilt=0.45,
                            weights=(0.2, 0.8))

    key = feasible_touch(script, make)
    if key is None:
        return
    go_to_contact(script, script.separated(key, rng.uniform(*APPROACH_GAP)), key)
    for _ in range(int(rng.integers(0, 3))):  # taps
        dwell(script, rng, rng.uniform(0.35, 0.6))
        release(script, rng.uniform(0.01, 0.02), speed=0.15)
        script.add(key, speed=0.15)
    dwell(script, rng, rng.uniform(0.5, 1.0))
    if rng.random() < 0.5:  # draw on the palm
        slide(script, rng, script.last, 1, rng.normal(size=3), int(rng.integers(2, 4)))
        dwell(script, rng, rng.uniform(0.3, 0.6))
    release(script, rng.uniform(*APPROACH_GAP))


def _act_count(script: Script, rng: np.random.Generator) -> None:
    """The right index touches the pads of the left's spread fingers one after another."""
    f_l = unit(np.array([-rng.uniform(0.1, 0.35), -rng.uniform(0.35, 0.55), -rng.uniform(0.75, 0.95)]))
    rot_l = hand_rotation(0, f_l, unit(np.array([rng.uniform(0.2, 0.6), -1.0, 0.0])))
    shape_l = jittered("spread", rng)
    at = contact_point(rng)
    wrist_l = None
    fingers = ["thumb", "index", "middle", "ring", "pinky"][: int(rng.integers(4, 6))]
    if rng.random() < 0.5:
        fingers = fingers[::-1]
    for k, finger in enumerate(fingers):
        if wrist_l is None:
            point = at
        else:  # the left hand stays where it is
            vl, _ = script.local(np.stack([rot_l, np.eye(3)]), np.stack([shape_l, shape_l]))
            point = wrist_l + vl[0, script.marks.ids[f"pad_{finger}"]]
        key = script.touch(0, rot_l, shape_l, f"pad_{finger}", point, jittered("point", rng), "tip_index",
                           np.array([0.5, -0.8, -0.1]), tilt=0.3, weights=(0.1, 0.9), margin=0.0)
        if script.failed:
            script.failed = False
            continue
        wrist_l = key.wrist[0]
        go_to_contact(script, script.separated(key, rng.uniform(0.006, 0.012) if k else rng.uniform(*APPROACH_GAP)),
                      key, speed=None if k == 0 else rng.uniform(0.25, 0.35))
        script.hold(rng.uniform(0.4, 0.7))
    if script.last.contact:
        release(script, rng.uniform(*APPROACH_GAP))


def _act_clap(script: Script, rng: np.random.Generator) -> None:
    act_palms(script, rng, "flat", claps=int(rng.integers(2, 4)))


def _act_rub(script: Script, rng: np.random.Generator) -> None:
    act_palms(script, rng, "relaxed", slide_strokes=int(rng.integers(3, 7)))


def choreograph(script: Script, rng: np.random.Generator, until: float) -> None:
    """Append communication's actions, drawn at random, until the script lasts ``until`` seconds."""
    run_actions(script, rng, until, [_act_clap, _act_clasp, _act_point, _act_count, _act_rub], repeat=False)
