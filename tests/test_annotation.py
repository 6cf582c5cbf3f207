"""The annotation loop without a server: crops and percent coordinates, the labeling interface,
checking exports, the untouched-point rule, and a merge + refit of a small studio session from
an export made here (the real server: tests/test_annotation_labelstudio.py)."""

import copy
import json
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from annotation import server
from annotation.cli import AnnotateStopCommand, AnnotationStatusCommand
from annotation.crops import CropBox, crop_box, inside_percent, to_percent, to_pixels
from annotation.labels import CONTROL, HAND_COLOURS, OBJECT, keypoint_results, label_config
from annotation.merge import UNTOUCHED_PX, parse_export
from annotation.records import MERGED, TASKS, TaskRecord, read_merge_records, read_task_records, write_task_records
from annotation.status import annotation_status
from annotation.tasks import make_records, task_payload
from capture.studio.build import StudioConfig, build_session
from data_schemas import SchemaError
from data_schemas.keypoints import KEYPOINT_NAMES
from data_schemas.keypoints2d import read_keypoints2d, write_keypoints2d
from data_schemas.mano import read_mano
from data_schemas.queue import read_queue
from data_schemas.session import KEYPOINTS2D_MANUAL, MANO, Session
from pipeline.merge import MergeConfig, merge_export

SEQ = "seq000"
SOURCE = "test-export.json"


# --- a small session with an inconsistent frame in the queue (shared with the server test) ----------------

def queued_session(root: Path) -> Path:
    """A studio session (8 cameras, 8 frames) run through triangulate and fit on ground-truth
    detections, except frame 3's left hand: seen by two cameras only, both 6 px off and the second
    30 px more, across. The two views disagree: the fit is inconsistent there (few cameras, and
    reprojection) and the queue holds up to 3 views of it (a hand with few views that agree with the
    fit would not be queued)."""
    from fitting.fit_stage import fit_session
    from fitting.triangulate_stage import triangulate_session

    build_session(StudioConfig(out=root, sequences=1, frames=8, board_frames=1, seed=6, max_frame_offset=0))
    gt = root / "ground_truth"
    shutil.copy(gt / "calibration.toml", root / "calibration" / "calibration.toml")
    kp = read_keypoints2d(gt / "sequences" / SEQ / "keypoints2d.h5")
    kp.keypoints[2:, 3, :21] = (np.nan, np.nan, 0.0)
    kp.keypoints[:2, 3, :21, 2] = 1.0
    kp.keypoints[:2, 3, :21, 0] += 6.0
    kp.keypoints[1, 3, :21, 1] += 30.0
    write_keypoints2d(root / "sequences" / SEQ / "keypoints2d.h5", kp)
    triangulate_session(root)
    fit_session(root)
    return root


def truth_px(root: Path, record: TaskRecord) -> np.ndarray:
    """(42, 2) the true pixels of the record's view (ground truth, which no stage reads)."""
    gt = read_keypoints2d(root / "ground_truth" / "sequences" / record.sequence / "keypoints2d.h5")
    return gt.keypoints[gt.cameras.index(record.camera), list(gt.frames).index(record.frame), :, :2]


def annotate_like_a_person(root: Path, record: TaskRecord, prediction: list[dict]) -> tuple[list[dict], dict]:
    """The prediction with the left hand's points dragged to the truth (the right hand's left
    alone): (annotation result, {keypoint index: (u, v) full-frame px moved to})."""
    result = copy.deepcopy(prediction)
    truth = truth_px(root, record)
    moved = {}
    for r in result:
        r.pop("id", None)
        j = KEYPOINT_NAMES.index(r["value"]["keypointlabels"][0])
        if j < 21:
            x, y = to_percent(truth[j], record.box)
            r["value"]["x"], r["value"]["y"] = float(x), float(y)
            moved[j] = tuple(truth[j])
    return result, moved


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    root = queued_session(tmp_path_factory.mktemp("annotation") / "s")
    items = read_queue(root / "annotation" / "queue.jsonl")
    records = make_records(Session.open(root), items)
    for i, r in enumerate(records, start=1):
        r.task_id = i  # as if imported
    write_task_records(root / TASKS, records)
    return root


