import os
import subprocess
import sys
from collections import Counter

import h5py
import numpy as np
import pytest
import torch

from data_schemas import SchemaError
from data_schemas.dataset import DatasetOptions, append_to_dataset, assign_split
from data_schemas.keypoints2d import write_keypoints2d
from data_schemas.manifest import COLUMNS, read_manifest
from data_schemas.mano import read_mano, write_mano
from data_schemas.session import CameraSpec, SessionConfig, write_session_toml
from data_schemas.shard import ShardReader, read_shard
from data_schemas.validate import validate_path
from hand_model.model import HandModel
from pipeline.export import ExportCommand, export_sessions
from tests.factories import make_keypoints2d, make_mano, make_sequence
from tests.test_h5_schemas import corrupt_one_byte

FRAMES = 24


def make_fitted_session(root, name="demo", fitted=("seq000", "seq001"), unfitted=("seq002",), seed=0):
    """A session folder whose sequences ``fitted`` have mano.h5 (factory fits, frames 1 and 3 each
    with one hand failed) and ``unfitted`` have none; seq000 has a category."""
    cfg = SessionConfig(name=name, fps=30.0, cameras=[CameraSpec(f"cam{i:02d}", 640, 480) for i in range(3)],
                        subject="synthetic-01", capture_date="2026-11-25",
                        sequences={"seq000": {"category": "interlock"}})
    write_session_toml(root / "session.toml", cfg)
    for i, seq in enumerate(fitted):
        write_mano(root / "sequences" / seq / "mano.h5", make_mano(FRAMES, seed + i))
    for seq in unfitted:
        (root / "sequences" / seq / "videos").mkdir(parents=True)
    return root


def write_manual(root, seq, marks):
    """keypoints2d_manual.h5 with a point only at each (camera, frame, hand) of ``marks``."""
    kp = make_keypoints2d(3, FRAMES)
    kp.keypoints[..., :2], kp.keypoints[..., 2] = np.nan, 0.0
    for c, f, h in marks:
        kp.keypoints[c, f, 21 * h + 4] = (100.0, 200.0, 1.0)
    kp.detector = "label-studio"
    write_keypoints2d(root / "sequences" / seq / "keypoints2d_manual.h5", kp)


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def session(tmp_path):
    return make_fitted_session(tmp_path / "demo")


def test_export_keeps_every_frame_with_its_confidence_and_provenance(session, capsys):
    write_manual(session, "seq000", [(1, 2, 0), (2, 5, 1), (0, 5, 1)])
    assert ExportCommand(sessions=[session]).run() == 0
    out = session / "export"
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"exported 2 sequences, {2 * FRAMES} frames -> {out}: 1 shards,")
    assert line.split("MB/s, ")[1].startswith("0 re-exported (old copies left unreferenced), 0 up to date, "
                                              f"1 without mano.h5; dataset 2 sequences, {2 * FRAMES} frames; ")
    seqs = {s.name: s for s in read_shard(out / "shard-00000.h5")}
    assert sorted(seqs) == ["demo.seq000", "demo.seq001"]
    model = HandModel()
    for i, name in enumerate(sorted(seqs)):
        s, fit = seqs[name], make_mano(FRAMES, i)
        with torch.no_grad():
            joints = model(*(torch.as_tensor(a) for a in (fit.global_orient, fit.hand_pose, fit.betas,
                                                         fit.transl))).joints.numpy()
        np.testing.assert_allclose(s.joints, joints.reshape(FRAMES, 42, 3), atol=1e-5)
        assert s.valid.all()  # frame 1 failed the rule, frame 3's right hand had no data: kept, with the fit's trust
        assert fit.quality.failure[1, 0] and fit.quality.failure[3, 1]
        np.testing.assert_array_equal(s.confidence, fit.quality.confidence)
        np.testing.assert_array_equal(s.fit_error, fit.quality.residual3d)
        np.testing.assert_array_equal(s.hand_pose, fit.hand_pose)
        assert (s.session, s.subject, s.capture_date, s.source, s.hand_model, s.flat_hand_mean) == (
            "demo", "synthetic-01", "2026-11-25", "capture", "open_hand", True)
    assert seqs["demo.seq000"].category == "interlock" and seqs["demo.seq001"].category == ""
    manual = seqs["demo.seq000"].manual
    assert {tuple(x) for x in np.argwhere(manual)} == {(2, 0), (5, 1)}
    assert not seqs["demo.seq001"].manual.any()

    m = read_manifest(out)
    assert list(m.columns) == list(COLUMNS)
    row = m.set_index("name").loc["demo.seq000"]
    assert (row.shard, row.group, row.frames, row.fps, row.category, row.session) == (
        "shard-00000.h5", "sequences/demo.seq000", FRAMES, 30.0, "interlock", "demo")
    assert row.manual_frames == 2 and row.valid_fraction == 1.0
    fit = make_mano(FRAMES, 0)
    assert row.mean_fit_error_mm == pytest.approx(1000 * fit.quality.residual3d.mean(), rel=1e-5)
    assert row.split == assign_split("demo.seq000", 0, (0.8, 0.1, 0.1))

    results = validate_path(out)
    assert [r.kind for r in results] == ["shard", "manifest"] and all(r.ok for r in results), results
    assert results[1].summary.startswith(f"2 sequences in 1 shards, {2 * FRAMES} frames; train ")
    assert [r.kind for r in validate_path(session)][-2:] == ["shard", "manifest"]
    assert all(r.ok for r in validate_path(session))


