"""The fit's hot paths on the CPU, compiled: numba kernels over one (frame, hand) problem at a time.

``fitting.fit`` states the fit in torch (its reference: the same numbers on CUDA); on the CPU its
batches are small (a few hundred problems of 51 unknowns), so torch spends its time between
operations. These kernels compute the same quantities in one pass per problem, in float64:

- ``PointModel.of(layer, betas)``: a hand's 21 points (the detector's landmarks, or the joints)
  each a combination of K points skinned to the joints: L_l = sum_v sum_m cw_lvm G_m(x_v) + transl,
  with x_v = the shaped vertex + its pose correctives posedirs_v . (R - I), G_m(x) = G_rot_m (x - J_m)
  + G_pos_m (``hand_model.joints_layer``'s steps 1-6; a joint is a point at its rest position skinned
  to itself alone, without correctives). betas are fixed for the whole pose stage.
- ``points`` (torch autograd Function): the points and their exact gradient. Turning joint k by a
  small world rotation a moves L_l by a x lever_lk (lever_lk = sum_{m in sub(k)} Q_lm - S_lk p_k,
  Q_lm = sum_v cw_lvm G_m(x_v), S_lk its weights, p_k joint k's position); with R_k = R(theta_k),
  a = G_rot_k Jr(theta_k) d theta_k. The correctives add, through R_k' = R_k [w]x with w = Jr d theta_k,
  dE/dw = vee(N - N^T) read as (N23 - N32, N31 - N13, N12 - N21), N = (dE/dR_k)^T R_k.
- ``pose_lm``: ``fitting.fit._PoseLM.solve``, one problem at a time (same residuals, Jacobian,
  damping and stopping); the normal equations summed per point over its non-zero columns only.
- ``surface``: ``JointsLayer.surface`` (the contact stage's points and unit normals) and its gradient;
  ``penetration``: ``fitting.fit.penetration_penalty``'s depths, the search skipped for points
  beyond reach of the other hand's bounding box.
- ``Reprojection`` (torch autograd Function): the robust 2D term sum c rho(|pi_c(L) - x|^2 / s_c^2)
  and its gradient, with the camera model of ``data_schemas.camera_model`` (k1 k2 p1 p2 k3, depth
  floored at ``MIN_DEPTH``).

First call compiles (~20 s); ``cache=True`` keeps the machine code in ``fitting/__pycache__``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numba import njit

from data_schemas.camera_model import MIN_DEPTH
from data_schemas.keypoints import MANO_PARENTS

_JIT = dict(cache=True, error_model="numpy")


@dataclass
class PointModel:
    """The constants of ``points`` for both hands, float64."""

    parents: np.ndarray  # (16,) int64, parents[k] < k
    joints: np.ndarray  # (2, 16, 3) shaped rest joints J_m
    pose_mean: np.ndarray  # (2, 48) added to theta's rotations (zero for the root)
    verts: np.ndarray  # (2, n, K, 3) shaped rest points x_v (before correctives); n = 21 but for the surface
    cw: np.ndarray  # (2, n, K, 16) combination weight x skinning weight
    pd_idx: np.ndarray  # (2, n, K, P) int64 the pose features with a corrective on the point
    pd_val: np.ndarray  # (2, n, K, P, 3) their correctives
    pd_n: np.ndarray  # (2, n, K) int64 how many
    S: np.ndarray  # (2, n, 16) S_lk
    pair_ptr: np.ndarray  # (n + 1,) int64 point l's joints with a lever: pair_k[pair_ptr[l]:pair_ptr[l + 1]]
    pair_k: np.ndarray  # (P,) int64

    normals: np.ndarray | None = None  # (2, n, 3) rest normals of surface points (``of(..., "surface")``)

    @classmethod
    def of(cls, layer, betas: torch.Tensor, kind: str = "points") -> "PointModel":
        """From a ``JointsLayer`` and betas (2, 10): ``kind`` "points" (its landmarks, or its joints without a
        definition: ``landmarks``), "joints" (its joints: ``forward``), "surface" (its surface subset)."""
        b = betas.detach().cpu().double()

        def a(name):
            return getattr(layer, name).detach().cpu().double()

        def shaped(key):
            return (a(f"{key}_template") + torch.einsum("hvcb,hb->hvc", a(f"{key}_dirs"), b)).numpy()

        def posedirs(key):  # (2, n, 135, 3)
            return a(f"{key}_posedirs").permute(0, 2, 1, 3).numpy()

        J = (a("j_template") + torch.einsum("hjcb,hb->hjc", a("j_dirs"), b)).numpy()  # (2, 16, 3)
        normals = None
        if kind == "points" and layer.has_landmarks:
            K = layer.l_cw.shape[2]
            verts, cw = shaped("l").reshape(2, 21, K, 3), a("l_cw").numpy()  # (2, 21, K, 3), (2, 21, K, 16)
            pd = posedirs("l").reshape(2, 21, K, 135, 3)
        elif kind == "surface":
            verts, cw, pd = shaped("s")[:, :, None], a("s_weights").numpy()[:, :, None], posedirs("s")[:, :, None]
            normals = a("s_normals").numpy()
        else:  # MANO-21: the 16 joints (a point at J_m on joint m alone), then the 5 tip vertices
            v21 = np.concatenate([J, shaped("t")], axis=1)[:, :, None]  # (2, 21, 1, 3)
            w21 = np.concatenate([np.broadcast_to(np.eye(16), (2, 16, 16)), a("t_weights").numpy()], axis=1)
            pd21 = np.concatenate([np.zeros((2, 16, 135, 3)), posedirs("t")], axis=1)
            order = layer.reorder.cpu().numpy()  # ours <- MANO-21
            verts, cw, pd = v21[:, order], w21[:, order, None], pd21[:, order, None]
        parents = np.array([int(p) for p in MANO_PARENTS], np.int64)
        sub = np.eye(16)  # sub[m, k]: m is k or below it
        for m in range(16):
            k = parents[m]
            while k >= 0:
                sub[m, k] = 1
                k = parents[k]
        S = cw.sum(2) @ sub  # (2, n, 16)
        if kind == "points":  # the layer's pairs: those of its Jacobian
            pl, pk = layer.pair_landmark.cpu().numpy(), layer.pair_joint.cpu().numpy()
        else:
            pl, pk = np.nonzero((S > 1e-6).any(0))
        ptr = np.searchsorted(pl, np.arange(verts.shape[1] + 1)).astype(np.int64)
        mean = np.concatenate([np.zeros((2, 3)), a("pose_mean").numpy()], axis=1)
        return cls(parents, J, mean, np.ascontiguousarray(verts), np.ascontiguousarray(cw), *_sparse(pd), S, ptr,
                   pk.astype(np.int64), normals)

    def args(self):
        return (self.parents, self.joints, self.pose_mean, self.verts, self.cw, self.pd_idx, self.pd_val, self.pd_n)


def _sparse(posedirs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(2, n, K, 135, 3) correctives -> each point's non-zero features: ids (2, n, K, P), values (2, n, K, P, 3), count."""
    nonzero = np.abs(posedirs).max(-1) > 0  # (2, n, K, 135)
    P = max(int(nonzero.sum(-1).max()), 1)
    pd_idx = np.zeros(nonzero.shape[:3] + (P,), np.int64)
    pd_val = np.zeros(nonzero.shape[:3] + (P, 3))
    for i in np.ndindex(*nonzero.shape[:3]):
        ids = np.nonzero(nonzero[i])[0]
        pd_idx[i][: len(ids)], pd_val[i][: len(ids)] = ids, posedirs[i][ids]
    return pd_idx, pd_val, nonzero.sum(-1).astype(np.int64)


