"""Fit both hands' MANO parameters to a sequence's triangulated joints and 2D detections.

Unknowns: one shape ``betas`` (2, 10) per hand for the whole sequence (one subject), and
per frame ``global_orient`` (F, 2, 3), ``hand_pose`` (F, 2, 45), ``transl`` (F, 2, 3).
All frames of a chunk are solved together (torch, CPU or CUDA), with the hand model's
joints from ``JointsLayer`` (no full surface). On the CPU the hot paths run compiled
(``fitting.fit_kernels``: the points and their exact gradient, the per-frame LM, the 2D and
penetration terms; the torch statements here are their tested reference and CUDA's path).

The data terms compare like with like: the triangulated points and the detections are the
detector's landmarks, so the model's side of them is its *landmarks* J_j (``landmarks``: the
detector's definition on the hand model's surface, ``data_schemas.landmarks``; without one the
joints themselves). The result's ``joints`` are the model's skeleton joints all the same.

Energy (sums over a frame's joints, averaged over frames; ``energy`` in ``_optimise``):

    E = w3d   sum_j  v_j |J_j - X_j|^2 / s3d^2                        3D joints vs triangulation
      + w2d   sum_cj c_cj rho(|pi_c(J_j) - x_cj|^2 / s2d_c^2) / n_c    2D reprojection, every camera
      + wlim  sum relu(angle outside the joint limits)^2               pose prior (hand model)
      + wvel  sum rho(|J_t - J_t-1|^2 / svel^2) + wacc sum rho(|J_t+1 - 2 J_t + J_t-1|^2 / sacc^2)
      + wpen  sum relu(depth of a surface point inside the other hand - allowance)^2 / spen^2  (stage 4)

v_j: the joint was triangulated, times the landmark's weight (``weigh_landmarks``); c_cj: detection
score, times the same weight; n_c: views per joint (so a
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
   limits with a closed-form Jacobian (``lm_pose``), both hands and all frames in one
   batch, coarse to fine in time: every 8th frame from a flat hand, then the frames
   between from their solved neighbours (the warm start), each problem stopping on its
   own; frames left in a poor minimum restart from their neighbours' solutions; (b) all
   frames together, L-BFGS (strong Wolfe) on every term but penetration
4. contact: frames whose hands interpenetrate beyond ``penetration_allowance`` (joints
   within ``contact_distance`` and a surface point deeper behind the other hand) get a few
   L-BFGS iterations with the penetration term on a subset of the surface
   (``surface_points`` per hand); only their parameters move.

A hand without a triangulated palm in a frame (seen by fewer than 2 cameras) is not fitted:
it is carried across from the nearest frames where it is, its parameters on the cubic curve that
joins them with their own velocities, limited so it does not overshoot (``fill_between``); the quality rule flags it (no data) and
gives it a confidence that falls with the distance to those frames (``fitting.confidence``). Its
2D and temporal terms alone are bounded and could slide it along a camera ray without end.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from data_schemas.calibration import CameraRig
from data_schemas.camera_model import matrix_to_rodrigues, rodrigues_to_matrix_torch, to_pixels_torch
from data_schemas.keypoints import HAND_BONES, N_HAND_JOINTS
from data_schemas.landmarks import LandmarkDefinition
from fitting import fit_kernels
from hand_model.joints_layer import JointsLayer
from hand_model.model import AXIS_ANGLE_MIRROR, HandModel

PALM = [0, 1, 5, 9, 13, 17]  # wrist and the five finger bases (ours): nearly rigid


@dataclass
class FitOptions:
    """MANO fitting: weights, scales and iteration budgets."""

    lm_iterations: int = 15
    """Levenberg-Marquardt iterations of the per-frame pose stage (at most)."""
    lm_strides: tuple[int, ...] = (8, 4, 2, 1)
    """LM coarse to fine: the first stride's frames start cold, each next stride's from the solved
    neighbours (each stride half the one before, ending with 1); (1,): every frame cold."""
    lm_tolerance: float = 1e-4
    """A frame's LM stops once an accepted step lowers its cost by less than this fraction."""
    restarts: int = 1
    """Rounds of restarting poorly fitted frames from their neighbours' solutions (previous and next at once)."""
    pose_iterations: int = 5
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
    sigma_penetration: float = 0.001
    """Scale of penetration depth, metres."""
    penetration_allowance: float = 0.002
    """Depth (m) the penetration term lets pass: touching hands press into each other's skin,
    which a rigid mesh shows as overlap (the studio's contacts press 1.5 mm); deeper is penalised."""
    surface_points: int = 200
    """Surface points per hand in the penetration term."""
    contact_distance: float = 0.02
    """Frames whose hands' joints come closer than this (m) get the contact stage."""
    weigh_landmarks: bool = True
    """With a landmark definition, weigh each landmark's data terms by 1 / its fitted residual^2
    (normalised to mean 1): a detector's noisy points (MediaPipe's wrist) pull less."""
    device: str = "auto"
    """"auto" (CUDA when available), "cpu" or "cuda"."""

    def __post_init__(self):
        s = tuple(self.lm_strides)
        if not s or s[-1] != 1 or any(a != 2 * b for a, b in zip(s, s[1:])):
            raise ValueError(f"lm_strides must halve down to 1, like (8, 4, 2, 1); got {s}")


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
    landmarks: np.ndarray  # (F, 2, 21, 3) the fitted model's landmarks (the joints without a definition)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# --- camera projection in torch (data_schemas.camera_model's torch form) ---

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
        shape = (-1,) + (1,) * (X.dim() - 1)  # (C, 1, ..., 1): a camera's numbers against its points
        fx, fy = self.K[:, 0, 0].reshape(shape), self.K[:, 1, 1].reshape(shape)
        cx, cy = self.K[:, 0, 2].reshape(shape), self.K[:, 1, 2].reshape(shape)
        return to_pixels_torch(pc, fx, fy, cx, cy, self.dist.reshape(shape + (5,)))


