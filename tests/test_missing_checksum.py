"""A dataset whose ``sha256`` attribute was removed is refused by every reader (format version 1
writes one on every dataset): its content cannot be checked, so it may have been changed."""

import h5py
import pytest

from data_schemas import SchemaError
from data_schemas.joints3d import write_joints3d
from data_schemas.keypoints2d import write_keypoints2d
from data_schemas.mano import write_mano
from data_schemas.shard import ShardReader, write_shard
from pipeline.cli import main
from tests.factories import make_joints3d, make_keypoints2d, make_mano, make_sequence
from tests.test_export import make_fitted_session


def strip_checksum(path, dataset):
    """Change ``dataset`` and delete its checksum, as a foreign tool editing the file would."""
    with h5py.File(path, "r+") as f:
        ds = f[dataset]
        data = ds[()]
        data.flat[0] = data.flat[0] + 1
        ds[...] = data
        del ds.attrs["sha256"]


def missing(path, dataset, stage):
    return (f"{path}: dataset '/{dataset}' has no checksum (its 'sha256' attribute was removed: the file was "
            f"changed outside handdiffuse); re-run `handdiffuse {stage}`")


def errors(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("name, write, make, dataset, stage", [
    ("keypoints2d.h5", write_keypoints2d, make_keypoints2d, "keypoints", "detect"),
    ("joints3d.h5", write_joints3d, make_joints3d, "joints", "triangulate"),
    ("mano.h5", write_mano, make_mano, "transl", "fit"),
    ("mano.h5", write_mano, make_mano, "quality/residual3d", "fit"),
])
def test_validate_refuses_a_dataset_without_its_checksum(tmp_path, capsys, name, write, make, dataset, stage):
    p = tmp_path / name
    write(p, make())
    strip_checksum(p, dataset)
    assert main(["validate", str(p)]) == 1
    assert errors(capsys) == [f"error: {missing(p, dataset, stage)}"]


def test_export_refuses_a_fit_without_its_checksum(tmp_path, capsys):
    session = make_fitted_session(tmp_path / "demo")
    mano = session / "sequences" / "seq001" / "mano.h5"
    strip_checksum(mano, "hand_pose")
    assert main(["export", str(session)]) == 1
    assert errors(capsys) == [f"error: {missing(mano, 'hand_pose', 'fit')}"]
    out = session / "export"
    assert not out.exists() or not [p for p in out.iterdir() if not p.name.endswith(".lock")]


def test_shard_reader_refuses_a_dataset_without_its_checksum(tmp_path, capsys):
    p = tmp_path / "shard-00000.h5"
    write_shard(p, [make_sequence(n_frames=20)])
    strip_checksum(p, "sequences/s0/joints")
    with pytest.raises(SchemaError) as e:  # before any read: windows are read without their checksum
        ShardReader(p)
    assert str(e.value) == missing(p, "sequences/s0/joints", "export")
    assert main(["validate", str(p)]) == 1
    assert errors(capsys) == [f"error: {missing(p, 'sequences/s0/joints', 'export')}"]