# --- one problem: pose, points, levers ------------------------------------------------------------

@njit(**_JIT)
def _rodrigues(r0, r1, r2, R):
    t2 = r0 * r0 + r1 * r1 + r2 * r2
    if t2 < 1e-12:
        a, b = 1 - t2 / 6, 0.5 - t2 / 24
    else:
        t = np.sqrt(t2)
        a, b = np.sin(t) / t, (1 - np.cos(t)) / t2
    R[0, 0] = 1 - b * (r1 * r1 + r2 * r2)
    R[1, 1] = 1 - b * (r0 * r0 + r2 * r2)
    R[2, 2] = 1 - b * (r0 * r0 + r1 * r1)
    R[0, 1], R[1, 0] = -a * r2 + b * r0 * r1, a * r2 + b * r0 * r1
    R[0, 2], R[2, 0] = a * r1 + b * r0 * r2, -a * r1 + b * r0 * r2
    R[1, 2], R[2, 1] = -a * r0 + b * r1 * r2, a * r0 + b * r1 * r2


@njit(**_JIT)
def _right_jacobian(r0, r1, r2, out):
    """Jr with R(theta + d) ~ R(theta) exp(Jr d): I - (1 - cos p)/p^2 [r]x + (p - sin p)/p^3 [r]x^2."""
    p2 = r0 * r0 + r1 * r1 + r2 * r2
    if p2 < 1e-8:
        a, b = 0.5 - p2 / 24, 1.0 / 6 - p2 / 120
    else:
        p = np.sqrt(p2)
        a, b = (1 - np.cos(p)) / p2, (p - np.sin(p)) / (p2 * p)
    out[0, 0] = 1 - b * (r1 * r1 + r2 * r2)
    out[1, 1] = 1 - b * (r0 * r0 + r2 * r2)
    out[2, 2] = 1 - b * (r0 * r0 + r1 * r1)
    out[0, 1], out[1, 0] = a * r2 + b * r0 * r1, -a * r2 + b * r0 * r1
    out[0, 2], out[2, 0] = -a * r1 + b * r0 * r2, a * r1 + b * r0 * r2
    out[1, 2], out[2, 1] = a * r0 + b * r1 * r2, -a * r0 + b * r1 * r2


