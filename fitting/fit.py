"""Fit both hands' MANO parameters to a sequence's triangulated joints and 2D detections.

Unknowns: one shape ``betas`` (2, 10) per hand for the whole sequence (one subject), and
per frame ``global_orient`` (F, 2, 3), ``hand_pose`` (F, 2, 45), ``transl`` (F, 2, 3).
All frames of a chunk are solved together (torch, CPU or CUDA), with the hand model's
joints from ``JointsLayer`` (no full surface).

Energy (sums over a frame's joints, averaged over frames; ``energy`` in ``_optimise``):

    E = w3d   sum_j  v_j |J_j - X_j|^2 / s3d^2                        3D joints vs triangulation
      + w2d   sum_cj c_cj rho(|pi_c(J_j) - x_cj|^2 / s2d_c^2) / n_c    2D reprojection, every camera
      + wlim  sum relu(angle outside the joint limits)^2               pose prior (hand model)
      + wvel  sum rho(|J_t - J_t-1|^2 / svel^2) + wacc sum rho(|J_t+1 - 2 J_t + J_t-1|^2 / sacc^2)
      + wpen  sum relu(depth of a surface point inside the other hand)^2 / spen^2   (stage 4)

v_j: the joint was triangulated; c_cj: detection score; n_c: views per joint (so a
joint counts once, as in 3D); rho(u) = u / (1 + u) (Geman-McClure: outlier detections
the triangulation let through, or a broken neighbouring frame, pull with bounded
force); s2d_c = ``sigma_2d`` x the image height.

Stages, each with a fixed iteration budget:

1. shape: betas from the sequence's median triangulated bone lengths (bone lengths
   depend on betas only), both hands' bones kept alike (``bone_symmetry``, one subject)
2. global: per frame, the rigid fit (Kabsch) of the shaped flat hand's palm (wrist and
   the five finger bases) to the triangulated palm; frames without a palm take the
   nearest frame's (warm start), and one chunk's last frame starts the next chunk
3. pose: (a) per frame and hand, Levenberg-Marquardt on the 3D joints and the joint
   limits with a closed-form Jacobian (``lm_pose``); frames left in a poor minimum
   restart from their neighbours' solutions; (b) all frames together, L-BFGS (strong
   Wolfe) on every term but penetration
4. contact: frames whose hands interpenetrate (joints within ``contact_distance`` and
   a surface point behind the other hand) get a few L-BFGS iterations with the
   penetration term on a subset of the surface (``surface_points`` per hand)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from data_schemas.calibration import CameraRig
from data_schemas.keypoints import HAND_BONES, N_HAND_JOINTS
from fitting.hand_model.joints_layer import JointsLayer, rodrigues
from fitting.hand_model.model import AXIS_ANGLE_MIRROR, HandModel

PALM = [0, 1, 5, 9, 13, 17]  # wrist and the five finger bases (ours): nearly rigid


@dataclass
class FitOptions:
    """MANO fitting: weights, scales and iteration budgets."""

    lm_iterations: int = 15
    """Levenberg-Marquardt iterations of the per-frame pose stage."""
    restarts: int = 2
    """Rounds of restarting poorly fitted frames from their neighbours' solutions (forward, backward)."""
    pose_iterations: int = 10
    """L-BFGS iterations of the pose stage with every term (per chunk)."""
    contact_iterations: int = 5
    """L-BFGS iterations of the contact stage (frames where the hands touch)."""
    chunk_frames: int = 400
    """Frames solved together (memory)."""
    w3d: float = 1.0
    """Weight of the 3D joint term."""
    sigma_3d: float = 0.005
    """Scale of the 3D joint term, metres."""
    w2d: float = 0.5
    """Weight of the 2D reprojection term."""
    sigma_2d: float = 0.01
    """Scale of the robust 2D term, as a fraction of the image height."""
    w_limits: float = 100.0
    """Weight of the joint-limit prior (per radian^2 outside the limits)."""
    w_velocity: float = 0.01
    """Weight of joint velocity."""
    sigma_velocity: float = 0.02
    """Scale of joint velocity, metres per frame."""
    w_acceleration: float = 0.1
    """Weight of joint acceleration."""
    sigma_acceleration: float = 0.01
    """Scale of joint acceleration, metres per frame^2."""
    bone_symmetry: float = 1.0
    """Shape stage: weight keeping the two hands' bone lengths alike (one subject)."""
    w_penetration: float = 1.0
    """Weight of interpenetration (contact stage)."""
    sigma_penetration: float = 0.002
    """Scale of penetration depth, metres."""
    surface_points: int = 400
    """Surface points per hand in the penetration term."""
    contact_distance: float = 0.02
    """Frames whose hands' joints come closer than this (m) get the contact stage."""
    device: str = "auto"
    """"auto" (CUDA when available), "cpu" or "cuda"."""


