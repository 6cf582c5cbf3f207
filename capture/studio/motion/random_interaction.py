"""``random_interaction``: hands approach, touch and release in random ways: a fingertip on the other
palm or back, palms pressed, fingers interlaced, one hand grasping the other's fingers, a palm on
the other's back.
"""

from __future__ import annotations

import numpy as np

from capture.studio.motion.handshapes import jittered
from capture.studio.motion.moves import (APPROACH_GAP, act_palms, contact_point, dwell, facing_pair, feasible_touch,
                                         go_to_contact, grip_and_release, release, run_actions, slide,
                                         target_rotation, touch_weights)
from capture.studio.motion.script import Script


def _act_tip_on_palm(script: Script, rng: np.random.Generator) -> None:
    """A fingertip of one hand on the other's palm, heel or back, held (and maybe tapped)."""
    target = int(rng.integers(2))
    finger = rng.choice(["index", "index", "middle", "thumb"])
    shape = {"index": "point", "middle": "V", "thumb": "L"}[finger]
    mark_t = rng.choice(["palm", "palm", "back", "heel"])

    def make():
        rot_t = target_rotation(target, rng)
        fa = np.array([0.5 if target == 0 else -0.5, -0.8, -0.2])
        return script.touch(target, rot_t, jittered(rng.choice(["flat", "relaxed"]), rng), mark_t, contact_point(rng),
                            jittered(shape, rng), f"tip_{finger}", fa, tilt=0.4, weights=touch_weights(target, rng))

    key = feasible_touch(script, make)
    if key is None:
        return
    go_to_contact(script, script.separated(key, rng.uniform(*APPROACH_GAP)), key)
    dwell(script, rng, rng.uniform(0.4, 0.9))
    if rng.random() < 0.4:  # tap again
        release(script, rng.uniform(0.01, 0.02), speed=0.15)
        script.add(key, speed=0.15)
        dwell(script, rng, rng.uniform(0.3, 0.6))
    else:  # or trace a line on it
        slide(script, rng, script.last, 1 - target, rng.normal(size=3), int(rng.integers(1, 4)))
        dwell(script, rng, rng.uniform(0.2, 0.5))
    release(script, rng.uniform(*APPROACH_GAP))


def _act_grasp_fingers(script: Script, rng: np.random.Generator) -> None:
    """One hand closes around the other's fingers."""
    target = int(rng.integers(2))

    def make():
        rot_t = target_rotation(target, rng)
        fa = np.array([0.5 if target == 0 else -0.5, -0.8, -0.3])
        return script.touch(target, rot_t, jittered("flat", rng), rng.choice(["pad_middle", "pad_index"]),
                            contact_point(rng), jittered("C", rng), "palm", fa, tilt=0.2,
                            weights=touch_weights(target, rng))

    grip_and_release(script, rng, make, (1 - target,), (0.6, 1.4))


def _act_interlock(script: Script, rng: np.random.Generator) -> None:
    """Palms facing, fingers spread and offset so they interlace, then curl over the other's."""
    def make():
        rot_l, rot_r = facing_pair(rng, twist=np.deg2rad(rng.uniform(-6, 6)))
        across = rot_l @ np.array([0.0, 0.0, 1.0]) * rng.choice([-1, 1]) * rng.uniform(0.007, 0.011)
        return script.touch(0, rot_l, jittered("spread", rng), "palm", contact_point(rng), jittered("spread", rng),
                            "palm", np.array([0.3, -0.8, -0.4]), weights=(0.5, 0.5), rot_a=rot_r, offset=across)

    grip_and_release(script, rng, make, (1, 0), (0.6, 1.4))


def _act_palm_on_back(script: Script, rng: np.random.Generator) -> None:
    """One palm laid on the back of the other hand (flat, relaxed or a fist)."""
    target = int(rng.integers(2))

    def make():
        rot_t = target_rotation(target, rng, palm=np.array([0.0, 0.0, -1.0]))
        fa = np.array([0.4 if target == 0 else -0.4, -0.8, -0.2])
        return script.touch(target, rot_t, jittered(rng.choice(["flat", "relaxed", "fist"]), rng), "back",
                            contact_point(rng), jittered(rng.choice(["flat", "relaxed"]), rng), "palm", fa,
                            tilt=0.2, weights=touch_weights(target, rng))

    key = feasible_touch(script, make)
    if key is None:
        return
    go_to_contact(script, script.separated(key, rng.uniform(*APPROACH_GAP)), key)
    dwell(script, rng, rng.uniform(0.6, 1.4))
    if rng.random() < 0.5:  # stroke the back of the hand
        slide(script, rng, script.last, 1 - target, script.last.rot[target] @ np.array([1.0, 0, 0]),
              int(rng.integers(2, 4)))
        dwell(script, rng, rng.uniform(0.2, 0.5))
    release(script, rng.uniform(*APPROACH_GAP))


def _act_press(script: Script, rng: np.random.Generator) -> None:
    act_palms(script, rng, str(rng.choice(["flat", "relaxed"])), slide_strokes=int(rng.integers(0, 3)))


def choreograph(script: Script, rng: np.random.Generator, until: float) -> None:
    """Append random_interaction's actions, drawn at random, until the script lasts ``until`` seconds."""
    run_actions(script, rng, until,
                [_act_tip_on_palm, _act_press, _act_interlock, _act_grasp_fingers, _act_palm_on_back])
