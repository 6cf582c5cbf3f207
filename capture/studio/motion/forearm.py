"""The forearms: a hand's rotation from its forearm and palm directions, and what makes a pose
plausible (each forearm pointing back towards the subject, the two apart, the arms not crossed).

The subject sits on the -y side: each forearm leaves its wrist towards -y and downwards, along
the hand model's forearm axis (+x for the right hand, -x for the mirrored left; ``FOREARM_AXIS``),
as the renderer draws it.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from capture.studio.motion.rotations import unit

FOREARM_AXIS = np.array([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])  # model frame, left (mirrored) and right
FOREARM_LENGTH = 0.25  # m
FOREARM_MIN_BACK = 0.2  # a forearm's direction . (0, -1, 0) is at least this
FOREARM_MAX_UP = 0.5  # ... and its z component at most this
FOREARM_MIN_GAP = 0.03  # m, between the two forearms' axes (from FOREARM_START along them)
FOREARM_START = 0.02  # m from the wrist: the wrists themselves may meet when the palms press
ELBOWS_APART = 0.12  # m, the generator keeps the right elbow this far right of the left (no crossed arms)
BACK = np.array([0.0, -1.0, 0.0])  # world: from the capture volume towards the subject


def hand_rotation(hand: int, forearm: np.ndarray, palm: np.ndarray) -> np.ndarray:
    """(3, 3) world rotation of a hand whose forearm points along ``forearm`` and whose palm
    faces ``palm`` (made orthogonal to the forearm). hand: 0 left, 1 right."""
    f = unit(np.asarray(forearm, float))
    n = unit(palm - (palm @ f) * f)
    x = f * FOREARM_AXIS[hand, 0]  # model +x: along the forearm (right), the fingers (left)
    y = -n  # the palm faces model -y
    return np.stack([x, y, np.cross(x, y)], axis=1)


def forearm_directions(global_orient: np.ndarray) -> np.ndarray:
    """(F, 2, 3) axis-angle -> (F, 2, 3) unit world direction from each wrist along its forearm."""
    R = Rotation.from_rotvec(np.asarray(global_orient, float).reshape(-1, 3)).as_matrix()
    R = R.reshape(global_orient.shape[:-1] + (3, 3))
    return np.einsum("...ab,...b->...a", R, np.broadcast_to(FOREARM_AXIS, global_orient.shape))


def _segment_distance(p0, d0, p1, d1) -> np.ndarray:
    """(..., 3) segments p + t d, t in [0, 1] -> (...,) smallest distance between them."""
    r = p0 - p1
    a, e, b = (d0 * d0).sum(-1), (d1 * d1).sum(-1), (d0 * d1).sum(-1)
    c, f = (d0 * r).sum(-1), (d1 * r).sum(-1)
    den = np.maximum(a * e - b * b, 1e-12)
    s = np.clip((b * f - c * e) / den, 0, 1)
    t = np.clip((b * s + f) / e, 0, 1)
    s = np.clip((b * t - c) / a, 0, 1)
    return np.linalg.norm(r + s[..., None] * d0 - t[..., None] * d1, axis=-1)


def forearm_gap(forearm: np.ndarray, wrist: np.ndarray) -> np.ndarray:
    """(..., 2, 3) forearm directions and wrist positions -> (...,) distance between the two
    forearm axes from FOREARM_START to FOREARM_LENGTH along each."""
    p = wrist + FOREARM_START * forearm
    d = (FOREARM_LENGTH - FOREARM_START) * forearm
    return _segment_distance(p[..., 0, :], d[..., 0, :], p[..., 1, :], d[..., 1, :])


def elbows_apart(forearm: np.ndarray, wrist: np.ndarray) -> np.ndarray:
    """(..., 2, 3) forearm directions and wrists -> (...,) how far (m, along x) the right elbow is to
    the right of the left elbow: arms crossed in front of the body make it small or negative."""
    elbow = wrist + FOREARM_LENGTH * forearm
    return elbow[..., 1, 0] - elbow[..., 0, 0]


def forearm_ok(forearm: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """(..., 3) forearm directions -> (...,) bool, pointing back towards the subject."""
    return (forearm @ BACK >= FOREARM_MIN_BACK + margin) & (forearm[..., 2] <= FOREARM_MAX_UP - margin)
