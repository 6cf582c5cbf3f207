import dataclasses

import h5py
import numpy as np
import pytest

from data_schemas import SchemaError
from data_schemas.h5io import digest
from data_schemas.joints3d import read_joints3d, write_joints3d
from data_schemas.keypoints2d import read_keypoints2d, write_keypoints2d
from data_schemas.mano import FailureReason, read_mano, write_mano
from data_schemas.queue import QueueItem, read_queue, write_queue
from data_schemas.shard import ShardReader, read_shard, write_shard
from tests.factories import make_joints3d, make_keypoints2d, make_mano, make_sequence


def assert_same(a, b):
    """Dataclasses equal field by field (floats to 1e-6, NaN where NaN)."""
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if dataclasses.is_dataclass(x):
            assert_same(x, y)
        elif isinstance(x, np.ndarray):
            assert x.shape == y.shape and x.dtype == y.dtype, f.name
            if x.dtype.kind == "f":
                np.testing.assert_allclose(x, y, atol=1e-6, err_msg=f.name)
            else:
                np.testing.assert_array_equal(x, y, err_msg=f.name)
        else:
            assert x == y, f.name


def test_keypoints2d_round_trip(tmp_path):
    kp = make_keypoints2d()
    write_keypoints2d(tmp_path / "k.h5", kp)
    assert_same(kp, read_keypoints2d(tmp_path / "k.h5"))


def test_joints3d_round_trip(tmp_path):
    j = make_joints3d()
    write_joints3d(tmp_path / "j.h5", j)
    back = read_joints3d(tmp_path / "j.h5")
    assert_same(j, back)
    assert not back.valid[2, 5] and back.valid.sum() == back.valid.size - 1


def test_joints3d_optional_fields_round_trip(tmp_path):
    j = make_joints3d()
    assert (j.inputs, j.cameras, j.swapped) == ("", None, None)  # files without them read as before
    j.inputs, j.cameras = "0123abcd", ["cam00", "cam01", "cam02"]
    j.swapped = np.zeros((6, 3), bool)
    j.swapped[2, 1] = True
    write_joints3d(tmp_path / "j.h5", j)
    assert_same(j, read_joints3d(tmp_path / "j.h5"))
    j.swapped = np.zeros((6, 4), bool)
    with pytest.raises(SchemaError) as e:
        write_joints3d(tmp_path / "k.h5", j)
    assert str(e.value) == f"{tmp_path / 'k.h5'}: 'swapped' has shape (6, 4), expected (F, C) with C=3"


def test_mano_round_trip(tmp_path):
    m = make_mano()
    write_mano(tmp_path / "m.h5", m)
    back = read_mano(tmp_path / "m.h5")
    assert_same(m, back)
    assert FailureReason.names_of(int(back.quality.failure[1, 0])) == ["reprojection", "temporal_jump"]
    np.testing.assert_array_equal(back.quality.confidence, m.quality.confidence)
    assert back.quality.confidence.dtype == np.float32


def test_mano_inconsistent_leaves_out_the_evidence_flags():
    q = make_mano().quality  # (1, 0): reprojection + temporal jump; (3, 1): no data
    q.failure[5, 0] = FailureReason.FEW_CAMERAS
    assert np.argwhere(q.inconsistent).tolist() == [[1, 0]]
    assert np.argwhere(q.failed).tolist() == [[1, 0], [3, 1], [5, 0]]


def test_mano_confidence_outside_0_1_or_nan_is_refused(tmp_path):
    m = make_mano()
    m.quality.confidence[2, 1] = 1.5
    with pytest.raises(SchemaError) as e:
        write_mano(tmp_path / "m.h5", m)
    assert str(e.value) == f"{tmp_path / 'm.h5'}: 'quality/confidence' has values above 1.0 (max 1.5)"
    m.quality.confidence[2, 1] = np.nan
    with pytest.raises(SchemaError) as e:
        write_mano(tmp_path / "m.h5", m)
    assert str(e.value) == (f"{tmp_path / 'm.h5'}: 'quality/confidence' has 1 NaN/inf values "
                            "(first at index (2, 1))")
    assert not (tmp_path / "m.h5").exists()