def test_validate_names_the_corrupt_shard_and_dataset(session):
    export_sessions([session], session / "export")
    shard = session / "export" / "shard-00000.h5"
    corrupt_one_byte(shard, "sequences/demo.seq001/hand_pose")
    bad = [r for r in validate_path(session / "export") if not r.ok]
    assert len(bad) == 1 and len(bad[0].problems) == 1
    assert bad[0].problems[0].startswith(f"{shard}: dataset '/sequences/demo.seq001/hand_pose' is corrupt")
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "validate", str(session / "export")],
                       capture_output=True, text=True, env=dict(os.environ, HANDDIFFUSE_LOG="WARNING"))
    assert r.returncode == 1
    assert r.stderr.strip().startswith(f"error: {shard}: dataset '/sequences/demo.seq001/hand_pose' is corrupt")


def test_shard_of_version_3_is_refused(session):
    export_sessions([session], session / "export")
    shard = session / "export" / "shard-00000.h5"
    with h5py.File(shard, "r+") as f:
        f.attrs["version"] = 3
    with pytest.raises(SchemaError) as e:
        ShardReader(shard)
    assert str(e.value) == (f"{shard}: unknown handdiffuse.shard format version 3 (this handdiffuse reads version 2); "
                            "upgrade handdiffuse, or re-run `handdiffuse export` to rewrite it")
    problems = [p for r in validate_path(session / "export") for p in r.problems]
    assert problems == [str(e.value)]  # said once: the manifest check leaves an unreadable shard to its own


def test_manifest_disagreeing_with_the_shards_is_reported(session):
    from data_schemas.manifest import write_manifest

    out = session / "export"
    export_sessions([session], out)
    m = read_manifest(out)
    m.loc[m["name"] == "demo.seq001", "frames"] = 99
    m.loc[m["name"] == "demo.seq000", "shard"] = "shard-00007.h5"
    write_manifest(out, m, 0, (0.8, 0.1, 0.1))
    [shard, manifest] = validate_path(out)
    assert shard.ok and manifest.kind == "manifest"
    assert manifest.problems == [
        f"{out / 'manifest.parquet'}: sequence 'demo.seq001' (shard-00000.h5): {99} frames, the shard holds {FRAMES}",
        f"{out / 'manifest.parquet'}: sequence 'demo.seq000' is in shard 'shard-00007.h5', which does not exist"]


def test_second_export_writes_nothing(session, capsys):
    out = session / "export"
    export_sessions([session], out)
    before = snapshot(out)
    s = export_sessions([session], out)
    assert (s.written, s.shards_written, s.stale) == ([], [], [])
    assert s.skipped_up_to_date == ["demo.seq000", "demo.seq001"] and s.without_mano == ["demo/seq002"]
    assert snapshot(out) == before  # shards and manifest byte-identical
    assert ExportCommand(sessions=[session]).run() == 0
    assert capsys.readouterr().out.startswith(f"{out}: up to date, nothing to do (2 up to date, 1 without mano.h5; ")


def test_adding_a_session_appends_new_shards_only(tmp_path, session):
    out = tmp_path / "dataset"
    export_sessions([session], out)
    before = snapshot(out)
    other = make_fitted_session(tmp_path / "other", name="other", fitted=("seq000", "seq005"), unfitted=(), seed=7)
    s = export_sessions([session, other], out)
    assert s.written == ["other.seq000", "other.seq005"] and s.shards_written == ["shard-00001.h5"]
    assert s.skipped_up_to_date == ["demo.seq000", "demo.seq001"]
    after = snapshot(out)
    assert after["shard-00000.h5"] == before["shard-00000.h5"] and set(after) == set(before) | {"shard-00001.h5"}
    m = read_manifest(out).set_index("name")
    assert m["shard"].to_dict() == {"demo.seq000": "shard-00000.h5", "demo.seq001": "shard-00000.h5",
                                    "other.seq000": "shard-00001.h5", "other.seq005": "shard-00001.h5"}
    assert all(r.ok for r in validate_path(out))


