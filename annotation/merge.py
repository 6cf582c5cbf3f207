"""Finished Label Studio annotations -> ``sequences/<seq>/keypoints2d_manual.h5``, and the record of
what was merged (annotation/merged.jsonl). ``handdiffuse merge`` (``pipeline.merge``) runs these
steps, then the triangulate and fit stages on the frames whose manual points changed.

1. the project's annotated tasks, exported through label-studio-sdk (Label Studio's JSON
   format: ``pull_export``), or an export file saved from Label Studio (``read_export``)
2. check all of it before anything is written (``parse_export``): a malformed export is
   rejected whole with a one-line error and nothing is merged. Per task: its key is one
   ``handdiffuse annotate`` made (annotation/tasks.jsonl), with the same task id and crop; per
   point: a keypoint result of the project's control, exactly one known label, not placed
   twice in the task, a label of one hand only, made on the task's image (its size) and inside it
3. per task, its latest annotation that was not cancelled: every point from percent back to
   full-frame pixels (``annotation.crops``). A point a person placed or moved is manual; one
   left where the pre-annotation put it (within ``UNTOUCHED_PX``) is not, and a label taken
   away leaves the detection as it was; an annotation merged before and not changed since is
   skipped (``pending``)
4. per sequence: each annotated view's manual points replace what keypoints2d_manual.h5 had
   for that view (score 1, the annotator and the annotation's time); written atomically, with
   the cameras and frames of keypoints2d.h5 (``merge_views``)
5. annotation/merged.jsonl: which annotation (id, time) each task's merge came from
   (``record_merges``)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from annotation.crops import inside_percent, to_pixels
from annotation.labels import CONTROL, LABEL_INDEX, OBJECT, RESULT_TYPE, hand_of
from annotation.records import (MERGED, TASKS, MergeRecord, TaskRecord, read_merge_records, read_task_records,
                                write_merge_records)
from data_schemas.checks import load_json
from data_schemas.errors import SchemaError
from data_schemas.keypoints import N_KEYPOINTS
from data_schemas.keypoints2d import Keypoints2D, read_keypoints2d, write_keypoints2d
from data_schemas.session import KEYPOINTS2D, KEYPOINTS2D_MANUAL, Session

UNTOUCHED_PX = 0.1  # a point within this of its pre-annotation (full-frame px) was left as it was
MANUAL_DETECTOR = "manual"  # keypoints2d_manual.h5's ``detector``


@dataclass
class ManualView:
    """One task's latest annotation, checked and in full-frame pixels."""

    record: TaskRecord
    task_id: int
    annotation_id: int
    annotator: str
    updated_at: str  # ISO 8601 UTC
    points: dict[int, tuple[float, float]]  # keypoint index -> (u, v) px, placed or moved only
    untouched: int  # points left where the pre-annotation put them


# --- 2. + 3. checking and converting an export ------------------------------------------------------

def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _utc(stamp: object) -> str:
    """An export time as ISO 8601 UTC ('...Z'); '' when missing."""
    if not isinstance(stamp, str) or not stamp:
        return ""
    try:
        t = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _annotator(completed_by: object, users: dict[int, str]) -> str:
    if isinstance(completed_by, dict):
        return str(completed_by.get("email") or users.get(completed_by.get("id"), f"user {completed_by.get('id')}"))
    if isinstance(completed_by, int):
        return users.get(completed_by, f"user {completed_by}")
    return "unknown"


def parse_export(export: object, records: dict[str, TaskRecord], source: str,
                 users: dict[int, str] | None = None) -> list[ManualView]:
    """Steps 2 and 3: the export's annotated tasks as ManualViews; SchemaError(source, ...) at the first problem."""
    users = users or {}
    if not isinstance(export, list):
        raise SchemaError(source, "expected a JSON list of tasks (Label Studio's JSON export)")
    views: list[ManualView] = []
    seen: set[str] = set()
    for n, task in enumerate(export):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise SchemaError(source, f"item {n} is not a task (no 'data' object)")
        task_id = task.get("id")
        key = task["data"].get("key")
        where = f"task {task_id} ({key})" if isinstance(key, str) else f"task {task_id}"
        if not isinstance(key, str) or key not in records:
            raise SchemaError(source, f"{where}: unknown task key {key!r} (not a task of {TASKS})")
        record = records[key]
        if record.task_id is not None and record.task_id != task_id:
            raise SchemaError(source, f"{where}: the key is task {record.task_id} in {TASKS}")
        if key in seen:
            raise SchemaError(source, f"{where}: the key appears twice in the export")
        seen.add(key)
        if task["data"].get("crop") != record.crop:
            raise SchemaError(source, f"{where}: crop {task['data'].get('crop')} differs from {TASKS}'s {record.crop}")
        annotations = task.get("annotations") or []
        if not isinstance(annotations, list):
            raise SchemaError(source, f"{where}: 'annotations' is not a list")
        if not all(isinstance(a, dict) for a in annotations):
            raise SchemaError(source, f"{where}: an annotation is not an object")
        done = [a for a in annotations if not a.get("was_cancelled")]
        for a in done:
            _check_annotation(a, record, source, f"{where}, annotation {a.get('id')}")
        if not done:
            continue
        latest = max(done, key=lambda a: (_utc(a.get("updated_at") or a.get("created_at")), a.get("id") or 0))
        views.append(_view(latest, record, task_id, users))
    return views