def test_mano_version_2_without_confidence_is_refused(tmp_path):
    p = tmp_path / "m.h5"
    write_mano(p, make_mano())
    with h5py.File(p, "r+") as f:  # a fit of the version before confidence
        f.attrs["version"] = 2
        del f["quality/confidence"]
    with pytest.raises(SchemaError) as e:
        read_mano(p)
    assert str(e.value) == (f"{p}: old handdiffuse.mano format version 2 (this handdiffuse reads version 3); "
                            "re-run `handdiffuse fit`")


def test_queue_round_trip(tmp_path):
    items = [QueueItem("seq000", 12, "cam03", "reprojection+temporal_jump", "left", 2.5),
             QueueItem("seq000", 12, "cam05", "few_cameras")]
    write_queue(tmp_path / "q.jsonl", items)
    assert read_queue(tmp_path / "q.jsonl") == items


def test_shard_round_trip_and_window(tmp_path):
    seqs = [make_sequence("demo__seq000", 300, 0), make_sequence("demo__seq001", 41, 1)]
    info = write_shard(tmp_path / "shard-00000.h5", seqs)
    assert info.n_frames == 341
    back = read_shard(tmp_path / "shard-00000.h5")
    for a, b in zip(seqs, back):
        assert_same(a, b)
    with ShardReader(tmp_path / "shard-00000.h5") as r:
        assert r.verify() == []
        w = r.read_window("demo__seq000", 100, 50, ("joints", "valid"))
        np.testing.assert_allclose(w["joints"], seqs[0].joints[100:150], atol=1e-6)
        ds = r.file["sequences/demo__seq000/joints"]
        assert ds.chunks == (256, 42, 3) and ds.compression == "gzip" and ds.fletcher32
        assert r.file.attrs["units"] == "m" and r.file.attrs["version"] == 2
        np.testing.assert_array_equal(r.read_window("demo__seq000", 5, 10, ("confidence",))["confidence"],
                                      seqs[0].confidence[5:15])


def test_shard_version_1_without_confidence_is_refused(tmp_path):
    p = tmp_path / "shard-00000.h5"
    write_shard(p, [make_sequence()])
    with h5py.File(p, "r+") as f:  # a shard of the version before confidence
        f.attrs["version"] = 1
        del f["sequences/s0/confidence"]
    with pytest.raises(SchemaError) as e:
        read_shard(p)
    assert str(e.value) == (f"{p}: old handdiffuse.shard format version 1 (this handdiffuse reads version 2); "
                            "re-run `handdiffuse export`")


def test_shard_confidence_in_0_1_and_0_where_not_valid(tmp_path):
    p = tmp_path / "shard-00000.h5"
    seq = make_sequence()  # frame 10's right hand not valid
    seq.confidence[3, 0] = -0.1
    with pytest.raises(SchemaError) as e:
        write_shard(p, [seq])
    assert str(e.value) == f"{p}: 'sequence 's0' confidence' has values below 0.0 (min -0.1)"
    seq.confidence[3, 0], seq.confidence[10, 1] = 0.5, 0.5
    with pytest.raises(SchemaError) as e:
        write_shard(p, [seq])
    assert str(e.value) == f"{p}: sequence 's0': 'confidence' must be 0 where the hand is not valid"
    assert not p.exists()


# ---- bad input: exact messages -------------------------------------------------------

def test_wrong_shape_message(tmp_path):
    kp = make_keypoints2d()
    kp.keypoints = kp.keypoints[..., :21, :]
    with pytest.raises(SchemaError) as e:
        write_keypoints2d(tmp_path / "k.h5", kp)
    assert str(e.value) == f"{tmp_path / 'k.h5'}: 'keypoints' has shape (3, 5, 21, 3), expected (C, F, 42, 3)"
    assert not (tmp_path / "k.h5").exists()