def test_changed_sequence_is_written_again_and_repointed(session):
    out = session / "export"
    export_sessions([session], out)
    old = (out / "shard-00000.h5").read_bytes()
    write_manual(session, "seq001", [(0, 7, 1)])  # merge added manual annotation
    s = export_sessions([session], out)
    assert (s.written, s.stale, s.skipped_up_to_date) == (["demo.seq001"], ["demo.seq001"], ["demo.seq000"])
    assert (out / "shard-00000.h5").read_bytes() == old  # the old copy stays, unreferenced
    m = read_manifest(out).set_index("name")
    assert m.loc["demo.seq001", "shard"] == "shard-00001.h5" and m.loc["demo.seq000", "shard"] == "shard-00000.h5"
    assert m.loc["demo.seq001", "manual_frames"] == 1
    with ShardReader(out / "shard-00001.h5") as r:
        assert r.names == ["demo.seq001"] and np.argwhere(r.read("demo.seq001").manual).tolist() == [[7, 1]]
    assert all(r.ok for r in validate_path(out))
    fit = read_mano(session / "sequences" / "seq000" / "mano.h5")  # a refit changes the fingerprint too
    fit.transl += 0.01
    write_mano(session / "sequences" / "seq000" / "mano.h5", fit)
    s = export_sessions([session], out)
    assert s.stale == ["demo.seq000"] and s.shards_written == ["shard-00002.h5"]


def test_split_is_reproducible_and_by_sequence(tmp_path):
    names = [f"s{i:04d}" for i in range(3000)]
    splits = [assign_split(n, 0, (0.8, 0.1, 0.1)) for n in names]
    assert splits == [assign_split(n, 0, (0.8, 0.1, 0.1)) for n in names]
    share = Counter(splits)
    assert abs(share["train"] / 3000 - 0.8) < 0.03 and abs(share["val"] / 3000 - 0.1) < 0.03
    assert splits != [assign_split(n, 1, (0.8, 0.1, 0.1)) for n in names]
    assert {assign_split(n, 0, (0.0, 0.0, 1.0)) for n in names[:50]} == {"test"}

    seqs = [make_sequence(f"imp.s{i:02d}", 40, i) for i in range(24)]
    opts = DatasetOptions(split_ratios=(0.5, 0.25, 0.25))
    append_to_dataset(tmp_path / "a", seqs, opts)
    append_to_dataset(tmp_path / "b", seqs[:10], opts)  # the same data, added in two goes
    append_to_dataset(tmp_path / "b", seqs[10:], opts)
    a, b = (read_manifest(tmp_path / d).set_index("name")["split"].sort_index() for d in "ab")
    assert a.equals(b) and set(a) == {"train", "val", "test"} and a.index.is_unique
    with pytest.raises(SchemaError) as e:
        append_to_dataset(tmp_path / "b", [make_sequence("imp.new", 40)], DatasetOptions(split_seed=3))
    assert str(e.value) == (
        f"{tmp_path / 'b' / 'manifest.parquet'}: this dataset is split with split_seed 0 and split_ratios "
        "(0.5, 0.25, 0.25), not 3 and (0.5, 0.25, 0.25): export with the same split options (or none), or into a "
        "new folder")
    append_to_dataset(tmp_path / "b", [make_sequence("imp.new", 40)], DatasetOptions())  # none: the dataset's
    m = read_manifest(tmp_path / "b")
    assert m.attrs["split_ratios"] == (0.5, 0.25, 0.25) and "imp.new" in set(m["name"])


def test_shards_group_by_fps_and_fill_to_the_target_size(tmp_path):
    seqs = [make_sequence(f"imp.s{i}", 300, i) for i in range(5)]
    for s in seqs[3:]:
        s.fps = 60.0
    size = sum(getattr(seqs[0], k).nbytes for k in ("joints", "global_orient", "hand_pose", "betas", "transl",
                                                     "valid", "manual", "fit_error", "confidence"))
    opts = DatasetOptions(shard_mb=2.5 * size / 2**20)  # two sequences per shard
    s = append_to_dataset(tmp_path, seqs, opts, fingerprints={"imp.s0": "given"})
    assert s.shards_written == ["shard-00000.h5", "shard-00001.h5", "shard-00002.h5"]
    m = read_manifest(tmp_path).set_index("name")
    assert m["shard"].to_dict() == {"imp.s0": "shard-00000.h5", "imp.s1": "shard-00000.h5",
                                    "imp.s2": "shard-00001.h5", "imp.s3": "shard-00002.h5",
                                    "imp.s4": "shard-00002.h5"}
    assert m.loc["imp.s0", "fingerprint"] == "given" and m.loc["imp.s3", "fps"] == 60.0
    assert append_to_dataset(tmp_path, seqs, opts, fingerprints={"imp.s0": "given"}).written == []


