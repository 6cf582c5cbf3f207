"""Controls of the generator: key-frame in-betweening, wrist trajectories, 2D keypoints.

A control acts on the denoiser's estimate x0_hat at every DDIM step (``generation.diffusion``,
step 2); DDIM's last step returns the last controlled x0_hat, so what a control imposes holds in
the sample. The controls of in-betweening and trajectories replace, the 2D-keypoint control
guides:

    in-betweening   1. decode x0_hat -> joints p, rotations q (sequence frame)
                    2. frames [0, k) and [T - k, T): p, q := the reference's
                    3. encode again (velocities and root motion follow from the new frames)
                    SHDe's hand blocks get the reference's hand blocks on those frames as well.

    trajectory      1. decode x0_hat -> p, q
                    2. per hand h and frame t: the rigid motion taking the generated root
                       (q_h0, r_h0) to the given one: p' = q_ref q_h0* (p - r_h0) + r_ref, q_h0 := q_ref
                    3. encode again
                    (the local rep carries the roots as velocities, so its decode integrates the
                    given trajectory back: the best fit of this control, as the paper notes)

    2D keypoints    1. decode x0_hat -> p, into the world with the control's sequence frame
                    2. per visible point: p* = the point of the keypoint's camera ray closest to p
                       (the Gauss-Newton step of E = sum |pi(p) - u|^2 that keeps p's depth)
                    3. p := p + w (p* - p), back to the sequence frame, encode again
                    (guidance on x_0, without back-propagating through the denoiser; the depth
                    along each ray, which one camera cannot see, stays the model's)

Reference motions are world motions (n, T, ...) that give the targets and the sequence frame
(the samples are returned in the reference's world). Keypoints are undistorted pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from data_schemas.camera_model import to_pixels_torch
from data_schemas.keypoints import N_HAND_JOINTS
from generation.model import Encoded, HandDiffuse
from generation.representation import (
    SequenceFrame, apply_frame, quat_canonical, quat_conjugate, quat_multiply, quat_rotate, uncanonicalize,
)


@dataclass
class Reference:
    """World motion the targets come from: joints (n, T, 42, 3) m, global_orient (n, T, 2, 3),
    hand_pose (n, T, 2, 45)."""

    joints: torch.Tensor
    global_orient: torch.Tensor
    hand_pose: torch.Tensor


class Control:
    """No control: samples in the sequence frame (left wrist of frame 0 at the origin)."""

    frame: SequenceFrame | None = None

    def shde(self, h0_hat: torch.Tensor, t: int) -> torch.Tensor:
        """SHDe's estimate (2n, T, 187), normalised -> controlled."""
        return h0_hat

    def ihde(self, z0_hat: torch.Tensor, t: int) -> torch.Tensor:
        """IHDe's estimate (n, T, D), normalised -> controlled."""
        return z0_hat


def _replace(model: HandDiffuse, z: torch.Tensor, fn) -> torch.Tensor:
    """Steps 1 and 3 around ``fn(p, q) -> (p, q)``: normalised features -> joints -> features."""
    m = model.rep.decode(model.stats.denormalize(z))
    p, q = fn(m.joints, m.rotations)
    return model.stats.normalize(model.rep.encode_canonical(p, q))


class _ReferenceControl(Control):
    def __init__(self, model: HandDiffuse, reference: Reference):
        with torch.no_grad():
            self.enc: Encoded = model.encode(reference.joints, reference.global_orient, reference.hand_pose)
        self.rotations = self.enc.rotations  # (n, T, 2, 16, 4), sequence frame
        self.model = model
        self.frame = self.enc.frame


class InBetween(_ReferenceControl):
    """The reference's first and last ``keyframes`` frames given; the frames between generated."""

    def __init__(self, model: HandDiffuse, reference: Reference, keyframes: int = 5):
        super().__init__(model, reference)
        T = reference.joints.shape[1]
        if not 0 < 2 * keyframes < T:
            raise ValueError(f"{keyframes} key frames at each end need more than {2 * keyframes} frames, got {T}")
        self.known = torch.zeros(T, dtype=torch.bool, device=reference.joints.device)
        self.known[:keyframes] = True
        self.known[T - keyframes:] = True
        self.hands_z = model.hand_stats.normalize(self.enc.hands).flatten(0, 1)  # (2n, T, 187)

    def shde(self, h0_hat: torch.Tensor, t: int) -> torch.Tensor:
        return torch.where(self.known[None, :, None], self.hands_z.to(h0_hat.dtype), h0_hat)

    def ihde(self, z0_hat: torch.Tensor, t: int) -> torch.Tensor:
        k = self.known
        p_ref, q_ref = self.enc.joints, self.rotations

        def put(p, q):
            return (torch.where(k[None, :, None, None], p_ref, p),
                    torch.where(k[None, :, None, None, None], q_ref, q))

        return _replace(self.model, z0_hat, put)