def export_of(root: Path, records: list[TaskRecord]) -> tuple[list[dict], dict]:
    """A Label Studio JSON export of ``records``' tasks, each annotated by ``annotate_like_a_person``;
    and what was moved, by key."""
    export, moved = [], {}
    for r in records:
        payload = task_payload(r)
        result, moved[r.key] = annotate_like_a_person(root, r, payload["predictions"][0]["result"])
        export.append({"id": r.task_id, "data": payload["data"], "annotations": [
            {"id": 100 + r.task_id, "completed_by": 1, "result": result, "was_cancelled": False,
             "created_at": "2026-11-25T10:00:00.000000Z", "updated_at": "2026-11-25T10:05:00.000000Z"}]})
    return export, moved


# --- crops and coordinates ---------------------------------------------------------------------------

def test_percent_pixel_round_trip_with_crops():
    rng = np.random.default_rng(0)
    for box in (CropBox(0, 0, 640, 512), CropBox(301, 88, 212, 180), CropBox(17, 5, 96, 97)):
        px = np.stack([rng.uniform(box.x0 - 0.5, box.x0 + box.w - 0.5, 50),
                       rng.uniform(box.y0 - 0.5, box.y0 + box.h - 0.5, 50)], axis=-1)
        pct = to_percent(px, box)
        assert inside_percent(pct).all()
        np.testing.assert_allclose(to_pixels(pct, box), px, atol=1e-9)
    box = CropBox(100, 50, 200, 100)
    # the crop's first pixel centre is half a pixel in from its corner; the far edge is 100 %
    np.testing.assert_allclose(to_percent([100.0, 50.0], box), [0.25, 0.5])
    np.testing.assert_allclose(to_pixels([100.0, 100.0], box), [299.5, 149.5])
    assert not inside_percent(np.array([[100.01, 50.0], [-0.1, 3.0], [np.nan, 1.0]])).any()


def test_crop_box_holds_the_points_with_a_margin_inside_the_image():
    pts = np.array([[200.0, 150.0], [260.0, 230.0], [np.nan, np.nan]])
    box = crop_box(pts, (640, 512))
    lo, hi = pts[:2].min(0), pts[:2].max(0)
    assert box.x0 < lo[0] - 12 and box.y0 < lo[1] - 12
    assert box.x0 + box.w > hi[0] + 12 and box.y0 + box.h > hi[1] + 12
    near_corner = crop_box(np.array([[3.0, 500.0], [30.0, 510.0]]), (640, 512))
    assert near_corner.x0 == 0 and near_corner.y0 + near_corner.h == 512 and near_corner.w >= 48
    assert crop_box(np.full((42, 2), np.nan), (640, 512)) == CropBox(0, 0, 640, 512)
    assert crop_box(np.array([[-900.0, -900.0]]), (640, 512)) == CropBox(0, 0, 640, 512)


# --- the labeling interface ----------------------------------------------------------------------------

def test_label_config_has_the_42_keypoints_in_two_colours():
    root = ET.fromstring(label_config())
    control = root.find("KeyPointLabels")
    image = root.find("Image")
    assert control.get("name") == CONTROL and control.get("toName") == OBJECT == image.get("name")
    assert image.get("value") == "$image"
    labels = control.findall("Label")
    assert [lb.get("value") for lb in labels] == list(KEYPOINT_NAMES)
    colours = [lb.get("background") for lb in labels]
    assert set(colours[:21]) == {HAND_COLOURS["left"]} and set(colours[21:]) == {HAND_COLOURS["right"]}
    assert HAND_COLOURS["left"] != HAND_COLOURS["right"]