@dataclass
class FitInputs:
    joints3d: np.ndarray  # (F, 42, 3) m, NaN where not triangulated
    keypoints: np.ndarray | None  # (C, F, 42, 3) [x, y, score] px, swaps already undone; None: 3D only
    rig: CameraRig | None  # the C cameras of ``keypoints``


@dataclass
class FitResult:
    betas: np.ndarray  # (2, 10)
    global_orient: np.ndarray  # (F, 2, 3)
    hand_pose: np.ndarray  # (F, 2, 45)
    transl: np.ndarray  # (F, 2, 3)
    joints: np.ndarray  # (F, 2, 21, 3) the fitted model's joints, ours


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# --- camera projection in torch (OpenCV's model, as data_schemas.calibration.Camera.project) ---

@dataclass
class TorchRig:
    R: torch.Tensor  # (C, 3, 3)
    t: torch.Tensor  # (C, 3)
    K: torch.Tensor  # (C, 3, 3)
    dist: torch.Tensor  # (C, 5) k1 k2 p1 p2 k3
    height: torch.Tensor  # (C,) px

    @classmethod
    def of(cls, rig: CameraRig, device: torch.device) -> "TorchRig":
        def f(a):
            return torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device)

        dist = np.zeros((len(rig), 5))
        for i, c in enumerate(rig.cameras):
            d = c.distortions[:5]
            dist[i, : d.size] = d
        return cls(f([c.R for c in rig.cameras]), f([c.translation for c in rig.cameras]),
                   f([c.matrix for c in rig.cameras]), f(dist), f([c.size[1] for c in rig.cameras]))

    def project(self, X: torch.Tensor) -> torch.Tensor:
        """(..., 3) world points -> (C, ..., 2) distorted pixels."""
        pc = torch.einsum("cab,...b->c...a", self.R, X) + self.t.reshape((-1,) + (1,) * (X.dim() - 1) + (3,))
        z = pc[..., 2:3].clamp(min=1e-6)
        x, y = (pc[..., :2] / z).unbind(-1)
        shape = (-1,) + (1,) * (X.dim() - 1)
        k1, k2, p1, p2, k3 = (self.dist[:, i].reshape(shape) for i in range(5))
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        fx, fy = self.K[:, 0, 0].reshape(shape), self.K[:, 1, 1].reshape(shape)
        cx, cy = self.K[:, 0, 2].reshape(shape), self.K[:, 1, 2].reshape(shape)
        return torch.stack([fx * xd + cx, fy * yd + cy], dim=-1)


# --- 1. shape -------------------------------------------------------------------------------

