"""``handdiffuse studio``: build a complete synthetic capture session, with its ground truth.

Writes exactly the layout of a real session (``data_schemas.session``) and, aside,
``ground_truth/`` that no stage reads (evaluation does)::

    session.toml                                 the dome, fps, board, sequence categories
    calibration/videos/<cam>.mp4                 the ChArUco take (board_take)
    sequences/seqNNN/videos/<cam>.mp4            two hands interacting (motion, scene, render)
    ground_truth/calibration.toml                the dome's true cameras
    ground_truth/board_poses.npz                 the board's pose per instant of the take
    ground_truth/sequences/seqNNN/mano.h5        hand-model parameters per frame (format of `fit`)
    ground_truth/sequences/seqNNN/joints3d.h5    3D joints of every frame (n_cameras = all cameras:
                                                 the truth needs no support; visibility is below)
    ground_truth/sequences/seqNNN/keypoints2d.h5 projected joints per camera; score 1 = visible
                                                 (in the image, not behind a surface), 0 = hidden
    ground_truth/sequences/seqNNN/views.npz      per camera, instant and hand (C, F, 2): unoccluded
                                                 (whole hand in the image, no joint behind the other
                                                 hand or an arm) and facing_deg (palm or back normal
                                                 to the camera), to score detectors on clear views
    ground_truth/studio.toml                     the configuration that built the session

Steps: 1. rig and session.toml; 2. board take; 3. per sequence: motion -> posed
scene -> every camera rendered in parallel (processes) -> videos + per-view truth;
4. ground truth files; 5. studio.toml last, so that a complete session is recognised
and skipped when asked for again with the same configuration.

Frame offsets: camera c with ``frame_offset`` o shows in its video frame i the
instant i - o (the session.toml convention); instants before 0 show the motion's
lead-in, so every video has the sequence's full length.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import toml

from capture.studio.rig import BOARD, PRESETS, RigConfig, make_rig
from data_schemas.atomic import atomic_path, atomic_write_text
from data_schemas.calibration import CameraRig, write_calibration
from data_schemas.errors import SchemaError
from data_schemas.joints3d import Joints3D, write_joints3d
from data_schemas.keypoints2d import Keypoints2D, write_keypoints2d
from data_schemas.mano import FitQuality, ManoFit, write_mano
from data_schemas.session import GROUND_TRUTH, SESSION_TOML, SessionConfig, write_session_toml

STUDIO_TOML = f"{GROUND_TRUTH}/studio.toml"
GT_SEQUENCE = GROUND_TRUTH + "/sequences/{seq}"
VIEWS = "views.npz"
DETECTOR_ID = "ground_truth"
SUPERSAMPLE = 2  # render at 2x2 samples per pixel (anti-aliasing)


@dataclass
class StudioConfig:
    """Build a synthetic capture session (camera dome, board and hand videos, ground truth)."""

    out: Path = Path("sessions/studio")
    """Session folder to create."""
    preset: Literal["demo", "full"] = "demo"
    """Camera dome: demo (8 cameras, 640x512) or full (50 cameras, 3840x2160, like the paper's)."""
    sequences: int = 2
    """Number of hand sequences (takes); categories cycle through the four motion families."""
    frames: int = 60
    """Frames per sequence (the paper's takes are 1000-4000 frames)."""
    board_frames: int = 300
    """Frames of the calibration take."""
    seed: int = 0
    """Seed of everything synthetic: rig tolerances, motions, looks, noise."""
    workers: int = 2
    """Processes rendering cameras in parallel."""
    max_frame_offset: int | None = None
    """Cameras start up to this many frames apart (default: the preset's; 0 = synchronised)."""


@dataclass
class StudioSummary:
    cameras: int
    resolution: tuple[int, int]
    sequences: list[str]
    images: int
    render_seconds: float
    seconds: float
    skipped: bool = False

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.render_seconds, 1e-9)


def rig_config(cfg: StudioConfig) -> RigConfig:
    rc = PRESETS[cfg.preset]
    if cfg.max_frame_offset is not None:
        rc = dataclasses.replace(rc, max_frame_offset=cfg.max_frame_offset)
    return rc


