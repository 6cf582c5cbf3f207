"""``handdiffuse calibrate SESSION``: the calibration take's videos -> ``calibration/calibration.toml``.

1. check every camera's board video (ingest) and detect the ChArUco board in them,
   cameras in parallel processes (``board_views``)
2. intrinsics per camera, then the rig from the camera graph (``initialize``)
3. bundle adjustment of everything (``bundle_adjust``)
4. write the anipose-format calibration with metadata (date, mean and per-camera
   reprojection error, board views per camera, the world frame, a fingerprint of the
   inputs) and the report PNGs beside it (``report``); the PNGs first, so that
   calibration.toml marks a complete run

Re-running with unchanged inputs (videos, board spec, options) and every output in place
does nothing: the fingerprint in ``[metadata]`` says so.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from capture.calibration.board_views import CameraViews, detect_board_views
from capture.calibration.bundle_adjust import OUTLIER_PX, AdjustedRig, Observations, bundle_adjust
from capture.calibration.initialize import CalibrationError, calibrate_intrinsics, initial_rig
from capture.calibration.report import FILES as REPORT_FILES
from capture.charuco import board_corners
from data_schemas.calibration import Camera, CameraRig, read_calibration, write_calibration
from data_schemas.camera_model import matrix_to_rodrigues
from data_schemas.errors import SchemaError
from data_schemas.lock import writing
from data_schemas.session import CALIBRATION_TOML, SESSION_TOML, Session


@dataclass
class CalibrateConfig:
    """Calibrate every camera from the ChArUco board videos -> calibration/calibration.toml."""

    stride: int = 1
    """Use every k-th frame of the board videos."""
    workers: int = 2
    """Processes detecting the board (one camera each at a time)."""
    free_k3: bool = False
    """Also estimate the third radial distortion coefficient (wide-angle lenses)."""
    report: bool = True
    """Write the report PNGs next to calibration.toml."""
    allow_short_videos: bool = False
    """Where a camera's board video is shorter than the others' (beyond what frame offsets explain),
    keep the instants every camera shows instead of refusing the take."""


@dataclass
class CalibrationResult:
    rig: CameraRig
    views: list[CameraViews]
    adjusted: AdjustedRig | None
    seconds: float
    skipped: bool = False

    @property
    def error_px(self) -> float:
        return float(self.rig.metadata.get("error", float("nan")))


def fingerprint(session: Session, cfg: CalibrateConfig) -> str:
    """What the calibration depends on: the videos (name, size, mtime) and the cameras' frame offsets
    (which frames are seen together), the board, the options (not workers, report, or
    allow_short_videos, which only lets a run go on where it would refuse)."""
    h = hashlib.sha256()
    offsets = {c.name: c.frame_offset for c in session.config.cameras}
    for cam in session.cameras:
        p = session.calibration_video(cam)
        st = p.stat() if p is not None else None
        h.update(f"{cam}:{p and p.name}:{st and st.st_size}:{st and st.st_mtime_ns}:{offsets[cam]}\n".encode())
    opts = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(CalibrateConfig)
            if f.name not in ("workers", "report", "allow_short_videos")}
    h.update(json.dumps([dataclasses.asdict(session.config.board), opts], sort_keys=True).encode())
    return h.hexdigest()[:16]


def calibrate(root: str | Path, cfg: CalibrateConfig | None = None) -> CalibrationResult:
    """Calibrate the session's cameras; the calibration folder is locked while it runs."""
    cfg = cfg or CalibrateConfig()
    session = Session.open(root)
    out = session.root / CALIBRATION_TOML
    with writing(out.parent, "calibrate"):
        return _calibrate(session, out, cfg)


