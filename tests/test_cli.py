import os
import subprocess
import sys

import h5py
import pytest

from data_schemas.calibration import write_calibration
from data_schemas.keypoints2d import write_keypoints2d
from data_schemas.mano import write_mano
from data_schemas.queue import QueueItem, write_queue
from data_schemas.shard import write_shard
from pipeline.cli import STAGES
from tests.factories import make_keypoints2d, make_mano, make_sequence
from tests.test_h5_schemas import corrupt_one_byte
from tests.test_session import make_session


def hd(*args):
    env = dict(os.environ, HANDDIFFUSE_LOG="WARNING")
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)],
                          capture_output=True, text=True, env=env)


def test_help_lists_every_stage():
    r = hd("--help")
    assert r.returncode == 0
    for stage in list(STAGES) + ["validate", "mano-convert"]:
        assert stage in r.stdout


def test_validate_help_shows_field_docs():
    r = hd("validate", "--help")
    assert r.returncode == 0
    assert "Files or session folders to check." in r.stdout


def test_resolved_config_is_logged(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "validate", str(tmp_path / "x.h5")],
                       capture_output=True, text=True)
    assert "validate, resolved config:" in r.stderr and "x.h5" in r.stderr


def build_session(tmp_path):
    cfg, rig = make_session(tmp_path, 3)
    write_calibration(tmp_path / "calibration" / "calibration.toml", rig)
    seq = tmp_path / "sequences" / "seq000"
    write_keypoints2d(seq / "keypoints2d.h5", make_keypoints2d(3))
    write_mano(seq / "mano.h5", make_mano())
    write_queue(tmp_path / "annotation" / "queue.jsonl", [QueueItem("seq000", 1, "cam00", "reprojection")])
    write_shard(tmp_path / "export" / "shard-00000.h5", [make_sequence()])
    return seq


def test_validate_good_session(tmp_path):
    build_session(tmp_path)
    r = hd("validate", tmp_path)
    assert r.returncode == 0, r.stderr
    kinds = [line.split("(")[1].split(")")[0] for line in r.stdout.splitlines()]
    assert kinds == ["session", "calibration", "keypoints2d", "mano", "queue", "shard"]


def _one_error(r):
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_validate_missing_file(tmp_path):
    assert _one_error(hd("validate", tmp_path / "gone.h5")) == f"error: {tmp_path / 'gone.h5'}: file not found"


def test_validate_calibration_missing_camera(tmp_path):
    build_session(tmp_path)
    cal = tmp_path / "calibration" / "calibration.toml"
    _, rig = make_session(tmp_path / "other", 2)
    write_calibration(cal, rig)
    assert _one_error(hd("validate", cal)) == (
        f"error: {cal}: camera 'cam02' (in session.toml) is missing from the calibration")


def test_validate_wrong_shape(tmp_path):
    p = tmp_path / "k.h5"
    write_keypoints2d(p, make_keypoints2d())
    with h5py.File(p, "r+") as f:
        del f["image_sizes"]
        f["image_sizes"] = [[640, 480]] * 2
        f["image_sizes"].attrs["sha256"] = __import__("data_schemas.h5io", fromlist=["digest"]).digest(f["image_sizes"][()])
    assert _one_error(hd("validate", p)) == (
        f"error: {p}: 'image_sizes' has shape (2, 2), expected (C, 2) with C=3")


def test_validate_unknown_version_truncated_and_corrupt(tmp_path):
    seq = build_session(tmp_path)
    shard = tmp_path / "export" / "shard-00000.h5"
    with h5py.File(shard, "r+") as f:
        f.attrs["version"] = 3
    assert _one_error(hd("validate", shard)) == (
        f"error: {shard}: unknown handdiffuse.shard format version 3 (this handdiffuse reads version 2); "
        "upgrade handdiffuse, or re-run `handdiffuse export` to rewrite it")

    mano = seq / "mano.h5"
    data = mano.read_bytes()
    mano.write_bytes(data[: len(data) - 100])
    assert _one_error(hd("validate", mano)) == (
        f"error: {mano}: truncated HDF5 file (incomplete write or copy); re-run `handdiffuse fit`")

    write_shard(shard, [make_sequence()])
    corrupt_one_byte(shard, "sequences/s0/joints")
    line = _one_error(hd("validate", shard))
    assert line.startswith(f"error: {shard}: dataset '/sequences/s0/joints' is corrupt")


def test_validate_nan_in_mano(tmp_path):
    p = tmp_path / "mano.h5"
    write_mano(p, make_mano())
    with h5py.File(p, "r+") as f:
        f["transl"][3, 1, 2] = float("nan")  # bypasses our writer; checksum no longer matches either
        f["transl"].attrs["sha256"] = __import__("data_schemas.h5io", fromlist=["digest"]).digest(f["transl"][()])
    assert _one_error(hd("validate", p)) == (
        f"error: {p}: 'transl' has 1 NaN/inf values (first at index (3, 1, 2))")



def test_validate_keypoints_far_outside_the_image(tmp_path):
    p = tmp_path / "keypoints2d.h5"
    kp = make_keypoints2d(3)  # 640x480 images
    kp.keypoints[0, 0, 0, :2] = [900, 100]  # outside, but within half the image: a guess at a cut-off hand
    kp.keypoints[1, 2, 5, :2] = [640000, 480000]
    kp.keypoints[2, 3, 7, :2] = [-400, 100]
    write_keypoints2d(p, kp)
    assert _one_error(hd("validate", p)) == (
        f"error: {p}: 2 keypoints lie more than half the image size outside the image (first: camera 'cam01', "
        "frame 2, keypoint 5 at x=640000.0, y=480000.0 in a 640x480 image)")
    kp.keypoints[1, 2, 5, 2] = kp.keypoints[2, 3, 7, 2] = 0.0  # not found: their x, y mean nothing
    kp.keypoints[1, 2, 5, :2] = kp.keypoints[2, 3, 7, :2] = float("nan")
    write_keypoints2d(p, kp)
    assert hd("validate", p).returncode == 0

def test_calibrate_missing_session_folder():
    assert _one_error(hd("calibrate", "somewhere")) == "error: somewhere: session folder not found"


def test_detect_missing_session_folder():
    assert _one_error(hd("detect", "somewhere")) == "error: somewhere: session folder not found"


@pytest.mark.parametrize("stage", ["annotate", "merge", "annotation-status", "annotate-stop", "export"])
def test_annotation_and_export_missing_session_folder(stage):
    line = _one_error(hd(stage, "somewhere"))
    assert line.startswith("error: somewhere") and ("not found" in line or "no such" in line.lower()), line


@pytest.mark.parametrize("args", [["validate"], ["nonsense"]])
def test_usage_errors_exit_2(args):
    assert hd(*args).returncode == 2