@njit(**_JIT)
def _forward(theta, h, parents, joints, pose_mean, verts, cw, pd_idx, pd_val, pd_n, R, Grot, Gpos, Q, L):
    """theta (51,) of hand h -> R (16, 3, 3) local, Grot, Gpos (16, 3) world, Q (21, 16, 3), L (21, 3)."""
    for k in range(16):
        _rodrigues(theta[3 * k] + pose_mean[h, 3 * k], theta[3 * k + 1] + pose_mean[h, 3 * k + 1],
                   theta[3 * k + 2] + pose_mean[h, 3 * k + 2], R[k])
    Grot[0] = R[0]
    Gpos[0] = joints[h, 0]
    for k in range(1, 16):
        p = parents[k]
        for i in range(3):
            s = Gpos[p, i]
            for j in range(3):
                s += Grot[p, i, j] * (joints[h, k, j] - joints[h, p, j])
                Grot[k, i, j] = Grot[p, i, 0] * R[k, 0, j] + Grot[p, i, 1] * R[k, 1, j] + Grot[p, i, 2] * R[k, 2, j]
            Gpos[k, i] = s
    x = np.empty(3)
    Q[:] = 0.0
    for l in range(verts.shape[1]):
        for v in range(verts.shape[2]):
            x[:] = verts[h, l, v]
            for q in range(pd_n[h, l, v]):
                f = pd_idx[h, l, v, q]
                k, ab = f // 9 + 1, f % 9
                fv = R[k, ab // 3, ab % 3] - (1.0 if ab // 3 == ab % 3 else 0.0)
                for i in range(3):
                    x[i] += pd_val[h, l, v, q, i] * fv
            for m in range(16):
                w = cw[h, l, v, m]
                if w == 0.0:
                    continue
                for i in range(3):
                    Q[l, m, i] += w * (Grot[m, i, 0] * (x[0] - joints[h, m, 0]) + Grot[m, i, 1] * (x[1] - joints[h, m, 1])
                                       + Grot[m, i, 2] * (x[2] - joints[h, m, 2]) + Gpos[m, i])
    for l in range(verts.shape[1]):
        for i in range(3):
            s = theta[48 + i]
            for m in range(16):
                s += Q[l, m, i]
            L[l, i] = s


@njit(**_JIT)
def _levers(Q, S, h, parents, Gpos, lever):
    """lever (n, 16, 3): sum_{m in sub(k)} Q_lm - S_lk p_k."""
    lever[:] = Q
    for m in range(15, 0, -1):
        lever[:, parents[m]] += lever[:, m]
    for l in range(Q.shape[0]):
        for k in range(16):
            for i in range(3):
                lever[l, k, i] -= S[h, l, k] * Gpos[k, i]


@njit(**_JIT)
def _axes(theta, h, pose_mean, Grot, k, Jr, out):
    """out (3, 3): column c = the world axis that theta_k's c-th coordinate turns joint k about."""
    _right_jacobian(theta[3 * k] + pose_mean[h, 3 * k], theta[3 * k + 1] + pose_mean[h, 3 * k + 1],
                    theta[3 * k + 2] + pose_mean[h, 3 * k + 2], Jr)
    for i in range(3):
        for c in range(3):
            out[i, c] = Grot[k, i, 0] * Jr[0, c] + Grot[k, i, 1] * Jr[1, c] + Grot[k, i, 2] * Jr[2, c]


# --- the points and their gradient ----------------------------------------------------------------

@njit(**_JIT)
def _points(theta, hand, parents, joints, pose_mean, verts, cw, pd_idx, pd_val, pd_n, L):
    """theta (N, 51), hand (N,) -> L (N, n, 3)."""
    R, Grot, Gpos, Q = np.empty((16, 3, 3)), np.empty((16, 3, 3)), np.empty((16, 3)), np.empty((verts.shape[1], 16, 3))
    for n in range(theta.shape[0]):
        _forward(theta[n], hand[n], parents, joints, pose_mean, verts, cw, pd_idx, pd_val, pd_n, R, Grot, Gpos, Q,
                 L[n])


@njit(**_JIT)
def _vjp_one(th, h, g, parents, joints, pose_mean, verts, cw, pd_idx, pd_val, pd_n, S, R, Grot, Gpos, Q, L, lever,
             grad):
    """One problem: theta (51,), dE/dL g (n, 3) -> dE/dtheta into grad (51,); leaves R, Grot, Gpos as posed."""
    n_points = verts.shape[1]
    Jr, ax, gw, gx, gf = np.empty((3, 3)), np.empty((3, 3)), np.empty(3), np.empty(3), np.zeros(135)
    _forward(th, h, parents, joints, pose_mean, verts, cw, pd_idx, pd_val, pd_n, R, Grot, Gpos, Q, L)
    _levers(Q, S, h, parents, Gpos, lever)
    for i in range(3):
        grad[48 + i] = g[:, i].sum()
    # rigid: dE/da_k = sum_l lever_lk x dE/dL_l, then d theta_k = (G_rot_k Jr)^T
    for k in range(16):
        gw[:] = 0.0
        for l in range(n_points):
            b = lever[l, k]
            gw[0] += b[1] * g[l, 2] - b[2] * g[l, 1]
            gw[1] += b[2] * g[l, 0] - b[0] * g[l, 2]
            gw[2] += b[0] * g[l, 1] - b[1] * g[l, 0]
        _axes(th, h, pose_mean, Grot, k, Jr, ax)
        for c in range(3):
            grad[3 * k + c] = ax[0, c] * gw[0] + ax[1, c] * gw[1] + ax[2, c] * gw[2]
    # correctives: dE/dx_v = (sum_m cw_lvm G_rot_m)^T dE/dL_l, dE/dfeature = posedirs_v . dE/dx_v
    for l in range(n_points):
        for v in range(verts.shape[2]):
            if pd_n[h, l, v] == 0:
                continue
            gx[:] = 0.0
            for m in range(16):
                w = cw[h, l, v, m]
                if w != 0.0:
                    for i in range(3):
                        gx[i] += w * (Grot[m, 0, i] * g[l, 0] + Grot[m, 1, i] * g[l, 1] + Grot[m, 2, i] * g[l, 2])
            for q in range(pd_n[h, l, v]):
                gf[pd_idx[h, l, v, q]] += (pd_val[h, l, v, q, 0] * gx[0] + pd_val[h, l, v, q, 1] * gx[1]
                                           + pd_val[h, l, v, q, 2] * gx[2])
    for k in range(1, 16):
        M = gf[9 * (k - 1): 9 * k]  # dE/dR_k, row-major; N_ij = sum_a M_ai R_aj
        for c, (i, j) in enumerate(((1, 2), (2, 0), (0, 1))):
            gw[c] = 0.0
            for a in range(3):
                gw[c] += M[3 * a + i] * R[k, a, j] - M[3 * a + j] * R[k, a, i]
        _right_jacobian(th[3 * k] + pose_mean[h, 3 * k], th[3 * k + 1] + pose_mean[h, 3 * k + 1],
                        th[3 * k + 2] + pose_mean[h, 3 * k + 2], Jr)
        for c in range(3):
            grad[3 * k + c] += Jr[0, c] * gw[0] + Jr[1, c] * gw[1] + Jr[2, c] * gw[2]


@njit(**_JIT)
def _points_vjp(theta, hand, gL, parents, joints, pose_mean, verts, cw, pd_idx, pd_val, pd_n, S, grad):
    """theta (N, 51), hand (N,), dE/dL (N, n, 3) -> dE/dtheta (N, 51) (module docstring)."""
    n_points = verts.shape[1]
    R, Grot, Gpos = np.empty((16, 3, 3)), np.empty((16, 3, 3)), np.empty((16, 3))
    Q, L, lever = np.empty((n_points, 16, 3)), np.empty((n_points, 3)), np.empty((n_points, 16, 3))
    for n in range(theta.shape[0]):
        _vjp_one(theta[n], hand[n], gL[n], parents, joints, pose_mean, verts, cw, pd_idx, pd_val, pd_n, S, R, Grot,
                 Gpos, Q, L, lever, grad[n])


def _numpy_theta(theta: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(..., 2, 51) -> (N, 51) float64, hand (N,)."""
    th = theta.detach().cpu().double().reshape(-1, 51).numpy()
    return np.ascontiguousarray(th), np.tile(np.arange(2, dtype=np.int64), len(th) // 2)


class _Points(torch.autograd.Function):
    @staticmethod
    def forward(ctx, theta, pm):
        th, hand = _numpy_theta(theta)
        L = np.empty((len(th), pm.verts.shape[1], 3))
        _points(th, hand, *pm.args(), L)
        ctx.save_for_backward(theta)
        ctx.pm = pm
        return torch.from_numpy(L).to(theta.dtype).reshape(theta.shape[:-1] + L.shape[1:])

    @staticmethod
    def backward(ctx, gL):
        (theta,) = ctx.saved_tensors
        th, hand = _numpy_theta(theta)
        g = np.ascontiguousarray(gL.detach().cpu().double().reshape(len(th), -1, 3).numpy())
        grad = np.empty_like(th)
        _points_vjp(th, hand, g, *ctx.pm.args(), ctx.pm.S, grad)
        return torch.from_numpy(grad).to(theta.dtype).reshape(theta.shape), None


def points(pm: PointModel, global_orient: torch.Tensor, hand_pose: torch.Tensor, transl: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3), (B, 2, 45), (B, 2, 3) -> (B, 2, 21, 3) the points (``JointsLayer.landmarks``), differentiable."""
    return _Points.apply(torch.cat([global_orient, hand_pose, transl], dim=-1), pm)


# --- the pose stage's Levenberg-Marquardt ---------------------------------------------------------

@njit(**_JIT)
def _residual(theta, h, X, w, limits, m, R, Grot, Gpos, Q, L, r, angles):
    """``_PoseLM.residual`` for one problem: r (108,) = (L - X) w, w_lim x the angles outside the limits;
    -> the cost |r|^2. ``limits`` = (Lmat (2, 15, 3, 3), lo, hi (15, 3), w_lim); ``m`` = PointModel.args()."""
    Lmat, lo, hi, w_lim = limits
    _forward(theta, h, m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7], R, Grot, Gpos, Q, L)
    cost = 0.0
    for l in range(21):
        for i in range(3):
            r[3 * l + i] = (L[l, i] - X[l, i]) * w[l]
            cost += r[3 * l + i] ** 2
    for k in range(15):
        for a in range(3):
            ang = Lmat[h, k, a, 0] * theta[3 + 3 * k] + Lmat[h, k, a, 1] * theta[4 + 3 * k] \
                + Lmat[h, k, a, 2] * theta[5 + 3 * k]
            angles[k, a] = ang
            r[63 + 3 * k + a] = w_lim * (max(ang - hi[k, a], 0.0) + max(lo[k, a] - ang, 0.0))
            cost += r[63 + 3 * k + a] ** 2
    return cost


@njit(**_JIT)
def _normal_equations(theta, h, w, limits, m, S, pair_ptr, pair_k, Grot, Gpos, Q, r, angles, H, g):
    """``_PoseLM.normal_equations`` for one problem -> H = J^T J (51, 51), g = J^T r (51,); a point's
    rows have non-zero columns only for the joints with a lever on it and for transl."""
    Lmat, lo, hi, w_lim = limits
    lever, axes, Jr = np.empty((21, 16, 3)), np.empty((16, 3, 3)), np.empty((3, 3))
    D, cols = np.empty((51, 3)), np.empty(51, np.int64)
    _levers(Q, S, h, m[0], Gpos, lever)
    for k in range(16):
        _axes(theta, h, m[2], Grot, k, Jr, axes[k])
    H[:] = 0.0
    g[:] = 0.0
    for l in range(21):
        wl = w[l]
        if wl == 0.0:
            continue
        n = 0
        for q in range(pair_ptr[l], pair_ptr[l + 1]):
            k = pair_k[q]
            b = lever[l, k]
            for c in range(3):
                a = axes[k, :, c]
                D[n, 0], D[n, 1], D[n, 2] = a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]
                cols[n] = 3 * k + c
                n += 1
        for c in range(3):
            D[n] = 0.0
            D[n, c] = 1.0
            cols[n] = 48 + c
            n += 1
        for i in range(n):
            g[cols[i]] += wl * (D[i, 0] * r[3 * l] + D[i, 1] * r[3 * l + 1] + D[i, 2] * r[3 * l + 2])
            for j in range(i, n):
                v = wl * wl * (D[i, 0] * D[j, 0] + D[i, 1] * D[j, 1] + D[i, 2] * D[j, 2])
                H[cols[i], cols[j]] += v
                if j != i:
                    H[cols[j], cols[i]] += v
    for k in range(15):  # the limits' rows: joint k's angles by its own theta_k
        for a in range(3):
            act = 1.0 if angles[k, a] > hi[k, a] else (-1.0 if angles[k, a] < lo[k, a] else 0.0)
            if act == 0.0:
                continue
            for i in range(3):
                ri = w_lim * act * Lmat[h, k, a, i]
                g[3 + 3 * k + i] += ri * r[63 + 3 * k + a]
                for j in range(3):
                    H[3 + 3 * k + i, 3 + 3 * k + j] += ri * w_lim * act * Lmat[h, k, a, j]


