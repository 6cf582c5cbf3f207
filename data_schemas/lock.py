"""Exclusive locks on the shared places stages write: a sequence's outputs, a dataset folder,
the annotation folder (queue.jsonl), a run folder.

A place is a folder; its lock is the file ``.<folder name>.lock`` beside it (so locking
creates nothing inside the place, nor the place itself), held with ``fcntl.flock`` for
as long as the writer runs and released by the kernel when the process ends, however it
ends (a SIGKILLed writer never leaves a place locked). The lock file names its holder
(pid, command, since when), so a second writer can say whom it waits for::

    with hold(out, "export"):   # waits, saying so once, while another process holds `out`
        ...                     # write; remove_stale_partials(out) is safe here

Locks are re-entrant within a process: a stage that calls another stage's writer on the
same place (fit -> queue) takes it once. ``wait=False`` refuses instead of waiting, with one
line naming the holder's pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from data_schemas.errors import SchemaError

LOCK_SUFFIX = ".lock"
LOG = logging.getLogger("handdiffuse")

_held: dict[str, list] = {}  # real path of the lock file -> [fd, depth]
_guard = threading.Lock()


class LockedError(SchemaError):
    """Another process holds the place (raised with ``wait=False``)."""


def lock_path(place: str | Path) -> Path:
    real = Path(os.path.realpath(place))
    return real.parent / f".{real.name}{LOCK_SUFFIX}"


def is_place(folder: str | Path) -> bool:
    """Whether ``folder`` has been locked as a place of its own (its lock file exists)."""
    return lock_path(folder).exists()


def holder(place: str | Path) -> str:
    """Who holds ``place`` as written in its lock file, e.g. "pid 1234 (export, since 10:02:03)"."""
    try:
        info = json.loads(lock_path(place).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    if not info.get("pid"):
        return "another process"
    since = time.strftime("%H:%M:%S", time.localtime(info.get("since", 0)))
    return f"pid {info['pid']} ({info.get('command', '?')}, since {since})"


@contextlib.contextmanager
def hold(place: str | Path, command: str, wait: bool = True) -> Iterator[Path]:
    """Hold the exclusive lock of folder ``place``; yield the lock file."""
    place = Path(place)
    try:
        path = lock_path(place)
        path.parent.mkdir(parents=True, exist_ok=True)
        key = os.path.realpath(path)
        with _guard:
            if key in _held:
                _held[key][1] += 1
                reentered = True
            else:
                reentered = False
        if not reentered:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise SchemaError(place, f"cannot create its lock file ({e.strerror or e})") from None
    if reentered:
        try:
            yield path
        finally:
            with _guard:
                _held[key][1] -= 1
        return
    try:
        _acquire(fd, place, command, wait)
        _write_holder(fd, command)
        with _guard:
            _held[key] = [fd, 1]
        try:
            yield path
        finally:
            with _guard:
                del _held[key]
    finally:
        os.close(fd)  # releases the flock


def _acquire(fd: int, place: Path, command: str, wait: bool) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    who = holder(place)
    if not wait:
        raise LockedError(place, f"in use by {who}: wait for it to finish, or stop it")
    msg = f"{command}: waiting for {place}: in use by {who}"
    LOG.warning(msg) if LOG.handlers else print(msg, file=sys.stderr, flush=True)
    fcntl.flock(fd, fcntl.LOCK_EX)


def _write_holder(fd: int, command: str) -> None:
    data = json.dumps({"pid": os.getpid(), "command": command, "since": time.time()}).encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    except OSError:
        pass  # a full disk: the lock holds all the same, the holder is just not named


@contextlib.contextmanager
def writing(place: str | Path, command: str, wait: bool = True) -> Iterator[Path]:
    """``hold`` the place, then clear the temp files killed writers left in it (safe only
    under the lock: no running writer's partial can be there). Re-entering a place this
    process holds clears nothing: that was done when it was taken."""
    from data_schemas.atomic import remove_stale_partials

    with _guard:
        first = os.path.realpath(lock_path(place)) not in _held
    with hold(place, command, wait) as path:
        for p in remove_stale_partials(place) if first else ():
            LOG.info("%s: removed %s, left by an interrupted run", command, p)
        yield path


@contextlib.contextmanager
def writing_all(places: list[Path], command: str, wait: bool = True) -> Iterator[None]:
    """``writing`` every place of ``places``, taken in sorted order so that two stages that
    lock overlapping sets never wait for each other in a cycle."""
    with contextlib.ExitStack() as stack:
        for place in sorted({Path(os.path.realpath(p)) for p in places}):
            stack.enter_context(writing(place, command, wait))
        yield
