"""Atomic file writes: write a hidden temp file beside the target, fsync, rename.

A writer killed at any moment (SIGKILL included) leaves either the previous file or
no file at the target path, never a truncated one. The temp file is named
``.<name>.partial-<pid>`` so that nothing that lists outputs mistakes it for one;
``remove_stale_partials`` clears those a killed writer left behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Iterator

from data_schemas.errors import SchemaError

PARTIAL_MARKER = ".partial-"
# a place that refuses the file (read-only or immutable folder, read-only file system) or has
# no room for it (full disk, quota, file size limit)
WRITE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def partial_path(target: Path) -> Path:
    return target.with_name(f".{target.name}{PARTIAL_MARKER}{os.getpid()}")


def is_partial(path: Path) -> bool:
    return path.name.startswith(".") and PARTIAL_MARKER in path.name


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temp path to write; on clean exit it replaces ``target`` in one step.

    A write the place refuses or has no room for (``WRITE_ERRNOS``: a read-only folder, a full
    disk) becomes ``SchemaError(target, "cannot write: <reason>")``; no temp file is left.
    """
    target = Path(target)
    tmp = partial_path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
            raise cannot_write(target, e) from None
        raise


def cannot_write(target: str | Path, e: OSError) -> SchemaError:
    """The one line for a write that failed with ``e`` (its errno's text: h5py's and pyarrow's
    messages run over several lines)."""
    return SchemaError(target, f"cannot write: {os.strerror(e.errno) if e.errno else e}")


def atomic_write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(target: str | Path, data: bytes | memoryview) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def remove_stale_partials(folder: str | Path) -> list[Path]:
    """Delete temp files left by killed writers under ``folder``; return them.

    Call it only while holding ``folder``'s lock (``data_schemas.lock.writing`` does): a
    partial there is then no running writer's. A subfolder that is a place of its own (it
    has a lock file) is left to its own writer.
    """
    from data_schemas.lock import is_place

    removed = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not is_place(Path(dirpath) / d))
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if is_partial(p) and not p.is_symlink():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
