"""Motion representations of the generator: the global rep (IHDe) and the local rep (SHDe), both invertible.

Inputs are the shard fields of a window, batched: ``joints`` (B, T, 42, 3) m in the 42-point order
of ``data_schemas.keypoints`` (left hand 21, then right hand 21, wrist first), ``global_orient``
(B, T, 2, 3) and ``hand_pose`` (B, T, 2, 45) axis-angle in MANO's joint order (relative to the flat
hand). Every function is on torch tensors, any device and float dtype (float32 in training),
vectorised over frames (the integration in ``LocalRep.decode`` is a cumulative sum and a
log2(T)-step parallel scan of quaternion products, not a loop over frames). Velocities are
per frame (m / frame, rotation / frame), the first frame's set to zero (identity).

Quaternions are (w, x, y, z), unit, with the canonical sign w >= 0; ``q ⊗ v`` rotates vector v.
A hand's 16 *rotations* are its global orientation (MANO joint 0, the wrist) then the 15 local
MANO joint rotations of ``hand_pose`` (each relative to its parent), (..., 2, 16, 4).

Sequence frame (``canonicalize``; ``RepresentationConfig.canonical``)
    origin o = the left wrist of the first frame; reference axis a = left middle-finger base
    (middle1, keypoint 9) - left wrist, first frame. A rotation q_c then takes a to +x:

    - ``"heading"`` (default): about the vertical (``up_axis``, z for the studio) only, so that
      a's horizontal projection points along +x; gravity stays where it was.
    - ``"full"``: a itself along +x, and the palm normal n = (index1 - wrist) x (pinky1 - wrist)
      of the first-frame left hand (made orthogonal to a) along +z; no direction survives.

    p' = q_c ⊗ (p - o) for positions, q' = q_c ⊗ q for global orientations (the 15 local joint
    rotations do not change). ``SequenceFrame`` keeps (q_c, o) per sequence; ``uncanonicalize``
    is the inverse.

Global rep (``GlobalRep``, D = 380): per frame, in the sequence frame::

    [  0:126]  positions   42 x 3   joint positions p_t (42-point order)
    [126:252]  velocities  42 x 3   p_t - p_{t-1}; 0 at t = 0
    [252:380]  rotations   2 x 16 x 4  left hand's 16 quaternions, then the right's

    ``decode`` takes joints from the positions block (velocities are redundant there).

Local rep (``LocalRep``, D = 385): two hand blocks of 187 and one sequence block of 11, per frame.
Hand h's root is its wrist: position r_t (keypoint 0) and rotation q_t (its global orientation)::

    hand block (offsets inside it; left at [0:187], right at [187:374])
    [  0:4  ]  root angular velocity  q_{t-1}* ⊗ q_t            (identity at t = 0)
    [  4:7  ]  root linear velocity   q_{t-1}* ⊗ (r_t - r_{t-1}) (0 at t = 0), in the root's own frame
    [  7:67 ]  local positions  20 x 3  l_j = q_t* ⊗ (p_j - r_t), keypoints 1..20 (the wrist's is 0)
    [ 67:127]  local velocities 20 x 3  l_t - l_{t-1} (0 at t = 0)
    [127:187]  joint rotations  15 x 4  the 15 local MANO joint rotations (the root's rotation is
                                         carried by the angular velocity and the initial pose)

    sequence block [374:385], one per sequence, the same values repeated on every frame
    [374:378]  left root rotation q_L0 at t = 0, in the sequence frame (its position is the origin)
    [378:382]  right root rotation relative to the left, q_L0* ⊗ q_R0, at t = 0
    [382:385]  right root position relative to the left, q_L0* ⊗ (r_R0 - r_L0), at t = 0

    The per-frame blocks are invariant to any rigid motion of the whole sequence, the sequence
    block to the part the sequence frame removes (heading and position; everything with "full").
    ``decode`` reads the sequence block as the mean over frames (equal to any frame's for an
    encoded motion, a stable estimate for a generated one), integrates each hand's root from its
    initial pose, then places the joints.

Single hand (SHDe): one hand block with its start (``HandStart``: q_0, r_0) is ``encode_hand`` /
``decode_hand``; ``mirror_right_to_left`` maps a right hand's block to the block of its mirror
image (x -> -x in the root frame: a left hand), so one model serves both hands; it is its own
inverse (``mirror_left_to_right``). ``zero_global_motion`` keeps the articulation only: decoded
without a start, the wrist stays at the origin with the identity rotation.

Normalisation: ``RepStats`` (an ``nn.Module``, saved in a model's state_dict) holds the mean and
the floored std of each feature.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Iterable, Literal

import torch
from torch import nn

from data_schemas.keypoints import N_HAND_JOINTS, N_KEYPOINTS

N_ROT = 16  # rotations per hand: global orientation + 15 MANO joints
MIDDLE1, INDEX1, PINKY1 = 9, 5, 17  # keypoints of a hand (ours) that fix the sequence frame
_AXIS = {"y": 1, "z": 2}
_MIRROR_VEC = (-1.0, 1.0, 1.0)  # x -> -x
_MIRROR_QUAT = (1.0, 1.0, -1.0, -1.0)  # the same reflection on a rotation's quaternion (pseudovector axis)


# -- quaternions (w, x, y, z) ------------------------------------------------------------------

def quat_canonical(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) -> the same rotations with w >= 0."""
    return torch.where(q[..., :1] < 0, -q, q)


