import os
import subprocess
import sys

import numpy as np
import pytest

from capture.studio.build import STUDIO_TOML, StudioConfig, build_session
from capture.studio.motion import FAMILIES
from data_schemas.video import read_frames
from data_schemas import SchemaError
from data_schemas.calibration import read_calibration
from data_schemas.joints3d import read_joints3d
from data_schemas.keypoints2d import read_keypoints2d
from data_schemas.mano import read_mano
from data_schemas.session import Session
from data_schemas.validate import validate_path

CFG = dict(preset="demo", sequences=2, frames=6, board_frames=6, seed=3, max_frame_offset=1)


def hd(*args):
    env = dict(os.environ, HANDDIFFUSE_LOG="WARNING")
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True, text=True,
                          env=env)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    root = tmp_path_factory.mktemp("studio") / "s"
    r = hd("studio", "--out", root, "--preset", "demo", "--sequences", 2, "--frames", 6, "--board-frames", 6,
           "--seed", 3, "--max-frame-offset", 1)
    assert r.returncode == 0, r.stderr
    assert "8 cameras 640x512, 2 sequences" in r.stdout
    return root


def test_layout_is_a_real_session(session):
    s = Session.open(session)
    assert len(s.cameras) == 8 and s.sequences == ["seq000", "seq001"]
    assert [s.config.sequences[q]["category"] for q in s.sequences] == list(FAMILIES[:2])
    assert any(c.frame_offset != 0 for c in s.config.cameras)
    for cam in s.cameras:
        board = read_frames(s.calibration_video(cam))
        assert board.shape == (6, 512, 640, 3)
        for q in s.sequences:
            assert read_frames(s.sequence_video(q, cam)).shape == (6, 512, 640, 3)
    assert not (session / "calibration" / "calibration.toml").exists()  # the calibrate stage's output


def test_everything_validates(session):
    results = validate_path(session)
    assert all(r.ok for r in results), [p for r in results for p in r.problems]
    kinds = sorted(r.kind for r in results)
    assert kinds == sorted(["session", "calibration"] + ["keypoints2d", "joints3d", "mano"] * 2)


def test_ground_truth_agrees_with_itself(session):
    rig = read_calibration(session / "ground_truth" / "calibration.toml")
    gt = session / "ground_truth" / "sequences" / "seq000"
    j3 = read_joints3d(gt / "joints3d.h5")
    kp = read_keypoints2d(gt / "keypoints2d.h5")
    mano = read_mano(gt / "mano.h5")
    assert j3.joints.shape == (6, 42, 3) and mano.hand_pose.shape == (6, 2, 45)
    assert kp.cameras == rig.names
    proj = rig.project(j3.joints.astype(np.float64))  # (C, F, 42, 2)
    assert np.abs(kp.keypoints[..., :2] - proj).max() < 1e-3
    visible = kp.keypoints[..., 2] > 0
    assert 0.2 < visible.mean() < 1.0  # hands hide parts of each other and of themselves
    assert np.abs(j3.joints).max() < 0.5  # inside the capture volume
    # the hands in the truth are the hand model's hands with the truth's parameters
    import torch

    from hand_model.model import HandModel

    out = HandModel()(torch.as_tensor(mano.global_orient), torch.as_tensor(mano.hand_pose),
                      torch.as_tensor(mano.betas), torch.as_tensor(mano.transl))
    assert np.abs(out.joints.detach().numpy().reshape(6, 42, 3) - j3.joints).max() < 1e-5


def test_the_hands_are_in_the_pictures(session):
    kp = read_keypoints2d(session / "ground_truth" / "sequences" / "seq001" / "keypoints2d.h5")
    c, f = 2, 3
    frame = read_frames(session / "sequences" / "seq001" / "videos" / f"{kp.cameras[c]}.mp4")[f]
    s = Session.open(session)
    offset = s.config.cameras[c].frame_offset
    instant = f - offset  # video frame f shows this instant
    pts = kp.keypoints[c, instant]
    vis = pts[:, 2] > 0
    assert vis.sum() > 5
    px = np.rint(pts[vis, :2]).astype(int)
    skin = frame[px[:, 1], px[:, 0]].astype(float)
    background = np.median(frame.reshape(-1, 3), axis=0)
    assert np.linalg.norm(skin - background, axis=1).mean() > 20  # visible joints land on the hands


def test_same_config_is_skipped_other_config_refused(session):
    r = hd("studio", "--out", session, "--preset", "demo", "--sequences", 2, "--frames", 6, "--board-frames", 6,
           "--seed", 3, "--max-frame-offset", 1)
    assert r.returncode == 0 and "already built" in r.stdout
    r = hd("studio", "--out", session, "--seed", 4)
    assert r.returncode == 1
    assert r.stderr.strip() == (f"error: {session / STUDIO_TOML}: this folder holds a studio session built with "
                                "another configuration; choose another --out or delete the folder")


def test_bad_sizes_are_refused(tmp_path):
    with pytest.raises(SchemaError, match="studio needs frames >= 1"):
        build_session(StudioConfig(out=tmp_path / "x", frames=0))
    assert not (tmp_path / "x").exists()
