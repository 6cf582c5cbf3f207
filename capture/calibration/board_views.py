"""ChArUco corners of the calibration take, every camera, in parallel processes.

One ``CameraViews`` per camera: for each sampled instant where the board was found
(at least ``MIN_CORNERS`` corners, not all on one line), the corner ids and their
pixel positions.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LOG = logging.getLogger("handdiffuse")
MIN_CORNERS = 6


@dataclass
class CameraViews:
    camera: str
    video: Path
    size: tuple[int, int]  # (width, height)
    instants: np.ndarray  # (K,) int: instants with a board view
    ids: list[np.ndarray]  # K x (n_k,) corner ids
    corners: list[np.ndarray]  # K x (n_k, 2) px
    frames_read: int = 0

    def __len__(self) -> int:
        return len(self.instants)

    def at(self, instant: int) -> tuple[np.ndarray, np.ndarray] | None:
        k = np.searchsorted(self.instants, instant)
        if k < len(self.instants) and self.instants[k] == instant:
            return self.ids[k], self.corners[k]
        return None


def usable(ids: np.ndarray, corners: np.ndarray, squares_x: int) -> bool:
    """Enough corners, spanning two dimensions of the board (a line of corners fixes no pose)."""
    if len(ids) < MIN_CORNERS:
        return False
    nx = squares_x - 1
    return len(np.unique(ids % nx)) >= 2 and len(np.unique(ids // nx)) >= 2


def _detect_camera(job: tuple) -> CameraViews:
    from capture.charuco import detect_charuco, make_detector
    from data_schemas.takes import open_take
    from data_schemas.session import Session

    root, camera, instants, allow_short_videos = job
    session = Session.open(root)
    take = open_take(session, None, allow_short_videos)
    spec = session.config.board
    detector = make_detector(spec)
    keep_t, keep_ids, keep_c = [], [], []
    n = 0
    for t, frame in take.read(camera, instants):
        n += 1
        ids, corners = detect_charuco(frame, spec, detector)
        if usable(ids, corners, spec.squares_x):
            keep_t.append(t)
            keep_ids.append(ids)
            keep_c.append(corners)
    cam_spec = session.config.cameras[session.cameras.index(camera)]
    return CameraViews(camera, session.calibration_video(camera), (cam_spec.width, cam_spec.height),
                       np.array(keep_t, np.int64), keep_ids, keep_c, n)


def detect_board_views(root: Path, stride: int = 1, workers: int = 2, progress: bool | None = None,
                       allow_short_videos: bool = False) -> list[CameraViews]:
    """Detect the board in every ``stride``-th instant of every camera's calibration video (a short
    video refused unless ``allow_short_videos``: ``data_schemas.takes.open_take``)."""
    from data_schemas.takes import open_take
    from data_schemas.session import Session

    session = Session.open(root)
    take = open_take(session, None, allow_short_videos)
    if (short := take.short_videos()) is not None:
        LOG.warning("calibrate: keeping the %d instants every camera shows (--allow-short-videos): %s",
                    len(take.instants), short)
    for cam in session.cameras:
        take.check_decodable(cam)
    instants = list(take.instants)[:: max(1, stride)]
    jobs = [(root, cam, instants, allow_short_videos) for cam in session.cameras]
    show = sys.stderr.isatty() if progress is None else progress
    ctx = mp.get_context("fork")
    with ctx.Pool(max(1, workers)) as pool:
        results = pool.imap(_detect_camera, jobs)
        if show:
            from tqdm import tqdm

            results = tqdm(results, total=len(jobs), desc="board detection", unit="camera")
        return list(results)
