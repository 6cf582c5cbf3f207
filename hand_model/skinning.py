"""Skinning weights, joint regressor and fingertip vertices of the open hand model.

1. Each skin vertex belongs to the part whose distance field is smallest there: the
   palm or one of the five fingers (``surface``).
2. Along a finger, the vertex's arc-length position ``s`` (0 at the finger's base
   joint) gives its weights: 1 for the bone it lies on, blended with a smoothstep
   over ``+-h`` around each joint (h = 0.7 x the joint's radius; 0.8 at the knuckles;
   the thumb's CMC blends over the thenar eminence). Palm vertices near a knuckle
   take the same blend from the proximal bone.
3. The weights are diffused over the surface, ``(M + t L) W = M W0`` (cotangent
   Laplacian L, lumped mass M, t = (2 mm)^2), so they are smooth across part
   borders (finger webs), then tiny weights are dropped and rows renormalised.

The joint regressor places each joint at a weighted mean of a ring of skin vertices
around it: uniform weights, corrected by the least change that makes the mean the
joint exactly (``w = w0 + A^T (A A^T)^-1 (b - A w0)``, A = [vertices^T; 1]). So joints
follow the skin under shape changes, as MANO's regressed joints do.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from data_schemas.keypoints import FINGERS
from hand_model.anatomy import MM, RADII_MM
from hand_model.shape_space import MANO_TO_OURS, finger_points
from hand_model.surface import finger_sdf, palm_sdf

PALM = 0  # part label; fingers are 1 + FINGERS.index(finger)
THUMB_CMC_BLEND = 14 * MM
DIFFUSION_LENGTH = 2 * MM
MIN_WEIGHT = 2e-3


def part_labels(vertices: np.ndarray) -> np.ndarray:
    """(V,) 0 = palm, 1..5 = thumb, index, middle, ring, pinky."""
    fields = [palm_sdf(vertices)] + [finger_sdf(vertices, f) for f in FINGERS]
    return np.argmin(np.stack(fields), axis=0)


def smoothstep(lo: float, hi: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _mano_joint(ours: int) -> int:
    return MANO_TO_OURS.index(ours)


def _finger_blend(finger: str) -> tuple[np.ndarray, np.ndarray]:
    """Arc positions (4,) of a finger's joints + tip and blend half-widths (3,) at its joints."""
    r = np.array(RADII_MM[finger]) * MM
    h = 0.7 * r[:3]
    h[0] = THUMB_CMC_BLEND if finger == "thumb" else 0.8 * r[0]
    return r, h


