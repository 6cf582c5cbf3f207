"""The annotation queue: frames the machine could not fit, for people to click.

``annotation/queue.jsonl``, one JSON object per line::

    {"sequence": "seq000", "frame": 120, "camera": "cam07", "hand": "left",
     "reason": "reprojection+temporal_jump", "priority": 3.2}

``sequence`` and ``camera`` are plain names (``data_schemas.paths.check_name``: no folders, no
``..``); ``reason`` is one or more FailureReason names joined by '+'; ``hand`` is left, right
or both; ``priority`` orders the work (higher first: how much a person's clicks in
this view are expected to help).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from data_schemas.errors import SchemaError
from data_schemas.jsonl import read_records, write_records
from data_schemas.mano import REASON_NAMES
from data_schemas.paths import check_name

HAND_CHOICES = ("left", "right", "both")


@dataclass(frozen=True)
class QueueItem:
    sequence: str
    frame: int
    camera: str
    reason: str
    hand: str = "both"
    priority: float = 0.0

    @property
    def key(self) -> str:
        """Stable identity of the item (task key in the annotation tool)."""
        return f"{self.sequence}/{self.frame:06d}/{self.camera}"

    def validate(self, source: str) -> None:
        if not isinstance(self.sequence, str) or not self.sequence:
            raise SchemaError(source, "'sequence' must be a non-empty string")
        if not isinstance(self.camera, str) or not self.camera:
            raise SchemaError(source, "'camera' must be a non-empty string")
        check_name(self.sequence, source, "sequence")  # both become paths (crops, the sequence's files)
        check_name(self.camera, source, "camera")
        if isinstance(self.frame, bool) or not isinstance(self.frame, int) or self.frame < 0:
            raise SchemaError(source, f"'frame' must be a non-negative integer, got {self.frame!r}")
        if self.hand not in HAND_CHOICES:
            raise SchemaError(source, f"'hand' must be one of {', '.join(HAND_CHOICES)}, got {self.hand!r}")
        parts = self.reason.split("+") if isinstance(self.reason, str) else [None]
        bad = [p for p in parts if p not in REASON_NAMES]
        if bad:
            raise SchemaError(source, f"unknown reason {bad[0]!r} (known: {', '.join(REASON_NAMES)})")
        if not isinstance(self.priority, (int, float)) or self.priority != self.priority:
            raise SchemaError(source, f"'priority' must be a number, got {self.priority!r}")


def write_queue(path: str | Path, items: list[QueueItem]) -> None:
    write_records(Path(path), items)


def read_queue(path: str | Path) -> list[QueueItem]:
    path = Path(path)
    if not path.exists():
        raise SchemaError(path, "file not found")
    return read_records(path, QueueItem)
