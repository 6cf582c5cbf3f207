"""The handshape library: anatomical angles (twist, abduction, flexion) of the right hand, MANO
joint order (``hand_model.pose_prior``), clipped into the joint limits.
"""

from __future__ import annotations

import numpy as np

from hand_model import pose_prior
from hand_model.pose_prior import DEG

_MANO_FINGER = {"index": 0, "middle": 1, "pinky": 2, "ring": 3}  # first joint of each finger / 3


def handshape(fingers: dict[str, tuple[float, float, float, float]],
              thumb: tuple[float, float, float, float, float]) -> np.ndarray:
    """(15, 3) radians, clipped into the joint limits. fingers: name -> (MCP flexion, PIP, DIP,
    MCP abduction (+ towards the little finger)) degrees; thumb: (CMC twist, CMC abduction,
    CMC flexion, MCP flexion, IP flexion) degrees."""
    a = np.zeros((15, 3))
    for name, (mcp, pip, dip, abd) in fingers.items():
        j = 3 * _MANO_FINGER[name]
        a[j], a[j + 1], a[j + 2] = (0, abd, mcp), (0, 0, pip), (0, 0, dip)
    tw, ab, fl, mcp, ip = thumb
    a[12], a[13], a[14] = (tw, ab, fl), (0, 0, mcp), (0, 0, ip)
    lo, hi = pose_prior.limits_deg()
    return np.clip(a, lo + 1e-3, hi - 1e-3) * DEG


def _curl(mcp: float, pip: float, dip: float, spread: float = 0.0) -> dict:
    return {"index": (mcp, pip, dip, -spread), "middle": (mcp, pip, dip, 0.0),
            "ring": (mcp, pip, dip, 0.5 * spread), "pinky": (mcp, pip, dip, spread)}


_FIST = _curl(85, 95, 60)
_THUMB_TUCKED = (20, 35, 40, 45, 40)
_THUMB_OUT = (-20, -10, -20, 0, 0)
HANDSHAPES: dict[str, np.ndarray] = {
    "flat": handshape(_curl(0, 0, 0), (0, 0, 0, 0, 0)),
    "relaxed": handshape(_curl(15, 20, 10, 4), (5, 10, 5, 10, 10)),
    "spread": handshape(_curl(5, 5, 5, 20), _THUMB_OUT),
    "fist": handshape(_FIST, _THUMB_TUCKED),
    "point": handshape({**_FIST, "index": (0, 0, 0, 0)}, (20, 30, 40, 45, 40)),
    "V": handshape({**_FIST, "index": (0, 0, 0, -15), "middle": (0, 0, 0, 12)}, _THUMB_TUCKED),
    "L": handshape({**_FIST, "index": (0, 0, 0, 0)}, _THUMB_OUT),
    "O": handshape(_curl(45, 60, 35), (20, 45, 35, 20, 20)),
    "C": handshape(_curl(30, 40, 20), (0, 35, 10, 10, 10)),
    "table": handshape(_curl(88, 0, 0), (0, 0, 0, 0, 0)),  # fingers straight at a right angle
    "grip": handshape(_curl(70, 80, 45), (15, 40, 30, 30, 30)),  # closing around something
}


def jittered(name: str, rng: np.random.Generator, jitter_deg: float = 4.0) -> np.ndarray:
    """A HANDSHAPES entry with a little per-joint variation, inside the limits."""
    lo, hi = pose_prior.limits_deg()
    a = HANDSHAPES[name] + rng.normal(0, jitter_deg * DEG, (15, 3)) * np.array([0.3, 0.5, 1.0])
    return np.clip(a, (lo + 1e-3) * DEG, (hi - 1e-3) * DEG)
