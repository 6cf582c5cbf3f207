"""The studio's ChArUco take: exact renders that OpenCV's detector finds, video round trip,
coverage of every camera, determinism, and the board's conventions (capture.charuco)."""

from dataclasses import replace

import numpy as np
import pytest

from capture.charuco import (board_corners, board_texture, detect_charuco, detector_offset, make_board,
                             make_detector)
from capture.studio.board_take import (BOARD_POSES, BoardMotion, BoardRenderer, BoardTruth, board_trajectory, corner_visibility,
                                       motion_for_rig, pixel_to_board, read_board_truth, take_lighting,
                                       write_board_truth, write_board_videos)
from capture.studio.rig import BOARD, DEMO, RigConfig, make_rig
from data_schemas.video import read_frames
from data_schemas.errors import SchemaError
from data_schemas.session import CALIBRATION_VIDEOS, BoardSpec

N_FRAMES = 150


@pytest.fixture(scope="module")
def demo():
    rig, _ = make_rig(DEMO)
    truth = board_trajectory(N_FRAMES, BOARD, seed=0, motion=motion_for_rig(rig))
    return rig, truth, take_lighting(N_FRAMES, 0)


def projected(cam, truth: BoardTruth, frame: int, ids: np.ndarray) -> np.ndarray:
    """(K, 2) where the corners ``ids`` of frame ``frame`` must be in ``cam``'s image."""
    return cam.project(truth.to_world(board_corners(truth.spec)[ids])[frame])


def moderate_views(cam, truth: BoardTruth, per_camera: int) -> np.ndarray:
    """Frames in which ``cam`` sees >= 8 corners within 40 deg of face-on, evenly spread."""
    frames = np.nonzero(corner_visibility(cam, truth, max_angle_deg=40.0).sum(1) >= 8)[0]
    return frames[np.linspace(0, len(frames) - 1, min(per_camera, len(frames))).round().astype(int)]


# --- the board's conventions -------------------------------------------------------------

def test_board_corners_are_opencvs():
    for spec in (BOARD, BoardSpec(squares_x=5, squares_y=8, square_length=0.03, marker_length=0.02,
                                  dictionary="DICT_4X4_50", legacy_pattern=True)):
        ours = board_corners(spec)
        assert ours.shape == ((spec.squares_x - 1) * (spec.squares_y - 1), 3)
        np.testing.assert_allclose(ours, make_board(spec).getChessboardCorners(), atol=1e-7)
        assert make_board(spec).getLegacyPattern() == spec.legacy_pattern


def test_texture_corners_sit_on_texel_boundaries():
    image, texmap = board_texture(BOARD, px_per_m=1000.0, margin_m=0.02)
    assert image.dtype == np.uint8 and image.shape == (texmap.size[1], texmap.size[0])
    assert (image[:texmap.margin_px] == 255).all() and (image[:, -texmap.margin_px:] == 255).all()  # white margin
    uv = texmap.to_pixels(board_corners(BOARD)[:, :2])  # (N, 2), pixel-centre convention
    assert np.allclose(uv % 1.0, 0.5)  # between two texels
    for u, v in uv.astype(int):  # the texels around a corner: a checkerboard, x and y flipped
        block = image[v:v + 2, u:u + 2].astype(int)
        assert block[0, 0] == block[1, 1] and block[0, 1] == block[1, 0] and block[0, 0] != block[0, 1]


def test_detector_offset_is_a_convention():
    assert detector_offset() in (0.0, 0.5)


def test_pixel_rays_hit_the_board_where_project_says(demo):
    rig, truth, _ = demo
    X = board_corners(BOARD)
    for cam in rig.cameras:
        for f in (0, 40, 77):
            uv = cam.project(truth.to_world(X)[f])
            xy, inv_depth = pixel_to_board(cam, truth.R[f], truth.t[f], cam.undistort_points(uv))
            np.testing.assert_allclose(xy, X[:, :2], atol=1e-9)  # metres
            assert (inv_depth > 0).all()


# --- renders ---------------------------------------------------------------------------

def test_detector_finds_rendered_corners_where_they_project(demo):
    rig, truth, lighting = demo
    errors, clean_errors, found = [], [], []
    for i, cam in enumerate(rig.cameras):
        renderer = BoardRenderer(cam, BOARD, seed=0, index=i)
        detector = make_detector(BOARD)
        for f in moderate_views(cam, truth, per_camera=4):
            ids, corners = detect_charuco(renderer.render(truth, f, lighting), BOARD, detector)
            found.append(len(ids) >= 8)
            errors.append(np.linalg.norm(corners - projected(cam, truth, f, ids), axis=-1))
            ids, corners = detect_charuco(renderer.render(truth, f, lighting, noise=False), BOARD, detector)
            clean_errors.append(np.linalg.norm(corners - projected(cam, truth, f, ids), axis=-1))
    assert np.mean(found) >= 0.9, f"board found in {np.sum(found)} of {len(found)} moderate views"
    e = np.concatenate(errors)
    assert np.median(e) < 0.1 and e.max() < 0.5, (np.median(e), e.max())
    clean = np.concatenate(clean_errors)
    assert np.median(clean) < 0.05, np.median(clean)  # the render itself is exact


