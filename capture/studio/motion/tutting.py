"""``tutting``: angular finger shapes (L, table, flat, point) touching fingertip to fingertip or
fingertips to palm at right angles, both hands then turning together about the contact.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from capture.studio.motion.handshapes import jittered
from capture.studio.motion.moves import (APPROACH_GAP, contact_point, dwell, feasible_touch, go_to_contact, release,
                                         run_actions, target_rotation)
from capture.studio.motion.rotations import unit
from capture.studio.motion.sampling import Key
from capture.studio.motion.script import Script
from hand_model.pose_prior import DEG


def _turn_about_contact(script: Script, rng: np.random.Generator, key: Key) -> None:
    """Turn both hands together about the contact point, if some turn keeps the forearms plausible."""
    about = key.pivot[0]
    for _ in range(12):
        axis = unit(rng.normal(size=3) + np.array([0, 1.5, 0]) * rng.choice([-1, 1]))
        angle = rng.uniform(25, 70) * DEG * rng.choice([-1, 1])
        turned = script.contain(script.turn_pair(key, axis, angle, about))
        steps = [script.turn_pair(key, axis, a, about) for a in np.linspace(0, angle, 5)[1:]]
        if all(script.feasible(k, margin=0.03) for k in steps + [turned]):
            script.add(replace(turned, contact=True), speed=0.18)
            dwell(script, rng, rng.uniform(0.3, 0.6), turn_deg=8.0, drift=0.008)
            return


def _act_tut(script: Script, rng: np.random.Generator) -> None:
    """One tutting move: angular shapes touch (tip to tip, fingers square on a palm, L to L),
    turn together about the contact once or twice, and part."""
    kind = int(rng.integers(3))
    if kind == 0:  # fingertip to fingertip
        f_t = ("index", "middle", "thumb")[int(rng.integers(3))]
        f_a = ("index", "middle", "thumb")[int(rng.integers(3))]
        shapes = {"index": "point", "middle": "V", "thumb": "L"}
        shape_t, shape_a, mark_t, mark_a = shapes[f_t], shapes[f_a], f"tip_{f_t}", f"tip_{f_a}"
    elif kind == 1:  # fingers at a right angle on the other palm
        shape_t, shape_a, mark_t, mark_a = "flat", "table", "palm", "pad_middle"
    else:  # L against L: index tip to thumb tip
        shape_t, shape_a, mark_t, mark_a = "L", "L", "tip_thumb", "tip_index"
    target = int(rng.integers(2))

    def make():
        rot_t = target_rotation(target, rng)
        fa = np.array([0.5 if target == 0 else -0.5, -0.8, -0.2])
        return script.touch(target, rot_t, jittered(shape_t, rng, 2), mark_t, contact_point(rng),
                            jittered(shape_a, rng, 2), mark_a, fa, tilt=0.5, weights=(0.5, 0.5))

    key = feasible_touch(script, make)
    if key is None:
        return
    go_to_contact(script, script.separated(key, rng.uniform(*APPROACH_GAP)), key)
    dwell(script, rng, rng.uniform(0.3, 0.6), turn_deg=8.0, drift=0.008)
    for _ in range(int(rng.integers(1, 4))):
        _turn_about_contact(script, rng, script.last)
    release(script, rng.uniform(*APPROACH_GAP))


def choreograph(script: Script, rng: np.random.Generator, until: float) -> None:
    """Append tutting's actions, drawn at random, until the script lasts ``until`` seconds."""
    run_actions(script, rng, until, [_act_tut])
