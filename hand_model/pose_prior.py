"""Joint limits and a pose prior for the 45 hand-pose parameters (15 joints x axis-angle).

Each of MANO's 15 finger joints gets an anatomical frame at rest: ``twist`` along the
bone, ``abduction`` about the palm normal (sideways), ``flexion`` about the axis that
curls the bone towards the palm (positive = flexion). A pose parameter is written as
``theta_j = F_j @ (twist, abduction, flexion)`` (radians); for the angles of real
hands this is the axis-angle vector to within the small coupling of the three.

Ranges (degrees, flexion lo..hi / abduction / twist), adult active range of motion as
in the AAOS norms (Greene & Heckman, "The Clinical Measurement of Joint Motion",
1994): MCP 0..90 flexion with up to 30 hyperextension, PIP 0..100, DIP 0..80 (with 10
hyperextension); thumb CMC 50 of palmar abduction / opposition, thumb MCP 0..55,
thumb IP -15..80. Sideways motion at MCPs +-20 (+-25 for the index and pinky), a few
degrees at the interphalangeal joints; twist a few degrees (passive play).
"""

from __future__ import annotations

import numpy as np

from data_schemas.keypoints import MANO_JOINT_NAMES, OURS_OF_MANO21

DEG = np.pi / 180
# (twist lo, hi), (abduction lo, hi), (flexion lo, hi) in degrees, per joint kind
_LIMITS_DEG = {
    "mcp": ((-10, 10), (-20, 20), (-30, 90)),
    "mcp_outer": ((-10, 10), (-25, 25), (-30, 90)),  # index and pinky MCPs spread further
    "pip": ((-5, 5), (-5, 5), (-5, 100)),
    "dip": ((-5, 5), (-5, 5), (-10, 80)),
    "thumb_cmc": ((-25, 25), (-20, 50), (-20, 45)),
    "thumb_mcp": ((-10, 10), (-10, 10), (-10, 55)),
    "thumb_ip": ((-5, 5), (-5, 5), (-15, 80)),
}


def joint_kind(name: str) -> str:
    finger, k = name[:-1], int(name[-1])
    if finger == "thumb":
        return ("thumb_cmc", "thumb_mcp", "thumb_ip")[k - 1]
    if k == 1:
        return "mcp_outer" if finger in ("index", "pinky") else "mcp"
    return ("pip", "dip")[k - 2]


def limits_deg() -> tuple[np.ndarray, np.ndarray]:
    """(15, 3) lower and upper bounds of (twist, abduction, flexion), degrees, MANO joint order."""
    lo = np.array([[r[0] for r in _LIMITS_DEG[joint_kind(n)]] for n in MANO_JOINT_NAMES[1:]], float)
    hi = np.array([[r[1] for r in _LIMITS_DEG[joint_kind(n)]] for n in MANO_JOINT_NAMES[1:]], float)
    return lo, hi


def bone_children(keypoints21: np.ndarray) -> np.ndarray:
    """(21, 3) keypoints in our order -> (15, 3) the point each of MANO's joints 1..15 turns
    (the next joint along its finger, or the fingertip)."""
    return np.asarray(keypoints21)[[i + 1 for i in OURS_OF_MANO21[1:16]]]


def anatomical_frames(joints16: np.ndarray, children: np.ndarray) -> np.ndarray:
    """(15, 3, 3) frames F_j, columns (twist, abduction, flexion) axes, for the right hand at rest.

    ``joints16``: MANO's 16 joints at rest; ``children``: (15, 3) the point each joint's bone
    points to (next joint or fingertip).
    """
    frames = []
    for j in range(1, 16):
        d = children[j - 1] - joints16[j]
        d /= np.linalg.norm(d)
        thumb = MANO_JOINT_NAMES[j].startswith("thumb")
        # palmar direction the bone curls towards: -y for fingers; across the palm for the thumb
        n = np.array([0.0, -0.6, -0.8]) if thumb else np.array([0.0, -1.0, 0.0])
        n = n - (n @ d) * d
        n /= np.linalg.norm(n)
        flex = np.cross(d, n)  # rotating d about flex moves it towards n
        abd = np.cross(flex, d)
        frames.append(np.stack([d, abd, flex], axis=1))
    return np.array(frames)


def to_axis_angle(angles: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """(..., 15, 3) anatomical angles (rad) -> (..., 45) pose parameters."""
    return np.einsum("jab,...jb->...ja", frames, angles).reshape(angles.shape[:-2] + (45,))


def to_anatomical(pose: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """(..., 45) pose parameters -> (..., 15, 3) anatomical angles (rad)."""
    return np.einsum("jba,...jb->...ja", frames, pose.reshape(pose.shape[:-1] + (15, 3)))


def sample_angles(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 15, 3) plausible anatomical angles (rad): fingers curl together, with per-finger
    and per-joint variation, inside the joint limits."""
    lo, hi = limits_deg()
    grasp = rng.uniform(0.0, 1.0, (n, 1))  # how closed the hand is
    finger_curl = np.clip(grasp + rng.normal(0, 0.3, (n, 5)), -0.1, 1.0)  # per finger
    # FINGERS order (thumb, index, middle, ring, pinky) -> MANO order (index, middle, pinky, ring, thumb)
    curl = np.repeat(finger_curl[:, [1, 2, 4, 3, 0]], 3, axis=1)  # (n, 15)
    curl = np.clip(curl + rng.normal(0, 0.12, curl.shape), -0.1, 1.0)
    flex = np.where(curl >= 0, curl * hi[:, 2], -curl * lo[:, 2])
    abd = rng.normal(0, 0.35, (n, 15)) * (hi[:, 1] - lo[:, 1]) / 2 * (1 - 0.6 * curl) + (hi[:, 1] + lo[:, 1]) / 2
    twist = rng.normal(0, 0.3, (n, 15)) * (hi[:, 0] - lo[:, 0]) / 2
    angles = np.stack([twist, abd, flex], axis=-1)
    return np.clip(angles, lo, hi) * DEG


def limit_violation(angles: np.ndarray) -> np.ndarray:
    """(..., 15, 3) anatomical angles (rad) -> (..., 15, 3) how far outside the limits (rad, >= 0)."""
    lo, hi = limits_deg()
    return np.maximum(angles - hi * DEG, 0) + np.maximum(lo * DEG - angles, 0)
