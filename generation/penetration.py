"""The penetration metric of generated two-hand motion (the HandDiffuse paper's "SDF" column).

Per frame, the penetration depth between the two hand meshes is the largest depth of a vertex
of one hand inside the other hand's closed mesh, both directions (m; 0 when no vertex is
inside). Over a motion::

    depth_per_frame  (F,)  that depth
    fraction               share of frames that penetrate (depth > 0)
    mean_depth             mean depth over the frames that penetrate (0 if none does)

1. Both hands' meshes from the motion's parameters, posed with the hand model
   (``hand_model.posing.pose_hands``; ``penetration`` only).
2. Bounding-box prefilter, all frames at once: a vertex inside the other hand lies inside its
   box, so frames whose two boxes do not overlap have depth 0.
3. The remaining frames: inside test and exact vertex-to-surface distance of
   ``hand_model.contact.hand_contact`` (its ``depth``, without the gap distance).

Speed: step 1 ~0.3 ms a frame; step 3 ~5-15 ms a frame of hands in contact, nothing for the
frames step 2 drops: a 200-frame motion with the hands in contact throughout in ~3 s on one core.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hand_model.contact import hand_contact
from hand_model.model import HandModel
from hand_model.posing import hand_model_for, pose_hands


@dataclass
class PenetrationResult:
    depth_per_frame: np.ndarray  # (F,) m, deepest vertex of either hand inside the other, 0 if none
    mean_depth: float  # m, mean of depth_per_frame over the frames that penetrate, 0 if none
    fraction: float  # share of the frames that penetrate (0 for no frames)

    @classmethod
    def of(cls, depth_per_frame: np.ndarray) -> "PenetrationResult":
        """(F,) per-frame depths -> the summary of the module docstring."""
        d = np.asarray(depth_per_frame, np.float64).reshape(-1)
        hit = d > 0
        return cls(depth_per_frame=d, mean_depth=float(d[hit].mean()) if hit.any() else 0.0,
                   fraction=float(hit.mean()) if len(d) else 0.0)


def boxes_overlap(vertices: np.ndarray) -> np.ndarray:
    """Step 2: (F, 2, V, 3) -> (F,) bool, the two hands' axis-aligned bounding boxes overlap."""
    lo, hi = vertices.min(axis=2), vertices.max(axis=2)  # (F, 2, 3)
    return np.all((lo[:, 0] <= hi[:, 1]) & (lo[:, 1] <= hi[:, 0]), axis=1)


def penetration_depths(vertices: np.ndarray, faces: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(F, 2, V, 3) vertices of two closed, consistently oriented meshes per frame and their
    faces (first, second) -> (F,) penetration depth (steps 2-3), m."""
    v = np.asarray(vertices, np.float64)
    if v.ndim != 4 or v.shape[1] != 2 or v.shape[3] != 3:
        raise ValueError(f"vertices must be (F, 2, V, 3), got {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError("vertices are not finite (a motion with NaN parameters?)")
    depth = np.zeros(len(v))
    # 2.
    near = np.flatnonzero(boxes_overlap(v)) if len(v) else np.zeros(0, np.int64)
    # 3.
    if len(near):
        depth[near] = hand_contact(v[near], faces, with_distance=False).depth
    return depth


def penetration(global_orient: np.ndarray, hand_pose: np.ndarray, betas: np.ndarray, transl: np.ndarray,
                flat_hand_mean: bool = True, model: HandModel | None = None) -> PenetrationResult:
    """A motion's parameters (F, 2, 3), (F, 2, 45), (2, 10), (F, 2, 3) -> its penetration (module
    docstring), posed with ``model`` (default: the bundled hand model, ``hand_model_for("open_hand")``)."""
    # 1.
    model = model if model is not None else hand_model_for("open_hand")
    v = pose_hands(model, global_orient, hand_pose, betas, transl, flat_hand_mean=flat_hand_mean).vertices
    # 2. + 3.
    return PenetrationResult.of(penetration_depths(v, model.faces))
