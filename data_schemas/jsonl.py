"""JSON-lines files of records (``annotation/queue.jsonl``, ``tasks.jsonl``, ``merged.jsonl``).

One JSON object per line, the fields of a dataclass with ``key`` (unique in the file) and
``validate(source)``; a bad line is one SchemaError naming ``file:line`` and the cause.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, fields
from pathlib import Path

from data_schemas.atomic import atomic_write_text
from data_schemas.errors import SchemaError


def read_records(path: Path, cls: type) -> list:
    """Every line of ``path`` as a ``cls``, validated; [] when the file is not there."""
    if not path.exists():
        return []
    known = [f.name for f in fields(cls)]
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    out, keys = [], set()
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
        missing = [k for k in required if k not in obj]
        if missing:
            raise SchemaError(where, f"missing {', '.join(repr(m) for m in missing)}")
        unknown = [k for k in obj if k not in known]
        if unknown:
            raise SchemaError(where, f"unknown field {unknown[0]!r}")
        record = cls(**obj)
        record.validate(where)
        if record.key in keys:
            raise SchemaError(where, f"repeats {record.key}")
        keys.add(record.key)
        out.append(record)
    return out


def write_records(path: Path, records: list) -> None:
    """Validate ``records`` (keys unique) and write them atomically, one line each, in order."""
    keys: set[str] = set()
    for i, r in enumerate(records):
        r.validate(f"{path} item {i}")
        if r.key in keys:
            raise SchemaError(path, f"item {i} repeats {r.key}")
        keys.add(r.key)
    atomic_write_text(path, "".join(json.dumps(asdict(r)) + "\n" for r in records))