def config_doc(cfg: StudioConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d.pop("out")
    d.pop("workers")  # does not change the output
    d["max_frame_offset"] = rig_config(cfg).max_frame_offset
    return d


def build_session(cfg: StudioConfig) -> StudioSummary:
    from capture.studio.board_take import write_board_videos
    from capture.studio.motion import FAMILIES
    from hand_model.posing import hand_model_for

    t0 = time.perf_counter()
    root = cfg.out
    if cfg.sequences < 0 or cfg.frames < 1 or cfg.board_frames < 1:
        raise SchemaError(root, "studio needs frames >= 1, board_frames >= 1 and sequences >= 0")
    done = root / STUDIO_TOML
    if done.is_file():
        if toml.loads(done.read_text()) == {"studio": config_doc(cfg)}:
            return _summary_of_existing(root, cfg, time.perf_counter() - t0)
        raise SchemaError(done, "this folder holds a studio session built with another configuration; "
                          "choose another --out or delete the folder")
    # 1.
    rc = rig_config(cfg)
    rig, specs = make_rig(rc, cfg.seed)
    names = [f"seq{k:03d}" for k in range(cfg.sequences)]
    session = SessionConfig(
        name=root.name or "studio", fps=rc.fps, cameras=specs, board=BOARD, subject="studio-hands",
        capture_date=time.strftime("%Y-%m-%d"),
        sequences={n: {"category": FAMILIES[k % len(FAMILIES)]} for k, n in enumerate(names)},
    )
    write_session_toml(root / SESSION_TOML, session)
    write_calibration(root / GROUND_TRUTH / "calibration.toml", rig)
    # 2.
    t_render = time.perf_counter()
    offsets = np.array([s.frame_offset for s in specs])
    write_board_videos(root, rig, BOARD, rc.fps, cfg.board_frames, cfg.seed, workers=cfg.workers,
                       offsets=offsets.tolist())
    images = len(rig) * cfg.board_frames
    # 3. + 4.
    model = hand_model_for("open_hand")
    for k, name in enumerate(names):
        images += build_sequence(root, name, FAMILIES[k % len(FAMILIES)], rig, offsets, rc.fps, cfg.frames,
                                 cfg.seed * 1000 + k, model, cfg.workers)
    render_seconds = time.perf_counter() - t_render
    # 5.
    atomic_write_text(done, toml.dumps({"studio": config_doc(cfg)}))
    return StudioSummary(len(rig), (rc.width, rc.height), names, images, render_seconds, time.perf_counter() - t0)


def _summary_of_existing(root: Path, cfg: StudioConfig, seconds: float) -> StudioSummary:
    rc = rig_config(cfg)
    return StudioSummary(rc.n_cameras, (rc.width, rc.height), [f"seq{k:03d}" for k in range(cfg.sequences)], 0,
                         0.0, seconds, skipped=True)


# Set in the parent before the worker pool starts, so forked workers share it without pickling.
_JOB: dict = {}


def build_sequence(root: Path, name: str, family: str, rig: CameraRig, offsets: np.ndarray, fps: float,
                   n_frames: int, seed: int, model, workers: int) -> int:
    """Render one sequence into every camera and write its ground truth; returns images rendered."""
    from capture.studio.motion import make_motion
    from capture.studio.scene import pose_scene

    lead = int(np.abs(offsets).max()) if len(offsets) else 0
    motion = make_motion(family, n_frames + 2 * lead, fps, seed, model)
    scene = pose_scene(model, motion, np.random.default_rng(seed + 7))
    _JOB.update(scene=scene, rig=rig, offsets=offsets, lead=lead, n_frames=n_frames, fps=fps, seed=seed,
                videos=root / "sequences" / name / "videos")
    ctx = mp.get_context("fork")
    with ctx.Pool(max(1, workers)) as pool:
        per_camera = pool.map(_render_camera, range(len(rig)))
    _JOB.clear()
    visible = np.stack([r[0] for r in per_camera])  # (C, F, 2, 21) at instants 0..F-1
    pixels = np.stack([r[1] for r in per_camera])  # (C, F, 2, 21, 2)
    write_truth(root, name, rig, motion, scene.joints, visible, pixels, lead, n_frames, fps)
    gt = root / GT_SEQUENCE.format(seq=name)
    with atomic_path(gt / VIEWS) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, cameras=np.array(rig.names), unoccluded=np.stack([r[2] for r in per_camera]),
                     facing_deg=np.stack([r[3] for r in per_camera]).astype(np.float32))
    return sum(r[4] for r in per_camera)


