"""Moves the four choreographies share: the ready pose, a target hand's rotation, approaching a
contact and releasing it, palms pressed or clapping, fingers closing around the other hand, and
the loop that appends randomly drawn actions (taking back those with no plausible placement).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from capture.studio.motion.forearm import forearm_ok, hand_rotation
from capture.studio.motion.handshapes import jittered
from capture.studio.motion.penetration import PRESS
from capture.studio.motion.rotations import rot_about, unit
from capture.studio.motion.sampling import Key
from capture.studio.motion.script import Script
from hand_model.pose_prior import DEG


def ready(script: Script, rng: np.random.Generator, shape: str = "relaxed") -> Key:
    """Hands apart in front of the subject, palms facing down and a little inwards."""
    rot = np.stack([
        hand_rotation(0, np.array([-0.1, -0.85, -0.5]), np.array([0.3, 0, -1.0])),
        hand_rotation(1, np.array([0.1, -0.85, -0.5]), np.array([-0.3, 0, -1.0])),
    ])
    rot = np.stack([rot_about(rng.normal(size=3), rng.uniform(0, 8 * DEG)) @ r for r in rot])
    wrist = np.array([[-0.12, -0.09, -0.02], [0.12, -0.09, -0.02]]) + rng.uniform(-0.015, 0.015, (2, 3))
    angles = np.stack([jittered(shape, rng), jittered(shape, rng)])
    key = Key(rot=rot, angles=angles, wrist=wrist, pivot=wrist.copy(), push=np.array([1.0, 0, 0]),
              weights=np.array([0.5, 0.5]))
    return _palm_pivots(script, key)


def _palm_pivots(script: Script, key: Key) -> Key:
    v, _ = script.posed(key)
    return replace(key, pivot=v[:, script.marks.ids["palm"]].copy())


def contact_point(rng: np.random.Generator) -> np.ndarray:
    return np.array([rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.04), rng.uniform(-0.03, 0.05)])


def target_rotation(hand: int, rng: np.random.Generator, palm: np.ndarray | None = None) -> np.ndarray:
    """A random plausible rotation for a hand that is touched (palm towards ``palm`` if given)."""
    side = -1.0 if hand == 0 else 1.0
    for _ in range(100):
        f = unit(np.array([side * rng.uniform(0.0, 0.6), -rng.uniform(0.5, 1.0), -rng.uniform(-0.3, 0.8)]))
        if not forearm_ok(f, 0.1):
            continue
        n = palm if palm is not None else rng.normal(size=3)
        n = unit(n - (n @ f) * f + 0.15 * rng.normal(size=3))
        return hand_rotation(hand, f, n)
    return hand_rotation(hand, np.array([side * 0.3, -0.8, -0.4]), np.array([-side, 0, 0.3]))


def go_to_contact(script: Script, pre: Key, contact: Key, speed: float | None = None) -> None:
    script.add(pre, speed=speed, avoid=True)
    script.add(contact, speed=speed)


def release(script: Script, gap: float, speed: float | None = None) -> None:
    script.add(script.separated(script.last, gap), speed=speed)


def feasible_touch(script: Script, make, tries: int = 6) -> Key | None:
    """Call ``make()`` (a ``Script.touch``) until it gives a key with plausible forearms."""
    for _ in range(tries):
        key = make()
        if not script.failed:
            return key
        script.failed = False
    return None


def touch_weights(target: int, rng: np.random.Generator) -> tuple[float, float]:
    w_t = rng.uniform(0.1, 0.5)  # the touched hand moves less
    return (w_t, 1 - w_t) if target == 0 else (1 - w_t, w_t)


def act_palms(script: Script, rng: np.random.Generator, shape: str = "flat", slide: int = 0,
               claps: int = 0) -> None:
    """Palms pressed together (optionally sliding, or clapping ``claps`` times)."""
    def make():
        rot_l, rot_r = facing_pair(rng)
        return script.touch(0, rot_l, jittered(shape, rng), "palm", contact_point(rng), jittered(shape, rng), "palm",
                            np.array([0.3, -0.8, -0.4]), weights=(0.5, 0.5), rot_a=rot_r)

    key = feasible_touch(script, make)
    if key is None:
        return
    if claps:
        pre = script.separated(key, rng.uniform(0.07, 0.1))
        script.add(pre)
        for _ in range(claps):
            script.add(key, speed=0.42)
            script.hold(rng.uniform(0.05, 0.12))
            script.add(pre, speed=0.35)
        return
    go_to_contact(script, script.separated(key, rng.uniform(0.04, 0.07)), key)
    script.hold(rng.uniform(0.15, 0.4))
    if slide:
        along = unit(key.rot[0] @ np.array([1.0, 0, 0]))  # along the left hand's fingers
        along = unit(along - (along @ key.push) * key.push)
        for k in range(slide):
            d = rng.uniform(0.012, 0.025) * (1 if k % 2 == 0 else -1)
            moved = replace(key, wrist=key.wrist + np.array([[0.0], [1.0]]) * d * along,
                            pivot=key.pivot + np.array([[0.0], [1.0]]) * d * along)
            script.add(script.settle(moved), speed=0.15)
    release(script, rng.uniform(0.04, 0.07))


def facing_pair(rng: np.random.Generator, twist: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rotations of two hands with the palms facing each other, mirror images of each other up to
    a small turn, forearms opening a little towards the elbows (the hand has no wrist joint)."""
    f_l = unit(np.array([-rng.uniform(0.04, 0.15), -rng.uniform(0.6, 0.9), -rng.uniform(0.2, 0.7)]))
    rot_l = hand_rotation(0, f_l, unit(np.array([1.0, 0.0, rng.uniform(-0.3, 0.3)])))
    mirror = np.diag([-1.0, 1.0, 1.0])
    rot_r = mirror @ rot_l @ mirror
    twist = np.deg2rad(rng.uniform(-10, 10)) if twist is None else twist
    palm_r = rot_r @ np.array([0, -1.0, 0])
    return rot_l, rot_about(palm_r, twist) @ rot_r