def fit_shape(layer: JointsLayer, joints3d: np.ndarray, symmetry: float = 1.0, iterations: int = 50) -> np.ndarray:
    """(F, 42, 3) triangulated joints -> betas (2, 10) whose bone lengths match the median ones."""
    parents = [p for p, _ in HAND_BONES]
    children = [c for _, c in HAND_BONES]
    J = joints3d.reshape(len(joints3d), 2, N_HAND_JOINTS, 3)
    lengths = np.linalg.norm(J[:, :, children] - J[:, :, parents], axis=-1)  # (F, 2, 20)
    target = np.nanmedian(np.where(np.isfinite(lengths), lengths, np.nan), axis=0)  # (2, 20)
    dev = layer.j_template.device
    have = torch.as_tensor(np.isfinite(target), device=dev)
    target_t = torch.as_tensor(np.nan_to_num(target), dtype=torch.float32, device=dev)
    betas = torch.zeros(2, 10, device=dev, requires_grad=True)
    zeros = torch.zeros(1, 2, 3, device=dev)
    pose0 = torch.zeros(1, 2, 45, device=dev)
    opt = torch.optim.LBFGS([betas], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        rest = layer(zeros, pose0, betas, zeros)[0]  # (2, 21, 3)
        bones = torch.linalg.norm(rest[:, children] - rest[:, parents], dim=-1)  # (2, 20)
        rel = (bones - target_t) / target_t.clamp(min=1e-3)
        loss = (rel[have] ** 2).sum() + symmetry * ((bones[0] - bones[1]) / bones.detach().mean()).pow(2).sum() \
            + 1e-3 * (betas ** 2).sum()
        loss.backward()
        return loss

    if have.any():
        opt.step(closure)
    return betas.detach().cpu().numpy()


# --- 2. global --------------------------------------------------------------------------------

def kabsch(src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Batched weighted rigid fit: (N, P, 3) src, dst, (N, P) weights -> R (N, 3, 3), t (N, 3), dst ~ R src + t."""
    w = w[..., None] / np.maximum(w.sum(axis=1, keepdims=True)[..., None], 1e-12)
    ms, md = (w * src).sum(1), (w * dst).sum(1)  # (N, 3)
    H = np.einsum("np,npa,npb->nab", w[..., 0], src - ms[:, None], dst - md[:, None])
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(np.einsum("nab,nbc->nac", Vt.transpose(0, 2, 1), U.transpose(0, 2, 1))))
    D = np.zeros_like(H)
    D[:, 0, 0], D[:, 1, 1], D[:, 2, 2] = 1, 1, d
    R = Vt.transpose(0, 2, 1) @ D @ U.transpose(0, 2, 1)
    return R, md - np.einsum("nab,nb->na", R, ms)


def init_global(rest: np.ndarray, joints3d: np.ndarray, previous: tuple[np.ndarray, np.ndarray] | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shaped flat hands (2, 21, 3) + (F, 42, 3) joints -> global_orient (F, 2, 3), transl (F, 2, 3),
    and which (frame, hand) had a palm to fit (F, 2). The root rotates about the wrist J0:
    a rest point x goes to R (x - J0) + J0 + transl."""
    from scipy.spatial.transform import Rotation

    F = len(joints3d)
    J = joints3d.reshape(F, 2, N_HAND_JOINTS, 3)
    orient, transl = np.zeros((F, 2, 3)), np.zeros((F, 2, 3))
    fitted = np.zeros((F, 2), bool)
    for h in range(2):
        palm = J[:, h, PALM]  # (F, 6, 3)
        ok = np.isfinite(palm).all(-1)  # (F, 6)
        fitted[:, h] = ok.sum(1) >= 3
        src = np.broadcast_to(rest[h, PALM], palm.shape)
        R, t = kabsch(src, np.nan_to_num(palm), ok.astype(float))
        J0 = rest[h, 0]
        orient[:, h] = Rotation.from_matrix(R).as_rotvec()
        transl[:, h] = t - J0 + np.einsum("nab,b->na", R, J0)
        # warm start: frames without a palm take the nearest fitted frame's (or the previous chunk's)
        idx = np.nonzero(fitted[:, h])[0]
        for f in np.nonzero(~fitted[:, h])[0]:
            if len(idx):
                k = idx[np.argmin(np.abs(idx - f))]
                orient[f, h], transl[f, h] = orient[k, h], transl[k, h]
            elif previous is not None:
                orient[f, h], transl[f, h] = previous[0][h], previous[1][h]
    return orient, transl, fitted


# --- 3. + 4. pose and contact -------------------------------------------------------------------

def fit_sequence(model: HandModel, inputs: FitInputs, opts: FitOptions | None = None,
                 betas: np.ndarray | None = None) -> FitResult:
    """Fit a whole sequence in chunks of ``opts.chunk_frames``; ``betas`` given = keep that shape."""
    opts = opts or FitOptions()
    dev = _device(opts.device)
    layer = JointsLayer(model).to(dev)
    # 1.
    if betas is None:
        betas = fit_shape(layer, inputs.joints3d, opts.bone_symmetry)
    betas_t = torch.as_tensor(betas, dtype=torch.float32, device=dev)
    with torch.no_grad():
        z = torch.zeros(1, 2, 3, device=dev)
        rest = layer(z, torch.zeros(1, 2, 45, device=dev), betas_t, z)[0].cpu().numpy()  # (2, 21, 3)
    rig = TorchRig.of(inputs.rig, dev) if inputs.rig is not None and inputs.keypoints is not None else None
    F = len(inputs.joints3d)
    out = {k: np.zeros((F, 2, n)) for k, n in (("global_orient", 3), ("hand_pose", 45), ("transl", 3))}
    joints = np.zeros((F, 2, N_HAND_JOINTS, 3))
    previous = None
    for start in range(0, F, opts.chunk_frames):
        sl = slice(start, min(F, start + opts.chunk_frames))
        # 2.
        orient, transl, _ = init_global(rest, inputs.joints3d[sl], previous)
        pose = np.zeros((sl.stop - sl.start, 2, 45))
        if previous is not None and start > 0:
            pose[:] = out["hand_pose"][start - 1]  # warm start of the pose from the previous chunk's last frame
        kp = inputs.keypoints[:, sl] if rig is not None else None
        o, p, t, j = _optimise(model, layer, rig, betas_t, inputs.joints3d[sl], kp, orient, pose, transl, opts)
        out["global_orient"][sl], out["hand_pose"][sl], out["transl"][sl], joints[sl] = o, p, t, j
        previous = (o[-1], t[-1])
    return FitResult(betas.astype(np.float32), out["global_orient"].astype(np.float32),
                     out["hand_pose"].astype(np.float32), out["transl"].astype(np.float32), joints.astype(np.float32))


def _optimise(model, layer, rig, betas, joints3d, keypoints, orient, pose, transl, opts: FitOptions):
    dev = betas.device

    def T(a):
        return torch.as_tensor(np.asarray(a), dtype=torch.float32, device=dev)

    B = len(joints3d)
    X = T(np.nan_to_num(joints3d)).reshape(B, 2, N_HAND_JOINTS, 3)
    v = T(np.isfinite(joints3d).all(-1)).reshape(B, 2, N_HAND_JOINTS)  # (B, 2, 21)
    if keypoints is not None:
        x2d = T(np.nan_to_num(keypoints[..., :2])).reshape(-1, B, 2, N_HAND_JOINTS, 2)  # (C, B, 2, 21, 2)
        c2d = T(keypoints[..., 2]).reshape(-1, B, 2, N_HAND_JOINTS)  # (C, B, 2, 21)
        s2d = (opts.sigma_2d * rig.height).reshape(-1, 1, 1, 1)
        n2d = c2d.sum().clamp(min=1.0)
    # 3a. per frame Levenberg-Marquardt on the 3D joints and the limits: frames are independent here
    orient, pose, transl = lm_pose(model, layer, betas, X, v, T(orient), T(pose), T(transl), opts)
    go, hp, tr = (a.detach().clone().requires_grad_(True) for a in (orient, pose, transl))

    def energy(J: torch.Tensor) -> torch.Tensor:
        """Every term a sum over a frame's joints, averaged over the frames."""
        e = opts.w3d * (v * ((J - X) ** 2).sum(-1)).sum() / opts.sigma_3d ** 2
        if keypoints is not None:
            r = ((rig.project(J) - x2d) ** 2).sum(-1) / s2d ** 2  # (C, B, 2, 21)
            views_per_joint = n2d / (B * 2 * N_HAND_JOINTS)  # so a joint counts once, as in 3D
            e = e + opts.w2d * (c2d * r / (1 + r)).sum() / views_per_joint
        e = e + opts.w_limits * (model.limit_violation(hp) ** 2).sum()
        # temporal terms robust too: a broken neighbouring frame must not drag a good one
        if B > 1:
            u = ((J[1:] - J[:-1]) ** 2).sum(-1) / opts.sigma_velocity ** 2
            e = e + opts.w_velocity * (u / (1 + u)).sum()
        if B > 2:
            u = ((J[2:] - 2 * J[1:-1] + J[:-2]) ** 2).sum(-1) / opts.sigma_acceleration ** 2
            e = e + opts.w_acceleration * (u / (1 + u)).sum()
        return e / B

    # 3b. every term, all frames together
    opt = torch.optim.LBFGS([go, hp, tr], max_iter=opts.pose_iterations, line_search_fn="strong_wolfe",
                            history_size=20)

    def closure():
        opt.zero_grad()
        e = energy(layer(go, hp, betas, tr))
        e.backward()
        return e

    opt.step(closure)
    # 4.
    with torch.no_grad():
        J = layer(go, hp, betas, tr)
        gap = torch.cdist(J[:, 0], J[:, 1]).flatten(1).min(1).values  # (B,)
    close = torch.nonzero(gap < opts.contact_distance).flatten()
    if len(close) and opts.contact_iterations > 0 and opts.w_penetration > 0:
        _contact(model, layer, betas, go, hp, tr, close, energy, opts)
    with torch.no_grad():
        J = layer(go, hp, betas, tr)
    return (go.detach().cpu().numpy(), hp.detach().cpu().numpy(), tr.detach().cpu().numpy(),
            J.cpu().numpy())


def _skew(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) with skew(a) b = a x b."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(v.shape[:-1] + (3, 3))


def right_jacobian(theta: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle -> (..., 3, 3) Jr with R(theta + d) ~ R(theta) exp(Jr(theta) d)."""
    phi = torch.linalg.norm(theta, dim=-1, keepdim=True)[..., None].clamp(min=1e-6)  # (..., 1, 1)
    K = _skew(theta)
    eye = torch.eye(3, dtype=theta.dtype, device=theta.device)
    return eye - (1 - torch.cos(phi)) / phi ** 2 * K + (phi - torch.sin(phi)) / phi ** 3 * (K @ K)


def _ancestors() -> np.ndarray:
    """(21, 16) bool, MANO-21 order: joint k's rotation moves point j (k a strict ancestor of
    joint j; a fingertip moves with its finger's last joint and that joint's ancestors)."""
    from data_schemas.keypoints import MANO_PARENTS

    A = np.zeros((21, 16), bool)
    for j in range(16):
        k = MANO_PARENTS[j]
        while k >= 0:
            A[j, k] = True
            k = MANO_PARENTS[k]
    for tip, last in zip(range(16, 21), (15, 3, 6, 12, 9)):  # thumb index middle ring pinky tips
        A[tip] = A[last]
        A[tip, last] = True
    return A


def lm_pose(model, layer, betas, X, v, orient, pose, transl, opts: FitOptions):
    """Batched Levenberg-Marquardt, one small problem per frame and hand: 51 unknowns
    (orientation, 15 joint rotations, translation), residuals = 3D joint offsets / sigma_3d
    (triangulated joints) and sqrt(w_limits) x the angles outside the joint limits.

    Jacobian in closed form: turning joint k by a small world-axis rotation a moves a point
    j it carries by a x (p_j - p_k); with R_k = R(theta_k), a = G_k Jr(theta_k) d theta_k (G_k
    the joint's world rotation, Jr the right Jacobian of SO(3)). Fingertips are taken as
    rigid on their last joint, pose correctives are left out of the Jacobian (not of the
    residual): the step is approximate, the accepted cost exact. Each problem keeps its own
    damping lambda."""
    from data_schemas.keypoints import OURS_OF_MANO21
    from fitting.hand_model import pose_prior

    B = X.shape[0]
    dev, dt = X.device, X.dtype
    A = torch.as_tensor(_ancestors(), device=dev)  # (21, 16)
    to_mano = list(OURS_OF_MANO21)
    w_lim = opts.w_limits ** 0.5
    frames = torch.as_tensor(model.frames, dtype=dt, device=dev)  # (15, 3, 3) right hand
    lo, hi = (torch.as_tensor(x * pose_prior.DEG, dtype=dt, device=dev) for x in pose_prior.limits_deg())
    out = []
    for h in range(2):
        mirror = torch.as_tensor(AXIS_ANGLE_MIRROR if h == 0 else np.ones(45), dtype=dt, device=dev).reshape(15, 3)
        L = frames.transpose(1, 2) * mirror[:, None, :]  # (15, 3, 3): angles_k = L_k theta_k
        Xh = X[:, h][:, to_mano]  # (B, 21, 3) MANO-21 order
        wh = (v[:, h][:, to_mano] / opts.sigma_3d)[..., None]  # (B, 21, 1)

        def residual(theta, Xs, ws):  # (K, 51) -> residuals (K, 63 + 45), joints (K, 21, 3), rotations, angles
            K = len(theta)
            o, p, t = theta[:, None, :3], theta[:, None, 3:48], theta[:, None, 48:]
            J = layer(o, p, betas[h:h + 1], t, hands=slice(h, h + 1))[:, 0][:, to_mano]  # (K, 21, 3) MANO-21
            angles = torch.einsum("kab,nkb->nka", L, theta[:, 3:48].reshape(K, 15, 3))  # (K, 15, 3)
            limits = torch.relu(angles - hi) + torch.relu(lo - angles)
            r = torch.cat([((J - Xs) * ws).reshape(K, -1), w_lim * limits.reshape(K, -1)], dim=1)
            return r, J, layer.last_rotations[:, 0], angles

        def jacobian(theta, J, G, angles, ws):  # -> (K, 108, 51)
            B = len(theta)
            rot = torch.cat([theta[:, :3], theta[:, 3:48]], dim=1).reshape(B, 16, 3)
            axes = G @ right_jacobian(rot)  # (B, 16, 3, 3): d(world axis) / d theta_k
            lever = J[:, :, None] - J[:, None, :16]  # (B, 21, 16, 3): p_j - p_k
            d = -_skew(lever) @ axes[:, None] * A[None, :, :, None, None]  # (B, 21, 16, 3, 3)
            Jp = d.permute(0, 1, 3, 2, 4).reshape(B, 63, 48)  # rows (j, xyz), cols (k, axis)
            Jt = torch.eye(3, dtype=dt, device=dev).repeat(21, 1).expand(B, 63, 3)
            Jp = torch.cat([Jp, Jt], dim=2) * ws.repeat_interleave(3, dim=1)  # (B, 63, 51)
            active = (angles > hi).to(dt) - (angles < lo).to(dt)  # (B, 15, 3): +1 above, -1 below
            blocks = w_lim * active[..., None] * L  # (B, 15, 3, 3): joint k's angles by its own theta_k
            Jl = torch.zeros(B, 15, 3, 15, 3, dtype=dt, device=dev)
            k = torch.arange(15, device=dev)
            Jl[:, k, :, k, :] = blocks.transpose(0, 1)  # block diagonal; indexing puts the k axis first
            Jl = torch.nn.functional.pad(Jl.reshape(B, 45, 45), (3, 3))  # no orientation, translation columns
            return torch.cat([Jp, Jl], dim=1)

        def solve(theta, sel):  # LM on the frames ``sel`` from ``theta`` (K, 51) -> (theta, cost)
            Xs, ws = Xh[sel], wh[sel]
            K = len(sel)
            lam = torch.full((K, 1), 1e-3, dtype=dt, device=dev)
            r, J, G, angles = residual(theta, Xs, ws)
            cost = (r ** 2).sum(1)
            eye = torch.eye(51, dtype=dt, device=dev)
            for _ in range(opts.lm_iterations):
                Jm = jacobian(theta, J, G, angles, ws)
                H = Jm.transpose(1, 2) @ Jm  # (K, 51, 51)
                g = (Jm.transpose(1, 2) @ r[..., None])[..., 0]  # (K, 51)
                # damping relative to the curvature, with a floor: directions no joint constrains
                # (a finger whose joints were not triangulated) must not take huge steps
                step = torch.linalg.solve(H + lam[..., None] * (H * eye) + 1e-2 * eye, -g)
                trial = theta + step
                r_new, J_new, G_new, a_new = residual(trial, Xs, ws)
                cost_new = (r_new ** 2).sum(1)
                better = cost_new < cost
                keep = better[:, None]
                theta = torch.where(keep, trial, theta)
                r = torch.where(keep, r_new, r)
                J = torch.where(keep[..., None], J_new, J)
                G = torch.where(keep[..., None, None], G_new, G)
                angles = torch.where(keep[..., None], a_new, angles)
                cost = torch.where(better, cost_new, cost)
                lam = torch.where(keep, lam * 0.3, lam * 10).clamp(1e-7, 1e7)
            return theta, cost

        # frames where the hand has no triangulated palm keep their warm start (init_global)
        palm = (wh[:, [0, 1, 4, 7, 10, 13], 0] > 0).sum(1) >= 3  # MANO-21: wrist, finger bases
        theta = torch.cat([orient[:, h], pose[:, h], transl[:, h]], dim=1)  # (B, 51)
        cost = torch.full((B,), float("inf"), dtype=dt, device=dev)
        fitted = torch.nonzero(palm).flatten()
        if len(fitted):
            theta[fitted], cost[fitted] = solve(theta[fitted], fitted)
        # Restarts: a frame stuck in a poor minimum (cost per joint 4x the sequence's median, joint
        # limits included) starts again from its neighbours' solutions, forward then backward
        # through the sequence; the better solution stays.
        n_valid = (wh[..., 0] > 0).sum(1).clamp(min=1)
        for shift in (1, -1) * opts.restarts:
            per_joint = cost / n_valid
            median = per_joint[palm].median() if palm.any() else per_joint.new_zeros(())
            stuck = torch.nonzero(palm & (per_joint > torch.clamp(4 * median, min=0.05))).flatten()
            stuck = stuck[(stuck - shift >= 0) & (stuck - shift < B)]
            if len(stuck) == 0:
                continue
            trial, trial_cost = solve(theta[stuck - shift], stuck)
            better = trial_cost < cost[stuck]
            theta[stuck[better]], cost[stuck[better]] = trial[better], trial_cost[better]
        out.append(theta)
    theta = torch.stack(out, dim=1)  # (B, 2, 51)
    return theta[..., :3], theta[..., 3:48], theta[..., 48:]


def _contact(model, layer, betas, go, hp, tr, close, energy, opts: FitOptions) -> None:
    """A few iterations on all frames with the penetration term added for the ``close`` ones."""
    surface = JointsLayer(model, surface_points=opts.surface_points).to(go.device)
    with torch.no_grad():  # only frames that interpenetrate now take part
        points, normals = surface.surface(go[close], hp[close], betas, tr[close])
        depth = torch.stack([penetration_penalty(points[k:k + 1], normals[k:k + 1]) for k in range(len(close))])
    close = close[depth > 0]
    if len(close) == 0:
        return
    opt = torch.optim.LBFGS([go, hp, tr], max_iter=opts.contact_iterations, line_search_fn="strong_wolfe",
                            history_size=10)

    def closure():
        opt.zero_grad()
        e = energy(layer(go, hp, betas, tr))
        points, normals = surface.surface(go[close], hp[close], betas, tr[close])  # (K, 2, P, 3) each
        e = e + opts.w_penetration * penetration_penalty(points, normals) / opts.sigma_penetration ** 2 / go.shape[0]
        e.backward()
        return e

    opt.step(closure)


def penetration_penalty(points: torch.Tensor, normals: torch.Tensor, reach: float = 0.01) -> torch.Tensor:
    """Sum of squared depths of each hand's surface points behind the other hand's surface.

    points, normals (K, 2, P, 3). Depth of a point p of one hand: with q its nearest point of
    the other hand (within ``reach``) and n_q the outward normal there, (q - p) . n_q when
    positive (p is behind the surface at q). A local, differentiable stand-in for the exact
    depth (``hand_model.contact``), on a subset of the surface."""
    total = points.new_zeros(())
    for a in range(2):
        p, q, nq = points[:, a], points[:, 1 - a], normals[:, 1 - a]  # (K, P, 3)
        with torch.no_grad():  # which point is nearest: no gradient needed through the search
            dist, idx = torch.cdist(p, q).min(dim=2)  # (K, P)
        at = idx[..., None].expand(-1, -1, 3)
        depth = ((torch.gather(q, 1, at) - p) * torch.gather(nq, 1, at)).sum(-1)  # > 0 inside
        total = total + (torch.relu(depth) ** 2 * (dist < reach)).sum()
    return total


def rotation_matrices(rotvec: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 3, 3), for callers that want the fitted orientations as matrices."""
    return rodrigues(torch.as_tensor(rotvec, dtype=torch.float32)).numpy()