@njit(**_JIT)
def _damped_step(H, g, lam, A, step):
    """step = -(H + lam diag(H) + 1e-2 I)^-1 g, by Cholesky (the matrix is positive definite)."""
    n = H.shape[0]
    for i in range(n):
        for j in range(n):
            A[i, j] = H[i, j]
        A[i, i] += lam * H[i, i] + 1e-2
    for j in range(n):
        s = A[j, j]
        for k in range(j):
            s -= A[j, k] * A[j, k]
        d = np.sqrt(s)
        A[j, j] = d
        for i in range(j + 1, n):
            s = A[i, j]
            for k in range(j):
                s -= A[i, k] * A[j, k]
            A[i, j] = s / d
    for i in range(n):  # A y = -g, then A^T step = y
        s = -g[i]
        for k in range(i):
            s -= A[i, k] * step[k]
        step[i] = s / A[i, i]
    for i in range(n - 1, -1, -1):
        s = step[i]
        for k in range(i + 1, n):
            s -= A[k, i] * step[k]
        step[i] = s / A[i, i]


@njit(**_JIT)
def _pose_lm(theta, hand, X, w, moving, limits, m, S, pair_ptr, pair_k, iterations, tolerance, cost):
    """In place on theta (N, 51): each moving problem's LM (``_PoseLM.solve``); cost (N,) at the end."""
    R, Grot, Gpos = np.empty((2, 16, 3, 3)), np.empty((2, 16, 3, 3)), np.empty((2, 16, 3))
    Q, L, r, angles = np.empty((2, 21, 16, 3)), np.empty((2, 21, 3)), np.empty((2, 108)), np.empty((2, 15, 3))
    H, g, A, step, trial = np.empty((51, 51)), np.empty(51), np.empty((51, 51)), np.empty(51), np.empty((2, 51))
    for n in range(theta.shape[0]):
        h, cur = hand[n], 0
        trial[cur] = theta[n]
        c = _residual(trial[cur], h, X[n], w[n], limits, m, R[cur], Grot[cur], Gpos[cur], Q[cur], L[cur], r[cur],
                      angles[cur])
        lam = 1e-3
        for _ in range(iterations if moving[n] else 0):
            _normal_equations(trial[cur], h, w[n], limits, m, S, pair_ptr, pair_k, Grot[cur], Gpos[cur], Q[cur],
                              r[cur], angles[cur], H, g)
            _damped_step(H, g, lam, A, step)
            nxt = 1 - cur
            for i in range(51):
                trial[nxt, i] = trial[cur, i] + step[i]
            c_new = _residual(trial[nxt], h, X[n], w[n], limits, m, R[nxt], Grot[nxt], Gpos[nxt], Q[nxt], L[nxt],
                              r[nxt], angles[nxt])
            if c_new < c:
                cur = nxt
                done = c - c_new < tolerance * c
                c = c_new
                lam = max(lam * 0.3, 1e-7)
                if done:
                    break
            else:
                lam = min(lam * 10, 1e7)
        theta[n] = trial[cur]
        cost[n] = c