def test_keypoint_results_keep_the_points_on_the_image():
    box = CropBox(100, 50, 200, 100)
    guess = np.full((42, 2), np.nan)
    guess[0] = (150.0, 80.0)
    guess[5] = (400.0, 80.0)  # off the crop
    guess[30] = (299.4, 149.4)
    res = keypoint_results(guess, box, (200, 100))
    assert [r["value"]["keypointlabels"] for r in res] == [["left_wrist"], ["right_middle1"]]
    assert all(r["original_width"] == 200 and r["original_height"] == 100 for r in res)
    np.testing.assert_allclose(to_pixels([res[0]["value"]["x"], res[0]["value"]["y"]], box), guess[0])


# --- checking exports ------------------------------------------------------------------------------------

def a_record() -> TaskRecord:
    guess = np.full((42, 2), np.nan)
    guess[:21] = np.linspace([120, 60], [280, 140], 21)
    return TaskRecord("seq000/000003/cam02", "seq000", 3, "cam02", "left", "few_cameras",
                      "views/seq000/000003-cam02.png", [200, 100], [100, 50, 200, 100], "fit",
                      TaskRecord.guess_list(guess), task_id=7)


def an_export(record: TaskRecord, edit=None) -> list[dict]:
    payload = task_payload(record)
    result = copy.deepcopy(payload["predictions"][0]["result"])
    result[0]["value"]["x"] += 5.0  # the wrist dragged 10 px to the right
    task = {"id": record.task_id, "data": payload["data"], "annotations": [
        {"id": 40, "completed_by": 3, "result": result, "was_cancelled": False,
         "updated_at": "2026-11-25T10:00:00Z"}]}
    if edit:
        edit(task)
    return [task]


def test_untouched_points_are_not_manual():
    record = a_record()
    export = an_export(record)
    nudged = export[0]["annotations"][0]["result"][1]["value"]
    nudged["x"] += 100 * 0.5 * UNTOUCHED_PX / record.crop[2]  # half the tolerance: still "left as it was"
    [view] = parse_export(export, {record.key: record}, SOURCE, {3: "a@lab.org"})
    assert view.points.keys() == {0} and view.untouched == 20
    np.testing.assert_allclose(view.points[0], record.guess_px[0] + (10.0, 0.0), atol=1e-6)
    assert (view.annotator, view.annotation_id, view.updated_at) == ("a@lab.org", 40, "2026-11-25T10:00:00.000000Z")


def test_a_placed_point_without_a_guess_is_manual_and_a_removed_one_is_nothing():
    record = a_record()

    def edit(task):
        res = task["annotations"][0]["result"]
        del res[3]  # left_thumb3 taken away
        res.append(dict(copy.deepcopy(res[0]), value={"x": 50.0, "y": 50.0, "width": 0.6,
                                                      "keypointlabels": ["right_wrist"]}))

    [view] = parse_export(an_export(record, edit), {record.key: record}, SOURCE)
    assert sorted(view.points) == [0, 21] and view.untouched == 19
    np.testing.assert_allclose(view.points[21], (199.5, 99.5))
    assert view.annotator == "user 3"


def test_cancelled_annotations_and_tasks_without_one_are_skipped():
    record = a_record()

    def edit(task):
        task["annotations"][0]["was_cancelled"] = True

    assert parse_export(an_export(record, edit), {record.key: record}, SOURCE) == []


