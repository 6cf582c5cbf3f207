"""Keyframes (``Key``) and the frames sampled between them (step 2 of ``capture.studio.motion``):
a minimum-jerk profile (zero velocity and acceleration at each keyframe); rotations slerped about
a pivot (the contact point or the palm), joint angles and pivots blended linearly in the profile.
Angles inside the joint limits at the keys stay inside (the limits are a box in the angles).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation


@dataclass
class Key:
    rot: np.ndarray  # (2, 3, 3) world rotation of each hand
    angles: np.ndarray  # (2, 15, 3) anatomical angles (right-hand convention; the left mirrors them)
    wrist: np.ndarray  # (2, 3) world wrist joint
    pivot: np.ndarray  # (2, 3) world point each hand turns about towards the next key
    push: np.ndarray  # (3,) unit: the right hand separates along +push, the left along -push
    weights: np.ndarray  # (2,) share of a separation each hand takes
    contact: bool = False


def _min_jerk(tau: np.ndarray) -> np.ndarray:
    return tau ** 3 * (10 - 15 * tau + 6 * tau ** 2)


@dataclass
class Frames:
    rot: np.ndarray  # (F, 2, 3, 3)
    angles: np.ndarray  # (F, 2, 15, 3)
    wrist: np.ndarray  # (F, 2, 3)
    push: np.ndarray  # (F, 3)
    weights: np.ndarray  # (F, 2)


def sample(keys: list[Key], times: list[float], n_frames: int, fps: float) -> Frames:
    """Minimum-jerk interpolation of the keys at t = i / fps."""
    t = np.arange(n_frames) / fps
    times = np.asarray(times)
    seg = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(keys) - 2)  # (F,)
    span = np.maximum(times[seg + 1] - times[seg], 1e-9)
    s = _min_jerk(np.clip((t - times[seg]) / span, 0, 1))  # (F,)
    F = n_frames
    rot, angles, wrist = np.zeros((F, 2, 3, 3)), np.zeros((F, 2, 15, 3)), np.zeros((F, 2, 3))
    push, weights = np.zeros((F, 3)), np.zeros((F, 2))
    for i in range(F):
        k0, k1, w = keys[seg[i]], keys[seg[i] + 1], s[i]
        lerp = lambda a, b: (1 - w) * a + w * b  # noqa: E731
        for h in range(2):
            rel = Rotation.from_matrix(k0.rot[h].T @ k1.rot[h]).as_rotvec()
            rot[i, h] = k0.rot[h] @ Rotation.from_rotvec(w * rel).as_matrix()
            l0 = k0.rot[h].T @ (k0.pivot[h] - k0.wrist[h])  # pivot in the hand's frame
            l1 = k1.rot[h].T @ (k1.pivot[h] - k1.wrist[h])
            wrist[i, h] = lerp(k0.pivot[h], k1.pivot[h]) - rot[i, h] @ lerp(l0, l1)
        angles[i] = lerp(k0.angles, k1.angles)
        p = lerp(k0.push, k1.push)
        push[i] = p / max(np.linalg.norm(p), 1e-9)
        weights[i] = lerp(k0.weights, k1.weights)
    return Frames(rot, angles, wrist, push, weights)
