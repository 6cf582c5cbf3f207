"""Initial calibration from board views: intrinsics per camera, then the rig's extrinsics.

1. intrinsics: OpenCV's ``calibrateCamera`` on each camera's board views (pinhole,
   k1 k2 p1 p2; k3 held at 0 unless asked), which also gives the board's pose in that
   camera for each view (board -> camera)
2. camera graph: two cameras are linked by the instants where both saw the board; the
   relative pose of a pair is the robust mean over those instants of
   ``T_b<-board(t) T_board<-a(t)`` (rotations: chordal mean; translations: median)
3. a maximum spanning tree (weights: shared instants) from the reference camera (the one
   with the most views) chains the pairs into every camera's pose in the reference frame
4. the board's pose per instant, in the reference frame, averaged over the cameras that saw it
5. world frame = the board at the instant most cameras saw it ("the board's best-seen
   pose"): origin at the board's corner, x along its squares_x squares, y along squares_y,
   z into the board (OpenCV's board frame, see ``capture.charuco``); metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from capture.calibration.board_views import CameraViews

MIN_SHARED = 3  # instants two cameras must share to be linked


class CalibrationError(Exception):
    """A camera cannot be calibrated; ``camera`` names it."""

    def __init__(self, camera: str, cause: str):
        self.camera = camera
        super().__init__(cause)


@dataclass
class Pose:
    R: np.ndarray  # (3, 3)
    t: np.ndarray  # (3,)

    def inv(self) -> "Pose":
        return Pose(self.R.T, -self.R.T @ self.t)

    def __matmul__(self, other: "Pose") -> "Pose":
        return Pose(self.R @ other.R, self.R @ other.t + self.t)


@dataclass
class Intrinsics:
    K: np.ndarray  # (3, 3)
    dist: np.ndarray  # (5,) k1 k2 p1 p2 k3
    board_in_camera: dict[int, Pose]  # instant -> board -> camera
    rms_px: float


def calibrate_intrinsics(views: CameraViews, board_points: np.ndarray, fix_k3: bool = True) -> Intrinsics:
    """1. for one camera; board_points (N, 3) corner positions in the board frame."""
    if len(views) < 3:
        raise CalibrationError(views.camera, f"the board was found in {len(views)} frames, at least 3 are needed")
    W, H = views.size
    obj = [board_points[ids].astype(np.float32) for ids in views.ids]
    img = [c.astype(np.float32).reshape(-1, 1, 2) for c in views.corners]
    f0 = 0.8 * max(W, H)
    K0 = np.array([[f0, 0, (W - 1) / 2], [0, f0, (H - 1) / 2], [0, 0, 1]], np.float64)
    flags = cv2.CALIB_USE_INTRINSIC_GUESS | (cv2.CALIB_FIX_K3 if fix_k3 else 0)
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-10)
    rms, K, dist, rvecs, tvecs = cv2.calibrateCamera(obj, img, (W, H), K0, np.zeros(5), flags=flags, criteria=crit)
    poses = {int(t): Pose(cv2.Rodrigues(r)[0], tv.ravel()) for t, r, tv in zip(views.instants, rvecs, tvecs)}
    return Intrinsics(K, dist.ravel()[:5], poses, float(rms))


def mean_rotation(Rs: np.ndarray) -> np.ndarray:
    """Chordal L2 mean of (n, 3, 3) rotations."""
    U, _, Vt = np.linalg.svd(Rs.sum(axis=0))
    R = U @ Vt
    if np.linalg.det(R) < 0:
        R = U @ np.diag([1, 1, -1]) @ Vt
    return R


def relative_pose(a: Intrinsics, b: Intrinsics, shared: list[int]) -> Pose:
    """2. T_b<-a from the instants both saw the board."""
    rel = [b.board_in_camera[t] @ a.board_in_camera[t].inv() for t in shared]
    R = mean_rotation(np.stack([p.R for p in rel]))
    return Pose(R, np.median(np.stack([p.t for p in rel]), axis=0))


def initial_rig(cameras: list[str], intr: dict[str, Intrinsics]) -> tuple[dict[str, Pose], dict[int, Pose], int]:
    """2.-5. camera poses (world -> camera), board poses (board -> world) per instant, the world instant."""
    instants = {c: set(intr[c].board_in_camera) for c in cameras}
    shared = {(a, b): len(instants[a] & instants[b]) for a in cameras for b in cameras if a != b}
    # the largest connected group of cameras; any camera outside it cannot be placed
    groups, left = [], list(cameras)
    while left:
        group, todo = {left[0]}, [left[0]]
        while todo:
            a = todo.pop()
            for b in cameras:
                if b not in group and shared.get((a, b), 0) >= MIN_SHARED:
                    group.add(b)
                    todo.append(b)
        groups.append(group)
        left = [c for c in left if c not in group]
    main = max(groups, key=len)
    if len(main) < len(cameras):
        c = next(c for c in cameras if c not in main)
        most = max(shared[(c, o)] for o in main)
        raise CalibrationError(c, f"shares at most {most} board views with the calibrated cameras, "
                               f"at least {MIN_SHARED} are needed to place it in the rig; move the board "
                               "where it and its neighbours see it at the same time")
    ref = max(cameras, key=lambda c: len(instants[c]))
    # 3. maximum spanning tree (Prim) over shared-instant counts
    in_tree = {ref: Pose(np.eye(3), np.zeros(3))}  # camera -> T_cam<-ref
    while len(in_tree) < len(cameras):
        n, a, b = max((shared[(a, b)], a, b) for a in in_tree for b in cameras if b not in in_tree)
        in_tree[b] = relative_pose(intr[a], intr[b], sorted(instants[a] & instants[b])) @ in_tree[a]
    # 4. board poses in the reference frame
    seen: dict[int, list[Pose]] = {}
    for c in cameras:
        for t, p in intr[c].board_in_camera.items():
            seen.setdefault(t, []).append(in_tree[c].inv() @ p)  # T_ref<-board
    boards = {t: Pose(mean_rotation(np.stack([p.R for p in ps])), np.median(np.stack([p.t for p in ps]), axis=0))
              for t, ps in seen.items()}
    # 5. world = the board at its best-seen instant
    t_world = max(seen, key=lambda t: (len(seen[t]), -t))
    world_to_ref = boards[t_world]  # T_ref<-world (world = board frame at t_world)
    cams = {c: in_tree[c] @ world_to_ref for c in cameras}  # T_cam<-world
    ref_to_world = world_to_ref.inv()
    return cams, {t: ref_to_world @ p for t, p in boards.items()}, t_world
