"""The annotation queue: frames the machine could not fit, for people to click.

``annotation/queue.jsonl``, one JSON object per line::

    {"sequence": "seq000", "frame": 120, "camera": "cam07", "hand": "left",
     "reason": "reprojection+temporal_jump", "priority": 3.2}

``reason`` is one or more FailureReason names joined by '+'; ``hand`` is left, right
or both; ``priority`` orders the work (higher first: how much a person's clicks in
this view are expected to help).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from data_schemas.atomic import atomic_write_text
from data_schemas.errors import SchemaError
from data_schemas.mano import REASON_NAMES

HAND_CHOICES = ("left", "right", "both")
_FIELDS = ("sequence", "frame", "camera", "hand", "reason", "priority")


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
    lines = []
    keys: set[str] = set()
    for i, item in enumerate(items):
        item.validate(f"{path} item {i}")
        if item.key in keys:
            raise SchemaError(path, f"item {i} repeats {item.key}")
        keys.add(item.key)
        lines.append(json.dumps(asdict(item), sort_keys=False))
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def read_queue(path: str | Path) -> list[QueueItem]:
    path = Path(path)
    if not path.exists():
        raise SchemaError(path, "file not found")
    items: list[QueueItem] = []
    keys: set[str] = set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        where = f"{path}:{n}"
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise SchemaError(where, f"not valid JSON ({e.msg})")
        if not isinstance(obj, dict):
            raise SchemaError(where, "expected a JSON object")
        missing = [k for k in ("sequence", "frame", "camera", "reason") if k not in obj]
        if missing:
            raise SchemaError(where, f"missing {', '.join(repr(m) for m in missing)}")
        unknown = [k for k in obj if k not in _FIELDS]
        if unknown:
            raise SchemaError(where, f"unknown field {unknown[0]!r}")
        item = QueueItem(**obj)
        item.validate(where)
        if item.key in keys:
            raise SchemaError(where, f"repeats {item.key}")
        keys.add(item.key)
        items.append(item)
    return items