def quat_normalize(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) -> unit quaternions, canonical sign."""
    return quat_canonical(q / torch.linalg.norm(q, dim=-1, keepdim=True).clamp(min=1e-12))


def quat_from_axis_angle(rotvec: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle -> (..., 4) unit quaternions, w >= 0; smooth at 0."""
    angle2 = (rotvec * rotvec).sum(-1, keepdim=True)  # (..., 1)
    small = angle2 < 1e-8
    angle = torch.sqrt(torch.where(small, torch.ones_like(angle2), angle2))
    half_sinc = torch.where(small, 0.5 - angle2 / 48, torch.sin(angle / 2) / angle)  # sin(a/2) / a
    w = torch.where(small, 1 - angle2 / 8, torch.cos(angle / 2))
    return quat_canonical(torch.cat([w, rotvec * half_sinc], dim=-1))


def quat_to_axis_angle(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) -> (..., 3) axis-angle with angle in [0, pi]."""
    q = quat_canonical(q)
    w, v = q[..., :1], q[..., 1:]
    s2 = (v * v).sum(-1, keepdim=True)
    small = s2 < 1e-12
    s = torch.sqrt(torch.where(small, torch.ones_like(s2), s2))
    scale = torch.where(small, 2 / w.clamp(min=1e-12), 2 * torch.atan2(s, w) / s)  # angle / sin(angle / 2)
    return v * scale


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(..., 4), (..., 4) -> a ⊗ b (apply b, then a); broadcasts."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], dim=-1)


def quat_conjugate(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) -> q* (the inverse of a unit quaternion)."""
    return q * q.new_tensor([1.0, -1.0, -1.0, -1.0])


def quat_rotate(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(..., 4), (..., 3) -> q ⊗ v ⊗ q*, the rotated vectors; broadcasts."""
    w, u = q[..., :1], q[..., 1:]
    u, v = torch.broadcast_tensors(u, v)
    t = 2 * torch.linalg.cross(u, v)
    return v + w * t + torch.linalg.cross(u, t)


def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) unit -> (..., 3, 3) rotation matrices."""
    w, x, y, z = q.unbind(-1)
    m = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1)
    return m.reshape(q.shape[:-1] + (3, 3))


