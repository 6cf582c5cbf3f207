"""Path confinement: a name read from a file or an option never leads out of its root.

Each stage is given a crafted name (``../../other/sequences/seq000`` in tasks.jsonl, queue.jsonl,
``--sequences``; a shard column leaving the dataset; a sequence folder linked elsewhere) and must
stop with one line naming where the name came from, exit 1, and leave the other session's files
as they were.
"""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_schemas import SchemaError
from data_schemas.calibration import write_calibration
from data_schemas.joints3d import write_joints3d
from data_schemas.keypoints2d import write_keypoints2d
from data_schemas.mano import write_mano
from data_schemas.paths import check_name, inside
from data_schemas.session import MANO, Session
from tests.factories import make_joints3d, make_keypoints2d, make_mano, make_sequence
from tests.test_session import make_session

ESCAPE = "../../other/sequences/seq000"  # from <tmp>/s/sequences/ to <tmp>/other/sequences/seq000
PLAIN = "(letters, digits, '_', '.', '-', not starting with '.'): names may not lead to other folders"


def not_plain(what: str, name: str) -> str:
    return f"{what} {name!r} is not a plain name {PLAIN}"


def snapshot(folder) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def two_sessions(tmp_path):
    """``s``: a calibrated session with an empty sequences/ folder; ``other``: one whose seq000
    has keypoints2d.h5, joints3d.h5 and mano.h5 (5 frames, cameras cam00-cam02)."""
    s, other = tmp_path / "s", tmp_path / "other"
    for root in (s, other):
        root.mkdir()
        _, rig = make_session(root)
        write_calibration(root / "calibration" / "calibration.toml", rig)
        (root / "sequences").mkdir()
    seq = other / "sequences" / "seq000"
    write_keypoints2d(seq / "keypoints2d.h5", make_keypoints2d(3, 5))
    write_joints3d(seq / "joints3d.h5", make_joints3d(5))
    write_mano(seq / "mano.h5", make_mano(5))
    return s, other


def cli(capsys, *args) -> tuple[int, str]:
    """(exit code, its error lines joined) of ``handdiffuse ARGS`` run in this process."""
    from pipeline.cli import main

    rc = main([str(a) for a in args])
    return rc, "\n".join(x for x in capsys.readouterr().err.splitlines() if x.startswith("error:"))


# --- the two functions ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["seq000", "cam_07", "shard-00003.h5", "a.b-c_d", "0"])
def test_check_name_accepts_plain_names(name):
    assert check_name(name, "src") == name


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "a/b", "../seq000", "/abs", "a\\b", "", "seq 0", "é", None, 3])
def test_check_name_refuses_anything_else(name):
    with pytest.raises(SchemaError) as e:
        check_name(name, "tasks.jsonl:2", "sequence")
    assert str(e.value) == f"tasks.jsonl:2: {not_plain('sequence', name)}"


def test_inside_keeps_relative_paths_and_links_within_the_root(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "a")
    assert inside(tmp_path, "a/b/c.h5", "src") == tmp_path / "a" / "b" / "c.h5"
    assert inside(tmp_path, "link/b", "src") == tmp_path / "link" / "b"
    assert inside(tmp_path, "not/yet/there.h5", "src") == tmp_path / "not" / "yet" / "there.h5"


@pytest.mark.parametrize("name, cause", [
    ("../x", "path '../x' leaves {root} ('..' is not allowed)"),
    ("a/../../x", "path 'a/../../x' leaves {root} ('..' is not allowed)"),
    ("a/..", "path 'a/..' leaves {root} ('..' is not allowed)"),
    ("/etc/passwd", "path '/etc/passwd' is absolute: expected a path inside {root}"),
    ("", "path '' is not a relative path inside {root}"),
    (None, "path None is not a relative path inside {root}"),
])
def test_inside_refuses_dotdot_and_absolute_paths(tmp_path, name, cause):
    with pytest.raises(SchemaError) as e:
        inside(tmp_path, name, "opt")
    assert str(e.value) == "opt: " + cause.format(root=tmp_path)