def test_corners_survive_video_encoding(tmp_path):
    rig, _ = make_rig(RigConfig(n_cameras=4, width=640, height=480, radius=0.9, min_elevation_deg=0.0,
                                max_elevation_deg=60.0, horizontal_fov_deg=45.0), seed=1)
    truth = write_board_videos(tmp_path, rig, BOARD, fps=30.0, n_frames=90, seed=3, workers=2)
    assert read_board_truth(tmp_path / BOARD_POSES).R.shape == (90, 3, 3)
    errors = []
    detector = make_detector(BOARD)
    for cam in rig.cameras:
        frames = read_frames(tmp_path / CALIBRATION_VIDEOS / f"{cam.name}.mp4")
        assert frames.shape == (90, 480, 640, 3)
        for f in moderate_views(cam, truth, per_camera=6):
            ids, corners = detect_charuco(frames[f], BOARD, detector)
            errors.append(np.linalg.norm(corners - projected(cam, truth, f, ids), axis=-1))
    e = np.concatenate(errors)
    assert len(e) >= 4 * 6 * 8 * 0.8, len(e)
    assert np.median(e) < 0.3, np.median(e)
    assert not list(tmp_path.rglob(".*partial*"))


def test_every_camera_sees_the_board_with_neighbours(demo):
    rig, _, _ = demo
    for seed in (0, 1, 2):
        truth = board_trajectory(N_FRAMES, BOARD, seed=seed, motion=motion_for_rig(rig))
        sees = np.stack([corner_visibility(cam, truth).sum(1) >= 8 for cam in rig.cameras])  # (C, F)
        share = (sees[:, None] & sees[None]).sum(-1)  # (C, C) frames seen together
        np.fill_diagonal(share, 0)
        assert (sees.mean(1) >= 0.2).all(), sees.mean(1)
        assert ((share >= 10).sum(1) >= 2).all(), share


def test_trajectory_is_smooth_and_in_the_volume(demo):
    _, truth, _ = demo
    assert np.allclose(truth.R @ truth.R.transpose(0, 2, 1), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(truth.R), 1.0)
    assert np.abs(truth.centers).max() <= BoardMotion().wander_m + 1e-9
    turn = np.arccos(np.clip((np.trace(truth.R[1:] @ truth.R[:-1].transpose(0, 2, 1), axis1=1, axis2=2) - 1) / 2,
                             -1, 1))
    assert np.rad2deg(turn).max() < 12.0  # degrees per frame
    assert np.linalg.norm(np.diff(truth.centers, axis=0), axis=-1).max() < 0.03  # m per frame: < 0.9 m/s


def test_same_seed_same_take(demo):
    rig, truth, lighting = demo
    again = board_trajectory(N_FRAMES, BOARD, seed=0, motion=motion_for_rig(rig))
    assert np.array_equal(truth.R, again.R) and np.array_equal(truth.t, again.t)
    assert not np.allclose(board_trajectory(N_FRAMES, BOARD, seed=1).t, truth.t)
    cam = rig.cameras[5]
    f = int(moderate_views(cam, truth, 1)[0])
    a = BoardRenderer(cam, BOARD, seed=0, index=5).render(truth, f, lighting)
    b = BoardRenderer(cam, BOARD, seed=0, index=5).render(truth, f, lighting)
    c = BoardRenderer(cam, BOARD, seed=1, index=5).render(truth, f, lighting)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_wrong_dictionary_finds_nothing(demo):
    rig, truth, lighting = demo
    cam = rig.cameras[0]
    f = int(moderate_views(cam, truth, 1)[0])
    image = BoardRenderer(cam, BOARD, seed=0, index=0).render(truth, f, lighting)
    assert len(detect_charuco(image, BOARD)[0]) >= 12
    for dictionary in ("DICT_4X4_50", "DICT_6X6_250", "DICT_7X7_100", "DICT_APRILTAG_36h11", "DICT_ARUCO_ORIGINAL"):
        ids, corners = detect_charuco(image, replace(BOARD, dictionary=dictionary))
        assert ids.shape == (0,) and corners.shape == (0, 2), dictionary
    # OpenCV's dictionaries of one marker size share their first markers: not a wrong spec
    assert len(detect_charuco(image, replace(BOARD, dictionary="DICT_5X5_1000"))[0]) >= 12


def test_board_truth_round_trip_and_errors(tmp_path, demo):
    _, truth, _ = demo
    path = tmp_path / BOARD_POSES
    write_board_truth(path, truth)
    back = read_board_truth(path)
    assert np.array_equal(back.R, truth.R) and np.array_equal(back.t, truth.t)
    assert back.spec == truth.spec and back.fps == truth.fps
    bad = BoardTruth(R=truth.R[:, :2], t=truth.t, spec=BOARD, fps=30.0)
    with pytest.raises(SchemaError, match=r"expected \(F, 3, 3\) and \(F, 3\)"):
        write_board_truth(tmp_path / "bad.npz", bad)
    with pytest.raises(SchemaError, match="file not found"):
        read_board_truth(tmp_path / "missing.npz")
