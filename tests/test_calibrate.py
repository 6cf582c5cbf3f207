import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from capture.calibration.board_views import CameraViews
from capture.calibration.evaluate import compare_rigs
from capture.calibration.stage import CalibrateConfig, calibrate, calibrate_views
from capture.studio.board_take import write_board_videos
from capture.studio.rig import BOARD, DEMO, make_rig
from data_schemas.video import VideoWriter
from data_schemas import SchemaError
from data_schemas.calibration import read_calibration
from data_schemas.session import SessionConfig, read_session_toml, write_session_toml

RIG = replace(DEMO, n_cameras=5)
FRAMES = 120


def hd(*args):
    env = dict(os.environ, HANDDIFFUSE_LOG="WARNING")
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True, text=True,
                          env=env)


def make_take(root: Path, frames: int = FRAMES, rig_cfg=RIG, seed: int = 0):
    rig, specs = make_rig(rig_cfg, seed)
    write_session_toml(root / "session.toml", SessionConfig("calib", rig_cfg.fps, specs, BOARD))
    write_board_videos(root, rig, BOARD, rig_cfg.fps, frames, seed, workers=1,
                       offsets=[s.frame_offset for s in specs])
    return rig


def compare(est, truth):
    e = compare_rigs(est, truth)
    return e.rotation_deg, e.centre_m, e.focal_rel, e.scale


@pytest.fixture(scope="module")
def take(tmp_path_factory):
    root = tmp_path_factory.mktemp("calib") / "s"
    truth = make_take(root)
    r = hd("calibrate", root)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"calibrated 5 cameras -> {root / 'calibration' / 'calibration.toml'}")
    return root, truth


def test_recovers_the_rig(take):
    root, truth = take
    est = read_calibration(root / "calibration" / "calibration.toml")
    assert est.names == truth.names
    rot, centre, focal, scale = compare(est, truth)
    # a short take at 640x512 (the strict figures come from make test-slow and bench/calibration.py)
    assert est.metadata["error"] <= 0.3
    assert focal.max() < 0.005
    assert centre.max() < 0.003
    assert rot.max() < 0.25
    assert abs(scale - 1) < 0.002  # metric scale from the board
    md = est.metadata
    assert set(md["reprojection_error_px"]) == set(truth.names) and min(md["board_views"].values()) >= 10
    assert md["date"] and md["inputs"]
    for name in ("calibration_errors.png", "calibration_rig.png", "calibration_coverage.png"):
        assert (root / "calibration" / name).stat().st_size > 1000


def test_rerun_with_unchanged_inputs_does_nothing(take):
    root, _ = take
    toml = root / "calibration" / "calibration.toml"
    before = toml.stat().st_mtime_ns
    r = hd("calibrate", root)
    assert r.returncode == 0 and "up to date" in r.stdout
    assert toml.stat().st_mtime_ns == before


def test_rerun_after_a_kill_before_the_report_writes_it_and_clears_partials(take, tmp_path):
    root = tmp_path / "s"
    shutil.copytree(take[0], root)
    folder = root / "calibration"
    (folder / "calibration_rig.png").unlink()  # killed after calibration.toml, before the PNGs
    stale = folder / ".calibration_coverage.png.partial-999999"
    stale.write_bytes(b"half")
    r = hd("calibrate", root)
    assert r.returncode == 0 and r.stdout.startswith("calibrated 5 cameras"), r.stdout
    assert (folder / "calibration_rig.png").stat().st_size > 1000 and not stale.exists()
    assert "up to date" in hd("calibrate", root).stdout


def _copy(take, tmp_path):
    root = tmp_path / "s"
    shutil.copytree(take[0], root)
    (root / "calibration" / "calibration.toml").unlink()
    return root


def one_error(r):
    assert r.returncode == 1, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_board_not_found_in_a_camera_names_it(take, tmp_path):
    root = _copy(take, tmp_path)
    video = root / "calibration" / "videos" / "cam02.mp4"
    with VideoWriter(video, RIG.fps, (RIG.width, RIG.height)) as w:  # a camera that saw only the wall
        for _ in range(FRAMES):
            w.write(np.full((RIG.height, RIG.width, 3), 90, np.uint8))
    assert one_error(hd("calibrate", root)) == (
        f"error: {video}: camera 'cam02': the board was found in 0 frames, at least 3 are needed")
    assert not (root / "calibration" / "calibration.toml").exists()


def test_wrong_board_spec(take, tmp_path):
    root = _copy(take, tmp_path)
    cfg = read_session_toml(root / "session.toml")
    cfg.board = replace(cfg.board, dictionary="DICT_4X4_50")
    write_session_toml(root / "session.toml", cfg)
    assert one_error(hd("calibrate", root)) == (
        f"error: {root / 'session.toml'}: no ChArUco board found in any camera's calibration video: "
        "check [board] (squares, lengths, dictionary, legacy_pattern)")


