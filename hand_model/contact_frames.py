"""The HandDiffuse paper's two interaction measures of two-hand motion: which frames have the
hands in contact (the contacting-frame ratio), and the shortest joint distance per frame.
Dataset statistics (``pipeline.stats``) and the studio's interaction benchmark use the same rule.

A frame (both hands valid) is *contacting* when the shortest distance between a vertex of the
left hand's posed mesh and a vertex of the right's is under ``threshold`` (3 mm in the paper),
or when the hands interpenetrate: a vertex of one inside the other's closed mesh, as
``hand_model.contact`` decides (a hand pressed into the other can keep every vertex
pair farther apart than 3 mm on a mesh whose edges are ~5 mm long).

1. Both hands' meshes, in batched forward passes of the hand model (~0.3 ms a frame).
2. Exact prefilter, all frames of a batch at once: the distance between the two hands'
   bounding boxes bounds every vertex pair from below, and a vertex inside the other hand lies
   inside its box; frames whose boxes are ``threshold`` or more apart are neither.
3. Nearest vertices: only the vertices of one hand inside the other's box grown by threshold
   can be that close to it; a k-d tree (scipy cKDTree) of the right hand's such vertices
   answers the left's nearest-vertex queries, bounded by threshold.
4. Frames not in contact by distance get the inside test (``hand_contact``, depth > 0).

Why not a prefilter on the joints, before posing the meshes: a bound that holds in every pose
("every vertex is within r of a skeletal joint") has to cover the pose correctives, which
move the open hand model's vertices by up to ~2.3 cm in ordinary poses and, summed over the
15 joints in the worst pose, give r ~ 22 cm: two hands that far apart are rare in a two-hand
interaction dataset, so it would skip almost nothing, while the skinning it saves is the cheap
part (steps 3-4 on two hands 1-5 cm apart cost about as much).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from data_schemas.keypoints import N_HAND_JOINTS
from hand_model.contact import hand_contact
from hand_model.model import HandModel
from hand_model.posing import BATCH, pose_hands

THRESHOLD = 0.003  # m, the paper's contact distance


def shortest_joint_distance(joints: np.ndarray) -> np.ndarray:
    """(F, 42, 3) -> (F,) smallest distance between a left and a right joint (NaN where one is NaN)."""
    left, right = joints[:, :N_HAND_JOINTS], joints[:, N_HAND_JOINTS:]  # (F, 21, 3) each
    d = np.linalg.norm(left[:, :, None].astype(np.float64) - right[:, None], axis=-1)  # (F, 21, 21)
    return d.reshape(len(d), -1).min(axis=1) if len(d) else np.zeros(0)


@dataclass
class ContactFrames:
    contact: np.ndarray  # (F,) bool, contacting (False where a hand is not valid)
    by_distance: np.ndarray  # (F,) bool, a vertex pair closer than threshold
    penetrating: np.ndarray  # (F,) bool, not by distance, but a vertex inside the other hand
    candidates: np.ndarray  # (F,) bool, frames the bounding-box prefilter left to steps 3-4
    both_valid: np.ndarray  # (F,) bool


def box_gap(vertices: np.ndarray) -> np.ndarray:
    """Step 2: (B, 2, V, 3) -> (B,) distance between the two hands' axis-aligned bounding boxes."""
    lo, hi = vertices.min(axis=2), vertices.max(axis=2)  # (B, 2, 3)
    apart = np.maximum(0.0, np.maximum(lo[:, 0] - hi[:, 1], lo[:, 1] - hi[:, 0]))  # (B, 3)
    return np.linalg.norm(apart, axis=1)


def vertices_closer_than(a: np.ndarray, b: np.ndarray, threshold: float) -> bool:
    """Step 3: is some vertex of ``a`` (N, 3) closer than ``threshold`` to a vertex of ``b`` (M, 3)?"""
    lo_b, hi_b = b.min(0) - threshold, b.max(0) + threshold
    a = a[np.all((a >= lo_b) & (a <= hi_b), axis=1)]
    if not len(a):
        return False
    lo_a, hi_a = a.min(0) - threshold, a.max(0) + threshold
    b = b[np.all((b >= lo_a) & (b <= hi_a), axis=1)]
    if not len(b):
        return False
    d, _ = cKDTree(b).query(a, k=1, distance_upper_bound=threshold)
    return bool((d < threshold).any())


def contact_frames(model: HandModel, global_orient: np.ndarray, hand_pose: np.ndarray, betas: np.ndarray,
                   transl: np.ndarray, valid: np.ndarray, flat_hand_mean: bool = True,
                   threshold: float = THRESHOLD, batch: int = BATCH) -> ContactFrames:
    """One sequence's parameters (F, 2, 3), (F, 2, 45), (2, 10), (F, 2, 3) and valid (F, 2) -> which
    frames are contacting, as the module docstring defines it."""
    valid = np.asarray(valid, bool)
    F = len(valid)
    both = valid.all(1)
    by_distance, penetrating, candidates = (np.zeros(F, bool) for _ in range(3))
    idx = np.flatnonzero(both)
    go, hp, tr = (np.asarray(a) for a in (global_orient, hand_pose, transl))
    for s in range(0, len(idx), batch):
        ids = idx[s:s + batch]
        # 1.
        v = pose_hands(model, go[ids], hp[ids], betas, tr[ids], flat_hand_mean=flat_hand_mean,
                       batch=batch).vertices.astype(np.float64)  # (B, 2, V, 3)
        # 2.
        near = box_gap(v) < threshold
        candidates[ids[near]] = True
        # 3.
        close = np.zeros(len(ids), bool)
        close[near] = [vertices_closer_than(f[0], f[1], threshold) for f in v[near]]
        by_distance[ids] = close
        # 4.
        rest = near & ~close
        if rest.any():
            penetrating[ids[rest]] = hand_contact(v[rest], model.faces, with_distance=False).depth > 0
    return ContactFrames(contact=by_distance | penetrating, by_distance=by_distance, penetrating=penetrating,
                         candidates=candidates, both_valid=both)