def _calibrate(session: Session, out: Path, cfg: CalibrateConfig) -> CalibrationResult:
    t0 = time.perf_counter()
    fp = fingerprint(session, cfg)
    if out.is_file() and (not cfg.report or all((out.parent / f).is_file() for f in REPORT_FILES)):
        try:
            old = read_calibration(out)
        except SchemaError:
            old = None
        if old is not None and old.metadata.get("inputs") == fp:
            return CalibrationResult(old, [], None, time.perf_counter() - t0, skipped=True)
    # 1.
    views = detect_board_views(session.root, cfg.stride, cfg.workers, allow_short_videos=cfg.allow_short_videos)
    if all(len(v) == 0 for v in views):
        raise SchemaError(session.root / SESSION_TOML, "no ChArUco board found in any camera's calibration video: "
                          "check [board] (squares, lengths, dictionary, legacy_pattern)")
    rig, adjusted = calibrate_views(views, session.config.board, cfg.free_k3)
    # 4. the report first: calibration.toml, written last, marks the stage complete
    rig.metadata.update(inputs=fp, date=dt.datetime.now().isoformat(timespec="seconds"), stride=cfg.stride)
    if cfg.report:
        from capture.calibration.report import write_report

        write_report(out.parent, rig, views, adjusted)
    write_calibration(out, rig)
    return CalibrationResult(rig, views, adjusted, time.perf_counter() - t0)


def calibrate_views(views: list[CameraViews], board, free_k3: bool = False) -> tuple[CameraRig, AdjustedRig]:
    """2. + 3. from detected views to the adjusted rig; errors name the camera's video."""
    points = board_corners(board)
    by_name = {v.camera: v for v in views}
    try:
        # 2.
        intr = {v.camera: calibrate_intrinsics(v, points, fix_k3=not free_k3) for v in views}
        cams = [v.camera for v in views]
        poses, boards, t_world = initial_rig(cams, intr)
    except CalibrationError as e:
        raise SchemaError(by_name[e.camera].video, f"camera '{e.camera}': {e}")
    # 3.
    instants = sorted(boards)
    index = {t: i for i, t in enumerate(instants)}
    cam_i, inst_i, pts, pix = [], [], [], []
    for c, v in enumerate(views):
        for t, ids, corners in zip(v.instants, v.ids, v.corners):
            cam_i.append(np.full(len(ids), c))
            inst_i.append(np.full(len(ids), index[int(t)]))
            pts.append(points[ids])
            pix.append(corners)
    obs = Observations(np.concatenate(cam_i), np.concatenate(inst_i), np.concatenate(pts), np.concatenate(pix))
    K = np.stack([intr[c].K for c in cams])
    dist = np.stack([intr[c].dist for c in cams])
    first = bundle_adjust(K, dist, [poses[c] for c in cams], boards, instants, t_world, obs, free_k3=free_k3)
    err = np.linalg.norm(first.residuals, axis=1)  # (M,) px
    inlier = err <= max(OUTLIER_PX, 5 * float(np.median(err)))
    obs = Observations(obs.camera[inlier], obs.instant[inlier], obs.points[inlier], obs.pixels[inlier])
    adj = bundle_adjust(first.K, first.dist, first.poses, first.boards, instants, t_world, obs, free_k3=free_k3)
    err = np.linalg.norm(adj.residuals, axis=1)  # (M',) px
    per_cam = {c: float(err[obs.camera == i].mean()) for i, c in enumerate(cams)}
    cameras = [Camera(c, views[i].size, adj.K[i], adj.dist[i], matrix_to_rodrigues(adj.poses[i].R), adj.poses[i].t)
               for i, c in enumerate(cams)]
    metadata = {
        "error": float(err.mean()), "error_median": float(np.median(err)), "adjusted": True,
        "outliers_dropped": int((~inlier).sum()),
        "method": "charuco + bundle adjustment (scipy least_squares, soft-l1)",
        "world_frame": f"ChArUco board at calibration instant {t_world}: origin at its corner, "
                       "x along squares_x, y along squares_y, z into the board; metres",
        "reprojection_error_px": per_cam, "board_views": {v.camera: len(v) for v in views},
    }
    return CameraRig(cameras, metadata), adj