def test_a_killed_run_leaves_a_consistent_dataset_and_a_rerun_finishes(tmp_path):
    seqs = [make_sequence(f"imp.s{i}", 300, i) for i in range(4)]
    opts = DatasetOptions(shard_mb=1e-6)  # one sequence per shard

    def dies_after_two():
        yield from seqs[:2]
        yield seqs[2]
        raise KeyboardInterrupt  # killed while the third shard was being filled

    with pytest.raises(KeyboardInterrupt):
        append_to_dataset(tmp_path, dies_after_two(), opts)
    assert sorted(read_manifest(tmp_path)["name"]) == ["imp.s0", "imp.s1"]
    assert all(r.ok for r in validate_path(tmp_path))
    s = append_to_dataset(tmp_path, seqs, opts)
    assert s.written == ["imp.s2", "imp.s3"] and s.skipped_up_to_date == ["imp.s0", "imp.s1"]
    assert sorted(read_manifest(tmp_path)["name"]) == ["imp.s0", "imp.s1", "imp.s2", "imp.s3"]


@pytest.mark.parametrize("damage", ["truncated", "nan"])
def test_bad_mano_is_one_line_error_and_nothing_is_written(tmp_path, session, capsys, damage):
    mano = session / "sequences" / "seq001" / "mano.h5"
    if damage == "truncated":
        data = mano.read_bytes()
        mano.write_bytes(data[: len(data) - 100])
        why = "truncated HDF5 file (incomplete write or copy); re-run `handdiffuse fit`"
    else:
        with h5py.File(mano, "r+") as f:
            f["transl"][3, 1, 2] = np.nan
            f["transl"].attrs["sha256"] = __import__("data_schemas.h5io", fromlist=["digest"]).digest(f["transl"][()])
        why = "'transl' has 1 NaN/inf values (first at index (3, 1, 2))"
    out = tmp_path / "out"
    assert ExportCommand(sessions=[session], out=out).run() == 1
    err = capsys.readouterr().err
    assert err == f"error: {mano}: {why}\n"
    assert not out.exists()


def test_bad_input_leaves_an_existing_dataset_untouched(tmp_path, session):
    out = tmp_path / "out"
    export_sessions([session], out)
    before = snapshot(out)
    other = make_fitted_session(tmp_path / "other", name="other", unfitted=())
    (other / "sequences" / "seq001" / "mano.h5").write_bytes(b"not hdf5")
    with pytest.raises(SchemaError) as e:
        export_sessions([session, other], out)
    assert str(e.value).startswith(f"{other / 'sequences' / 'seq001' / 'mano.h5'}: not a readable HDF5 file")
    assert snapshot(out) == before


def test_session_errors(tmp_path, session, monkeypatch, capsys):
    empty = make_fitted_session(tmp_path / "empty", name="empty", fitted=())
    with pytest.raises(SchemaError) as e:
        export_sessions([empty], tmp_path / "out")
    assert str(e.value) == f"{empty / 'sequences'}: no sequence has mano.h5: run `handdiffuse fit` first"
    twin = make_fitted_session(tmp_path / "twin", name="demo", fitted=("seq001",), unfitted=())
    with pytest.raises(SchemaError) as e:
        export_sessions([session, twin], tmp_path / "out")
    assert str(e.value) == (f"{twin / 'session.toml'}: sequence 'demo.seq001' is also exported from {session}: "
                            "session names must differ")
    mano = session / "sequences" / "seq000" / "mano.h5"
    fit = read_mano(mano)
    fit.hand_model = "mano"
    write_mano(mano, fit)
    monkeypatch.delenv("HANDDIFFUSE_MANO_DIR", raising=False)
    with pytest.raises(SchemaError) as e:
        export_sessions([session], tmp_path / "out")
    assert str(e.value) == (f"{mano}: fitted with hand model 'mano', which cannot be loaded: MANO parameters "
                            "need your licensed MANO model: pass --mano-dir (the folder with MANO_RIGHT.pkl and "
                            "MANO_LEFT.pkl) or set $HANDDIFFUSE_MANO_DIR")
    assert not (tmp_path / "out").exists()
    assert ExportCommand(sessions=[]).run() == 2
    assert capsys.readouterr().err == "error: export needs at least one SESSION\n"


def test_export_through_the_cli(session):
    from pipeline import cli

    assert cli.main(["export", str(session)]) == 0
    assert all(r.ok for r in validate_path(session / "export"))
