"""``handdiffuse annotate SESSION``: the queued views as pre-annotated tasks in the session's Label Studio.

1. start the session's Label Studio (``annotation.server``); make its one project once: title
   ``HandDiffuse <session name>``, the 42-keypoint interface (``annotation.labels``), a local-files
   storage on ``annotation/images/views`` (the only folder the server serves)
2. per queue item without a task record (``annotation/tasks.jsonl``): the current best 2D guess
   in its camera, the fit's joints (mano.h5) projected if it has the frame, else the 2D evidence
   the triangulation used (joints3d.h5: the hands on their sides) or, without it, the detection;
   a crop around it
   (``annotation.crops``) cut from the sequence's video -> ``annotation/images/views/<seq>/<frame>-<cam>.png``;
   the records are written before anything is imported
3. import the records whose key (sequence/frame/camera, in the task data) Label Studio does not
   have yet, each with its guess as a prediction; then every record takes its task id from
   Label Studio's task list, by key

Re-running imports nothing twice: a key Label Studio has is never imported again, and a
record, once made, is kept (its crop is what the annotator saw).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np

from annotation.crops import CropBox, crop_box
from annotation.labels import keypoint_results, label_config
from annotation.records import IMAGES_ROOT, TASKS, VIEW_IMAGE, VIEWS, TaskRecord, read_task_records, write_task_records
from data_schemas.atomic import atomic_path
from data_schemas.calibration import CameraRig
from data_schemas.errors import SchemaError
from data_schemas.joints3d import read_joints3d
from data_schemas.keypoints import N_KEYPOINTS
from data_schemas.keypoints2d import Keypoints2D, read_keypoints2d
from data_schemas.lock import writing
from data_schemas.mano import read_mano
from data_schemas.paths import inside
from data_schemas.queue import QueueItem, read_queue
from data_schemas.session import JOINTS3D, KEYPOINTS2D, MANO, QUEUE, Session

LOG = logging.getLogger("handdiffuse")
GUESS_MODEL_VERSION = "handdiffuse-guess"  # the predictions' model_version, and the project's
IMPORT_BATCH = 500  # tasks per import request


@dataclass
class ImportSummary:
    project_id: int
    queued: int  # queue items
    made: int  # task records made now (crops written)
    imported: int  # tasks imported now
    existing: int  # queue items Label Studio had already
    guesses: dict[str, int] = field(default_factory=dict)  # guess source -> records made now
    seconds: float = 0.0


def project_title(session: Session) -> str:
    return f"HandDiffuse {session.config.name}"


# --- 2. guesses and crops -----------------------------------------------------------------------

def _fit_joints(session: Session, seq: str, frames: np.ndarray) -> dict[int, np.ndarray]:
    """frame -> (42, 3) fitted joints (m, mano.h5's), for the ``frames`` mano.h5 has; empty without mano.h5."""
    path = session.path(MANO, seq=seq)
    if not path.is_file():
        return {}
    fit = read_mano(path)
    row = {int(f): i for i, f in enumerate(fit.frames)}
    return {int(f): fit.joints[row[int(f)]] for f in frames if int(f) in row}


def _projected(rig: CameraRig, camera: str, joints: np.ndarray) -> np.ndarray:
    """(42, 3) m -> (42, 2) px in ``camera``; NaN behind it or off its image."""
    cam = rig[camera]
    px = cam.project(joints)
    w, h = cam.size
    ok = (cam.to_camera(joints)[:, 2] > 0) & (px[:, 0] >= -0.5) & (px[:, 0] < w - 0.5) & (px[:, 1] >= -0.5) \
        & (px[:, 1] < h - 0.5)
    return np.where(ok[:, None], px, np.nan)


def _evidence(session: Session, seq: str, kp: Keypoints2D) -> np.ndarray:
    """(C, F, 42, 3) the 2D evidence joints3d.h5 holds (the hands on their sides, a person's points
    over the detections) when it was triangulated from this keypoints2d.h5; else its detections."""
    path = session.path(JOINTS3D, seq=seq)
    j3d = read_joints3d(path) if path.is_file() else None
    if j3d is None or j3d.keypoints is None or j3d.cameras != kp.cameras or not np.array_equal(j3d.frames, kp.frames):
        return kp.keypoints
    return j3d.keypoints


def make_records(session: Session, items: list[QueueItem]) -> list[TaskRecord]:
    """Task records for ``items`` (one sequence or several), their crop images written."""
    import cv2

    from data_schemas.takes import open_take

    records: list[TaskRecord] = []
    rig_all = session.load_calibration()
    for seq in sorted({i.sequence for i in items}):
        mine = [i for i in items if i.sequence == seq]
        kp_path = session.path(KEYPOINTS2D, seq=seq)
        kp = read_keypoints2d(kp_path)
        rig = rig_all.subset(kp.cameras, kp_path)
        row = {int(f): i for i, f in enumerate(kp.frames)}
        for i in mine:
            if i.camera not in kp.cameras:
                raise SchemaError(session.root / QUEUE, f"{i.key}: camera '{i.camera}' is not in {kp_path}")
            if i.frame not in row:
                raise SchemaError(session.root / QUEUE, f"{i.key}: frame {i.frame} is not in {kp_path}")
        evidence = _evidence(session, seq, kp)
        LOG.info("%s: cutting %d views from the videos, guesses from %s", seq, len(mine),
                 "mano.h5" if session.path(MANO, seq=seq).is_file() else "the detections")
        fitted = _fit_joints(session, seq, np.array(sorted({i.frame for i in mine})))
        take = open_take(session, seq, allow_short_videos=True)  # the instants are keypoints2d.h5's, checked above
        for camera in sorted({i.camera for i in mine}):
            views = sorted((i for i in mine if i.camera == camera), key=lambda i: i.frame)
            c = kp.cameras.index(camera)
            size = tuple(int(v) for v in kp.image_sizes[c])
            for item, (_, frame) in zip(views, take.read(camera, [i.frame for i in views])):
                if item.frame in fitted:
                    guess, source = _projected(rig, camera, fitted[item.frame]), "fit"
                else:
                    found = evidence[c, row[item.frame]]  # (42, 3)
                    guess, source = np.where(found[:, 2:3] > 0, found[:, :2], np.nan), "detection"
                if not np.isfinite(guess).any():
                    source = "none"
                box = crop_box(guess, size)
                image = VIEW_IMAGE.format(seq=seq, frame=item.frame, cam=camera)
                _write_png(_image_path(session, image), box.cut(frame), cv2)
                records.append(TaskRecord(item.key, seq, item.frame, camera, item.hand, item.reason, image,
                                          [box.w, box.h], box.as_list(), source, TaskRecord.guess_list(guess)))
    return records


def _image_path(session: Session, image: str) -> Path:
    """A crop's file: inside annotation/images (the only folder Label Studio serves), never out of it."""
    return inside(session.root / IMAGES_ROOT, image, session.root / TASKS, "image")


def _write_png(path: Path, image: np.ndarray, cv2) -> None:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise SchemaError(path, "cannot encode the crop as PNG")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.tobytes())