def pose_lm(pm: PointModel, theta: np.ndarray, X: np.ndarray, w: np.ndarray, moving: np.ndarray, limits: tuple,
            iterations: int, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """theta (N, 2, 51), X (N, 2, 21, 3), w (N, 2, 21) (weight / sigma_3d), moving (N, 2), limits = (L (2, 15, 3, 3),
    lo, hi (15, 3), sqrt(w_limits)) -> (theta (N, 2, 51), cost (N, 2)) after each moving problem's LM."""
    N = len(theta)
    th = np.ascontiguousarray(theta, dtype=np.float64).reshape(2 * N, 51).copy()
    hand = np.tile(np.arange(2, dtype=np.int64), N)
    cost = np.empty(2 * N)
    lim = tuple(np.ascontiguousarray(a, dtype=np.float64) for a in limits[:3]) + (float(limits[3]),)
    _pose_lm(th, hand, np.ascontiguousarray(X, dtype=np.float64).reshape(2 * N, 21, 3),
             np.ascontiguousarray(w, dtype=np.float64).reshape(2 * N, 21), np.ascontiguousarray(moving).reshape(2 * N),
             lim, pm.args(), pm.S, pm.pair_ptr, pm.pair_k, iterations, tolerance, cost)
    return th.reshape(N, 2, 51), cost.reshape(N, 2)


# --- the robust 2D term -----------------------------------------------------------------------------

@njit(**_JIT)
def _reprojection(J, frames, x2d, c2d, Rc, tc, intr, dist, s2, grad):
    """J (K, 42, 3) the points of frames ``frames`` (K,) of x2d (C, B, 42, 2), c2d (C, B, 42) ->
    sum c rho(|pi(J) - x|^2 / s2_c), rho(u) = u / (1 + u); its gradient into grad (K, 42, 3)."""
    e = 0.0
    grad[:] = 0.0
    for c in range(x2d.shape[0]):
        fx, fy, cx, cy = intr[c, 0], intr[c, 1], intr[c, 2], intr[c, 3]
        k1, k2, p1, p2, k3 = dist[c, 0], dist[c, 1], dist[c, 2], dist[c, 3], dist[c, 4]
        for kk in range(frames.shape[0]):
            f = frames[kk]
            for j in range(42):
                conf = c2d[c, f, j]
                if conf == 0.0:
                    continue
                X = J[kk, j]
                pc0 = Rc[c, 0, 0] * X[0] + Rc[c, 0, 1] * X[1] + Rc[c, 0, 2] * X[2] + tc[c, 0]
                pc1 = Rc[c, 1, 0] * X[0] + Rc[c, 1, 1] * X[1] + Rc[c, 1, 2] * X[2] + tc[c, 1]
                pc2 = Rc[c, 2, 0] * X[0] + Rc[c, 2, 1] * X[1] + Rc[c, 2, 2] * X[2] + tc[c, 2]
                floored = pc2 < MIN_DEPTH
                z = MIN_DEPTH if floored else pc2
                x, y = pc0 / z, pc1 / z
                r2 = x * x + y * y
                radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
                xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
                yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
                du, dv = fx * xd + cx - x2d[c, f, j, 0], fy * yd + cy - x2d[c, f, j, 1]
                u = (du * du + dv * dv) / s2[c]
                e += conf * u / (1 + u)
                # back: d/du of rho, then the lens, the division by depth, the rotation
                gu = conf / (1 + u) ** 2 * 2 / s2[c]
                gxd, gyd = gu * du * fx, gu * dv * fy
                drad = k1 + r2 * (2 * k2 + 3 * k3 * r2)  # d radial / d r2
                gx = gxd * (radial + 2 * x * x * drad + 2 * p1 * y + 6 * p2 * x) \
                    + gyd * (2 * x * y * drad + 2 * p1 * x + 2 * p2 * y)
                gy = gxd * (2 * x * y * drad + 2 * p1 * x + 2 * p2 * y) \
                    + gyd * (radial + 2 * y * y * drad + 6 * p1 * y + 2 * p2 * x)
                g0, g1 = gx / z, gy / z
                g2 = 0.0 if floored else -(gx * x + gy * y) / z
                for i in range(3):
                    grad[kk, j, i] += Rc[c, 0, i] * g0 + Rc[c, 1, i] * g1 + Rc[c, 2, i] * g2
    return e


class _Reprojection(torch.autograd.Function):
    @staticmethod
    def forward(ctx, J, term, frames):
        Jn = np.ascontiguousarray(J.detach().cpu().double().reshape(len(frames), 42, 3).numpy())
        grad = np.empty_like(Jn)
        e = _reprojection(Jn, frames, term.x2d, term.c2d, term.R, term.t, term.intr, term.dist, term.s2, grad)
        ctx.grad = torch.from_numpy(grad).to(J.dtype).reshape(J.shape)
        return J.new_tensor(e)

    @staticmethod
    def backward(ctx, g):
        return ctx.grad * g, None, None


class Reprojection:
    """``fitting.fit``'s robust 2D term over a chunk's detections, compiled: ``term(J, idx)`` = sum over
    cameras, frames ``idx`` (None: all) and points of c rho(|pi_c(J) - x|^2 / s2d_c^2), differentiable."""

    def __init__(self, rig, x2d: torch.Tensor, c2d: torch.Tensor, s2d: torch.Tensor):
        """rig: a ``fitting.fit.TorchRig``; x2d (C, B, 2, 21, 2), c2d (C, B, 2, 21), s2d (C, ...) px."""
        def f(a):
            return np.ascontiguousarray(a.detach().cpu().double().numpy())

        C, B = c2d.shape[:2]
        self.x2d, self.c2d = f(x2d).reshape(C, B, 42, 2), f(c2d).reshape(C, B, 42)
        self.R, self.t, self.dist = f(rig.R), f(rig.t), f(rig.dist)
        self.intr = np.stack([f(rig.K[:, 0, 0]), f(rig.K[:, 1, 1]), f(rig.K[:, 0, 2]), f(rig.K[:, 1, 2])], axis=1)
        self.s2 = f(s2d).reshape(C) ** 2
        self.all = np.arange(B, dtype=np.int64)

    def __call__(self, J: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        frames = self.all if idx is None else np.ascontiguousarray(idx.cpu().numpy(), dtype=np.int64)
        return _Reprojection.apply(J, self, frames)


# --- the contact stage's penetration term -------------------------------------------------------------

@njit(**_JIT)
def _penetration(points, normals, reach, allowance, total, gp, gn):
    """``fitting.fit.penetration_penalty`` per frame into total (K,), its gradient into gp, gn (K, 2, P, 3).
    A point further than ``reach`` from the other hand's bounding box has no nearest point within reach:
    it is skipped before the search."""
    gp[:] = 0.0
    gn[:] = 0.0
    K, _, P, _ = points.shape
    lo, hi = np.empty(3), np.empty(3)
    for n in range(K):
        t = 0.0
        for a in range(2):
            b = 1 - a
            for i in range(3):
                lo[i] = points[n, b, :, i].min() - reach
                hi[i] = points[n, b, :, i].max() + reach
            for i in range(P):
                p = points[n, a, i]
                if p[0] < lo[0] or p[1] < lo[1] or p[2] < lo[2] or p[0] > hi[0] or p[1] > hi[1] or p[2] > hi[2]:
                    continue
                best, bj = np.inf, -1
                for j in range(P):
                    q = points[n, b, j]
                    d2 = (q[0] - p[0]) ** 2 + (q[1] - p[1]) ** 2 + (q[2] - p[2]) ** 2
                    if d2 < best:
                        best, bj = d2, j
                if not np.sqrt(best) < reach:
                    continue
                q, nq = points[n, b, bj], normals[n, b, bj]
                depth = (q[0] - p[0]) * nq[0] + (q[1] - p[1]) * nq[1] + (q[2] - p[2]) * nq[2] - allowance
                if depth <= 0.0:
                    continue
                t += depth * depth
                for c in range(3):
                    gp[n, a, i, c] -= 2 * depth * nq[c]
                    gp[n, b, bj, c] += 2 * depth * nq[c]
                    gn[n, b, bj, c] += 2 * depth * (q[c] - p[c])
        total[n] = t


class _Penetration(torch.autograd.Function):
    @staticmethod
    def forward(ctx, points, normals, reach, allowance):
        def f(a):
            return np.ascontiguousarray(a.detach().cpu().double().numpy())

        p, n = f(points), f(normals)
        total, gp, gn = np.empty(len(p)), np.empty_like(p), np.empty_like(n)
        _penetration(p, n, reach, allowance, total, gp, gn)
        ctx.g = torch.from_numpy(gp).to(points.dtype), torch.from_numpy(gn).to(normals.dtype)
        return torch.from_numpy(total).to(points.dtype)

    @staticmethod
    def backward(ctx, g):
        s = g.reshape(-1, 1, 1, 1)
        return ctx.g[0] * s, ctx.g[1] * s, None, None


def penetration(points: torch.Tensor, normals: torch.Tensor, reach: float, allowance: float) -> torch.Tensor:
    """points, normals (K, 2, P, 3) -> (K,) each frame's sum of squared depths (``penetration_penalty``)."""
    return _Penetration.apply(points, normals, float(reach), float(allowance))


# --- the surface subset with its normals ----------------------------------------------------------------

@njit(**_JIT)
def _turn(cw, h, v, Grot, normal, u):
    """u = (sum_m w_vm G_rot_m) n_v: a rest normal turned by its point's blended rotation."""
    u[:] = 0.0
    for m in range(16):
        w = cw[h, v, 0, m]
        if w != 0.0:
            for i in range(3):
                u[i] += w * (Grot[m, i, 0] * normal[0] + Grot[m, i, 1] * normal[1] + Grot[m, i, 2] * normal[2])


@njit(**_JIT)
def _surface(theta, hand, parents, joints, pose_mean, verts, cw, pd_idx, pd_val, pd_n, normals, P, Nrm):
    """theta (N, 51), hand (N,) -> points P (N, n, 3) and unit normals Nrm (N, n, 3)."""
    R, Grot, Gpos, Q = np.empty((16, 3, 3)), np.empty((16, 3, 3)), np.empty((16, 3)), np.empty((verts.shape[1], 16, 3))
    u = np.empty(3)
    for n in range(theta.shape[0]):
        h = hand[n]
        _forward(theta[n], h, parents, joints, pose_mean, verts, cw, pd_idx, pd_val, pd_n, R, Grot, Gpos, Q, P[n])
        for v in range(verts.shape[1]):
            _turn(cw, h, v, Grot, normals[h, v], u)
            Nrm[n, v] = u / max(np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2), 1e-12)


@njit(**_JIT)
def _surface_vjp(theta, hand, gP, gN, parents, joints, pose_mean, verts, cw, pd_idx, pd_val, pd_n, S, normals, grad):
    """dE/dP, dE/dNrm (N, n, 3) -> dE/dtheta (N, 51): the points' as ``_points_vjp``; a normal's through
    d n / d G_rot_m = w_vm (its unit derivative) n_v^T, whose world rotation part turns joint m and with it
    every joint above m."""
    n_points = verts.shape[1]
    R, Grot, Gpos = np.empty((16, 3, 3)), np.empty((16, 3, 3)), np.empty((16, 3))
    Q, L, lever = np.empty((n_points, 16, 3)), np.empty((n_points, 3)), np.empty((n_points, 16, 3))
    M, c, u, gu = np.empty((16, 3, 3)), np.empty((16, 3)), np.empty(3), np.empty(3)
    Jr, ax = np.empty((3, 3)), np.empty((3, 3))
    for n in range(theta.shape[0]):
        h, th = hand[n], theta[n]
        _vjp_one(th, h, gP[n], parents, joints, pose_mean, verts, cw, pd_idx, pd_val, pd_n, S, R, Grot, Gpos, Q, L,
                 lever, grad[n])
        M[:] = 0.0  # dE/dG_rot_m
        for v in range(n_points):
            _turn(cw, h, v, Grot, normals[h, v], u)
            norm = max(np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2), 1e-12)
            dot = (u[0] * gN[n, v, 0] + u[1] * gN[n, v, 1] + u[2] * gN[n, v, 2]) / norm
            for i in range(3):
                gu[i] = (gN[n, v, i] - u[i] / norm * dot) / norm
            for m in range(16):
                w = cw[h, v, 0, m]
                if w != 0.0:
                    for i in range(3):
                        for j in range(3):
                            M[m, i, j] += w * gu[i] * normals[h, v, j]
        for m in range(16):  # dE/da_m = vee of G M^T's antisymmetric part (N = G_rot_m M_m^T)
            for k, (i, j) in enumerate(((1, 2), (2, 0), (0, 1))):
                c[m, k] = 0.0
                for a in range(3):
                    c[m, k] += Grot[m, i, a] * M[m, j, a] - Grot[m, j, a] * M[m, i, a]
        for m in range(15, 0, -1):
            c[parents[m]] += c[m]
        for k in range(16):
            _axes(th, h, pose_mean, Grot, k, Jr, ax)
            for i in range(3):
                grad[n, 3 * k + i] += ax[0, i] * c[k, 0] + ax[1, i] * c[k, 1] + ax[2, i] * c[k, 2]