class Trajectory(_ReferenceControl):
    """Both hands' root rotation and position given on every frame (the reference's)."""

    def ihde(self, z0_hat: torch.Tensor, t: int) -> torch.Tensor:
        p_ref, q_ref = self.enc.joints, self.rotations

        def put(p, q):
            n, T = p.shape[:2]
            p = p.reshape(n, T, 2, N_HAND_JOINTS, 3)  # (n, T, 2, 21, 3)
            r_gen, q_gen = p[:, :, :, :1], q[:, :, :, 0]  # (n, T, 2, 1, 3), (n, T, 2, 4)
            r_ref = p_ref.reshape(n, T, 2, N_HAND_JOINTS, 3)[:, :, :, :1]
            q_root = q_ref[:, :, :, 0]
            move = quat_multiply(q_root, quat_conjugate(q_gen))  # (n, T, 2, 4)
            p = quat_rotate(move[:, :, :, None], p - r_gen) + r_ref
            q = torch.cat([quat_canonical(q_root)[:, :, :, None], q[:, :, :, 1:]], dim=3)
            return p.reshape(n, T, 2 * N_HAND_JOINTS, 3), q

        return _replace(self.model, z0_hat, put)


@dataclass
class PinholeCamera:
    """K (3, 3) px (no skew), R (3, 3) and t (3,) world -> camera (x right, y down, z ahead), metres."""

    K: torch.Tensor
    R: torch.Tensor
    t: torch.Tensor

    @property
    def center(self) -> torch.Tensor:
        return -self.R.T @ self.t  # (3,)

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """(..., 3) world points -> (..., 2) undistorted pixels (camera_model's torch form, no lens)."""
        K = self.K
        return to_pixels_torch(points @ self.R.T + self.t, K[0, 0], K[1, 1], K[0, 2], K[1, 2], None)

    def rays(self, pixels: torch.Tensor) -> torch.Tensor:
        """(..., 2) pixels -> (..., 3) unit world directions of their rays."""
        uv1 = torch.cat([pixels, torch.ones_like(pixels[..., :1])], dim=-1)
        d = uv1 @ torch.linalg.inv(self.K).T @ self.R  # (..., 3): R^T K^-1 [u v 1]
        return d / d.norm(dim=-1, keepdim=True)


def default_camera(point: torch.Tensor, distance: float = 0.6) -> PinholeCamera:
    """A 640 x 480 camera (f = 800 px) ``distance`` m from ``point`` (3,) along -y, looking along +y,
    z up in the picture: for a 2D-keypoint control without a calibrated camera."""
    R = point.new_tensor([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])  # rows: camera x, y (down), z (ahead)
    K = point.new_tensor([[800.0, 0, 320], [0, 800.0, 240], [0, 0, 1]])
    center = point + point.new_tensor([0.0, -distance, 0.0])
    return PinholeCamera(K, R, -R @ center)


class Keypoints2DGuidance(Control):
    """Motion whose projection into one camera matches given 2D keypoints, by guidance.

    ``frame``: where the samples stand in the world (e.g. a reference's sequence frame);
    ``camera``; ``keypoints`` (n, T, 42, 2) undistorted px; ``visible`` (n, T, 42);
    ``strength`` w in (0, 1]: the share of the step toward the keypoints' rays taken at each
    DDIM step (1: the sample's projection lands on the keypoints)."""

    def __init__(self, model: HandDiffuse, frame: SequenceFrame, camera: PinholeCamera, keypoints: torch.Tensor,
                 visible: torch.Tensor | None = None, strength: float = 1.0):
        if not 0 <= strength <= 1:
            raise ValueError(f"guidance strength must be in [0, 1], got {strength}")
        self.model, self.frame, self.camera, self.strength = model, frame, camera, strength
        self.keypoints = keypoints
        self.visible = torch.ones(keypoints.shape[:-1], dtype=torch.bool, device=keypoints.device) \
            if visible is None else visible
        self.rays = camera.rays(keypoints)  # (n, T, 42, 3)

    def ihde(self, z0_hat: torch.Tensor, t: int) -> torch.Tensor:
        if not self.strength:
            return z0_hat
        C, d, w = self.camera.center, self.rays, self.strength

        def guide(p, q):
            world, _ = uncanonicalize(p, None, self.frame)  # 1. (n, T, 42, 3)
            on_ray = C + d * ((world - C) * d).sum(-1, keepdim=True)  # 2. the closest point of each ray
            target = torch.where(self.visible[..., None], on_ray, world)
            moved = world + w * (target - world)  # 3.
            return apply_frame(self.frame, moved)[0], q

        return _replace(self.model, z0_hat, guide)
