"""The keypoint order used in every file and array of the system.

42 points: the left hand's 21, then the right hand's 21. Each hand follows the
OpenPose / COCO-WholeBody hand order (MediaPipe Hands uses the same order)::

     0 wrist
     1-4   thumb   (CMC, MCP, IP, tip)
     5-8   index   (MCP, PIP, DIP, tip)
     9-12  middle  (MCP, PIP, DIP, tip)
    13-16  ring    (MCP, PIP, DIP, tip)
    17-20  pinky   (MCP, PIP, DIP, tip)

MANO has 16 joints (wrist; index, middle, pinky, ring, thumb, three each, in that
order) and no fingertips. The 21 points of a hand are those 16 joints plus 5
fingertip vertices, appended as joints 16-20 in the order thumb, index, middle,
ring, pinky (the vertex ids belong to the hand model). ``MANO21_TO_OPENPOSE``
reorders those 21 into ours:

    ours:  0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15 16 17 18 19 20
    MANO:  0 13 14 15 T  1  2  3  I  4  5  6  M 10 11 12  R  7  8  9  P
    (T I M R P = fingertip vertices, MANO-21 index 16 17 18 19 20)
"""

from __future__ import annotations

import numpy as np

HANDS = ("left", "right")
N_HAND_JOINTS = 21
N_KEYPOINTS = 2 * N_HAND_JOINTS  # 42

FINGERS = ("thumb", "index", "middle", "ring", "pinky")
HAND_JOINT_NAMES: tuple[str, ...] = ("wrist",) + tuple(
    f"{finger}{k}" for finger in FINGERS for k in range(1, 5)
)
KEYPOINT_NAMES: tuple[str, ...] = tuple(
    f"{hand}_{name}" for hand in HANDS for name in HAND_JOINT_NAMES
)

# Parent of each joint within a hand (ours), -1 for the wrist.
HAND_PARENTS: tuple[int, ...] = (-1,) + tuple(
    0 if k == 0 else 1 + 4 * f + k - 1 for f in range(5) for k in range(4)
)
# Bones as (parent, child) pairs within a hand, 20 of them.
HAND_BONES: tuple[tuple[int, int], ...] = tuple(
    (p, c) for c, p in enumerate(HAND_PARENTS) if p >= 0
)
FINGERTIPS: tuple[int, ...] = (4, 8, 12, 16, 20)

# MANO's 16 joints, in MANO's order.
MANO_JOINT_NAMES: tuple[str, ...] = (
    "wrist",
    "index1", "index2", "index3",
    "middle1", "middle2", "middle3",
    "pinky1", "pinky2", "pinky3",
    "ring1", "ring2", "ring3",
    "thumb1", "thumb2", "thumb3",
)
# MANO-21 = MANO's 16 joints + tips (thumb, index, middle, ring, pinky).
MANO21_NAMES: tuple[str, ...] = MANO_JOINT_NAMES + tuple(f"{f}4" for f in FINGERS)
# ours[i] = mano21[MANO21_TO_OPENPOSE[i]]
MANO21_TO_OPENPOSE: tuple[int, ...] = tuple(MANO21_NAMES.index(n) for n in HAND_JOINT_NAMES)
# ours index of each MANO-21 point: mano21[j] = ours[OURS_OF_MANO21[j]]
OURS_OF_MANO21: tuple[int, ...] = tuple(MANO21_TO_OPENPOSE.index(j) for j in range(N_HAND_JOINTS))
# MANO's kinematic tree (parent of each of the 16 joints).
MANO_PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)

# COCO-WholeBody (133 points): left hand 91-111, right hand 112-132, same order as ours.
COCO_WHOLEBODY_LEFT_HAND = slice(91, 112)
COCO_WHOLEBODY_RIGHT_HAND = slice(112, 133)


def hand_slice(hand: str | int) -> slice:
    """Index range of one hand in the 42-point order."""
    h = HANDS.index(hand) if isinstance(hand, str) else int(hand)
    return slice(h * N_HAND_JOINTS, (h + 1) * N_HAND_JOINTS)


def mano21_to_ours(joints: np.ndarray) -> np.ndarray:
    """Reorder (..., 21, D) points from MANO-21 order to ours."""
    return joints[..., list(MANO21_TO_OPENPOSE), :]


def bone_lengths(joints: np.ndarray) -> np.ndarray:
    """(..., 21, 3) hand joints in our order -> (..., 20) bone lengths."""
    parents = [p for p, _ in HAND_BONES]
    children = [c for _, c in HAND_BONES]
    return np.linalg.norm(joints[..., children, :] - joints[..., parents, :], axis=-1)