# --- 1. shape -------------------------------------------------------------------------------

def fit_shape(layer: JointsLayer, joints3d: np.ndarray, symmetry: float = 1.0, iterations: int = 50) -> np.ndarray:
    """(F, 42, 3) triangulated joints -> betas (2, 10) whose bone lengths match the median ones."""
    parents = [p for p, _ in HAND_BONES]
    children = [c for _, c in HAND_BONES]
    J = joints3d.reshape(len(joints3d), 2, N_HAND_JOINTS, 3)
    lengths = np.linalg.norm(J[:, :, children] - J[:, :, parents], axis=-1)  # (F, 2, 20)
    with warnings.catch_warnings():  # a bone never triangulated: NaN, left out below (``have``)
        warnings.simplefilter("ignore", RuntimeWarning)
        target = np.nanmedian(np.where(np.isfinite(lengths), lengths, np.nan), axis=0)  # (2, 20)
    dev = layer.j_template.device
    have = torch.as_tensor(np.isfinite(target), device=dev)
    target_t = torch.as_tensor(np.nan_to_num(target), dtype=torch.float32, device=dev)
    # the flat hand's joints are affine in betas (no rotation, no pose correctives): rest = A0 + dA . betas,
    # read off the layer once, so the iterations below are a few small tensor operations each
    with torch.no_grad():
        unit = torch.cat([torch.zeros(1, 10), torch.eye(10)]).to(dev)[:, None].expand(-1, 2, -1)  # (11, 2, 10)
        zeros = torch.zeros(11, 2, 3, device=dev)
        rest = layer.landmarks(zeros, torch.zeros(11, 2, 45, device=dev), unit, zeros)  # (11, 2, 21, 3)
        A0, dA = rest[0], (rest[1:] - rest[:1]).permute(1, 2, 3, 0)  # (2, 21, 3), (2, 21, 3, 10)
    betas = torch.zeros(2, 10, device=dev, requires_grad=True)
    opt = torch.optim.LBFGS([betas], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        rest = A0 + (dA * betas[:, None, None]).sum(-1)  # (2, 21, 3)
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


def init_global(rest: np.ndarray, joints3d: np.ndarray, previous: tuple[np.ndarray, np.ndarray] | None = None,
                wrist: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shaped flat hands' landmarks (2, 21, 3) + (F, 42, 3) triangulated ones -> global_orient (F, 2, 3),
    transl (F, 2, 3), and which (frame, hand) had a palm to fit (F, 2). The root rotates about the
    wrist joint J0 (``wrist`` (2, 3); default: the landmarks' wrist, when they are the joints):
    a rest point x goes to R (x - J0) + J0 + transl."""
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
        J0 = rest[h, 0] if wrist is None else wrist[h]
        orient[:, h] = matrix_to_rodrigues(R)
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
                 betas: np.ndarray | None = None, landmarks: LandmarkDefinition | None = None) -> FitResult:
    """Fit a whole sequence in chunks of ``opts.chunk_frames``; ``betas`` given = keep that shape;
    ``landmarks``: the detector's definition on the model (checked by the caller), None: the joints."""
    opts = opts or FitOptions()
    dev = _device(opts.device)
    layer = JointsLayer(model, landmarks=landmarks).to(dev)
    # 1.
    if betas is None:
        betas = fit_shape(layer, inputs.joints3d, opts.bone_symmetry)
    betas_t = torch.as_tensor(betas, dtype=torch.float32, device=dev)
    with torch.no_grad():
        z = torch.zeros(1, 2, 3, device=dev)
        rest = layer.landmarks(z, torch.zeros(1, 2, 45, device=dev), betas_t, z)[0].cpu().numpy()  # (2, 21, 3)
        wrist = layer(z, torch.zeros(1, 2, 45, device=dev), betas_t, z)[0, :, 0].cpu().numpy()  # (2, 3)
    rig = TorchRig.of(inputs.rig, dev) if inputs.rig is not None and inputs.keypoints is not None else None
    weight = landmark_weights(landmarks) if landmarks is not None and opts.weigh_landmarks else np.ones((2, 21))
    F = len(inputs.joints3d)
    out = {k: np.zeros((F, 2, n)) for k, n in (("global_orient", 3), ("hand_pose", 45), ("transl", 3))}
    joints = np.zeros((F, 2, N_HAND_JOINTS, 3))
    points = np.zeros((F, 2, N_HAND_JOINTS, 3))
    previous = None
    for start in range(0, F, opts.chunk_frames):
        sl = slice(start, min(F, start + opts.chunk_frames))
        # 2.
        orient, transl, _ = init_global(rest, inputs.joints3d[sl], previous, wrist)
        pose = np.zeros((sl.stop - sl.start, 2, 45))
        if previous is not None and start > 0:
            pose[:] = out["hand_pose"][start - 1]  # warm start of the pose from the previous chunk's last frame
        kp = inputs.keypoints[:, sl] if rig is not None else None
        o, p, t, j, lm = _optimise(model, layer, rig, betas_t, inputs.joints3d[sl], kp, orient, pose, transl, opts,
                                   weight)
        out["global_orient"][sl], out["hand_pose"][sl], out["transl"][sl], joints[sl], points[sl] = o, p, t, j, lm
        previous = (o[-1], t[-1])
    return FitResult(betas.astype(np.float32), out["global_orient"].astype(np.float32),
                     out["hand_pose"].astype(np.float32), out["transl"].astype(np.float32), joints.astype(np.float32),
                     points.astype(np.float32))


def landmark_weights(definition: LandmarkDefinition) -> np.ndarray:
    """(2, 21) each landmark's weight in the data terms: 1 / its fitted residual^2, mean 1 per hand."""
    r = np.maximum(np.nan_to_num(definition.residual_px.astype(np.float64), nan=np.inf), 1e-3)
    w = np.where(np.isfinite(r), 1 / r ** 2, 0.0)
    return w / np.maximum(w.mean(1, keepdims=True), 1e-12)


def _optimise(model, layer, rig, betas, joints3d, keypoints, orient, pose, transl, opts: FitOptions, weight):
    dev = betas.device

    def T(a):
        return torch.as_tensor(np.asarray(a), dtype=torch.float32, device=dev)

    B = len(joints3d)
    X = T(np.nan_to_num(joints3d)).reshape(B, 2, N_HAND_JOINTS, 3)
    v = T(np.isfinite(joints3d).all(-1)).reshape(B, 2, N_HAND_JOINTS)  # (B, 2, 21)
    w = T(weight)  # (2, 21) per landmark
    if keypoints is not None:
        x2d = T(np.nan_to_num(keypoints[..., :2])).reshape(-1, B, 2, N_HAND_JOINTS, 2)  # (C, B, 2, 21, 2)
        c2d = T(keypoints[..., 2]).reshape(-1, B, 2, N_HAND_JOINTS)  # (C, B, 2, 21)
        n2d = c2d.sum().clamp(min=1.0)
        c2d = c2d * w
        s2d = (opts.sigma_2d * rig.height).reshape(-1, 1, 1, 1)
    # on the CPU the points, their gradient, the per-frame LM and the 2D term run compiled (fit_kernels)
    compiled = fit_kernels.PointModel.of(layer, betas) if dev.type == "cpu" else None
    if compiled is not None:
        joints_model = fit_kernels.PointModel.of(layer, betas, "joints") if layer.has_landmarks else compiled

        def pose_points(o, p, t):
            return fit_kernels.points(compiled, o, p, t)

        def pose_joints(o, p, t):
            return fit_kernels.points(joints_model, o, p, t)
    else:
        def pose_points(o, p, t):
            return layer.landmarks(o, p, betas, t)

        def pose_joints(o, p, t):
            return layer(o, p, betas, t)
    if keypoints is not None and compiled is not None:
        reprojection = fit_kernels.Reprojection(rig, x2d, c2d, s2d)
    elif keypoints is not None:
        def reprojection(J, idx):
            xs, cs = (x2d, c2d) if idx is None else (x2d[:, idx], c2d[:, idx])
            r = ((rig.project(J) - xs) ** 2).sum(-1) / s2d ** 2  # (C, K, 2, 21)
            return (cs * r / (1 + r)).sum()
    # 3a. per frame Levenberg-Marquardt on the 3D joints and the limits: frames are independent here
    orient, pose, transl = lm_pose(model, layer, betas, X, v * w.sqrt(), T(orient), T(pose), T(transl), opts,
                                   compiled)
    go, hp, tr = (a.detach().clone().requires_grad_(True) for a in (orient, pose, transl))
    # A hand without a triangulated palm stays as lm_pose filled it in: its 2D and temporal terms
    # alone are robust (bounded), and sliding it along a camera ray far away can lower them.
    held = (v[:, :, PALM].sum(-1) < 3)[..., None].to(v.dtype)  # (B, 2, 1)

    def energy(J: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Every term a sum over a frame's joints, divided by the chunk's frame count. J holds the
        frames ``idx`` (sorted; None: all); the temporal terms take the consecutive ones among them."""
        Xs, vs = (X, v * w) if idx is None else (X[idx], v[idx] * w)
        e = opts.w3d * (vs * ((J - Xs) ** 2).sum(-1)).sum() / opts.sigma_3d ** 2
        if keypoints is not None:
            views_per_joint = n2d / (B * 2 * N_HAND_JOINTS)  # so a joint counts once, as in 3D
            e = e + opts.w2d * reprojection(J, idx) / views_per_joint
        # temporal terms robust too: a broken neighbouring frame must not drag a good one
        frame = torch.arange(len(J), device=dev) if idx is None else idx
        if len(J) > 1:
            u = ((J[1:] - J[:-1]) ** 2).sum(-1) / opts.sigma_velocity ** 2
            step = (frame[1:] - frame[:-1] == 1)[:, None, None]
            e = e + opts.w_velocity * (step * u / (1 + u)).sum()
        if len(J) > 2:
            u = ((J[2:] - 2 * J[1:-1] + J[:-2]) ** 2).sum(-1) / opts.sigma_acceleration ** 2
            step = (frame[2:] - frame[:-2] == 2)[:, None, None]
            e = e + opts.w_acceleration * (step * u / (1 + u)).sum()
        return e / B

    # 3b. every term, all frames together
    opt = torch.optim.LBFGS([go, hp, tr], max_iter=opts.pose_iterations, line_search_fn="strong_wolfe",
                            history_size=20)

    def closure():
        opt.zero_grad()
        e = energy(pose_points(go, hp, tr)) + opts.w_limits * (model.limit_violation(hp) ** 2).sum() / B
        e.backward()
        for a in (go, hp, tr):
            a.grad *= 1 - held
        return e

    opt.step(closure)
    # 4. (hands close by their joints: the landmarks may sit on the skin, or off it)
    with torch.no_grad():
        J = pose_joints(go, hp, tr)
        gap = torch.cdist(J[:, 0], J[:, 1]).flatten(1).min(1).values  # (B,)
    close = torch.nonzero((gap < opts.contact_distance) & (held.flatten(1).sum(1) == 0)).flatten()
    if len(close) and opts.contact_iterations > 0 and opts.w_penetration > 0:
        _contact(model, pose_points, betas, go, hp, tr, close, energy, opts)
    with torch.no_grad():
        for a in (go, hp, tr):  # the held hands follow their neighbours' final values
            fill_between(a, held[..., 0] == 0)
        J = pose_joints(go, hp, tr)
        L = pose_points(go, hp, tr)
    return (go.detach().cpu().numpy(), hp.detach().cpu().numpy(), tr.detach().cpu().numpy(),
            J.cpu().numpy(), L.cpu().numpy())


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


def lm_pose(model, layer, betas, X, v, orient, pose, transl, opts: FitOptions,
            compiled: fit_kernels.PointModel | None = None):
    """Batched Levenberg-Marquardt, one small problem per frame and hand: 51 unknowns
    (orientation, 15 joint rotations, translation), residuals = 3D landmark offsets / sigma_3d
    (triangulated landmarks) and sqrt(w_limits) x the angles outside the joint limits.

    Jacobian in closed form: turning joint k by a small world-axis rotation a moves a landmark
    l by a x lever_lk (``JointsLayer.landmarks``: p_l - p_k for a point rigid on a joint below k;
    a blend for a landmark on the skin); with R_k = R(theta_k), a = G_k Jr(theta_k) d theta_k (G_k
    the joint's world rotation, Jr the right Jacobian of SO(3)). Without a definition fingertips
    are taken as rigid on their last joint; pose correctives are left out of the Jacobian (not of
    the residual): the step is approximate, the accepted cost exact. Each problem keeps its own
    damping lambda.

    1. coarse to fine in time (``_coarse_to_fine``)
    2. restarts of the problems left in a poor minimum (``_restart_stuck``)
    3. the (frame, hand)s without a triangulated palm filled in between (``fill_between``)
    """
    lm = _PoseLM(model, layer, betas, X, v, opts) if compiled is None else _PoseLMCompiled(model, layer, betas, X, v,
                                                                                            opts, compiled)
    # (frame, hand)s without a triangulated palm keep their warm start (init_global)
    palm = (lm.wm[:, :, PALM, 0] > 0).sum(-1) >= 3  # (B, 2)
    theta = torch.cat([orient, pose, transl], dim=2)  # (B, 2, 51)
    cost = _coarse_to_fine(lm, theta, palm, opts)  # 1.
    _restart_stuck(lm, theta, cost, palm, opts)  # 2.
    fill_between(theta, palm)  # 3.
    return theta[..., :3], theta[..., 3:48], theta[..., 48:]


class _PoseLM:
    """``lm_pose``'s problems: the targets (our order), the residuals, their normal equations and the
    damped solve."""

    def __init__(self, model, layer, betas, X, v, opts: FitOptions):
        from hand_model import pose_prior

        self.layer, self.betas, self.opts = layer, betas, opts
        self.dev, self.dt = dev, dt = X.device, X.dtype
        self.pl, self.pk = layer.pair_landmark, layer.pair_joint  # (P,) pairs: turning joint k moves landmark l
        k3 = 3 + 3 * np.arange(15)[:, None, None]  # the 3x3 diagonal blocks of the hand-pose columns
        self.block_r, self.block_c = (torch.as_tensor(np.broadcast_to(i, (15, 3, 3)).ravel(), device=dev)
                                      for i in (k3 + np.arange(3)[:, None], k3 + np.arange(3)[None, :]))
        self.w_lim = opts.w_limits ** 0.5
        frames = torch.as_tensor(model.frames, dtype=dt, device=dev)  # (15, 3, 3) right hand
        self.lo, self.hi = (torch.as_tensor(x * pose_prior.DEG, dtype=dt, device=dev) for x in pose_prior.limits_deg())
        mirror = torch.as_tensor(np.stack([AXIS_ANGLE_MIRROR, np.ones(45)]), dtype=dt, device=dev).reshape(2, 15, 3)
        self.L = frames.transpose(1, 2) * mirror[:, :, None, :]  # (2, 15, 3, 3): angles_k = L_k theta_k, left, right
        self.Xm = X  # (B, 2, 21, 3)
        self.wm = (v / opts.sigma_3d)[..., None]  # (B, 2, 21, 1)
        self.eye = torch.eye(51, dtype=dt, device=dev)

    def residual(self, theta, Xs, ws):
        """theta (K, 2, 51) -> residuals (K, 2, 63 + 45), the pairs' levers (K, 2, P, 3), rotations, angles."""
        K = len(theta)
        J, lever = self.layer.landmarks(theta[..., :3], theta[..., 3:48], self.betas, theta[..., 48:], levers=True)
        angles = torch.einsum("hkab,nhkb->nhka", self.L, theta[..., 3:48].reshape(K, 2, 15, 3))  # (K, 2, 15, 3)
        limits = torch.relu(angles - self.hi) + torch.relu(self.lo - angles)
        r = torch.cat([((J - Xs) * ws).reshape(K, 2, 63), self.w_lim * limits.reshape(K, 2, 45)], dim=2)
        return r, lever, self.layer.last_rotations, angles

    def normal_equations(self, theta, lever, G, angles, ws, r):  # -> J^T J (K, 2, 51, 51), J^T r (K, 2, 51)
        K, dt, dev, pl, pk = len(theta), self.dt, self.dev, self.pl, self.pk
        rot = torch.cat([theta[..., :3], theta[..., 3:48]], dim=2).reshape(K, 2, 16, 3)
        axes = (G @ right_jacobian(rot))[:, :, pk].transpose(-1, -2)  # (K, 2, P, 3 axis, 3 xyz) of each pair's k
        d = torch.cross(axes, lever[:, :, :, None].expand_as(axes), dim=-1)  # (K, 2, P, axis, xyz)
        Jp = torch.zeros(K, 2, 21, 3, 16, 3, dtype=dt, device=dev)
        Jp[:, :, pl, :, pk, :] = d.permute(2, 0, 1, 4, 3)  # rows (l, xyz), cols (k, axis); the pair axis goes first
        Jt = torch.eye(3, dtype=dt, device=dev).repeat(21, 1).expand(K, 2, 63, 3)
        Jp = torch.cat([Jp.reshape(K, 2, 63, 48), Jt], dim=3) * ws.repeat_interleave(3, dim=2)  # (K, 2, 63, 51)
        H = Jp.transpose(-1, -2) @ Jp
        g = (Jp.transpose(-1, -2) @ r[..., :63, None])[..., 0]
        # the limits' rows: block diagonal, joint k's angles by its own theta_k
        active = (angles > self.hi).to(dt) - (angles < self.lo).to(dt)  # (K, 2, 15, 3): +1 above, -1 below
        blocks = self.w_lim * active[..., None] * self.L  # (K, 2, 15, 3, 3)
        H[:, :, self.block_r, self.block_c] += (blocks.transpose(-1, -2) @ blocks).reshape(K, 2, 135)
        g[..., 3:48] += (blocks.transpose(-1, -2) @ r[..., 63:].reshape(K, 2, 15, 3, 1)).reshape(K, 2, 45)
        return H, g

    def solve(self, theta, sel, moving):
        """LM on frames ``sel`` from ``theta`` (K, 2, 51), for the (frame, hand) problems ``moving`` (K, 2)
        -> (theta, cost (K, 2)). Each problem keeps its own damping and stops on its own."""
        opts, eye = self.opts, self.eye
        Xs, ws = self.Xm[sel], self.wm[sel]
        lam = torch.full(moving.shape + (1,), 1e-3, dtype=self.dt, device=self.dev)
        r, J, G, angles = self.residual(theta, Xs, ws)
        cost = (r ** 2).sum(-1)
        done = ~moving
        for _ in range(opts.lm_iterations):
            a = torch.nonzero(~done.all(1)).flatten()  # frames with a hand still moving
            if len(a) == 0:
                break
            H, g = self.normal_equations(theta[a], J[a], G[a], angles[a], ws[a], r[a])
            # damping relative to the curvature, with a floor: directions no joint constrains
            # (a finger whose joints were not triangulated) must not take huge steps
            step = torch.linalg.solve(H + lam[a][..., None] * (H * eye) + 1e-2 * eye, -g)
            trial = theta[a] + step
            r_new, J_new, G_new, a_new = self.residual(trial, Xs[a], ws[a])
            cost_new = (r_new ** 2).sum(-1)  # (k, 2)
            better = (cost_new < cost[a]) & ~done[a]
            keep = better[..., None]
            theta[a] = torch.where(keep, trial, theta[a])
            r[a] = torch.where(keep, r_new, r[a])
            J[a] = torch.where(keep[..., None], J_new, J[a])
            G[a] = torch.where(keep[..., None, None], G_new, G[a])
            angles[a] = torch.where(keep[..., None], a_new, angles[a])
            done[a] |= better & (cost[a] - cost_new < opts.lm_tolerance * cost[a])
            cost[a] = torch.where(better, cost_new, cost[a])
            lam[a] = torch.where(keep, lam[a] * 0.3, lam[a] * 10).clamp(1e-7, 1e7)
        return theta, cost


class _PoseLMCompiled(_PoseLM):
    """``_PoseLM`` whose solve runs compiled (``fit_kernels.pose_lm``, float64; the CPU's)."""

    def __init__(self, model, layer, betas, X, v, opts: FitOptions, compiled: fit_kernels.PointModel):
        super().__init__(model, layer, betas, X, v, opts)
        self.compiled = compiled
        self.limits = (self.L.cpu().numpy(), self.lo.cpu().numpy(), self.hi.cpu().numpy(), self.w_lim)
        self.X_np, self.w_np = X.cpu().numpy(), self.wm[..., 0].cpu().numpy()  # (B, 2, 21, 3), (B, 2, 21)

    def solve(self, theta, sel, moving):
        i = sel.cpu().numpy()
        t, c = fit_kernels.pose_lm(self.compiled, theta.cpu().numpy(), self.X_np[i], self.w_np[i],
                                   moving.cpu().numpy(), self.limits, self.opts.lm_iterations, self.opts.lm_tolerance)
        return torch.as_tensor(t, dtype=self.dt, device=self.dev), torch.as_tensor(c, dtype=self.dt, device=self.dev)


def _coarse_to_fine(lm: _PoseLM, theta: torch.Tensor, palm: torch.Tensor, opts: FitOptions) -> torch.Tensor:
    """In place on theta (B, 2, 51): every 8th frame (opts.lm_strides) from the given start, then the frames
    half-way between solved ones (every 4th, 2nd, then the rest), each starting from its two solved
    neighbours' mean hand pose (a hand without a palm there does not count) and its own orientation and
    translation. Returns the cost (B, 2) of each solved (frame, hand), inf where there is no palm."""
    B, dt, dev = len(theta), lm.dt, lm.dev
    cost = torch.full((B, 2), float("inf"), dtype=dt, device=dev)
    solved = torch.zeros(B, dtype=torch.bool, device=dev)
    for stride in opts.lm_strides:
        f = torch.arange(0, B, stride, device=dev)
        f = f[~solved[f] & palm[f].any(1)]
        solved[torch.arange(0, B, stride, device=dev)] = True
        if len(f) == 0:
            continue
        start = theta[f].clone()
        if stride < opts.lm_strides[0]:  # f - stride and f + stride (when inside) were solved before
            before, after = f - stride, f + stride
            after = torch.where(after < B, after, before)
            w0, w1 = (palm[i].to(dt)[..., None] for i in (before, after))  # (k, 2, 1)
            n = w0 + w1
            mean = (w0 * theta[before, :, 3:48] + w1 * theta[after, :, 3:48]) / n.clamp(min=1)
            start[..., 3:48] = torch.where(n > 0, mean, start[..., 3:48])
        t, c = lm.solve(start, f, palm[f])
        theta[f] = t
        cost[f] = torch.where(palm[f], c, cost[f])
    return cost


def _restart_stuck(lm: _PoseLM, theta: torch.Tensor, cost: torch.Tensor, palm: torch.Tensor,
                   opts: FitOptions) -> None:
    """In place on theta (B, 2, 51) and cost (B, 2): a (frame, hand) stuck in a poor minimum (cost per
    joint 4x the sequence's median, joint limits included) starts again from the previous and from the
    next frame's solution (both tried in one batch); the best solution stays. opts.restarts rounds."""
    B = len(theta)
    n_valid = (lm.wm[..., 0] > 0).sum(-1).clamp(min=1)  # (B, 2)
    for _ in range(opts.restarts):
        per_joint = cost / n_valid
        median = per_joint[palm].median() if palm.any() else per_joint.new_zeros(())
        stuck = palm & (per_joint > torch.clamp(4 * median, min=0.05))  # (B, 2)
        f = torch.nonzero(stuck.any(1)).flatten()
        if len(f) == 0:
            break
        both = torch.cat([f, f])
        source = torch.cat([f - 1, f + 1])
        moving = stuck[both] & (source >= 0)[:, None] & (source < B)[:, None]
        source = source.clamp(0, B - 1)
        start = torch.where(moving[..., None], theta[source], theta[both])
        trial, trial_cost = lm.solve(start, both, moving)
        trial_cost = torch.where(moving, trial_cost, torch.full_like(trial_cost, float("inf")))
        pick = trial_cost[len(f):] < trial_cost[:len(f)]  # (k, 2): the next frame's start did better
        best_theta = torch.where(pick[..., None], trial[len(f):], trial[:len(f)])
        best_cost = torch.where(pick, trial_cost[len(f):], trial_cost[:len(f)])
        better = best_cost < cost[f]
        theta[f] = torch.where(better[..., None], best_theta, theta[f])
        cost[f] = torch.where(better, best_cost, cost[f])


def fill_between(theta: torch.Tensor, known: torch.Tensor) -> None:
    """In place: theta (B, 2, n) of the (frame, hand)s not ``known`` (B, 2) carried across from the
    nearest known frames: the stand-in for a hand without a triangulated palm, whose confidence
    says how far it is from them (``fitting.confidence``).

    Inside a gap between known frames a and b (L = b - a frames), per parameter, the cubic Hermite
    curve through theta_a and theta_b, so the motion goes on through the gap as it came in and leaves
    as it goes out:

    1. secant s = (theta_b - theta_a) / L; the known frames' own velocities v_a = theta_a - theta_a-1,
       v_b = theta_b+1 - theta_b (s where that frame is missing)
    2. limited (Fritsch-Carlson): a velocity against the secant's sign is 0, and none above 3 |s|, so
       the curve stays between theta_a and theta_b: a fit's noisy edge frame must not fling the hand
       past its neighbours (on the demo captures an unlimited curve was 2x worse than a straight line
       across some gaps)
    3. theta(u) = h00(u) theta_a + h10(u) L v_a + h01(u) theta_b + h11(u) L v_b, u = (f - a) / L

    Past the first or last known frame, that frame's value."""
    n_frames = len(theta)
    for h in range(2):
        ok, miss = torch.nonzero(known[:, h]).flatten(), torch.nonzero(~known[:, h]).flatten()
        if len(ok) == 0 or len(miss) == 0:
            continue
        i = torch.searchsorted(ok, miss)
        a, b = ok[(i - 1).clamp(min=0)], ok[i.clamp(max=len(ok) - 1)]  # (M,) known frame before, after
        L = (b - a).clamp(min=1).to(theta.dtype)[:, None]  # (M, 1) gap length, frames
        u = ((miss - a).to(theta.dtype)[:, None] / L).clamp(0, 1)  # (M, 1) 0 at a, 1 at b
        pa, pb = theta[a, h], theta[b, h]  # (M, n)
        # 1.
        secant = (pb - pa) / L
        before, after = (a - 1).clamp(min=0), (b + 1).clamp(max=n_frames - 1)
        va = torch.where((known[before, h] & (a > 0))[:, None], pa - theta[before, h], secant)
        vb = torch.where((known[after, h] & (b + 1 < n_frames))[:, None], theta[after, h] - pb, secant)
        # 2.
        va, vb = (torch.where(v * secant > 0, torch.minimum(v.abs(), 3 * secant.abs()) * secant.sign(),
                              torch.zeros_like(v)) for v in (va, vb))
        # 3.
        h00, h10 = 2 * u ** 3 - 3 * u ** 2 + 1, u ** 3 - 2 * u ** 2 + u  # Hermite basis
        h01, h11 = -2 * u ** 3 + 3 * u ** 2, u ** 3 - u ** 2
        inside = (a < miss) & (miss < b)  # past either end: the nearest known frame (u is 0 or 1 there)
        theta[miss, h] = torch.where(inside[:, None], h00 * pa + h10 * L * va + h01 * pb + h11 * L * vb,
                                     torch.where((miss < a)[:, None], pa, pb))


def _contact(model, pose_points, betas, go, hp, tr, close, energy, opts: FitOptions) -> None:
    """A few iterations on the frames that interpenetrate, with the penetration term added: only
    their parameters move; their two neighbours each side stay fixed and hold the temporal terms."""
    layer = JointsLayer(model, surface_points=opts.surface_points).to(go.device)
    if go.device.type == "cpu":
        compiled = fit_kernels.PointModel.of(layer, betas, "surface")

        def surface(o, p, t):
            return fit_kernels.surface(compiled, o, p, t)
    else:
        def surface(o, p, t):
            return layer.surface(o, p, betas, t)
    with torch.no_grad():  # only frames that interpenetrate now take part
        points, normals = surface(go[close], hp[close], tr[close])
        depth2 = penetration_penalty(points, normals, allowance=opts.penetration_allowance, per_frame=True)
    close = close[depth2 > 0]
    if len(close) == 0:
        return
    B = go.shape[0]
    window = torch.unique(torch.clamp(close[:, None] + torch.arange(-2, 3, device=close.device), 0, B - 1))
    moves = torch.isin(window, close)  # (W,) the frames whose parameters change
    at = torch.nonzero(moves).flatten()
    fixed = [a.detach()[window] for a in (go, hp, tr)]
    free = [a.detach()[close].clone().requires_grad_(True) for a in (go, hp, tr)]
    opt = torch.optim.LBFGS(free, max_iter=opts.contact_iterations, line_search_fn="strong_wolfe", history_size=10)

    def closure():
        opt.zero_grad()
        o, p, t = (f.index_put((at,), x) for f, x in zip(fixed, free))
        e = energy(pose_points(o, p, t), window) + opts.w_limits * (model.limit_violation(free[1]) ** 2).sum() / B
        points, normals = surface(*free)  # (K, 2, P, 3) each
        depth2 = penetration_penalty(points, normals, allowance=opts.penetration_allowance)
        e = e + opts.w_penetration * depth2 / opts.sigma_penetration ** 2 / B
        e.backward()
        return e

    opt.step(closure)
    with torch.no_grad():
        for a, x in zip((go, hp, tr), free):
            a[close] = x


def penetration_penalty(points: torch.Tensor, normals: torch.Tensor, reach: float = 0.01, allowance: float = 0.0,
                        per_frame: bool = False) -> torch.Tensor:
    """Sum of squared depths of each hand's surface points behind the other hand's surface.

    points, normals (K, 2, P, 3). Depth of a point p of one hand: with q its nearest point of
    the other hand (within ``reach``) and n_q the outward normal there, (q - p) . n_q when
    positive (p is behind the surface at q), less ``allowance``. A local, differentiable stand-in
    for the exact depth (``hand_model.contact``), on a subset of the surface. ``per_frame``: the
    (K,) sums instead of their total. On the CPU compiled (``fit_kernels.penetration``)."""
    if points.device.type == "cpu":
        total = fit_kernels.penetration(points, normals, reach, allowance)
        return total if per_frame else total.sum()
    return _penetration_torch(points, normals, reach, allowance, per_frame)


def _penetration_torch(points: torch.Tensor, normals: torch.Tensor, reach: float, allowance: float,
                       per_frame: bool) -> torch.Tensor:
    """``penetration_penalty`` in torch (CUDA; the compiled form's reference)."""
    total = points.new_zeros(points.shape[:1])
    for a in range(2):
        p, q, nq = points[:, a], points[:, 1 - a], normals[:, 1 - a]  # (K, P, 3)
        with torch.no_grad():  # which point is nearest: no gradient needed through the search
            dist, idx = torch.cdist(p, q).min(dim=2)  # (K, P)
        at = idx[..., None].expand(-1, -1, 3)
        depth = ((torch.gather(q, 1, at) - p) * torch.gather(nq, 1, at)).sum(-1)  # > 0 inside
        total = total + (torch.relu(depth - allowance) ** 2 * (dist < reach)).sum(1)
    return total if per_frame else total.sum()


def rotation_matrices(rotvec: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 3, 3), for callers that want the fitted orientations as matrices."""
    return rodrigues_to_matrix_torch(torch.as_tensor(rotvec, dtype=torch.float32)).numpy()
