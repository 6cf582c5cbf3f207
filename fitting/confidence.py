"""How far each hand's fit is trusted, per frame: a confidence in [0, 1] (mano.h5 ``quality/confidence``).

Every frame has an estimate: where a hand has too little evidence, the fit carries it from its
neighbours (temporal terms, interpolation across the gap). The confidence says how much of the
estimate is evidence, and how much carrying, per frame f and hand h:

1. support: s = clip((n_agree - 1) / (min_cameras - 1), 0, 1) x n_joints / 21, with n_agree the views
   that agree with the fit and n_joints the triangulated joints; 0 without a triangulated palm (the
   fit did not use the frame's data for that hand)
2. consistency: c = prod_m 1 / (1 + (x_m / T_m)^4) over the quality measures m (``fitting.quality``:
   disagreeing views, reprojection error, 3D residual, bone lengths, penetration, one-frame jump,
   swapped views), T_m the value above which the quality rule calls the measure bad: a measure well
   under its threshold costs nothing, one at it halves c, one at twice it leaves c / 17
3. own: o = s x c
4. carried: conf = max(o, min(c, max_k o_k x exp(-|f - k| / (carry_seconds x fps)))): a hand is
   trusted as far as its own evidence, or as far as a nearby well-supported frame's trust reaches,
   decaying with the distance in time; never beyond its consistency, so a hand that disagrees with
   its own evidence is not rescued by its neighbours
"""

from __future__ import annotations

import numpy as np

from data_schemas.keypoints import N_HAND_JOINTS


def support(n_agree: np.ndarray, n_joints: np.ndarray, palm: np.ndarray, min_cameras: int) -> np.ndarray:
    """Step 1: (F, 2) agreeing views, triangulated joints, palm triangulated -> s (F, 2) in [0, 1]."""
    views = np.clip((n_agree - 1) / max(min_cameras - 1, 1), 0.0, 1.0)
    return np.where(palm, views * np.clip(n_joints / N_HAND_JOINTS, 0.0, 1.0), 0.0)


def consistency(ratios: list[np.ndarray]) -> np.ndarray:
    """Step 2: measures over their thresholds (each (F, 2), NaN: not measured) -> c (F, 2) in (0, 1]."""
    c = np.ones_like(ratios[0], dtype=np.float64)
    for r in ratios:
        c /= 1.0 + np.nan_to_num(np.maximum(r, 0.0), nan=0.0) ** 4
    return c


def carried(own: np.ndarray, cap: np.ndarray, decay: float) -> np.ndarray:
    """Step 4: own (F, 2), the consistency cap (F, 2), the factor per frame of distance ->
    max(own, min(cap, max_k own_k x decay^|f - k|)) by one pass forward and one back."""
    reach = own.astype(np.float64).copy()
    for f in range(1, len(reach)):  # forward: the nearest trusted frame before
        reach[f] = np.maximum(reach[f], reach[f - 1] * decay)
    for f in range(len(reach) - 2, -1, -1):  # and after
        reach[f] = np.maximum(reach[f], reach[f + 1] * decay)
    return np.maximum(own, np.minimum(cap, reach))


def confidence(n_agree: np.ndarray, n_joints: np.ndarray, palm: np.ndarray, ratios: list[np.ndarray],
               min_cameras: int, carry_seconds: float, fps: float) -> np.ndarray:
    """Steps 1-4 (module docstring) -> (F, 2) float32 in [0, 1]."""
    s = support(n_agree, n_joints, palm, min_cameras)  # 1.
    c = consistency(ratios)  # 2.
    own = s * c  # 3.
    decay = float(np.exp(-1.0 / max(carry_seconds * fps, 1e-9)))
    return np.clip(carried(own, c, decay), 0.0, 1.0).astype(np.float32)  # 4.