def test_inside_refuses_a_symlink_out_of_the_root(tmp_path):
    root, out = tmp_path / "root", tmp_path / "out"
    root.mkdir()
    out.mkdir()
    (root / "seq").symlink_to(out)
    (root / "file.h5").symlink_to(out / "file.h5")
    for name, real in (("seq", out), ("seq/mano.h5", out / "mano.h5"), ("file.h5", out / "file.h5")):
        with pytest.raises(SchemaError) as e:
            inside(root, name, "src")
        assert str(e.value) == f"src: path '{name}' leads out of {root} through a symlink (to {os.path.realpath(real)})"


# --- the session: path templates and --sequences ------------------------------------------------------

def test_session_paths_take_plain_names_only(two_sessions):
    s, _ = two_sessions
    session = Session.open(s)
    assert session.path(MANO, seq="seq000") == s / "sequences" / "seq000" / "mano.h5"
    with pytest.raises(SchemaError) as e:
        session.path(MANO, seq=ESCAPE)
    assert str(e.value) == f"{s / 'sequences'}: {not_plain('sequence', ESCAPE)}"
    with pytest.raises(SchemaError) as e:
        session.select_sequences([ESCAPE], "detect")
    assert str(e.value) == f"--sequences: {not_plain('sequence', ESCAPE)}"


@pytest.mark.parametrize("stage", ["detect", "triangulate", "fit", "queue"])
def test_stages_refuse_sequences_outside_the_session(two_sessions, capsys, stage):
    s, other = two_sessions
    before = snapshot(other)
    rc, line = cli(capsys, stage, s, "--sequences", ESCAPE)
    assert (rc, line) == (1, f"error: --sequences: {not_plain('sequence', ESCAPE)}")
    assert snapshot(other) == before


def test_a_sequence_folder_linked_out_of_the_session_is_refused(two_sessions, capsys):
    s, other = two_sessions
    (s / "sequences" / "seq000").symlink_to(other / "sequences" / "seq000")
    before = snapshot(other)
    rc, line = cli(capsys, "fit", s)
    real = os.path.realpath(other / "sequences" / "seq000" / "joints3d.h5")
    assert (rc, line) == (1, f"error: {s / 'sequences'}: path 'sequences/seq000/joints3d.h5' leads out of {s} "
                             f"through a symlink (to {real})")
    assert snapshot(other) == before


def test_a_videos_folder_may_live_on_another_disk(tmp_path):
    from data_schemas.session import SEQUENCE_DIR, SEQUENCE_VIDEOS, CameraSpec, Session, SessionConfig, \
        write_session_toml

    root, raw = tmp_path / "s", tmp_path / "raw" / "take1"
    write_session_toml(root / "session.toml", SessionConfig("s", 30.0, [CameraSpec("cam00", 64, 48)]))
    raw.mkdir(parents=True)
    (raw / "cam00.MP4").write_bytes(b"")
    (root / "sequences" / "seq000").mkdir(parents=True)
    (root / "sequences" / "seq000" / "videos").symlink_to(raw)
    session = Session.open(root)
    assert session.path(SEQUENCE_VIDEOS, seq="seq000") == root / "sequences" / "seq000" / "videos"
    with pytest.raises(SchemaError):  # the sequence's own folder (where outputs go) stays confined
        (root / "sequences" / "seq001").symlink_to(raw)
        session.path(SEQUENCE_DIR, seq="seq001")


# --- the annotation loop: queue.jsonl and tasks.jsonl -----------------------------------------------------

def queue_line(**change) -> str:
    item = {"sequence": "seq000", "frame": 3, "camera": "cam02", "hand": "left", "reason": "few_cameras",
            "priority": 1.0}
    return json.dumps({**item, **change}) + "\n"


@pytest.mark.parametrize("field, name, what", [("sequence", ESCAPE, "sequence"), ("camera", "../cam02", "camera")])
def test_validate_and_annotate_refuse_a_queue_item_outside_the_session(two_sessions, capsys, field, name, what):
    from annotation.tasks import import_tasks

    s, other = two_sessions
    queue = s / "annotation" / "queue.jsonl"
    queue.parent.mkdir()
    queue.write_text(queue_line() + queue_line(frame=4, **{field: name}))
    before = snapshot(other)
    rc, line = cli(capsys, "validate", queue)
    assert (rc, line) == (1, f"error: {queue}:2: {not_plain(what, name)}")

    class NoServer:  # the queue is refused before Label Studio is asked anything
        def __getattr__(self, name):
            raise AssertionError(f"Label Studio was asked for {name}")

    with pytest.raises(SchemaError) as e:
        import_tasks(s, NoServer())
    assert str(e.value) == f"{queue}:2: {not_plain(what, name)}"
    assert not (s / "annotation" / "images").exists() and snapshot(other) == before


