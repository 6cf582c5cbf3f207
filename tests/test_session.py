import pytest

from data_schemas import SchemaError
from data_schemas.calibration import write_calibration
from data_schemas.joints3d import write_joints3d
from data_schemas.session import (BoardSpec, CameraSpec, Session, SessionConfig, read_session_toml,
                                  write_session_toml)
from tests.factories import make_joints3d, make_rig


def make_session(root, n_cameras=4):
    rig = make_rig(n_cameras)
    cfg = SessionConfig(
        name="demo", fps=30.0, subject="synthetic-01", capture_date="2026-11-25",
        cameras=[CameraSpec(c.name, *c.size, frame_offset=i % 2) for i, c in enumerate(rig.cameras)],
        board=BoardSpec(), sequences={"seq000": {"category": "interlock"}},
    )
    write_session_toml(root / "session.toml", cfg)
    return cfg, rig


def test_session_toml_round_trip(tmp_path):
    cfg, _ = make_session(tmp_path)
    assert read_session_toml(tmp_path / "session.toml") == cfg


def test_session_discovery(tmp_path):
    cfg, rig = make_session(tmp_path)
    for seq in ("seq001", "seq000"):
        (tmp_path / "sequences" / seq / "videos").mkdir(parents=True)
    (tmp_path / "sequences" / "seq000" / "videos" / "cam01.mp4").write_bytes(b"")
    write_calibration(tmp_path / "calibration" / "calibration.toml", rig)
    write_joints3d(tmp_path / "sequences" / "seq001" / "joints3d.h5", make_joints3d())
    s = Session.open(tmp_path)
    assert s.cameras == cfg.camera_names
    assert s.sequences == ["seq000", "seq001"]
    assert s.sequence_video("seq000", "cam01").name == "cam01.mp4"
    assert s.sequence_video("seq000", "cam00") is None
    out = s.stage_outputs()
    assert out["calibration"] is True
    assert out["sequences"]["seq001"]["joints3d"] is True
    assert out["sequences"]["seq000"]["joints3d"] is False
    assert s.load_calibration().names == cfg.camera_names


def test_calibration_missing_a_session_camera(tmp_path):
    _, rig = make_session(tmp_path, 4)
    rig.cameras.pop(2)
    cal = tmp_path / "calibration" / "calibration.toml"
    write_calibration(cal, rig)
    with pytest.raises(SchemaError) as e:
        Session.open(tmp_path).load_calibration()
    assert str(e.value) == f"{cal}: camera 'cam02' (in session.toml) is missing from the calibration"


@pytest.mark.parametrize("edit, message", [
    (("fps = 30.0", "fps = -1"), "[session] fps must be a positive number, got -1"),
    (("fps = 30.0", "fsp = 30.0"), "[session]: unknown key 'fsp' (known: capture_date, fps, name, subject)"),
    (('dictionary = "DICT_5X5_100"', 'dictionary = "DICT_9X9"'), "[board] unknown dictionary 'DICT_9X9' (e.g. DICT_5X5_100)"),
    (("marker_length = 0.03", "marker_length = 0.05"), "[board] marker_length must be smaller than square_length"),
    (('name = "cam01"', 'name = "cam00"'), "camera name 'cam00' appears twice"),
    (("width = 640", "width = 0"), "camera 'cam00': width must be a positive integer, got 0"),
])
def test_bad_session_toml_messages(tmp_path, edit, message):
    make_session(tmp_path)
    p = tmp_path / "session.toml"
    p.write_text(p.read_text().replace(*edit, 1))
    with pytest.raises(SchemaError) as e:
        read_session_toml(p)
    assert str(e.value) == f"{p}: {message}"


def test_session_folder_missing(tmp_path):
    with pytest.raises(SchemaError) as e:
        Session.open(tmp_path / "nope")
    assert str(e.value) == f"{tmp_path / 'nope'}: session folder not found"


def test_select_sequences(tmp_path):
    make_session(tmp_path)
    s = Session.open(tmp_path)
    with pytest.raises(SchemaError) as e:
        s.select_sequences([], "detect")
    assert str(e.value) == f"{tmp_path}/sequences: no sequences to detect"
    for seq in ("seq001", "seq000"):
        (tmp_path / "sequences" / seq).mkdir(parents=True)
    assert s.select_sequences([], "fit") == ["seq000", "seq001"]
    assert s.select_sequences(["seq001"], "fit") == ["seq001"]
    with pytest.raises(SchemaError) as e:
        s.select_sequences(["seq001", "nope"], "fit")
    assert str(e.value) == f"{tmp_path}/sequences/nope: sequence folder not found"