def quat_from_matrix(m: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions, w >= 0.

    Four candidates, each 4 q_k q for one pivot k in (w, x, y, z); the one of largest |q_k| is
    well conditioned."""
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    pivots = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22,
                          1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1)  # (..., 4) = 4 q_k^2
    candidates = torch.stack([
        torch.stack([pivots[..., 0], m21 - m12, m02 - m20, m10 - m01], -1),
        torch.stack([m21 - m12, pivots[..., 1], m10 + m01, m02 + m20], -1),
        torch.stack([m02 - m20, m10 + m01, pivots[..., 2], m21 + m12], -1),
        torch.stack([m10 - m01, m02 + m20, m21 + m12, pivots[..., 3]], -1),
    ], dim=-2)  # (..., 4 candidates, 4)
    best = pivots.argmax(-1)[..., None, None].expand(m.shape[:-2] + (1, 4))
    return quat_normalize(torch.gather(candidates, -2, best).squeeze(-2))


def quat_cumprod(q: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """(..., T, ..., 4) -> prefix products q_0 ⊗ q_1 ⊗ ... ⊗ q_t along ``dim``, renormalised.

    Hillis-Steele scan: log2(T) batched products instead of a loop over frames (the product
    is associative, and each step multiplies an earlier range from the left, keeping order)."""
    dim = dim % q.dim()
    T, shift = q.shape[dim], 1
    while shift < T:
        earlier = q.narrow(dim, 0, T - shift)
        later = q.narrow(dim, shift, T - shift)
        q = torch.cat([q.narrow(dim, 0, shift), quat_multiply(earlier, later)], dim=dim)
        shift *= 2
    return quat_normalize(q)


def rotations_from_axis_angle(global_orient: torch.Tensor, hand_pose: torch.Tensor) -> torch.Tensor:
    """(..., 2, 3), (..., 2, 45) -> (..., 2, 16, 4): global orientation then the 15 MANO joints."""
    aa = torch.cat([global_orient[..., None, :], hand_pose.unflatten(-1, (15, 3))], dim=-2)  # (..., 2, 16, 3)
    return quat_from_axis_angle(aa)


def axis_angle_from_rotations(rotations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., 2, 16, 4) -> global_orient (..., 2, 3), hand_pose (..., 2, 45)."""
    aa = quat_to_axis_angle(rotations)  # (..., 2, 16, 3)
    return aa[..., 0, :], aa[..., 1:, :].flatten(-2)


# -- the sequence frame ------------------------------------------------------------------------

@dataclass
class RepresentationConfig:
    """How motion is put in its sequence frame."""

    canonical: Literal["heading", "full"] = "heading"
    """Rotate the sequence about the vertical only ("heading": the left hand's first-frame
    wrist -> middle1 axis, projected on the horizontal plane, along +x) or fully ("full": that
    axis along +x and the left palm normal along +z)."""
    up_axis: Literal["y", "z"] = "z"
    """The world's vertical axis (the studio's is z)."""


@dataclass
class SequenceFrame:
    """Per sequence: p' = rotation ⊗ (p - origin). rotation (B, 4), origin (B, 3)."""

    rotation: torch.Tensor  # (B, 4)
    origin: torch.Tensor  # (B, 3) m


def sequence_frame(joints: torch.Tensor, config: RepresentationConfig | None = None) -> SequenceFrame:
    """(B, T, 42, 3) joints -> the sequence frame (module docstring), from the first frame's left hand."""
    config = config or RepresentationConfig()
    if config.up_axis not in _AXIS:
        raise ValueError(f"unknown up_axis {config.up_axis!r} (y or z)")
    left = joints[:, 0, :N_HAND_JOINTS]  # (B, 21, 3)
    origin = left[:, 0]
    a = left[:, MIDDLE1] - origin  # (B, 3) reference axis
    if config.canonical == "heading":
        up = torch.zeros_like(a)
        up[:, _AXIS[config.up_axis]] = 1
        ex = torch.zeros_like(a)
        ex[:, 0] = 1
        # 1. angle about `up` taking a's horizontal part to +x: atan2((a x ex) . up, a . ex), a . up dropped
        h = a - (a * up).sum(-1, keepdim=True) * up
        phi = torch.atan2((torch.linalg.cross(h, ex) * up).sum(-1), (h * ex).sum(-1))  # (B,)
        rotation = quat_canonical(torch.cat([torch.cos(phi / 2)[:, None], torch.sin(phi / 2)[:, None] * up], -1))
    elif config.canonical == "full":
        x = a / torch.linalg.norm(a, dim=-1, keepdim=True).clamp(min=1e-12)
        n = torch.linalg.cross(left[:, INDEX1] - origin, left[:, PINKY1] - origin)
        z = n - (n * x).sum(-1, keepdim=True) * x
        z = z / torch.linalg.norm(z, dim=-1, keepdim=True).clamp(min=1e-12)
        y = torch.linalg.cross(z, x)
        rotation = quat_from_matrix(torch.stack([x, y, z], dim=-2))  # rows: the new axes, world -> sequence
    else:
        raise ValueError(f"unknown canonical {config.canonical!r} (heading or full)")
    return SequenceFrame(rotation=rotation, origin=origin)


def apply_frame(frame: SequenceFrame, joints: torch.Tensor, rotations: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """World -> sequence frame: (B, T, J, 3) positions and optional (B, T, H, 16, 4) rotations
    (only the global orientations, index 0, turn)."""
    q = frame.rotation[:, None, None]  # (B, 1, 1, 4)
    joints = quat_rotate(q, joints - frame.origin[:, None, None])
    if rotations is not None:
        root = quat_canonical(quat_multiply(q, rotations[..., 0, :]))  # (B, T, H, 4)
        rotations = torch.cat([root[..., None, :], rotations[..., 1:, :]], dim=-2)
    return joints, rotations


def uncanonicalize(joints: torch.Tensor, rotations: torch.Tensor | None, frame: SequenceFrame
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sequence frame -> world; the inverse of ``canonicalize`` (same shapes as ``apply_frame``)."""
    q = quat_conjugate(frame.rotation)[:, None, None]
    joints = quat_rotate(q, joints) + frame.origin[:, None, None]
    if rotations is not None:
        root = quat_canonical(quat_multiply(q, rotations[..., 0, :]))
        rotations = torch.cat([root[..., None, :], rotations[..., 1:, :]], dim=-2)
    return joints, rotations


def canonicalize(joints: torch.Tensor, rotations: torch.Tensor | None = None,
                 config: RepresentationConfig | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None, SequenceFrame]:
    """(B, T, 42, 3) joints, optional (B, T, 2, 16, 4) rotations -> both in the sequence frame, and the frame."""
    frame = sequence_frame(joints, config)
    joints, rotations = apply_frame(frame, joints, rotations)
    return joints, rotations, frame


@dataclass
class DecodedMotion:
    """Decoded motion: joints (B, T, 42, 3) m, rotations (B, T, 2, 16, 4), and the same rotations
    as the shard's axis-angle fields global_orient (B, T, 2, 3) and hand_pose (B, T, 2, 45)."""

    joints: torch.Tensor
    rotations: torch.Tensor
    global_orient: torch.Tensor
    hand_pose: torch.Tensor

    @classmethod
    def of(cls, joints: torch.Tensor, rotations: torch.Tensor) -> "DecodedMotion":
        rotations = quat_normalize(rotations)
        go, hp = axis_angle_from_rotations(rotations)
        return cls(joints=joints, rotations=rotations, global_orient=go, hand_pose=hp)


def _velocity(x: torch.Tensor) -> torch.Tensor:
    """(B, T, ...) -> x_t - x_{t-1}, zero at t = 0."""
    return torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], dim=1)


# -- global rep --------------------------------------------------------------------------------

class _Representation(abc.ABC):
    """What both representations share: the sequence frame and encoding from the world."""

    dim: int

    def __init__(self, config: RepresentationConfig | None = None):
        self.config = config or RepresentationConfig()

    def frame(self, joints: torch.Tensor) -> SequenceFrame:
        """(B, T, 42, 3) world joints -> their sequence frame (to give ``decode`` to return to the world)."""
        return sequence_frame(joints, self.config)

    def encode(self, joints: torch.Tensor, global_orient: torch.Tensor, hand_pose: torch.Tensor) -> torch.Tensor:
        """(B, T, 42, 3), (B, T, 2, 3), (B, T, 2, 45) world -> (B, T, dim)."""
        p, rot, _ = canonicalize(joints, rotations_from_axis_angle(global_orient, hand_pose), self.config)
        return self.encode_canonical(p, rot)

    @staticmethod
    @abc.abstractmethod
    def encode_canonical(p: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
        """Sequence-frame joints (B, T, 42, 3) and rotations (B, T, 2, 16, 4) -> (B, T, dim)."""


class GlobalRep(_Representation):
    """Joint positions, velocities and rotations of both hands in the sequence frame (D = 380)."""

    POSITIONS = slice(0, 126)
    VELOCITIES = slice(126, 252)
    ROTATIONS = slice(252, 380)
    dim = 380

    @staticmethod
    def encode_canonical(p: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
        """Joints (B, T, 42, 3) and rotations (B, T, 2, 16, 4) already in the sequence frame -> (B, T, 380)."""
        B, T = p.shape[:2]
        return torch.cat([p.reshape(B, T, 126), _velocity(p).reshape(B, T, 126),  # (B, T, 42 x 3) each
                          quat_normalize(rot).reshape(B, T, 128)], dim=-1)  # (B, T, 2 x 16 x 4)

    def decode(self, x: torch.Tensor, frame: SequenceFrame | None = None) -> DecodedMotion:
        """(B, T, 380) -> DecodedMotion, in the sequence frame, or in the world with the encoded motion's ``frame``."""
        B, T = x.shape[:2]
        joints = x[..., self.POSITIONS].reshape(B, T, N_KEYPOINTS, 3)
        rotations = quat_normalize(x[..., self.ROTATIONS].reshape(B, T, 2, N_ROT, 4))
        if frame is not None:
            joints, rotations = uncanonicalize(joints, rotations, frame)
        return DecodedMotion.of(joints, rotations)


# -- local rep ---------------------------------------------------------------------------------

@dataclass
class HandStart:
    """A hand's root at frame 0: rotation (B, 4), position (B, 3) m."""

    rotation: torch.Tensor
    position: torch.Tensor


HAND_BLOCK = {  # offsets inside a hand block of the local rep
    "root_angular_velocity": slice(0, 4),
    "root_linear_velocity": slice(4, 7),
    "local_positions": slice(7, 67),
    "local_velocities": slice(67, 127),
    "rotations": slice(127, 187),
}
HAND_DIM = 187


def encode_hand(joints: torch.Tensor, rotations: torch.Tensor) -> tuple[torch.Tensor, HandStart]:
    """One hand: (B, T, 21, 3) joints, (B, T, 16, 4) rotations -> (B, T, 187) hand block, its start."""
    B, T = joints.shape[:2]
    root_p, root_q = joints[:, :, 0], quat_normalize(rotations[:, :, 0])  # (B, T, 3), (B, T, 4)
    prev_q = torch.cat([root_q[:, :1], root_q[:, :-1]], dim=1)  # q_{t-1}; q_0 at t = 0 (its terms are 0)
    inv_prev = quat_conjugate(prev_q)
    # 1. root velocities, in the previous root frame
    angular = quat_canonical(quat_multiply(inv_prev, root_q))  # (B, T, 4), identity at t = 0
    linear = quat_rotate(inv_prev, _velocity(root_p))  # (B, T, 3)
    # 2. joints in the root frame, and their change
    local = quat_rotate(quat_conjugate(root_q)[:, :, None], joints[:, :, 1:] - root_p[:, :, None])  # (B, T, 20, 3)
    x = torch.cat([angular, linear, local.reshape(B, T, 60), _velocity(local).reshape(B, T, 60),
                   quat_normalize(rotations[:, :, 1:]).reshape(B, T, 60)], dim=-1)  # (B, T, 187)
    return x, HandStart(rotation=root_q[:, 0], position=root_p[:, 0])


def decode_hand(x: torch.Tensor, start: HandStart | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, 187) hand block, start (default: identity at the origin) -> joints (B, T, 21, 3),
    rotations (B, T, 16, 4). The root is integrated from the start; the local positions place the rest."""
    B, T = x.shape[:2]
    angular = quat_normalize(x[..., HAND_BLOCK["root_angular_velocity"]])  # (B, T, 4)
    if start is None:
        start = HandStart(rotation=x.new_tensor([1.0, 0, 0, 0]).expand(B, 4), position=x.new_zeros(B, 3))
    # 1. q_t = q_0 ⊗ dq_1 ⊗ ... ⊗ dq_t
    root_q = quat_cumprod(torch.cat([start.rotation[:, None], angular[:, 1:]], dim=1), dim=1)  # (B, T, 4)
    # 2. r_t = r_0 + sum_{s <= t} q_{s-1} ⊗ v_s
    prev_q = torch.cat([root_q[:, :1], root_q[:, :-1]], dim=1)
    steps = quat_rotate(prev_q, x[..., HAND_BLOCK["root_linear_velocity"]])  # (B, T, 3)
    steps = torch.cat([start.position[:, None], steps[:, 1:]], dim=1)
    root_p = torch.cumsum(steps, dim=1)  # (B, T, 3)
    # 3. the other 20 joints from the root frame
    local = x[..., HAND_BLOCK["local_positions"]].reshape(B, T, 20, 3)
    joints = torch.cat([root_p[:, :, None], root_p[:, :, None] + quat_rotate(root_q[:, :, None], local)], dim=2)
    rotations = torch.cat([root_q[:, :, None], x[..., HAND_BLOCK["rotations"]].reshape(B, T, 15, 4)], dim=2)
    return joints, quat_normalize(rotations)  # (B, T, 21, 3), (B, T, 16, 4)


def _mirror_signs(x: torch.Tensor) -> torch.Tensor:
    """(187,) signs that reflect a hand block through x -> -x."""
    v, q = x.new_tensor(_MIRROR_VEC), x.new_tensor(_MIRROR_QUAT)
    return torch.cat([q, v, v.repeat(20), v.repeat(20), q.repeat(15)])


def mirror_right_to_left(x: torch.Tensor) -> torch.Tensor:
    """(..., 187) hand block -> the block of its mirror image (x -> -x in the root frame). A right
    hand becomes a left hand posed with the mirrored parameters (``AXIS_ANGLE_MIRROR``); its
    start mirrors with ``mirror_start``."""
    return x * _mirror_signs(x)


mirror_left_to_right = mirror_right_to_left  # a reflection is its own inverse


def mirror_start(start: HandStart) -> HandStart:
    """A hand's start under x -> -x (world frame)."""
    return HandStart(rotation=start.rotation * start.rotation.new_tensor(_MIRROR_QUAT),
                     position=start.position * start.position.new_tensor(_MIRROR_VEC))


def zero_global_motion(x: torch.Tensor) -> torch.Tensor:
    """(..., 187) -> the same articulation with the root still: identity angular and zero linear velocity."""
    x = x.clone()
    x[..., HAND_BLOCK["root_angular_velocity"]] = x.new_tensor([1.0, 0, 0, 0])
    x[..., HAND_BLOCK["root_linear_velocity"]] = 0
    return x


class LocalRep(_Representation):
    """Per-hand root velocities, root-frame joints and rotations, plus the hands' start (D = 385)."""

    LEFT = slice(0, HAND_DIM)
    RIGHT = slice(HAND_DIM, 2 * HAND_DIM)
    SEQUENCE = slice(2 * HAND_DIM, 2 * HAND_DIM + 11)
    LEFT_START_ROTATION = slice(374, 378)
    RIGHT_RELATIVE_ROTATION = slice(378, 382)
    RIGHT_RELATIVE_POSITION = slice(382, 385)
    dim = 385

    @staticmethod
    def hand(h: int) -> slice:
        """Index range of hand h's block (0 left, 1 right)."""
        return slice(h * HAND_DIM, (h + 1) * HAND_DIM)

    @staticmethod
    def encode_canonical(p: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
        """Joints (B, T, 42, 3) and rotations (B, T, 2, 16, 4) already in the sequence frame -> (B, T, 385)."""
        T = p.shape[1]
        p = p.unflatten(2, (2, N_HAND_JOINTS))  # (B, T, 2, 21, 3)
        (left, ls), (right, rs) = (encode_hand(p[:, :, h], rot[:, :, h]) for h in range(2))
        inv = quat_conjugate(ls.rotation)
        sequence = torch.cat([ls.rotation, quat_canonical(quat_multiply(inv, rs.rotation)),
                              quat_rotate(inv, rs.position - ls.position)], dim=-1)  # (B, 11)
        return torch.cat([left, right, sequence[:, None].expand(-1, T, -1)], dim=-1)  # (B, T, 385)

    def starts(self, x: torch.Tensor) -> tuple[HandStart, HandStart]:
        """(B, T, 385) -> the left and right hands' starts in the sequence frame (from the sequence block)."""
        s = x[..., self.SEQUENCE]  # (B, T, 11)
        # mean over frames, quaternions sign-aligned to frame 0 first
        q = s[..., :8].unflatten(-1, (2, 4))  # (B, T, 2, 4)
        sign = torch.where((q * q[:, :1]).sum(-1, keepdim=True) < 0, -1.0, 1.0)
        q = quat_normalize((q * sign).mean(1))  # (B, 2, 4)
        rel_p = s[..., 8:].mean(1)  # (B, 3)
        left = HandStart(rotation=q[:, 0], position=torch.zeros_like(rel_p))
        right = HandStart(rotation=quat_normalize(quat_multiply(q[:, 0], q[:, 1])),
                          position=quat_rotate(q[:, 0], rel_p))
        return left, right

    def decode(self, x: torch.Tensor, frame: SequenceFrame | None = None) -> DecodedMotion:
        """(B, T, 385) -> DecodedMotion, in the sequence frame, or in the world with the encoded motion's ``frame``."""
        left, right = self.starts(x)
        (jl, rl), (jr, rr) = decode_hand(x[..., self.LEFT], left), decode_hand(x[..., self.RIGHT], right)
        joints, rotations = torch.cat([jl, jr], dim=2), torch.stack([rl, rr], dim=2)  # (B, T, 42, 3), (B, T, 2, 16, 4)
        if frame is not None:
            joints, rotations = uncanonicalize(joints, rotations, frame)
        return DecodedMotion.of(joints, rotations)


# -- normalisation -----------------------------------------------------------------------------

class RepStats(nn.Module):
    """Per-feature mean and std (floored at ``min_std``); buffers, so a model's state_dict carries them.

    >>> stats = RepStats.fit(loader_of_encoded_batches)   # or a (N, T, D) tensor
    >>> z = stats.normalize(x); x = stats.denormalize(z)
    """

    def __init__(self, dim: int, min_std: float = 1e-5):
        super().__init__()
        self.min_std = float(min_std)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @classmethod
    def fit(cls, x: torch.Tensor | Iterable[torch.Tensor], min_std: float = 1e-5) -> "RepStats":
        """(N, T, D) tensor, or an iterable of (..., D) batches -> statistics over every frame (float64 sums)."""
        batches = [x] if isinstance(x, torch.Tensor) else x
        count, total, total2 = 0, None, None
        for b in batches:
            b = b.detach().reshape(-1, b.shape[-1]).to(torch.float64)  # (frames, D)
            total = b.sum(0) if total is None else total + b.sum(0)
            total2 = (b * b).sum(0) if total2 is None else total2 + (b * b).sum(0)
            count += b.shape[0]
        if not count:
            raise ValueError("RepStats.fit: no frames")
        mean = total / count
        std = torch.sqrt((total2 / count - mean * mean).clamp(min=0)).clamp(min=min_std)
        stats = cls(mean.shape[0], min_std)
        stats.mean.copy_(mean)
        stats.std.copy_(std)
        return stats

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std.to(z.dtype) + self.mean.to(z.dtype)
