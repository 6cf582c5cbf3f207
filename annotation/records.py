"""What the annotation loop keeps beside the queue: the tasks it made and the annotations it merged.

Layout under the session (path templates below)::

    annotation/
      queue.jsonl                  <- queue / fit (data_schemas.queue)
      tasks.jsonl                  <- annotate: one TaskRecord per queue item made into a task
      merged.jsonl                 <- merge: one MergeRecord per task whose annotation was merged
      images/                      Label Studio's local-files document root (nothing else is served)
        views/<seq>/<frame>-<cam>.png   the crops (the project's local storage)
      labelstudio/                 the server's data dir, log, PID record, secrets (annotation.server)

``tasks.jsonl``, one JSON object per line::

    {"key": "seq000/000120/cam07", "sequence": "seq000", "frame": 120, "camera": "cam07",
     "hand": "left", "reason": "reprojection", "image": "views/seq000/000120-cam07.png",
     "image_size": [212, 180], "crop": [301, 88, 212, 180], "guess_source": "fit",
     "guess": [[x, y] or null, ... 42], "task_id": 17}

``guess`` is the pre-annotation in full-frame pixels (null: none for that point), the
reference for "the annotator left this point as it was"; ``task_id`` is null until the task
is in Label Studio. The record is written before the task is imported, so a task Label
Studio has is always known here.

``merged.jsonl``::

    {"key": "seq000/000120/cam07", "task_id": 17, "annotation_id": 40, "annotator": "a@lab.org",
     "updated_at": "2026-11-25T10:00:00Z", "points": 6, "merged_at": "2026-11-25T11:00:00Z"}

An annotation with the same id and ``updated_at`` as its record is not merged again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from annotation.crops import CropBox
from data_schemas.errors import SchemaError
from data_schemas.jsonl import read_records, write_records
from data_schemas.keypoints import N_KEYPOINTS
from data_schemas.queue import HAND_CHOICES, QueueItem

TASKS = "annotation/tasks.jsonl"
MERGED = "annotation/merged.jsonl"
IMAGES_ROOT = "annotation/images"  # Label Studio's LOCAL_FILES_DOCUMENT_ROOT
VIEWS = "views"  # under IMAGES_ROOT: the project's local storage
VIEW_IMAGE = VIEWS + "/{seq}/{frame:06d}-{cam}.png"  # relative to IMAGES_ROOT
GUESS_SOURCES = ("fit", "detection", "none")


@dataclass
class TaskRecord:
    key: str
    sequence: str
    frame: int
    camera: str
    hand: str
    reason: str
    image: str  # relative to IMAGES_ROOT
    image_size: list[int]  # [W, H] of the crop image, px
    crop: list[int]  # [x0, y0, w, h] full-frame px
    guess_source: str
    guess: list  # 42 x ([x, y] | None) full-frame px
    task_id: int | None = None

    @property
    def box(self) -> CropBox:
        return CropBox.of(self.crop)

    @property
    def guess_px(self) -> np.ndarray:
        """(42, 2) full-frame px, NaN where there was no guess."""
        return np.array([p if p is not None else (np.nan, np.nan) for p in self.guess], dtype=np.float64)

    @staticmethod
    def guess_list(points: np.ndarray) -> list:
        return [[round(float(x), 4), round(float(y), 4)] if np.isfinite([x, y]).all() else None
                for x, y in np.asarray(points, dtype=np.float64)]

    def validate(self, source: str) -> None:
        item = QueueItem(self.sequence, self.frame, self.camera, self.reason, self.hand)
        item.validate(source)
        if self.key != item.key:
            raise SchemaError(source, f"'key' is {self.key!r}, expected {item.key!r} (its sequence, frame and camera)")
        if self.hand not in HAND_CHOICES:
            raise SchemaError(source, f"'hand' must be one of {', '.join(HAND_CHOICES)}")
        if not isinstance(self.image, str) or not self.image or self.image.startswith("/") or ".." in self.image:
            raise SchemaError(source, f"'image' must be a path relative to {IMAGES_ROOT}, got {self.image!r}")
        if not _ints(self.image_size, 2) or min(self.image_size) <= 0:
            raise SchemaError(source, f"'image_size' must be [width, height] > 0, got {self.image_size!r}")
        if not _ints(self.crop, 4) or min(self.crop[2:]) <= 0 or min(self.crop[:2]) < 0:
            raise SchemaError(source, f"'crop' must be [x0, y0, w, h] with x0, y0 >= 0 and w, h > 0, got {self.crop!r}")
        if self.guess_source not in GUESS_SOURCES:
            raise SchemaError(source, f"'guess_source' must be one of {', '.join(GUESS_SOURCES)}")
        if not isinstance(self.guess, list) or len(self.guess) != N_KEYPOINTS or not all(
                p is None or (isinstance(p, list) and len(p) == 2 and all(_finite(v) for v in p)) for p in self.guess):
            raise SchemaError(source, f"'guess' must be {N_KEYPOINTS} points [x, y] or null")
        if self.task_id is not None and (isinstance(self.task_id, bool) or not isinstance(self.task_id, int)):
            raise SchemaError(source, f"'task_id' must be an integer or null, got {self.task_id!r}")


@dataclass
class MergeRecord:
    key: str
    task_id: int
    annotation_id: int
    annotator: str
    updated_at: str
    points: int  # points a person placed or moved (merged as manual)
    merged_at: str

    def validate(self, source: str) -> None:
        for k in ("task_id", "annotation_id", "points"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise SchemaError(source, f"'{k}' must be a non-negative integer, got {v!r}")
        for k in ("key", "annotator", "updated_at", "merged_at"):
            if not isinstance(getattr(self, k), str):
                raise SchemaError(source, f"'{k}' must be a string")


def _ints(v: object, n: int) -> bool:
    return isinstance(v, list) and len(v) == n and all(isinstance(x, int) and not isinstance(x, bool) for x in v)


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_task_records(path: str | Path) -> list[TaskRecord]:
    """``tasks.jsonl``; empty when the file is not there (nothing imported yet)."""
    return read_records(Path(path), TaskRecord)


def write_task_records(path: str | Path, records: list[TaskRecord]) -> None:
    write_records(Path(path), sorted(records, key=lambda r: r.key))


def read_merge_records(path: str | Path) -> list[MergeRecord]:
    """``merged.jsonl``; empty when the file is not there (nothing merged yet)."""
    return read_records(Path(path), MergeRecord)


def write_merge_records(path: str | Path, records: list[MergeRecord]) -> None:
    write_records(Path(path), sorted(records, key=lambda r: r.key))