def annotated_views(session: Session, export: object, source: str,
                    users: dict[int, str] | None = None) -> list[ManualView]:
    """Steps 2 and 3 against the session's task records (annotation/tasks.jsonl)."""
    records = {r.key: r for r in read_task_records(session.root / TASKS)}
    if not records:
        raise SchemaError(session.root / TASKS, f"file not found or empty: run `handdiffuse annotate {session.root}` "
                                                "first")
    return parse_export(export, records, source, users)


def _check_annotation(a: dict, record: TaskRecord, source: str, where: str) -> None:
    if isinstance(a.get("id"), bool) or not isinstance(a.get("id"), int):
        raise SchemaError(source, f"{where}: no annotation id")
    result = a.get("result")
    if not isinstance(result, list):
        raise SchemaError(source, f"{where}: 'result' is not a list")
    placed: set[str] = set()
    for r in result:
        if not isinstance(r, dict) or r.get("type") != RESULT_TYPE:
            kind = r.get("type") if isinstance(r, dict) else type(r).__name__
            raise SchemaError(source, f"{where}: a result of type {kind!r} (expected {RESULT_TYPE})")
        if r.get("from_name") != CONTROL or r.get("to_name") != OBJECT:
            raise SchemaError(source, f"{where}: a result of control {r.get('from_name')!r} on {r.get('to_name')!r} "
                                      f"(expected {CONTROL!r} on {OBJECT!r})")
        value = r.get("value")
        if not isinstance(value, dict) or not _number(value.get("x")) or not _number(value.get("y")):
            raise SchemaError(source, f"{where}: a point without numeric 'x' and 'y'")
        labels = value.get(RESULT_TYPE)
        if not isinstance(labels, list) or not labels:
            raise SchemaError(source, f"{where}: a point without a label")
        unknown = [lb for lb in labels if lb not in LABEL_INDEX]
        if unknown:
            raise SchemaError(source, f"{where}: unknown label {unknown[0]!r}")
        if len({hand_of(lb) for lb in labels}) > 1:
            raise SchemaError(source, f"{where}: a point is labelled with both hands ({', '.join(labels)})")
        if len(labels) > 1:
            raise SchemaError(source, f"{where}: a point has {len(labels)} labels ({', '.join(labels)}); one each")
        label = labels[0]
        if label in placed:
            raise SchemaError(source, f"{where}: label {label!r} is placed twice")
        placed.add(label)
        size = [r.get("original_width"), r.get("original_height")]
        if size != list(record.image_size):
            raise SchemaError(source, f"{where}: point {label!r} was placed on a {size[0]}x{size[1]} image, the "
                                      f"task's is {record.image_size[0]}x{record.image_size[1]}")
        if r.get("image_rotation") not in (None, 0, 0.0):
            raise SchemaError(source, f"{where}: point {label!r} was placed on a rotated image")
        if not inside_percent(np.array([value["x"], value["y"]], float)):
            raise SchemaError(source, f"{where}: point {label!r} at ({value['x']:.1f}%, {value['y']:.1f}%) is outside "
                                      "the image")


def _view(a: dict, record: TaskRecord, task_id: int, users: dict[int, str]) -> ManualView:
    guess = record.guess_px  # (42, 2)
    points: dict[int, tuple[float, float]] = {}
    untouched = 0
    for r in a["result"]:
        j = LABEL_INDEX[r["value"][RESULT_TYPE][0]]
        u, v = to_pixels(np.array([r["value"]["x"], r["value"]["y"]], float), record.box)
        if np.isfinite(guess[j]).all() and np.hypot(u - guess[j, 0], v - guess[j, 1]) <= UNTOUCHED_PX:
            untouched += 1
            continue
        points[j] = (float(u), float(v))
    return ManualView(record, int(task_id), int(a["id"]), _annotator(a.get("completed_by"), users),
                      _utc(a.get("updated_at") or a.get("created_at")), points, untouched)


# --- 1. the export -----------------------------------------------------------------------------