def initial_weights(vertices: np.ndarray, labels: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """(V, 16) weights before diffusion (rows sum to 1)."""
    V = len(vertices)
    W = np.zeros((V, 16))
    W[:, 0] = 1.0
    for fi, finger in enumerate(FINGERS):
        idx = finger_points(finger)
        pts = rest[idx]  # (4, 3) base ... tip
        seg = np.diff(pts, axis=0)  # (3, 3)
        L = np.linalg.norm(seg, axis=1)
        s_joint = np.concatenate([[0.0], np.cumsum(L)])  # (4,)
        r, h = _finger_blend(finger)
        joints = [_mano_joint(i) for i in idx[:3]]
        # finger vertices: arc position along the chain, from the nearest segment
        mine = labels == 1 + fi
        p = vertices[mine]
        t = np.stack([((p - pts[k]) @ seg[k]) / L[k] ** 2 for k in range(3)], 1)  # (n, 3)
        foot = pts[None, :3] + np.clip(t, 0, 1)[..., None] * seg[None]  # (n, 3, 3)
        nearest = np.argmin(np.linalg.norm(p[:, None] - foot, axis=2), axis=1)
        s = s_joint[nearest] + t[np.arange(len(p)), nearest] * L[nearest]
        up = [smoothstep(s_joint[k] - h[k], s_joint[k] + h[k], s) for k in range(3)] + [np.zeros(len(p))]
        rows = np.zeros((len(p), 16))
        rows[:, 0] = 1.0 - up[0]
        for k in range(3):
            rows[:, joints[k]] = up[k] - up[k + 1]
        W[mine] = rows
        # palm vertices near this finger's base joint follow its first bone in part
        palm = labels == PALM
        q = vertices[palm] - pts[0]
        d0 = seg[0] / L[0]
        axial = q @ d0
        lateral = np.linalg.norm(q - axial[:, None] * d0, axis=1)
        share = smoothstep(-h[0], h[0], axial) * (1 - smoothstep(1.0 * r[0], 1.8 * r[0], lateral))
        share = np.minimum(share, W[palm, 0])
        W[np.flatnonzero(palm), 0] -= share
        W[np.flatnonzero(palm), joints[0]] += share
    return W


def cotangent_laplacian(vertices: np.ndarray, faces: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Positive semi-definite cotangent Laplacian L (V, V) and lumped (barycentric) mass M."""
    V = len(vertices)
    tri = vertices[faces]  # (F, 3, 3)
    rows, cols, vals = [], [], []
    for c in range(3):  # corner c is opposite edge (c+1, c+2)
        i, j = faces[:, (c + 1) % 3], faces[:, (c + 2) % 3]
        e1 = tri[:, (c + 1) % 3] - tri[:, c]
        e2 = tri[:, (c + 2) % 3] - tri[:, c]
        cot = np.einsum("fk,fk->f", e1, e2) / (np.linalg.norm(np.cross(e1, e2), axis=1) + 1e-18)
        rows += [i, j, i, j]
        cols += [j, i, i, j]
        vals += [-0.5 * cot, -0.5 * cot, 0.5 * cot, 0.5 * cot]
    L = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(V, V))
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1) / 2
    mass = np.bincount(faces.ravel(), np.repeat(area / 3, 3), minlength=V)
    return L, sp.diags(mass).tocsr()


def skinning_weights(vertices: np.ndarray, faces: np.ndarray, labels: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """(V, 16) smooth linear-blend-skinning weights, rows summing to 1."""
    W0 = initial_weights(vertices, labels, rest)
    L, M = cotangent_laplacian(vertices, faces)
    A = (M + DIFFUSION_LENGTH ** 2 * L).tocsc()
    solve = spla.factorized(A)
    W = np.stack([solve(M @ W0[:, j]) for j in range(16)], axis=1)
    W = np.clip(W, 0.0, None)
    W /= W.sum(axis=1, keepdims=True)
    W[W < MIN_WEIGHT] = 0.0
    return W / W.sum(axis=1, keepdims=True)


def joint_regressor(vertices: np.ndarray, labels: np.ndarray, rest: np.ndarray,
                    band: float = 3 * MM, min_ring: int = 12) -> np.ndarray:
    """(16, V) rows summing to 1 with ``J_regressor @ vertices == rest joints`` exactly."""
    R = np.zeros((16, len(vertices)))
    for j in range(16):
        ours = MANO_TO_OURS[j]
        p = rest[ours]
        if j == 0:
            axis, radius, parts = np.array([-1.0, 0.0, 0.0]), 15 * MM, (PALM,)
        else:
            axis = rest[ours + 1] - p
            axis /= np.linalg.norm(axis)
            finger = FINGERS[(ours - 1) // 4]
            radius = RADII_MM[finger][finger_points(finger).index(ours)] * MM
            parts = (PALM, 1 + FINGERS.index(finger))
        rel = vertices - p
        near = np.isin(labels, parts) & (np.linalg.norm(rel, axis=1) < 2.5 * radius)
        width = band
        while True:
            ring = np.flatnonzero(near & (np.abs(rel @ axis) < width))
            if len(ring) >= min_ring:
                break
            width *= 1.25
        A = np.vstack([vertices[ring].T, np.ones(len(ring))])  # (4, n)
        b = np.append(p, 1.0)
        w0 = np.full(len(ring), 1.0 / len(ring))
        w = w0 + A.T @ np.linalg.solve(A @ A.T, b - A @ w0)
        R[j, ring] = w
    return R


def tip_vertices(vertices: np.ndarray, labels: np.ndarray, rest: np.ndarray) -> list[int]:
    """The vertex nearest each fingertip keypoint, thumb to pinky."""
    out = []
    for fi, finger in enumerate(FINGERS):
        cand = np.flatnonzero(labels == 1 + fi)
        tip = rest[finger_points(finger)[-1]]
        out.append(int(cand[np.argmin(np.linalg.norm(vertices[cand] - tip, axis=1))]))
    return out
