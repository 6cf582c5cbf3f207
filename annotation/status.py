"""``handdiffuse annotation-status SESSION``: where the queued views are in the annotation loop.

    queued           items in annotation/queue.jsonl
    in Label Studio  of those, the ones with a task (annotation/tasks.jsonl has its task id)
    annotated        of those, the tasks with a submitted annotation (asked of the running server;
                     unknown when it is not running)
    merged           of those, the ones whose annotation ``handdiffuse merge`` took in (annotation/merged.jsonl)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from annotation.records import MERGED, TASKS, read_merge_records, read_task_records
from data_schemas.errors import SchemaError
from data_schemas.queue import read_queue
from data_schemas.session import QUEUE, Session


@dataclass
class AnnotationStatus:
    queued: int
    in_label_studio: int
    annotated: int | None  # None: the server is not running, so not known
    merged: int
    url: str | None = None  # the running server


def annotation_status(root: str | Path) -> AnnotationStatus:
    from annotation.server import connect, running_server
    from annotation.tasks import api_error, every_item, find_project, project_title

    session = Session.open(root)
    queue_path = session.root / QUEUE
    queued = {i.key for i in read_queue(queue_path)} if queue_path.is_file() else set()
    records = {r.key: r for r in read_task_records(session.root / TASKS) if r.key in queued}
    in_ls = {k: r.task_id for k, r in records.items() if r.task_id is not None}
    merged = sum(r.key in in_ls for r in read_merge_records(session.root / MERGED))
    info = running_server(session.root)
    annotated = None
    if info is not None:
        from label_studio_sdk.core.api_error import ApiError

        client, _ = connect(session.root)
        try:
            project_id = find_project(client, session)
            tasks = every_item(client.tasks.list(project=project_id, fields="task_only", page_size=1000), "total") \
                if project_id is not None else []
        except ApiError as e:
            raise SchemaError(f"Label Studio project '{project_title(session)}'", api_error(e)) from None
        done = {int(t.id) for t in tasks if (t.total_annotations or 0) > 0}
        annotated = sum(tid in done for tid in in_ls.values())
    return AnnotationStatus(len(queued), len(in_ls), annotated, merged, info.url if info else None)
