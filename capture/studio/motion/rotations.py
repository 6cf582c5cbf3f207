"""Small rotation helpers of the studio's motion: unit vectors, rotations about an axis, the
smallest rotation between two directions, a random direction near another.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def rot_about(axis: np.ndarray, angle: float) -> np.ndarray:
    return Rotation.from_rotvec(unit(axis) * angle).as_matrix()


def align(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(3, 3) the smallest rotation taking unit a to unit b."""
    axis = np.cross(a, b)
    s, c = np.linalg.norm(axis), float(a @ b)
    if s < 1e-9:
        if c > 0:
            return np.eye(3)
        perp = np.cross(a, [1.0, 0, 0] if abs(a[0]) < 0.9 else [0, 1.0, 0])
        return rot_about(perp, np.pi)
    return rot_about(axis, np.arctan2(s, c))


def random_direction_near(v: np.ndarray, max_angle: float, rng: np.random.Generator) -> np.ndarray:
    axis = np.cross(v, rng.normal(size=3))
    return rot_about(axis, rng.uniform(0, max_angle)) @ v