def _close_until_touch(script: Script, key: Key, hand: int, shape: np.ndarray, steps: int = 5) -> Key:
    """Blend a hand's angles towards ``shape`` as far as it goes without pressing deeper than PRESS."""
    lo, hi = 0.0, 1.0
    best = key
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        angles = key.angles.copy()
        angles[hand] = (1 - mid) * key.angles[hand] + mid * shape
        trial = replace(key, angles=angles)
        v, _ = script.posed(trial)
        if script.overlap(v) <= PRESS + 5e-4:
            lo, best = mid, trial
        else:
            hi = mid
    return replace(best, contact=True)


def grip_and_release(script: Script, rng: np.random.Generator, make, closers: tuple[int, ...],
                      hold_s: tuple[float, float]) -> None:
    """Approach a feasible touch, close the ``closers`` hands' fingers around the other until they
    touch, hold for a while, open again and separate."""
    key = feasible_touch(script, make)
    if key is None:
        return
    go_to_contact(script, script.separated(key, rng.uniform(0.04, 0.07)), key)
    grip = key
    for hand in closers:
        grip = _close_until_touch(script, grip, hand, jittered("grip", rng))
    script.add(grip, speed=0.2)
    script.hold(rng.uniform(*hold_s))
    script.add(replace(key, contact=True), speed=0.2)
    release(script, rng.uniform(0.04, 0.07))


def run_actions(script: Script, rng: np.random.Generator, until: float, acts: list, repeat: bool = True) -> None:
    """Append randomly drawn actions until the script lasts ``until`` seconds."""
    last = -1
    while script.duration < until:
        k = int(rng.integers(len(acts)))
        if k == last and not repeat:
            continue
        before = script.checkpoint()
        acts[k](script, rng)
        if script.checkpoint() == before or not script.plausible_since(before):
            script.rollback(before)  # no plausible placement or path found: wait a moment
            script.hold(0.3)
        last = k
