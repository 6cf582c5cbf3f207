import cv2
import numpy as np
import pytest
from aniposelib.cameras import Camera as AniposeCamera
from aniposelib.cameras import CameraGroup

from data_schemas import SchemaError
from data_schemas.calibration import read_calibration, write_calibration
from data_schemas.camera_model import rodrigues_to_matrix
from tests.factories import make_rig


def _points(seed=1, n=200):
    return np.random.default_rng(seed).uniform(-0.3, 0.3, (n, 3)) + [0, 0, 0.1]


def test_project_equals_opencv_and_rodrigues_equals_opencv():
    rig = make_rig(6)
    pts = _points()
    for cam in rig.cameras:
        ref, _ = cv2.projectPoints(pts, cam.rotation, cam.translation, cam.matrix, cam.distortions)
        assert np.abs(cam.project(pts) - ref.reshape(-1, 2)).max() < 1e-6
        assert np.abs(rodrigues_to_matrix(cam.rotation) - cv2.Rodrigues(cam.rotation)[0]).max() < 1e-12


def test_undistort_inverts_projection():
    rig = make_rig(4)
    pts = _points()
    for cam in rig.cameras:
        pc = cam.to_camera(pts)
        normalized = cam.undistort_points(cam.project(pts))
        assert np.abs(normalized - pc[:, :2] / pc[:, 2:]).max() < 1e-9


def test_round_trip_ours(tmp_path):
    rig = make_rig(12)
    p = tmp_path / "calibration.toml"
    write_calibration(p, rig)
    back = read_calibration(p)
    assert back.names == rig.names  # 12 cameras: order kept past cam_9
    for a, b in zip(rig.cameras, back.cameras):
        for k in ("matrix", "distortions", "rotation", "translation"):
            np.testing.assert_allclose(getattr(a, k), getattr(b, k), atol=1e-12)
        assert a.size == b.size
    assert back.metadata["error"] == pytest.approx(0.12)
    assert "[cam_00]" in p.read_text() and "[cam_11]" in p.read_text()


def test_aniposelib_file_loads_in_ours_with_same_projections(tmp_path):
    rig = make_rig(11)
    group = CameraGroup([
        AniposeCamera(matrix=c.matrix, dist=c.distortions, size=list(c.size), rvec=c.rotation,
                      tvec=c.translation, name=c.name) for c in rig.cameras
    ], metadata={"adjusted": True, "error": 0.2})
    p = tmp_path / "anipose.toml"
    group.dump(str(p))
    ours = read_calibration(p)
    pts = _points(2)
    theirs = group.project(pts)  # (C, N, 2) in their load order = cam_0..cam_10 as dumped
    assert ours.names == [c.get_name() for c in group.cameras]
    assert np.abs(ours.project(pts) - theirs).max() < 1e-6


def test_our_file_loads_in_aniposelib_with_same_projections(tmp_path):
    rig = make_rig(12)
    p = tmp_path / "calibration.toml"
    write_calibration(p, rig)
    group = CameraGroup.load(str(p))
    assert group.get_names() == rig.names  # zero-padded keys: their sorted order is ours
    pts = _points(3)
    assert np.abs(group.project(pts) - rig.project(pts)).max() < 1e-6


def _write(tmp_path, text):
    p = tmp_path / "calibration.toml"
    p.write_text(text)
    return p


def test_bad_calibration_messages(tmp_path):
    with pytest.raises(SchemaError) as e:
        read_calibration(tmp_path / "nope.toml")
    assert str(e.value) == f"{tmp_path / 'nope.toml'}: file not found"

    rig = make_rig(2)
    p = tmp_path / "calibration.toml"
    write_calibration(p, rig)
    text = p.read_text()
    bad = _write(tmp_path, "\n".join(line for line in text.splitlines() if not line.startswith("matrix")))
    with pytest.raises(SchemaError) as e:
        read_calibration(bad)
    assert str(e.value) == f"{bad}: [cam_0] is missing 'matrix'"

    bad = _write(tmp_path, text.replace("distortions = [", "distortions = [ 0.0,", 1))
    with pytest.raises(SchemaError) as e:
        read_calibration(bad)
    assert str(e.value) == (f"{bad}: camera 'cam00': 'distortions' has 6 values, expected 4, 5 or 8 "
                            "(OpenCV order k1 k2 p1 p2 k3 k4 k5 k6)")

    bad = _write(tmp_path, text.replace("translation = [", "translation = [ nan,", 1).replace(
        "translation = [ nan,", "translation = [ nan, 0.0, 0.0] #", 1))
    with pytest.raises(SchemaError) as e:
        read_calibration(bad)
    assert str(e.value) == f"{bad}: camera 'cam00': 'translation' contains NaN or inf"

    bad = _write(tmp_path, "[cam_0\nname=1")
    with pytest.raises(SchemaError) as e:
        read_calibration(bad)
    assert str(e.value).startswith(f"{bad}: not valid TOML")
