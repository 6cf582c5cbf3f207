"""Tiny seeded synthetic inputs for tests: camera rigs and one object of every schema."""

from __future__ import annotations

import numpy as np

from capture.studio.rig import RigConfig
from capture.studio.rig import make_rig as studio_rig
from data_schemas.calibration import CameraRig
from data_schemas.joints3d import Joints3D
from data_schemas.keypoints2d import Keypoints2D
from data_schemas.mano import FailureReason, FitQuality, ManoFit
from data_schemas.shard import ShardSequence


def make_rig(n_cameras: int = 8, seed: int = 0) -> CameraRig:
    """The studio's dome at 640x480 with ``n_cameras`` cameras."""
    rig, _ = studio_rig(RigConfig(n_cameras=n_cameras, width=640, height=480, radius=1.0), seed)
    rig.metadata = {"date": "2026-11-25T00:00:00", "error": 0.12}
    return rig


def make_keypoints2d(n_cameras=3, n_frames=5, seed=0) -> Keypoints2D:
    rng = np.random.default_rng(seed)
    kp = np.zeros((n_cameras, n_frames, 42, 3), np.float32)
    kp[..., 0] = rng.uniform(0, 640, kp.shape[:3])
    kp[..., 1] = rng.uniform(0, 480, kp.shape[:3])
    kp[..., 2] = rng.uniform(0.1, 1.0, kp.shape[:3])
    kp[0, 1, :21] = [np.nan, np.nan, 0.0]  # left hand missed in one view
    return Keypoints2D([f"cam{i:02d}" for i in range(n_cameras)], [[640, 480]] * n_cameras,
                       np.arange(n_frames), kp, "test-detector", 30.0)


def make_joints3d(n_frames=6, seed=0) -> Joints3D:
    rng = np.random.default_rng(seed)
    joints = rng.normal(0, 0.1, (n_frames, 42, 3)).astype(np.float32)
    n_cams = rng.integers(2, 9, (n_frames, 42))
    n_cams[2, 5] = 1
    joints[2, 5] = np.nan
    err = rng.uniform(0, 2, (n_frames, 42)).astype(np.float32)
    err[2, 5] = np.nan
    return Joints3D(np.arange(n_frames), joints, err, n_cams, 30.0, "dlt")


def make_quality(n_frames: int, rng: np.random.Generator) -> FitQuality:
    shape = (n_frames, 2)
    failure = np.zeros(shape, np.uint16)
    failure[1, 0] = FailureReason.REPROJECTION | FailureReason.TEMPORAL_JUMP
    failure[3, 1] = FailureReason.NO_DATA
    q = FitQuality(
        reproj_mean_px=rng.uniform(0, 3, shape), reproj_max_px=rng.uniform(3, 6, shape),
        residual3d=rng.uniform(0, 0.004, shape), penetration=np.zeros(shape),
        bone_deviation=rng.uniform(0, 0.05, shape), n_cameras=rng.integers(0, 8, shape), failure=failure,
        confidence=rng.uniform(0, 1, shape),
    )
    q.reproj_mean_px[3, 1] = np.nan
    return q


def make_mano(n_frames=7, seed=0) -> ManoFit:
    """A fit of the bundled hand model; its joints are the model's for the parameters (as the fit stores them)."""
    from hand_model.posing import hand_model_for, pose_hands

    rng = np.random.default_rng(seed)
    go, hp = rng.normal(0, 1, (n_frames, 2, 3)), rng.normal(0, 0.3, (n_frames, 2, 45))
    betas, transl = rng.normal(0, 1, (2, 10)), rng.normal(0, 0.1, (n_frames, 2, 3))
    quality = make_quality(n_frames, rng)
    joints = pose_hands(hand_model_for("open_hand"), go, hp, betas, transl, vertices=False).joints  # (F, 2, 21, 3)
    return ManoFit(frames=np.arange(n_frames), global_orient=go, hand_pose=hp, betas=betas, transl=transl,
                   joints=joints.reshape(n_frames, 42, 3), quality=quality, fps=30.0, hand_model="open_hand")


def make_sequence(name="s0", n_frames=300, seed=0) -> ShardSequence:
    rng = np.random.default_rng(seed)
    valid = np.ones((n_frames, 2), bool)
    valid[10, 1] = False
    joints = rng.normal(0, 0.1, (n_frames, 42, 3))
    joints[10, 21:] = np.nan
    manual = np.zeros((n_frames, 2), bool)
    manual[20:25] = True
    confidence = rng.uniform(0.6, 1.0, (n_frames, 2))
    confidence[40:45, 0] = 0.2  # a run of frames carried across missing evidence
    confidence[~valid] = 0.0
    return ShardSequence(
        name=name, fps=30.0, joints=joints, global_orient=rng.normal(0, 1, (n_frames, 2, 3)),
        hand_pose=rng.normal(0, 0.3, (n_frames, 2, 45)), betas=rng.normal(0, 1, (2, 10)),
        transl=rng.normal(0, 0.1, (n_frames, 2, 3)), valid=valid, manual=manual,
        fit_error=rng.uniform(0, 0.003, (n_frames, 2)), confidence=confidence, session="demo",
        subject="synthetic-01",
        category="interlock", capture_date="2026-11-25",
    )


def posed_sequence(name: str, n_frames: int = 48, seed: int = 0, model=None) -> ShardSequence:
    """Two hands posed by the bundled hand model (consistent joints and parameters): poses
    interpolated between sampled key poses every 12 frames, slowly turning and drifting wrists,
    the hands ~15 cm apart."""
    import torch

    from hand_model.model import HandModel

    model = model or HandModel()
    rng = np.random.default_rng(seed)
    n_keys = n_frames // 12 + 2
    keys = model.sample_poses(n_keys, rng).reshape(n_keys, 2, 45)
    u = np.arange(n_frames) / 12.0
    hand_pose = np.stack([np.stack([np.interp(u, np.arange(n_keys), keys[:, h, k]) for k in range(45)], -1)
                          for h in range(2)], 1)  # (F, 2, 45)
    t = np.arange(n_frames)[:, None, None] / 30.0
    phase = rng.uniform(0, 2 * np.pi, (1, 2, 3))
    global_orient = rng.normal(0, 0.3, (1, 2, 3)) + 0.3 * np.sin(2 * np.pi * 0.3 * t + phase)  # (F, 2, 3)
    transl = np.array([[-0.075, 0, 0], [0.075, 0, 0]])[None] + 0.02 * np.sin(2 * np.pi * 0.2 * t + phase)
    with torch.no_grad():
        out = model(torch.as_tensor(global_orient, dtype=torch.float32), torch.as_tensor(hand_pose, dtype=torch.float32),
                    None, torch.as_tensor(transl, dtype=torch.float32))
    joints = out.joints.reshape(n_frames, 42, 3).numpy()
    return ShardSequence(
        name=name, fps=30.0, joints=joints, global_orient=global_orient, hand_pose=hand_pose,
        betas=np.zeros((2, 10)), transl=transl, valid=np.ones((n_frames, 2), bool),
        manual=np.zeros((n_frames, 2), bool), fit_error=np.zeros((n_frames, 2)), confidence=np.ones((n_frames, 2)),
        session="test",
        subject="synthetic-01", category="clasp", capture_date="2026-11-25",
    )
