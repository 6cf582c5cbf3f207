"""Pose-corrective blend shapes (MANO's ``posedirs``) for the open hand model.

Linear blend skinning (LBS) averages bone transforms, so skin near a bent joint
collapses inwards. Dual-quaternion skinning (DQS) blends rigid motions instead and
keeps the volume. The correctives are fitted so that LBS with them reproduces DQS:

  1. draw N poses, each joint independently uniform within its limits
  2. per pose: LBS and DQS positions of every vertex with the same weights
  3. map the difference back to the rest pose through the vertex's blended LBS
     rotation:  delta = (sum_b w_b R_b)^-1 (v_dqs - v_lbs)
  4. per vertex, ridge regression of delta on MANO's pose features (R_j - I for the
     15 finger joints, 135 numbers), using only the features of joints that move
     the vertex (those with weight on it, and their ancestors), so a corrective
     never reaches across the hand.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from data_schemas.keypoints import MANO_PARENTS

N_SAMPLES = 1500
RIDGE = 1e-3


def global_transforms(rotations: np.ndarray, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 16, 3, 3) local rotations, (16, 3) rest joints -> rest-to-posed (R (N, 16, 3, 3), t (N, 16, 3))."""
    N = rotations.shape[0]
    R = np.zeros((N, 16, 3, 3))
    t = np.zeros((N, 16, 3))
    for j in range(16):
        p = MANO_PARENTS[j]
        if p < 0:
            R[:, j] = rotations[:, j]
            t[:, j] = joints[j] - np.einsum("nab,b->na", rotations[:, j], joints[j])
        else:
            R[:, j] = R[:, p] @ rotations[:, j]
            # posed joint j = parent's map applied to rest joint j; then rotate about it
            pj = np.einsum("nab,b->na", R[:, p], joints[j]) + t[:, p]
            t[:, j] = pj - np.einsum("nab,b->na", R[:, j], joints[j])
    return R, t


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of (..., 4) quaternions (w, x, y, z)."""
    aw, av = a[..., :1], a[..., 1:]
    bw, bv = b[..., :1], b[..., 1:]
    return np.concatenate([aw * bw - np.sum(av * bv, -1, keepdims=True), aw * bv + bw * av + np.cross(av, bv)], -1)


def dqs(vertices: np.ndarray, weights: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Dual-quaternion skinning: (V, 3), (V, J), (N, J, 3, 3), (N, J, 3) -> (N, V, 3)."""
    N, J = R.shape[:2]
    xyzw = Rotation.from_matrix(R.reshape(-1, 3, 3)).as_quat().reshape(N, J, 4)
    qr = np.concatenate([xyzw[..., 3:], xyzw[..., :3]], -1)  # (N, J, 4) w first
    qt = np.concatenate([np.zeros((N, J, 1)), t], -1)
    qd = 0.5 * _quat_mul(qt, qr)
    # antipodality: align every bone's rotation with the root's hemisphere
    sign = np.where(np.sum(qr * qr[:, :1], -1, keepdims=True) < 0, -1.0, 1.0)
    qr, qd = qr * sign, qd * sign
    br = np.einsum("vj,njk->nvk", weights, qr)  # (N, V, 4)
    bd = np.einsum("vj,njk->nvk", weights, qd)
    norm = np.linalg.norm(br, axis=-1, keepdims=True)
    br, bd = br / norm, bd / norm
    w, xyz = br[..., :1], br[..., 1:]
    v = vertices[None]
    rotated = v + 2 * np.cross(xyz, np.cross(xyz, v) + w * v)
    conj = br * np.array([1.0, -1.0, -1.0, -1.0])
    trans = 2 * _quat_mul(bd, conj)[..., 1:]
    return rotated + trans


def lbs(vertices: np.ndarray, weights: np.ndarray, R: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linear blend skinning -> posed (N, V, 3) and each vertex's blended linear part (N, V, 3, 3)."""
    A = np.einsum("vj,njab->nvab", weights, R)
    b = np.einsum("vj,nja->nva", weights, t)
    return np.einsum("nvab,vb->nva", A, vertices) + b, A


def sample_rotations(n: int, rng: np.random.Generator, rest: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """(n, 16, 3, 3) local rotations: root identity, finger joints uniform within their limits."""
    from hand_model import pose_prior

    frames = pose_prior.anatomical_frames(joints, pose_prior.bone_children(rest))
    lo, hi = pose_prior.limits_deg()
    angles = rng.uniform(lo, hi, (n, 15, 3)) * pose_prior.DEG
    pose = pose_prior.to_axis_angle(angles, frames).reshape(n, 15, 3)
    rots = np.tile(np.eye(3), (n, 16, 1, 1))
    rots[:, 1:] = Rotation.from_rotvec(pose.reshape(-1, 3)).as_matrix().reshape(n, 15, 3, 3)
    return rots


def movers(weights: np.ndarray) -> list[list[int]]:
    """Per vertex, the finger joints (1..15) whose rotation moves it relative to the others."""
    out = []
    for row in weights:
        js: set[int] = set()
        for j in np.flatnonzero(row > 0):
            while j > 0:
                js.add(int(j))
                j = MANO_PARENTS[j]
        out.append(sorted(js))
    return out


def fit_posedirs(vertices: np.ndarray, weights: np.ndarray, joints: np.ndarray, rest: np.ndarray,
                 rng: np.random.Generator, n_samples: int = N_SAMPLES) -> np.ndarray:
    """(V, 3, 135) posedirs as described in the module docstring."""
    # 1.
    rots = sample_rotations(n_samples, rng, rest, joints)
    R, t = global_transforms(rots, joints)
    # 2.
    v_lbs, A = lbs(vertices, weights, R, t)
    v_dqs = dqs(vertices, weights, R, t)
    # 3.
    delta = np.linalg.solve(A, (v_dqs - v_lbs)[..., None])[..., 0]  # (N, V, 3)
    # 4.
    features = (rots[:, 1:] - np.eye(3)).reshape(n_samples, 15, 9)  # (N, 15, 9)
    posedirs = np.zeros((len(vertices), 3, 135))
    for v, js in enumerate(movers(weights)):
        if not js or np.abs(delta[:, v]).max() < 1e-7:
            continue
        X = features[:, [j - 1 for j in js]].reshape(n_samples, -1)  # (N, 9k)
        coef = np.linalg.solve(X.T @ X + RIDGE * n_samples * np.eye(X.shape[1]), X.T @ delta[:, v])  # (9k, 3)
        cols = np.concatenate([np.arange(9 * (j - 1), 9 * j) for j in js])
        posedirs[v][:, cols] = coef.T
    return posedirs
