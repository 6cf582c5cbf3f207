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

APPROACH_GAP = (0.025, 0.045)  # m, how far apart the hands are just before a contact and just after


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


def dwell(script: Script, rng: np.random.Generator, seconds: float, turn_deg: float = 15.0,
          drift: float = 0.015) -> None:
    """Hold the last key's contact for ``seconds`` while the pair moves as one body: a few gentle
    turns (up to ``turn_deg``) about the contact point and drifts (up to ``drift`` m) of the
    contact pose, every one with plausible forearms (else the pair keeps still)."""
    key = script.last
    about = key.pivot[0]
    n = max(1, int(round(seconds / rng.uniform(0.4, 0.7))))
    for _ in range(n):
        moved = replace(key)
        for _ in range(6):
            trial = script.turn_pair(key, rng.normal(size=3), rng.uniform(0.3, 1.0) * turn_deg * DEG, about,
                                     shift=drift * rng.uniform(0.3, 1.0) * unit(rng.normal(size=3)))
            if script.feasible(trial, margin=0.03):
                moved = script.contain(trial)
                break
        script.add(replace(moved, contact=key.contact), duration=seconds / n)


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


def slide(script: Script, rng: np.random.Generator, key: Key, hand: int, along: np.ndarray, strokes: int,
          length: tuple[float, float] = (0.012, 0.025), speed: float = 0.15) -> None:
    """Slide ``hand`` back and forth along ``along`` (made tangent to the contact) over the other,
    pressed: each stroke's end is settled to the light press again."""
    along = unit(along - (along @ key.push) * key.push)
    move = np.zeros((2, 1))
    move[hand] = 1.0
    for k in range(strokes):
        d = rng.uniform(*length) * (1 if k % 2 == 0 else -1)
        moved = replace(key, wrist=key.wrist + move * d * along, pivot=key.pivot + move * d * along)
        script.add(script.settle(moved), speed=speed)


def act_palms(script: Script, rng: np.random.Generator, shape: str = "flat", slide_strokes: int = 0,
              claps: int = 0) -> None:
    """Palms pressed together and held (optionally sliding), or clapping ``claps`` times and
    then, now and then, pressed together to rest."""
    def make():
        rot_l, rot_r = facing_pair(rng)
        return script.touch(0, rot_l, jittered(shape, rng), "palm", contact_point(rng), jittered(shape, rng), "palm",
                            np.array([0.3, -0.8, -0.4]), weights=(0.5, 0.5), rot_a=rot_r)

    key = feasible_touch(script, make)
    if key is None:
        return
    if claps:
        pre = script.separated(key, rng.uniform(0.05, 0.08))
        script.add(pre, avoid=True)
        for k in range(claps):
            script.add(key, speed=0.42)
            script.hold(rng.uniform(0.05, 0.12))
            if k < claps - 1 or rng.random() < 0.6:
                script.add(pre, speed=0.35)
        if not script.last.contact:
            return
    else:
        go_to_contact(script, script.separated(key, rng.uniform(*APPROACH_GAP)), key)
    dwell(script, rng, rng.uniform(0.6, 1.2))
    if slide_strokes:
        slide(script, rng, script.last, 1, script.last.rot[0] @ np.array([1.0, 0, 0]), slide_strokes)
        dwell(script, rng, rng.uniform(0.2, 0.5))
    release(script, rng.uniform(*APPROACH_GAP))


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


def shake(script: Script, rng: np.random.Generator, shakes: int) -> None:
    """The joined pair moved up and down together ``shakes`` times (a handshake), about 2-3 Hz."""
    key = script.last
    about = key.pivot[0]
    side = key.rot[0] @ np.array([1.0, 0, 0])  # the left hand's fingers: tilt about them
    for k in range(2 * shakes):
        sign = 1.0 if k % 2 == 0 else -1.0
        moved = script.turn_pair(key, side, sign * rng.uniform(3, 8) * DEG, about,
                                 shift=np.array([0.0, 0.0, sign * rng.uniform(0.01, 0.02)]))
        if script.feasible(moved, margin=0.03):
            script.add(script.contain(moved), duration=rng.uniform(0.17, 0.24))
    script.add(replace(key), duration=0.2)


def grip_and_release(script: Script, rng: np.random.Generator, make, closers: tuple[int, ...],
                     hold_s: tuple[float, float], shakes: int = 0) -> None:
    """Approach a feasible touch, close the ``closers`` hands' fingers around the other until they
    touch, hold for a while (shaking ``shakes`` times), open again and separate."""
    key = feasible_touch(script, make)
    if key is None:
        return
    go_to_contact(script, script.separated(key, rng.uniform(*APPROACH_GAP)), key)
    grip = key
    for hand in closers:
        grip = _close_until_touch(script, grip, hand, jittered("grip", rng))
    script.add(grip, speed=0.2)
    if shakes:
        shake(script, rng, shakes)
    dwell(script, rng, rng.uniform(*hold_s))
    script.add(replace(script.last, angles=key.angles), speed=0.2)
    release(script, rng.uniform(*APPROACH_GAP))


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
            script.hold(0.15)
        last = k
