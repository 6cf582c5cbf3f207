"""Bundle adjustment of the whole rig on the board's corners.

Unknowns: per camera c its pose (rotation vector r_c, translation t_c: world -> camera)
and intrinsics (fx, fy, cx, cy, k1, k2, p1, p2, k3; k3 held unless freed); per instant
s the board's pose (r_s, t_s: board -> world), except at the world instant, where the
board *is* the world frame (this fixes the gauge; the board's printed size fixes scale).

Residual of corner k seen by camera c at instant s:

    x = proj_c( R_c (R_s X_k + t_s) + t_c ) - observed      (px, OpenCV's camera model)

minimised by Levenberg-Marquardt with the board poses eliminated from the normal
equations (the Schur complement, as bundle adjusters do: each residual touches one
camera's 15 and one instant's 6 parameters, so only a 15 C x 15 C system is solved
densely). The Jacobian's blocks are exact: torch differentiates the projection of one
corner, vectorised over all corners (``torch.func.vmap(jacrev(...))``). Two passes: after the first, corners further than
``OUTLIER_PX`` (or 5 x the median) from their prediction are dropped (a detector
misplaces a few corners on steep views), then the rig is adjusted again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from capture.calibration.initialize import Pose
from data_schemas.camera_model import (
    matrix_to_rodrigues, rodrigues_to_matrix, rodrigues_to_matrix_torch, to_pixels, to_pixels_torch,
)

OUTLIER_PX = 1.0
N_CAM = 15  # r(3) t(3) fx fy cx cy k1 k2 p1 p2 k3
N_BOARD = 6  # r(3) t(3)


@dataclass
class Observations:
    camera: np.ndarray  # (M,) camera index
    instant: np.ndarray  # (M,) index into the instants list
    points: np.ndarray  # (M, 3) board-frame corner positions, m
    pixels: np.ndarray  # (M, 2) observed, px


@dataclass
class AdjustedRig:
    K: np.ndarray  # (C, 3, 3)
    dist: np.ndarray  # (C, 5)
    poses: list[Pose]  # world -> camera
    boards: dict[int, Pose]  # instant -> board -> world
    residuals: np.ndarray  # (M, 2) px, at the solution
    cost_before: float
    cost_after: float
    iterations: int


def project(cams: np.ndarray, boards: np.ndarray, obs: Observations, world_index: int) -> np.ndarray:
    """(M, 2) predicted pixels for the parameter blocks ``cams`` (C, 15) and ``boards`` (S, 6)."""
    b = boards[obs.instant]  # (M, 6)
    Rb = rodrigues_to_matrix(b[:, :3])
    pw = np.einsum("mij,mj->mi", Rb, obs.points) + b[:, 3:]
    at_world = obs.instant == world_index
    pw[at_world] = obs.points[at_world]  # the world instant's board is the world frame
    c = cams[obs.camera]  # (M, 15)
    pc = np.einsum("mij,mj->mi", rodrigues_to_matrix(c[:, :3]), pw) + c[:, 3:6]
    return to_pixels(pc, c[:, 6], c[:, 7], c[:, 8], c[:, 9], c[:, 10:15])


def _project_one(cam, board, X):
    """One corner: camera block (15,), board block (6,), board point (3,) -> pixel (2,), torch."""
    pw = rodrigues_to_matrix_torch(board[:3]) @ X + board[3:]
    pc = rodrigues_to_matrix_torch(cam[:3]) @ pw + cam[3:6]
    return to_pixels_torch(pc, cam[6], cam[7], cam[8], cam[9], cam[10:15])


def jacobian_blocks(cams: np.ndarray, boards: np.ndarray, obs: Observations) -> np.ndarray:
    """(M, 2, 21) d pixel / d (camera block, board block) of every observation."""
    import torch
    from torch.func import jacrev, vmap

    c = torch.as_tensor(cams[obs.camera], dtype=torch.float64)
    b = torch.as_tensor(boards[obs.instant], dtype=torch.float64)
    X = torch.as_tensor(obs.points, dtype=torch.float64)
    jc, jb = vmap(jacrev(_project_one, argnums=(0, 1)))(c, b, X)  # (M, 2, 15), (M, 2, 6)
    return torch.cat([jc, jb], dim=2).numpy()


def bundle_adjust(K: np.ndarray, dist: np.ndarray, poses: list[Pose], boards: dict[int, Pose], instants: list[int],
                  world_instant: int, obs: Observations, free_k3: bool = False, max_iterations: int = 60,
                  tolerance: float = 1e-10) -> AdjustedRig:
    """Levenberg-Marquardt on the normal equations, the board blocks eliminated (Schur complement).

    Per iteration, with r the residuals and J = [J_cam | J_board] their Jacobian:
      1. U_c = sum J_c^T J_c (15 x 15 per camera), V_s = sum J_s^T J_s (6 x 6 per instant),
         W_cs = sum J_c^T J_s, and the gradients g_c = sum J_c^T r, g_s = sum J_s^T r
      2. damp the diagonals (x (1 + lambda)); held parameters get a unit diagonal and no gradient
      3. camera step: (U - W V^-1 W^T) d_c = -(g_c - W V^-1 g_s)   (dense, 15 C unknowns)
      4. board steps: d_s = V_s^-1 (-g_s - W_cs^T d_c)
      5. keep the step if the cost fell (lambda / 3), else undo it (lambda x 5)
    """
    C, S = len(poses), len(instants)
    cams = np.zeros((C, N_CAM))
    bds = np.zeros((S, N_BOARD))
    for c in range(C):
        cams[c] = np.concatenate([matrix_to_rodrigues(poses[c].R), poses[c].t,
                                  [K[c, 0, 0], K[c, 1, 1], K[c, 0, 2], K[c, 1, 2]], dist[c][:5]])
    world_index = instants.index(world_instant)
    for s, t in enumerate(instants):
        if s != world_index:  # the world instant's block stays 0: the board is the world frame
            bds[s] = np.concatenate([matrix_to_rodrigues(boards[t].R), boards[t].t])
    cam_free = np.ones(N_CAM, bool)
    cam_free[14] = free_k3
    board_free = np.ones((S, 1), bool)
    board_free[world_index] = False
    pair = obs.camera * S + obs.instant  # (M,) index of the (camera, instant) block of W

    def cost(cams: np.ndarray, bds: np.ndarray) -> tuple[np.ndarray, float]:
        r = project(cams, bds, obs, world_index) - obs.pixels
        return r, float((r ** 2).sum())

    r, f = cost(cams, bds)
    cost_before = f / r.size
    lam, it = 1e-3, 0
    for it in range(1, max_iterations + 1):
        # 1.
        J = jacobian_blocks(cams, bds, obs)  # (M, 2, 21)
        Jc = J[:, :, :N_CAM] * cam_free
        Jb = J[:, :, N_CAM:] * board_free[obs.instant][:, :, None]
        U = np.zeros((C, N_CAM, N_CAM))
        np.add.at(U, obs.camera, np.einsum("mki,mkj->mij", Jc, Jc))
        V = np.zeros((S, N_BOARD, N_BOARD))
        np.add.at(V, obs.instant, np.einsum("mki,mkj->mij", Jb, Jb))
        W = np.zeros((C * S, N_CAM, N_BOARD))
        np.add.at(W, pair, np.einsum("mki,mkj->mij", Jc, Jb))
        W = W.reshape(C, S, N_CAM, N_BOARD)
        gc = np.zeros((C, N_CAM))
        np.add.at(gc, obs.camera, np.einsum("mki,mk->mi", Jc, r))
        gs = np.zeros((S, N_BOARD))
        np.add.at(gs, obs.instant, np.einsum("mki,mk->mi", Jb, r))
        while True:
            # 2.
            Ud = U + lam * np.einsum("cii->ci", U)[:, :, None] * np.eye(N_CAM)
            Ud[:, ~cam_free, ~cam_free] = 1.0
            Vd = V + lam * np.einsum("sii->si", V)[:, :, None] * np.eye(N_BOARD)
            Vd[world_index] = np.eye(N_BOARD)
            Vinv = np.linalg.inv(Vd)  # (S, 6, 6)
            # 3.
            WV = np.einsum("csij,sjk->csik", W, Vinv)  # (C, S, 15, 6)
            A = -np.einsum("csij,dskj->cidk", WV, W).reshape(C * N_CAM, C * N_CAM)
            A += _block_diag(Ud)
            b = -(gc - np.einsum("csij,sj->ci", WV, gs)).ravel()
            dc = np.linalg.solve(A, b).reshape(C, N_CAM)
            # 4.
            ds = np.einsum("sij,sj->si", Vinv, -gs - np.einsum("csij,ci->sj", W, dc))
            # 5.
            r_new, f_new = cost(cams + dc, bds + ds)
            if f_new < f:
                converged = (f - f_new) <= tolerance * f
                cams, bds, r, f = cams + dc, bds + ds, r_new, f_new
                lam = max(lam / 3, 1e-9)
                break
            lam *= 5
            if lam > 1e8:
                converged = True
                break
        if converged:
            break
    Ks = np.zeros((C, 3, 3))
    Ks[:, 0, 0], Ks[:, 1, 1], Ks[:, 0, 2], Ks[:, 1, 2], Ks[:, 2, 2] = cams[:, 6], cams[:, 7], cams[:, 8], cams[:, 9], 1
    out_poses = [Pose(rodrigues_to_matrix(cams[c, :3]), cams[c, 3:6].copy()) for c in range(C)]
    out_boards = {t: Pose(rodrigues_to_matrix(bds[s, :3]), bds[s, 3:].copy()) for s, t in enumerate(instants)}
    return AdjustedRig(Ks, cams[:, 10:15].copy(), out_poses, out_boards, r, cost_before, f / r.size, it)


def _block_diag(blocks: np.ndarray) -> np.ndarray:
    """(C, n, n) -> (C n, C n) block-diagonal matrix."""
    C, n, _ = blocks.shape
    out = np.zeros((C * n, C * n))
    for c in range(C):
        out[c * n:(c + 1) * n, c * n:(c + 1) * n] = blocks[c]
    return out