@pytest.mark.parametrize("edit, message", [
    (lambda t: t["annotations"][0]["result"][2]["value"].update(keypointlabels=["left_thumb5"]),
     "task 7 (seq000/000003/cam02), annotation 40: unknown label 'left_thumb5'"),
    (lambda t: t["annotations"][0]["result"][2]["value"].update(x=104.25),
     "task 7 (seq000/000003/cam02), annotation 40: point 'left_thumb2' at (104.2%, 18.5%) is outside the image"),
    (lambda t: t["data"].update(key="seq000/000004/cam02"),
     f"task 7 (seq000/000004/cam02): unknown task key 'seq000/000004/cam02' (not a task of {TASKS})"),
    (lambda t: t.update(id=8), f"task 8 (seq000/000003/cam02): the key is task 7 in {TASKS}"),
    (lambda t: t["annotations"][0]["result"][2]["value"].update(keypointlabels=["left_thumb2", "right_thumb2"]),
     "task 7 (seq000/000003/cam02), annotation 40: a point is labelled with both hands (left_thumb2, right_thumb2)"),
    (lambda t: t["annotations"][0]["result"][2]["value"].update(keypointlabels=["left_wrist"]),
     "task 7 (seq000/000003/cam02), annotation 40: label 'left_wrist' is placed twice"),
    (lambda t: t["annotations"][0]["result"][2].update(original_width=400),
     "task 7 (seq000/000003/cam02), annotation 40: point 'left_thumb2' was placed on a 400x100 image, the task's "
     "is 200x100"),
    (lambda t: t["annotations"][0]["result"][2].update(type="rectanglelabels"),
     "task 7 (seq000/000003/cam02), annotation 40: a result of type 'rectanglelabels' (expected keypointlabels)"),
    (lambda t: t["data"].update(crop=[0, 0, 200, 100]),
     f"task 7 (seq000/000003/cam02): crop [0, 0, 200, 100] differs from {TASKS}'s [100, 50, 200, 100]"),
])
def test_malformed_exports_are_rejected_with_one_line(edit, message):
    record = a_record()
    with pytest.raises(SchemaError) as e:
        parse_export(an_export(record, edit), {record.key: record}, SOURCE)
    assert str(e.value) == f"{SOURCE}: {message}"


def test_an_export_that_is_not_a_list_of_tasks():
    with pytest.raises(SchemaError, match=r"^test-export.json: expected a JSON list of tasks"):
        parse_export({"tasks": []}, {}, SOURCE)
    with pytest.raises(SchemaError, match=r"^test-export.json: item 0 is not a task \(no 'data' object\)$"):
        parse_export([3], {}, SOURCE)


# --- records ---------------------------------------------------------------------------------------------

def test_task_records_round_trip_and_errors(tmp_path):
    path = tmp_path / "tasks.jsonl"
    write_task_records(path, [a_record()])
    [back] = read_task_records(path)
    assert back == a_record()
    line = json.loads(path.read_text())
    line["crop"] = [100, 50, 0, 100]
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(SchemaError) as e:
        read_task_records(path)
    assert str(e.value) == (f"{path}:1: 'crop' must be [x0, y0, w, h] with x0, y0 >= 0 and w, h > 0, "
                            "got [100, 50, 0, 100]")
    assert read_task_records(tmp_path / "none.jsonl") == []


# --- the server's credentials and environment (no server started) -------------------------------------------

def test_credentials_are_generated_once_into_a_private_file(tmp_path, monkeypatch):
    for k in (server.TOKEN_ENV, server.PASSWORD_ENV, server.USER_ENV):
        monkeypatch.delenv(k, raising=False)
    first = server.credentials(tmp_path)
    path = tmp_path / server.SECRETS
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(first.token) == 40 and first.username == server.DEFAULT_USER
    assert server.credentials(tmp_path).token == first.token  # once
    assert first.token not in repr(first) and first.password not in repr(first)
    monkeypatch.setenv(server.TOKEN_ENV, "from-the-environment-1")
    creds = server.credentials(tmp_path)
    assert creds.token == "from-the-environment-1" and creds.token_source == f"${server.TOKEN_ENV}"
    assert "from-the-environment-1" not in path.read_text()
    monkeypatch.setenv(server.TOKEN_ENV, "has space")
    with pytest.raises(SchemaError) as e:
        server.credentials(tmp_path)
    assert str(e.value) == f"${server.TOKEN_ENV}: the API token must be 6 to 40 characters of A-Z a-z 0-9 _ -"
    monkeypatch.delenv(server.TOKEN_ENV)
    path.chmod(0o644)
    with pytest.raises(SchemaError, match=r"is readable by other users; `chmod 600` it$"):
        server.credentials(tmp_path)


