"""Anatomy of the open hand model's right hand at rest: joint centres, radii, bone lengths.

Frame (as MANO's): metres; the hand lies flat, fingers along -x, palm facing -y
(palmar), thumb side +z; the wrist joint at the origin. The left hand is the mirror
image (x -> -x).

Figures, adult hand, mean of both sexes:

* Phalanx and metacarpal lengths: Buryanov A., Kotiuk V., "Proportions of hand
  segments", Int. J. Morphol. 28(3):755-758, 2010 (radiographic bone lengths, mm):

      metacarpals  I 46.22  II 68.12  III 64.60  IV 58.00  V 53.69
      proximal     I 30.90  II 39.78  III 44.63  IV 41.37  V 32.74
      middle                II 22.38  III 26.33  IV 25.65  V 18.11
      distal       I 24.47  II 15.82  III 17.40  IV 17.30  V 15.96

  A joint centre lies near the head of the proximal bone, so joint-to-joint
  distances equal these bone lengths. The fingertip keypoint is the skin end of the
  finger: distal phalanx + ``TIP_PAD`` of pulp. Wrist-to-MCP distances add the carpal
  height over each metacarpal base (capitate/hamate/trapezoid, ~20-23 mm) to the
  metacarpal length.
* Finger breadths at the joints (radii below are half of them): typical adult
  values, 16-22 mm at the PIP joints, narrowing ~15% towards the tip.
"""

from __future__ import annotations

import numpy as np

MM = 1e-3
TIP_PAD = 4.0 * MM

FINGERS = ("thumb", "index", "middle", "ring", "pinky")

# Documented keypoint-to-keypoint lengths per finger, base to tip (mm), from the table above:
# thumb: CMC->MCP = metacarpal I, MCP->IP, IP->tip; fingers: wrist->MCP, MCP->PIP, PIP->DIP, DIP->tip.
CARPAL_HEIGHT = {"index": 20.0, "middle": 22.0, "ring": 22.0, "pinky": 20.5}
BONE_LENGTHS_MM: dict[str, tuple[float, ...]] = {
    "thumb": (46.22, 30.90, 24.47 + TIP_PAD / MM),
    "index": (68.12 + CARPAL_HEIGHT["index"], 39.78, 22.38, 15.82 + TIP_PAD / MM),
    "middle": (64.60 + CARPAL_HEIGHT["middle"], 44.63, 26.33, 17.40 + TIP_PAD / MM),
    "ring": (58.00 + CARPAL_HEIGHT["ring"], 41.37, 25.65, 17.30 + TIP_PAD / MM),
    "pinky": (53.69 + CARPAL_HEIGHT["pinky"], 32.74, 18.11, 15.96 + TIP_PAD / MM),
}

# Joint radii (half the finger breadth) at base, each joint and the tip centre, mm.
RADII_MM: dict[str, tuple[float, ...]] = {
    "thumb": (13.0, 11.0, 10.0, 8.6),  # CMC (thenar), MCP, IP, tip
    "index": (10.5, 9.6, 8.4, 7.3),  # MCP, PIP, DIP, tip
    "middle": (10.8, 9.8, 8.6, 7.5),
    "ring": (10.2, 9.3, 8.1, 7.1),
    "pinky": (9.0, 8.3, 7.3, 6.5),
}

# Rest-pose placement: MCP lateral offset (z) and dorsal offset (y, the metacarpal arch),
# and each finger's direction in the palm plane (degrees towards the thumb from -x).
MCP_LATERAL_MM = {"index": 25.0, "middle": 6.0, "ring": -12.0, "pinky": -28.0}
MCP_DORSAL_MM = {"index": 0.0, "middle": 2.0, "ring": 0.0, "pinky": -3.0}
SPREAD_DEG = {"index": 8.0, "middle": 1.0, "ring": -5.0, "pinky": -11.0}

THUMB_CMC_MM = np.array([-24.0, -9.0, 20.0])  # trapeziometacarpal joint, palmar-radial of the wrist
THUMB_DIRS = (np.array([-0.62, -0.30, 0.72]), np.array([-0.74, -0.25, 0.62]), np.array([-0.80, -0.22, 0.56]))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def finger_chain(finger: str) -> np.ndarray:
    """(5, 3) or (4, 3) keypoints of a finger at rest, metres: base ... tip.

    Fingers: wrist, MCP, PIP, DIP, tip. Thumb: CMC, MCP, IP, tip.
    """
    L = np.array(BONE_LENGTHS_MM[finger]) * MM
    if finger == "thumb":
        pts = [THUMB_CMC_MM * MM]
        for length, d in zip(L, THUMB_DIRS):
            pts.append(pts[-1] + length * _unit(d))
        return np.array(pts)
    mcp_lateral, mcp_dorsal = MCP_LATERAL_MM[finger] * MM, MCP_DORSAL_MM[finger] * MM
    mcp_x = -np.sqrt(L[0] ** 2 - mcp_lateral ** 2 - mcp_dorsal ** 2)
    pts = [np.zeros(3), np.array([mcp_x, mcp_dorsal, mcp_lateral])]
    a = np.deg2rad(SPREAD_DEG[finger])
    d = np.array([-np.cos(a), 0.0, np.sin(a)])
    for length in L[1:]:
        pts.append(pts[-1] + length * d)
    return np.array(pts)


def rest_keypoints() -> np.ndarray:
    """(21, 3) rest keypoints of the right hand in our (OpenPose) order, metres."""
    out = [np.zeros(3)]
    for finger in FINGERS:
        chain = finger_chain(finger)
        out += list(chain if finger == "thumb" else chain[1:])
    return np.array(out)


def documented_lengths() -> np.ndarray:
    """(20,) the documented bone lengths in the order of data_schemas.keypoints.HAND_BONES, metres."""
    out = []
    for finger in FINGERS:
        L = BONE_LENGTHS_MM[finger]
        if finger == "thumb":  # wrist->CMC is not a documented bone: measure it from the placement
            out += [np.linalg.norm(THUMB_CMC_MM)] + list(L)
        else:
            out += list(L)
    return np.array(out) * MM