def test_merge_refuses_a_task_outside_the_session(two_sessions, capsys):
    from annotation.records import TaskRecord
    from annotation.tasks import task_payload

    s, other = two_sessions
    guess = np.full((42, 2), np.nan)
    guess[:21] = np.linspace([120, 60], [280, 140], 21)
    record = TaskRecord(f"{ESCAPE}/000003/cam02", ESCAPE, 3, "cam02", "left", "few_cameras",
                        "views/seq000/000003-cam02.png", [200, 100], [100, 50, 200, 100], "fit",
                        TaskRecord.guess_list(guess), task_id=7)
    tasks = s / "annotation" / "tasks.jsonl"
    tasks.parent.mkdir()
    tasks.write_text(json.dumps(record.__dict__) + "\n")  # as a crafted file would have it
    payload = task_payload(record)
    result = payload["predictions"][0]["result"]
    result[0]["value"]["x"] += 5.0  # the wrist moved: a manual point
    export = s / "export.json"
    export.write_text(json.dumps([{"id": 7, "data": payload["data"], "annotations": [
        {"id": 40, "completed_by": 3, "result": result, "was_cancelled": False,
         "updated_at": "2026-11-25T10:00:00Z"}]}]))
    before = snapshot(other)
    rc, line = cli(capsys, "merge", s, "--export", export)
    assert (rc, line) == (1, f"error: {tasks}:1: {not_plain('sequence', ESCAPE)}")
    assert snapshot(other) == before
    assert not (other / "sequences" / "seq000" / "keypoints2d_manual.h5").exists()


# --- the dataset: the manifest's shard column ------------------------------------------------------------

def dataset_with_shard(tmp_path, shard_of):
    """A dataset in ``tmp_path/data`` of one sequence; the manifest's shard column rewritten to
    ``shard_of(written shard name)`` as a crafted file would have it (the shard moved to
    ``tmp_path/elsewhere``)."""
    from data_schemas.dataset import DatasetOptions, append_to_dataset

    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    append_to_dataset(data, [make_sequence("imp.s0", 60)], DatasetOptions(split_ratios=(1.0, 0.0, 0.0)))
    elsewhere.mkdir()
    [shard] = sorted(data.glob("shard-*.h5"))
    os.replace(shard, elsewhere / shard.name)
    path = data / "manifest.parquet"
    table = pq.read_table(path)
    i = table.column_names.index("shard")
    column = pa.array([shard_of(shard.name, data, elsewhere)] * len(table), pa.string())
    pq.write_table(table.set_column(i, "shard", column), path)
    return data, path, elsewhere / shard.name


def test_validate_and_train_refuse_a_shard_outside_the_dataset(tmp_path, capsys):
    from generation.data import WindowDataset

    data, manifest, moved = dataset_with_shard(tmp_path, lambda name, *_: f"../elsewhere/{name}")
    name = f"../elsewhere/{moved.name}"
    rc, line = cli(capsys, "validate", manifest)
    assert (rc, line) == (1, f"error: {manifest}: {not_plain('shard', name)}")
    with pytest.raises(SchemaError) as e:
        WindowDataset(data, window=10)
    assert str(e.value) == f"{manifest}: {not_plain('shard', name)}"


def test_a_shard_linked_out_of_the_dataset_is_refused(tmp_path, capsys):
    from generation.data import WindowDataset

    def link(name, data, elsewhere):
        (data / "linked.h5").symlink_to(elsewhere / name)
        return "linked.h5"

    data, manifest, moved = dataset_with_shard(tmp_path, link)
    cause = f"shard 'linked.h5' leads out of {data} through a symlink (to {os.path.realpath(moved)})"
    rc, line = cli(capsys, "validate", manifest)
    assert (rc, line) == (1, f"error: {manifest}: {cause}")
    with pytest.raises(SchemaError) as e:
        WindowDataset(data, window=10)
    assert str(e.value) == f"{manifest}: {cause}"