def test_server_environment_is_built_from_scratch(tmp_path, monkeypatch):
    for k, v in (("LABEL_STUDIO_DEBUG", "1"), ("DEBUG", "1"), ("HOST", "0.0.0.0"), ("USERNAME", "someone"),
                 ("PORT", "80")):
        monkeypatch.setenv(k, v)
    env = server.server_env(tmp_path, server.Credentials("u@x.org", "pw-123456", "tok-123456", "test"))
    assert not {"LABEL_STUDIO_DEBUG", "DEBUG", "HOST", "USERNAME", "PORT"} & env.keys()
    assert env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] == "true"
    assert env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == str((tmp_path / "annotation" / "images").resolve())
    assert env["LABEL_STUDIO_BASE_DATA_DIR"] == str((tmp_path / "annotation" / "labelstudio" / "data").resolve())
    assert env["LABEL_STUDIO_USER_TOKEN"] == "tok-123456"


def test_stop_without_a_server(tmp_path, capsys):
    (tmp_path / "annotation" / "labelstudio").mkdir(parents=True)
    assert server.stop_server(tmp_path) is None
    record = tmp_path / server.RECORD
    record.write_text(json.dumps({"pid": os.getpid(), "port": 9}))  # a live PID that is no Label Studio
    assert server.running_server(tmp_path) is None
    assert server.stop_server(tmp_path) is None and not record.exists()
    assert AnnotateStopCommand(tmp_path).run() == 0
    assert capsys.readouterr().out == f"{tmp_path}: no Label Studio server was running\n"


# --- merge and refit of a studio session, from an export made here --------------------------------------------

def test_tasks_are_crops_with_the_fit_as_guess(session):
    records = read_task_records(session / TASKS)
    assert len(records) == len(read_queue(session / "annotation" / "queue.jsonl")) >= 1
    for r in records:
        assert r.guess_source == "fit" and r.frame == 3 and r.hand == "left"
        image = session / "annotation" / "images" / r.image
        import cv2

        assert cv2.imread(str(image)).shape == (r.image_size[1], r.image_size[0], 3)
        truth = truth_px(session, r)
        inside = (truth >= np.array(r.crop[:2]) - 0.5) & (truth < np.array(r.crop[:2]) + r.crop[2:] - 0.5)
        assert inside.all()  # both hands are on the crop
        assert np.nanmax(np.linalg.norm(r.guess_px - truth, axis=-1)) < 25  # the fit is near, not on it


def test_merge_stores_the_moved_points_and_refits_toward_them(tmp_path, session, capsys):
    root = tmp_path / "s"
    shutil.copytree(session, root)
    records = read_task_records(root / TASKS)
    export, moved = export_of(root, records)
    bad = copy.deepcopy(export)
    bad[-1]["annotations"][0]["result"][0]["value"]["keypointlabels"] = ["left_pinky9"]
    mano_bytes = (root / "sequences" / SEQ / "mano.h5").read_bytes()
    with pytest.raises(SchemaError, match=r"unknown label 'left_pinky9'$"):
        merge_export(root, bad, SOURCE)
    assert not (root / KEYPOINTS2D_MANUAL.format(seq=SEQ)).exists() and not (root / MERGED).exists()
    assert (root / "sequences" / SEQ / "mano.h5").read_bytes() == mano_bytes  # nothing merged

    before = read_mano(root / MANO.format(seq=SEQ))
    s = merge_export(root, export, SOURCE, MergeConfig(), users={1: "a@lab.org"})
    assert s.views == len(records) and s.points == sum(len(m) for m in moved.values()) and s.skipped == 0
    manual = read_keypoints2d(root / KEYPOINTS2D_MANUAL.format(seq=SEQ))
    kp = read_keypoints2d(root / "sequences" / SEQ / "keypoints2d.h5")
    assert manual.cameras == kp.cameras and np.array_equal(manual.frames, kp.frames)
    placed = manual.keypoints[..., 2] > 0
    assert placed.sum() == s.points
    for r in records:
        c, f = manual.cameras.index(r.camera), list(manual.frames).index(r.frame)
        for j, uv in moved[r.key].items():
            assert np.linalg.norm(manual.keypoints[c, f, j, :2] - uv) < 0.5
        assert not placed[c, f, 21:].any()  # the right hand was left as pre-annotated
        assert manual.annotators[c, f] == "a@lab.org" and manual.annotated_at[c, f] == "2026-11-25T10:05:00.000000Z"
    [refit] = s.refits
    assert refit.frames == [3] and refit.manual_px_after < 0.5 * refit.manual_px_before
    after = read_mano(root / MANO.format(seq=SEQ))
    unchanged = np.arange(len(after.frames)) != 3
    assert np.array_equal(after.hand_pose[unchanged], before.hand_pose[unchanged])
    assert not np.array_equal(after.hand_pose[3], before.hand_pose[3])
    assert {m.key for m in read_merge_records(root / MERGED)} == {r.key for r in records}
    # the stages see their outputs as current: re-running them keeps the splice
    from fitting.fit_stage import fit_session
    from fitting.triangulate_stage import triangulate_session

    assert triangulate_session(root)[0].skipped and fit_session(root)[0].skipped
    # merged once: the same export again merges nothing
    assert merge_export(root, export, SOURCE).skipped == len(records)
    st = annotation_status(root)
    assert (st.queued, st.in_label_studio, st.annotated, st.merged) == (len(records), len(records), None, len(records))
    assert AnnotationStatusCommand(root).run() == 0
    assert capsys.readouterr().out == (f"queued {len(records)}, in Label Studio {len(records)}, annotated ? "
                                       f"(Label Studio is not running), merged {len(records)}\n")