# --- 1. + 3. Label Studio -------------------------------------------------------------------------

def task_payload(record: TaskRecord) -> dict:
    """The task Label Studio imports: data (image, title, key, crop) and the guess as a prediction."""
    hands = "both hands" if record.hand == "both" else f"{record.hand} hand"
    title = f"{record.sequence} frame {record.frame} {record.camera}: {hands} ({record.reason.replace('+', ', ')})"
    data = {"image": f"/data/local-files/?d={quote(record.image, safe='/')}", "title": title, "key": record.key,
            "sequence": record.sequence, "frame": record.frame, "camera": record.camera, "crop": record.crop,
            "image_size": record.image_size, "guess_source": record.guess_source}
    result = keypoint_results(record.guess_px, record.box, tuple(record.image_size))
    return {"data": data, "predictions": [{"model_version": GUESS_MODEL_VERSION, "result": result}]}


def api_error(e: Exception) -> str:
    """An SDK error as one line: status and Label Studio's own message, without headers (cookies)."""
    status = getattr(e, "status_code", None)
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        detail = body.get("validation_errors") or body.get("detail") or body
        return f"HTTP {status}: {detail}"
    return f"HTTP {status}: {body}" if status is not None else f"{type(e).__name__}: {e}"


def every_item(pager, total: str) -> list:
    """All items of a label-studio-sdk pager, stopping once the response's ``total`` count is in
    hand: left to itself the pager asks for a page past the end, which the server answers with a
    404 and a traceback in its log."""
    items: list = []
    page = pager
    while page is not None:
        items += page.items or []
        if not page.items or len(items) >= (getattr(page.response, total, None) or 0):
            break
        page = page.next_page()
    return items


def find_project(client, session: Session) -> int | None:
    """The id of the session's project (by title), None if it has none; SchemaError if several."""
    title = project_title(session)
    found = [p for p in every_item(client.projects.list(title=title, page_size=100), "count") if p.title == title]
    if len(found) > 1:
        raise SchemaError(session.root / TASKS, f"Label Studio has {len(found)} projects titled '{title}'; "
                                                "delete the extra ones")
    return int(found[0].id) if found else None


