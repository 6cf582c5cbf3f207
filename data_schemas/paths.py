"""Path confinement: every name read from a file or an option becomes a path inside its root.

A sequence name in ``tasks.jsonl`` or ``queue.jsonl``, a ``--sequences`` option, a shard
named by the manifest: each is joined to the folder it belongs to through ``inside``, which
refuses an absolute path, a ``..`` component and a symlink that leads out of the root, with
one line naming the file (or option) the name came from::

    inside(session_root / "sequences", "../../other/sequences/seq000", tasks_jsonl)
    -> SchemaError: .../tasks.jsonl: 'sequences/../../other/...' leaves .../sequences: ...

``check_name`` is the stricter test for a name that is one path component (a sequence
folder, a camera, a shard file name).
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from data_schemas.errors import SchemaError

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def check_name(name: object, source: str | Path, what: str = "name") -> str:
    """``name`` if it is one safe path component ([A-Za-z0-9_.-], not starting with a dot)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SchemaError(source, f"{what} {name!r} is not a plain name (letters, digits, '_', '.', '-', "
                                  "not starting with '.'): names may not lead to other folders")
    return name


def inside(root: str | Path, name: object, source: str | Path, what: str = "path") -> Path:
    """``root / name``, refused unless it stays inside ``root`` with every symlink followed."""
    if not isinstance(name, (str, os.PathLike)) or str(name) == "" or "\0" in str(name):
        raise SchemaError(source, f"{what} {name!r} is not a relative path inside {root}")
    rel = str(name)
    parts = PurePosixPath(rel.replace("\\", "/")).parts
    if os.path.isabs(rel) or rel.startswith(("/", "\\")) or (parts and ":" in parts[0]):
        raise SchemaError(source, f"{what} '{rel}' is absolute: expected a path inside {root}")
    if ".." in parts:
        raise SchemaError(source, f"{what} '{rel}' leaves {root} ('..' is not allowed)")
    root = Path(root)
    path = root / rel
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise SchemaError(source, f"{what} '{rel}' leads out of {root} through a symlink (to {real})")
    return path
