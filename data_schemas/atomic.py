"""Atomic file writes: write a hidden temp file beside the target, fsync, rename.

A writer killed at any moment (SIGKILL included) leaves either the previous file or
no file at the target path, never a truncated one. The temp file is named
``.<name>.partial-<pid>`` so that nothing that lists outputs mistakes it for one;
``remove_stale_partials`` clears those a killed writer left behind.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

PARTIAL_MARKER = ".partial-"


def partial_path(target: Path) -> Path:
    return target.with_name(f".{target.name}{PARTIAL_MARKER}{os.getpid()}")


def is_partial(path: Path) -> bool:
    return path.name.startswith(".") and PARTIAL_MARKER in path.name


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temp path to write; on clean exit it replaces ``target`` in one step."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(target)
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


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