def ensure_project(client, session: Session) -> int:
    """The session's project (found by title), made with the keypoint interface if it is not there."""
    title = project_title(session)
    project_id = find_project(client, session)
    if project_id is None:
        project = client.projects.create(title=title, label_config=label_config(), model_version=GUESS_MODEL_VERSION,
                                         show_collab_predictions=True, reveal_preannotations_interactively=False,
                                         description="Drag the points that are wrong; leave the right ones.")
        project_id = int(project.id)
    views = str((session.root / IMAGES_ROOT / VIEWS).resolve())
    storages = client.import_storage.local.list(project=project_id)
    if not any(str(getattr(s, "path", "")).rstrip("/") == views for s in storages):
        client.import_storage.local.create(project=project_id, path=views, use_blob_urls=True,
                                           title="handdiffuse crops")
    return project_id


def record_from_task(task, item: QueueItem) -> TaskRecord:
    """The record of a task Label Studio has (data and prediction of ``task_payload``)."""
    from annotation.crops import to_pixels
    from annotation.labels import LABEL_INDEX

    data = task.data or {}
    try:
        box = CropBox.of(data["crop"])
        guess = np.full((N_KEYPOINTS, 2), np.nan)
        for r in (task.predictions[0].result if task.predictions else []):
            guess[LABEL_INDEX[r["value"]["keypointlabels"][0]]] = to_pixels([r["value"]["x"], r["value"]["y"]], box)
        image = unquote(str(data["image"]).split("?d=", 1)[-1])
        record = TaskRecord(item.key, item.sequence, item.frame, item.camera, item.hand, item.reason, image,
                            list(data["image_size"]), box.as_list(), data.get("guess_source", "none"),
                            TaskRecord.guess_list(guess), int(task.id))
    except (KeyError, IndexError, TypeError, ValueError):
        raise SchemaError(f"Label Studio task {task.id}", f"has the key {item.key!r} but not the data of a "
                          "`handdiffuse annotate` task") from None
    record.validate(f"Label Studio task {task.id}")
    return record


def task_ids(client, project_id: int) -> dict[str, int]:
    """key -> task id of every task of the project (tasks without a key are not ours: ignored)."""
    out: dict[str, int] = {}
    for t in every_item(client.tasks.list(project=project_id, fields="task_only", page_size=1000), "total"):
        key = (t.data or {}).get("key")
        if isinstance(key, str):
            out[key] = int(t.id)
    return out


def import_tasks(root: str | Path, client) -> ImportSummary:
    """Steps 1 (project) to 3 against a running server's ``client``; the annotation folder is
    locked meanwhile."""
    session = Session.open(root)
    with writing((session.root / TASKS).parent, "annotate"):
        return _import_tasks(session, client)


def _import_tasks(session: Session, client) -> ImportSummary:
    from label_studio_sdk.core.api_error import ApiError

    t0 = time.perf_counter()
    queue_path = session.root / QUEUE
    if not queue_path.is_file():
        raise SchemaError(queue_path, "file not found: run `handdiffuse fit` (or `handdiffuse queue`) first")
    items = read_queue(queue_path)
    records_path = session.root / TASKS
    try:
        # 1.
        project_id = ensure_project(client, session)
        in_ls = task_ids(client, project_id)
        existing = sum(i.key in in_ls for i in items)
        # 2.
        records = {r.key: r for r in read_task_records(records_path)}
        for i in items:  # tasks.jsonl lost or rewritten: Label Studio's task holds what the annotator sees
            if i.key in in_ls and i.key not in records:
                records[i.key] = record_from_task(client.tasks.get(in_ls[i.key]), i)
        todo = [i for i in items if i.key not in records]
        made = make_records(session, todo) if todo else []
        for r in made:
            records[r.key] = r
        for r in records.values():  # a crop deleted by hand: cut again (same box, same image)
            if not _image_path(session, r.image).is_file():
                _recut(session, r)
        write_task_records(records_path, list(records.values()))
        # 3.
        queued = {i.key for i in items}
        new = [r for k, r in sorted(records.items()) if k not in in_ls and k in queued]
        for start in range(0, len(new), IMPORT_BATCH):
            client.projects.import_tasks(project_id, request=[task_payload(r) for r in new[start:start + IMPORT_BATCH]])
        in_ls = task_ids(client, project_id) if new else in_ls
    except ApiError as e:
        raise SchemaError(f"Label Studio project '{project_title(session)}'", api_error(e)) from None
    for key, r in records.items():
        r.task_id = in_ls.get(key)
    write_task_records(records_path, list(records.values()))
    guesses: dict[str, int] = {}
    for r in made:
        guesses[r.guess_source] = guesses.get(r.guess_source, 0) + 1
    return ImportSummary(project_id, len(items), len(made), len(new), existing, guesses, time.perf_counter() - t0)


def _recut(session: Session, r: TaskRecord) -> None:
    import cv2

    from data_schemas.takes import open_take

    take = open_take(session, r.sequence, allow_short_videos=True)  # a frame a task was made from
    _, frame = next(take.read(r.camera, [r.frame]))
    box = CropBox.of(r.crop)
    _write_png(_image_path(session, r.image), box.cut(frame), cv2)