class _Surface(torch.autograd.Function):
    @staticmethod
    def forward(ctx, theta, pm):
        th, hand = _numpy_theta(theta)
        P, Nrm = np.empty((len(th), pm.verts.shape[1], 3)), np.empty((len(th), pm.verts.shape[1], 3))
        _surface(th, hand, *pm.args(), pm.normals, P, Nrm)
        ctx.save_for_backward(theta)
        ctx.pm = pm
        shape = theta.shape[:-1] + P.shape[1:]
        return torch.from_numpy(P).to(theta.dtype).reshape(shape), torch.from_numpy(Nrm).to(theta.dtype).reshape(shape)

    @staticmethod
    def backward(ctx, gP, gN):
        (theta,) = ctx.saved_tensors
        th, hand = _numpy_theta(theta)
        n = ctx.pm.verts.shape[1]

        def f(g):
            return np.zeros((len(th), n, 3)) if g is None else np.ascontiguousarray(
                g.detach().cpu().double().reshape(len(th), n, 3).numpy())

        grad = np.empty_like(th)
        _surface_vjp(th, hand, f(gP), f(gN), *ctx.pm.args(), ctx.pm.S, ctx.pm.normals, grad)
        return torch.from_numpy(grad).to(theta.dtype).reshape(theta.shape), None


def surface(pm: PointModel, global_orient: torch.Tensor, hand_pose: torch.Tensor,
            transl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``JointsLayer.surface`` compiled (``pm`` of kind "surface"): points, unit normals (B, 2, n, 3), differentiable."""
    return _Surface.apply(torch.cat([global_orient, hand_pose, transl], dim=-1), pm)
