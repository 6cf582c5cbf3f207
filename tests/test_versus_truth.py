"""The interaction figures of a session against its truth (pipeline.versus_truth), on a session whose
fit and truth differ by known amounts."""

import dataclasses

import numpy as np
import pytest

from data_schemas.calibration import write_calibration
from data_schemas.joints3d import Joints3D, write_joints3d
from data_schemas.mano import write_mano
from data_schemas.session import CameraSpec, SessionConfig, write_session_toml
from hand_model.posing import hand_model_for, pose_hands
from pipeline.export import export_sessions
from pipeline.versus_truth import interaction_figures
from tests.factories import make_mano, make_rig

F = 20
APART = slice(0, 10)  # frames with the hands 40 cm apart; the others hold both hands at one place
OFFSET = 0.002  # m, every fitted joint's error


def truth_fit():
    fit = make_mano(F, seed=3)
    fit.quality.failure[:] = 0
    fit.quality.reproj_mean_px[:] = 0.5
    fit.quality.confidence[:] = 1.0
    fit.transl[:] = 0.0
    fit.transl[APART, 0, 0], fit.transl[APART, 1, 0] = -0.2, 0.2
    joints = pose_hands(hand_model_for("open_hand"), fit.global_orient, fit.hand_pose, fit.betas, fit.transl,
                        vertices=False).joints
    fit.joints = joints.reshape(F, 42, 3)
    return fit


@pytest.fixture
def session(tmp_path):
    root = tmp_path / "s"
    write_session_toml(root / "session.toml", SessionConfig(
        name="s", fps=30.0, cameras=[CameraSpec(f"cam{i:02d}", 640, 480) for i in range(4)]))
    rig = make_rig(4)
    write_calibration(root / "calibration" / "calibration.toml", rig)
    write_calibration(root / "ground_truth" / "calibration.toml", rig)
    truth = truth_fit()
    gt = root / "ground_truth" / "sequences" / "seq000"
    write_mano(gt / "mano.h5", truth)
    write_joints3d(gt / "joints3d.h5", Joints3D(truth.frames, truth.joints, np.zeros((F, 42)),
                                                 np.full((F, 42), 4), 30.0, "truth"))
    fit = dataclasses.replace(truth, joints=truth.joints + np.array([OFFSET, 0, 0]))
    fit.quality = dataclasses.replace(truth.quality, confidence=truth.quality.confidence.copy())
    fit.quality.confidence[[2, 15], 1] = 0.2  # one frame apart, one in contact: not for training
    write_mano(root / "sequences" / "seq000" / "mano.h5", fit)
    export_sessions([root], root / "export")
    return root


def test_figures_measure_the_known_differences(session):
    f = interaction_figures(session)
    assert f.frames == F
    assert f.mpjpe_mm == pytest.approx(1000 * OFFSET, abs=1e-3)
    assert f.close_frames == 10 and f.contact_mpjpe_mm == pytest.approx(1000 * OFFSET, abs=1e-3)
    assert f.failed == pytest.approx(2 / F)
    assert f.contact_truth == pytest.approx(0.5)
    assert f.contact_export == pytest.approx(9 / 18)  # of the 18 frames handed to training
    assert f.contact_precision == pytest.approx(1.0)
    assert f.contact_recall == pytest.approx(9 / 10)  # the dropped contact frame is a miss
    assert f.mindist_export_cm == pytest.approx(f.mindist_truth_cm, abs=0.2)
    line = f.line()
    assert line.startswith("interaction mpjpe_mm=2.000 contact_mpjpe_mm=2.000 failed=0.100 ")
    assert "frames=20 close_frames=10" in line


def test_without_a_dataset_every_frame_is_failed(session):
    import shutil

    shutil.rmtree(session / "export")
    f = interaction_figures(session)
    assert f.failed == 1.0 and f.contact_recall == 0.0
    assert np.isnan(f.contact_precision) and np.isnan(f.mindist_export_cm)