def test_nan_where_not_allowed_message(tmp_path):
    j = make_joints3d()
    j.joints[4, 7, 1] = np.nan
    with pytest.raises(SchemaError) as e:
        write_joints3d(tmp_path / "j.h5", j)
    assert str(e.value) == (f"{tmp_path / 'j.h5'}: 'joints' has 1 NaN/inf values where n_cameras >= 2 "
                            "(first at index (4, 7, 1))")


def test_nan_written_behind_the_writers_back_is_caught_on_read(tmp_path):
    p = tmp_path / "k.h5"
    write_keypoints2d(p, make_keypoints2d())
    with h5py.File(p, "r+") as f:  # a foreign writer that skips validation (and writes a checksum)
        data = f["keypoints"][()]
        data[1, 2, 3, 0] = np.nan
        del f["keypoints"]
        f.create_dataset("keypoints", data=data).attrs["sha256"] = digest(data)
    with pytest.raises(SchemaError) as e:
        read_keypoints2d(p)
    assert str(e.value) == f"{p}: 'keypoints x, y' has 1 NaN/inf values where score > 0 (first at index (1, 2, 3, 0))"


def test_unknown_shard_version_message(tmp_path):
    p = tmp_path / "shard-00000.h5"
    write_shard(p, [make_sequence()])
    with h5py.File(p, "r+") as f:
        f.attrs["version"] = 7
    with pytest.raises(SchemaError) as e:
        read_shard(p)
    assert str(e.value) == (f"{p}: unknown handdiffuse.shard format version 7 (this handdiffuse reads version 2); "
                            "upgrade handdiffuse, or re-run `handdiffuse export` to rewrite it")


def test_truncated_hdf5_message(tmp_path):
    p = tmp_path / "j.h5"
    write_joints3d(p, make_joints3d(200))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(SchemaError) as e:
        read_joints3d(p)
    assert str(e.value) == f"{p}: truncated HDF5 file (incomplete write or copy); re-run `handdiffuse triangulate`"


def test_wrong_format_and_missing_file_messages(tmp_path):
    p = tmp_path / "j.h5"
    write_joints3d(p, make_joints3d())
    with pytest.raises(SchemaError) as e:
        read_mano(p)
    assert str(e.value) == f"{p}: is a 'handdiffuse.joints3d' file, expected 'handdiffuse.mano'"
    with pytest.raises(SchemaError) as e:
        read_mano(tmp_path / "absent.h5")
    assert str(e.value) == f"{tmp_path / 'absent.h5'}: file not found"


def corrupt_one_byte(path, dataset):
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        b = fh.read(1)
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(bytes([b[0] ^ 0xFF]))


def test_corrupt_byte_is_named(tmp_path):
    p = tmp_path / "shard-00000.h5"
    write_shard(p, [make_sequence("a"), make_sequence("b", seed=3)])
    corrupt_one_byte(p, "sequences/b/hand_pose")
    with ShardReader(p) as r:
        problems = r.verify()
    assert len(problems) == 1
    assert problems[0].startswith(f"{p}: dataset '/sequences/b/hand_pose' is corrupt")


def test_queue_bad_lines(tmp_path):
    p = tmp_path / "queue.jsonl"
    p.write_text('{"sequence": "s", "frame": 1, "camera": "c", "reason": "reprojection"}\n'
                 '{"sequence": "s", "frame": 2, "camera": "c", "reason": "gremlins"}\n')
    with pytest.raises(SchemaError) as e:
        read_queue(p)
    assert str(e.value).startswith(f"{p}:2: unknown reason 'gremlins' (known: no_data, few_cameras,")
    p.write_text('{"sequence": "s", "camera": "c", "reason": "reprojection"}\n')
    with pytest.raises(SchemaError) as e:
        read_queue(p)
    assert str(e.value) == f"{p}:1: missing 'frame'"