def pull_export(root: Path) -> tuple[list, str, dict[int, str]]:
    """(export, its source for messages, user id -> email) from the session's running server."""
    from annotation.server import connect
    from annotation.tasks import api_error, find_project, project_title
    from label_studio_sdk.core.api_error import ApiError

    session = Session.open(root)
    client, info = connect(root)
    title = project_title(session)
    try:
        project_id = find_project(client, session)
        if project_id is None:
            raise SchemaError(f"Label Studio {info.url}",
                              f"no project '{title}': run `handdiffuse annotate {root}` first")
        source = f"{info.url}/api/projects/{project_id}/export"
        raw = b"".join(client.projects.exports.download_sync(project_id, export_type="JSON", download_all_tasks=False))
        users = {int(u.id): str(u.email) for u in client.users.list()}
    except ApiError as e:
        raise SchemaError(f"Label Studio project '{title}'", api_error(e)) from None
    try:
        return json.loads(raw), source, users
    except json.JSONDecodeError as e:
        raise SchemaError(source, f"not valid JSON ({e.msg})")


def read_export(path: Path) -> list:
    """An export file saved from Label Studio (JSON): its list of tasks."""
    tasks = load_json(path)
    if not isinstance(tasks, list):
        raise SchemaError(path, "expected a JSON list of tasks (Label Studio's JSON export)")
    return tasks


# --- 3. + 4. the manual file ---------------------------------------------------------------------------

def empty_manual(kp: Keypoints2D) -> Keypoints2D:
    C, F = len(kp.cameras), len(kp.frames)
    keypoints = np.zeros((C, F, N_KEYPOINTS, 3), np.float32)
    keypoints[..., :2] = np.nan
    blank = np.full((C, F), "", dtype=object)
    return Keypoints2D(kp.cameras, kp.image_sizes, kp.frames, keypoints, MANUAL_DETECTOR, kp.fps,
                       annotators=blank, annotated_at=blank.copy())


def merge_views(session: Session, seq: str, views: list[ManualView]) -> list[int]:
    """Step 4 for one sequence: the views into keypoints2d_manual.h5; the frames whose manual
    points changed (some now, or some before)."""
    kp_path, path = session.path(KEYPOINTS2D, seq=seq), session.path(KEYPOINTS2D_MANUAL, seq=seq)
    kp = read_keypoints2d(kp_path)
    manual = read_keypoints2d(path) if path.is_file() else empty_manual(kp)
    if manual.cameras != kp.cameras or not np.array_equal(manual.frames, kp.frames):
        raise SchemaError(path, f"its cameras or frames differ from {kp_path.name}'s (detection was re-run): move it "
                                "aside and merge again")
    if manual.annotators is None:
        blank = empty_manual(kp)
        manual.annotators, manual.annotated_at = blank.annotators, blank.annotated_at
    row = {int(f): i for i, f in enumerate(kp.frames)}
    changed: set[int] = set()
    for v in views:
        if v.record.camera not in kp.cameras or v.record.frame not in row:
            raise SchemaError(kp_path, f"{v.record.key}: camera or frame not in this file (detection was re-run?)")
        c, f = kp.cameras.index(v.record.camera), row[v.record.frame]
        if v.points or (manual.keypoints[c, f, :, 2] > 0).any():
            changed.add(v.record.frame)
        manual.keypoints[c, f] = (np.nan, np.nan, 0.0)
        for j, (u, vv) in v.points.items():
            manual.keypoints[c, f, j] = (u, vv, 1.0)
        manual.annotators[c, f] = v.annotator if v.points else ""
        manual.annotated_at[c, f] = v.updated_at if v.points else ""
    write_keypoints2d(path, manual)
    return sorted(changed)


# --- 5. the record ---------------------------------------------------------------------------------------

def pending(session: Session, views: list[ManualView]) -> list[ManualView]:
    """The views whose annotation was not merged before (or changed since)."""
    merged = {r.key: r for r in read_merge_records(session.root / MERGED)}
    return [v for v in views if not (v.record.key in merged and merged[v.record.key].annotation_id == v.annotation_id
                                     and merged[v.record.key].updated_at == v.updated_at)]


def record_merges(session: Session, views: list[ManualView]) -> None:
    """annotation/merged.jsonl with ``views`` recorded as merged now (their tasks' earlier records replaced)."""
    merged = {r.key: r for r in read_merge_records(session.root / MERGED)}
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    for v in views:
        merged[v.record.key] = MergeRecord(v.record.key, v.task_id, v.annotation_id, v.annotator, v.updated_at,
                                           len(v.points), now)
    write_merge_records(session.root / MERGED, list(merged.values()))