def test_missing_and_corrupt_videos(take, tmp_path):
    root = _copy(take, tmp_path)
    video = root / "calibration" / "videos" / "cam01.mp4"
    data = video.read_bytes()
    video.write_bytes(data[: len(data) * 6 // 10])
    line = one_error(hd("calibrate", root))
    assert line.startswith(f"error: {video}: video is corrupt or truncated")
    video.unlink()
    assert one_error(hd("calibrate", root)) == f"error: {video}: video of camera 'cam01' not found"


def test_camera_without_shared_views_is_named():
    from capture.charuco import board_corners
    from capture.studio.board_take import board_trajectory, corner_visibility, motion_for_rig

    rng = np.random.default_rng(0)
    rig, _ = make_rig(RIG, 0)
    truth = board_trajectory(FRAMES, BOARD, 0, motion=motion_for_rig(rig))
    X = truth.to_world(board_corners(BOARD))
    views = []
    for cam in rig.cameras:
        vis = corner_visibility(cam, truth)
        keep = [f for f in range(FRAMES) if vis[f].sum() >= 8]
        ids = [np.flatnonzero(vis[f]) for f in keep]
        corners = [cam.project(X[f, i]) + rng.normal(0, 0.05, (len(i), 2)) for f, i in zip(keep, ids)]
        # cam03's clock is off: its views carry instants no other camera has
        instants = np.array(keep) + (1000 if cam.name == "cam03" else 0)
        views.append(CameraViews(cam.name, Path(f"/videos/{cam.name}.mp4"), cam.size, instants, ids, corners))
    with pytest.raises(SchemaError) as e:
        calibrate_views(views, BOARD)
    assert str(e.value) == ("/videos/cam03.mp4: camera 'cam03': shares at most 0 board views with the calibrated "
                            "cameras, at least 3 are needed to place it in the rig; move the board where it and "
                            "its neighbours see it at the same time")


@pytest.mark.slow
def test_demo_rig_meets_the_accuracy_targets(tmp_path):
    """The studio's demo dome (8 cameras, 640x512) and its default 300-frame take."""
    truth = make_take(tmp_path, frames=300, rig_cfg=DEMO)
    est = calibrate(tmp_path, CalibrateConfig()).rig
    rot, centre, focal, _ = compare(est, truth)
    assert est.metadata["error"] <= 0.3
    assert focal.max() <= 0.005
    assert centre.max() <= 0.002
    assert rot.max() <= 0.1


def test_short_board_video_is_refused_unless_allowed(tmp_path, capsys):
    from pipeline.cli import main
    from tests.test_takes import make_session as make_tiny_session

    make_tiny_session(tmp_path, offsets=(0, 0, 0), n_frames=(20, 12, 20), take=None)
    video = tmp_path / "calibration" / "videos" / "cam01.mp4"
    capsys.readouterr()
    assert main(["calibrate", str(tmp_path), "--workers", "1"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {video}: camera 'cam01' has 12 frames where the other cameras have 20: every camera shows only "
        "12 instants (0..11) instead of 20 (0..19); pass --allow-short-videos to keep those 12")
    assert not (tmp_path / "calibration" / "calibration.toml").exists()
    # allowed: on to the board detection (these videos show none), saying what the short video costs
    assert main(["calibrate", str(tmp_path), "--workers", "1", "--allow-short-videos"]) == 1
    err = capsys.readouterr().err
    assert ("calibrate: keeping the 12 instants every camera shows (--allow-short-videos): camera 'cam01' has 12 "
            "frames where the other cameras have 20" in err)
    assert "no ChArUco board found in any camera's calibration video" in err


def test_fingerprint_covers_frame_offsets_not_workers(tmp_path):
    from capture.calibration.stage import fingerprint
    from data_schemas.session import Session
    from tests.test_takes import make_session as make_tiny_session

    session = make_tiny_session(tmp_path, offsets=(0, 0, 0), take=None)
    base = fingerprint(session, CalibrateConfig())
    assert fingerprint(session, CalibrateConfig(workers=7, report=False, allow_short_videos=True)) == base
    assert fingerprint(session, CalibrateConfig(free_k3=True)) != base
    cfg = read_session_toml(tmp_path / "session.toml")
    cfg.cameras[1] = replace(cfg.cameras[1], frame_offset=2)
    write_session_toml(tmp_path / "session.toml", cfg)
    assert fingerprint(Session.open(tmp_path), CalibrateConfig()) != base