def _render_camera(c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Worker: camera c's video of the current sequence, and its truth at every instant."""
    import cv2

    from capture.studio.render import make_background, render_view
    from capture.studio.scene import view_truth
    from data_schemas.video import VideoWriter

    job = _JOB
    scene, cam = job["scene"], job["rig"].cameras[c]
    rng = np.random.default_rng([job["seed"], c])
    background = make_background(cam, np.random.default_rng([job["seed"] // 1000, c]))  # the dome's wall
    background = cv2.resize(background, (cam.size[0] * SUPERSAMPLE, cam.size[1] * SUPERSAMPLE))
    F, lead, off = job["n_frames"], job["lead"], int(job["offsets"][c])
    visible = np.zeros((F, 2, 21), bool)
    pixels = np.zeros((F, 2, 21, 2))
    unoccluded = np.zeros((F, 2), bool)  # False where the video does not show the instant
    facing = np.full((F, 2), 180.0)
    with VideoWriter(job["videos"] / f"{cam.name}.mp4", job["fps"], cam.size) as w:
        for i in range(F):
            m = i - off + lead  # motion frame shown in video frame i
            view = render_view(cam, scene.vertices[m].astype(np.float64), scene.template, scene.look, background,
                               rng, scene.lit[m], SUPERSAMPLE, scene.normals[m].astype(np.float64))
            w.write(view.image)
            instant = i - off
            if 0 <= instant < F:
                t = view_truth(cam, scene.joints[m], scene.palm_normal[m], view)
                visible[instant], pixels[instant] = t.visible, t.pixels
                unoccluded[instant], facing[instant] = t.unoccluded, t.facing_deg
    for instant in range(F):  # instants this camera's video does not show: projection only
        if not (0 <= instant + off < F):
            pixels[instant] = cam.project(scene.joints[instant + lead])
    return visible, pixels, unoccluded, facing, F


def write_truth(root: Path, name: str, rig: CameraRig, motion, joints: np.ndarray, visible: np.ndarray,
                pixels: np.ndarray, lead: int, n_frames: int, fps: float) -> None:
    """mano.h5, joints3d.h5, keypoints2d.h5 of one sequence under ground_truth/."""
    gt = root / GT_SEQUENCE.format(seq=name)
    sl = slice(lead, lead + n_frames)
    frames = np.arange(n_frames)
    C = len(rig)
    n_cams = np.full((n_frames, 42), C)
    zeros = np.zeros((n_frames, 2), np.float32)
    quality = FitQuality(reproj_mean_px=zeros, reproj_max_px=zeros, residual3d=zeros, penetration=zeros,
                         bone_deviation=zeros, n_cameras=visible.any(axis=3).sum(axis=0),
                         failure=zeros.astype(np.uint16), confidence=np.ones((n_frames, 2), np.float32))
    write_mano(gt / "mano.h5", ManoFit(frames, motion.global_orient[sl], motion.hand_pose[sl], motion.betas,
                                       motion.transl[sl], joints[sl].reshape(n_frames, 42, 3), quality, fps,
                                       "open_hand"))
    write_joints3d(gt / "joints3d.h5", Joints3D(frames, joints[sl].reshape(n_frames, 42, 3),
                                                np.zeros((n_frames, 42), np.float32), n_cams, fps, DETECTOR_ID))
    kp = np.concatenate([pixels.reshape(C, n_frames, 42, 2), visible.reshape(C, n_frames, 42, 1)], axis=-1)
    write_keypoints2d(gt / "keypoints2d.h5", Keypoints2D(rig.names, [c.size for c in rig.cameras], frames, kp,
                                                         DETECTOR_ID, fps))