@pytest.mark.parametrize("script, message", [
    ("echo starting; exit 3", "Label Studio exited with code 3 while starting; see this log"),
    ("exec sleep 60", "Label Studio did not answer http://127.0.0.1:{port}/health within 1 s; see this log"),
])
def test_a_server_that_does_not_come_up_is_a_clear_error(tmp_path, monkeypatch, script, message):
    exe = tmp_path / "bin" / "label-studio"
    exe.parent.mkdir()
    exe.write_text(f"#!/bin/sh\n{script}\n")
    exe.chmod(0o755)
    monkeypatch.setattr(server, "ensure_venv", lambda log=None: exe)
    monkeypatch.setattr(server, "free_port", lambda: 47123)
    root = tmp_path / "s"
    root.mkdir()
    with pytest.raises(SchemaError) as e:
        server.start_server(root, timeout=1.0)
    assert str(e.value) == f"{root / server.LOG_FILE}: {message.format(port=47123)}"
    assert not (root / server.RECORD).exists()
    assert server.credentials(root).token not in (root / server.LOG_FILE).read_text()


def test_manual_keypoints_file_round_trip_with_annotators(tmp_path):
    from tests.factories import make_keypoints2d

    kp = make_keypoints2d()
    C, F = len(kp.cameras), len(kp.frames)
    kp.annotators = np.full((C, F), "", dtype=object)
    kp.annotated_at = np.full((C, F), "", dtype=object)
    kp.annotators[1, 2], kp.annotated_at[1, 2] = "a@lab.org", "2026-11-25T10:05:00.000000Z"
    path = tmp_path / "keypoints2d_manual.h5"
    write_keypoints2d(path, kp)
    back = read_keypoints2d(path)
    assert back.annotators[1, 2] == "a@lab.org" and back.annotated_at[1, 2] == "2026-11-25T10:05:00.000000Z"
    assert (back.annotators != "").sum() == 1
    assert read_keypoints2d(path).annotators.shape == (C, F)
    kp.annotated_at = None
    with pytest.raises(SchemaError) as e:
        write_keypoints2d(path, kp)
    assert str(e.value) == f"{path}: 'annotators' and 'annotated_at' come together (one is missing)"
    kp.annotated_at = np.full((C, F + 1), "", dtype=object)
    with pytest.raises(SchemaError, match=r"'annotated_at' has shape \(3, 6\), expected \(C, F\) with F=5$"):
        write_keypoints2d(path, kp)
