"""How a stage runs its work items: the executor contract, and the local one.

A stage cuts its work into items (detect: a (sequence, camera, frames) chunk; fit: a
sequence), and hands a module-level function and the items to an executor, which
yields the function's results in the order they finish. The stage itself reads its
inputs, decides what is left to do and writes every output file; a worker only computes
(and, for detect, saves its chunk file atomically), so a stage gives the same files
whichever executor ran it.

- ``LocalExecutor``: this machine's processes (a forkserver pool), or this process for
  one worker; what the stages did before executors existed.
- ``pipeline.executors.RayExecutor``: Ray tasks on a local or remote Ray cluster; the CLI
  makes it (stage packages do not import ``pipeline``) and passes it to the stage.

``fn`` and the items must pickle (module-level functions; dataclasses, paths, arrays).
An item's error is raised in the caller as the original exception.
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal, Protocol, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

ExecutorKind = Literal["local", "ray"]


@dataclass(frozen=True)
class TaskResources:
    """What one work item holds while it runs (Ray schedules by it; the local pool ignores it)."""

    cpus: float = 1.0
    gpus: float = 0.0  # requested only where the cluster has GPUs


class Executor(Protocol):
    name: str

    def map_unordered(self, fn: Callable[[T], R], items: Sequence[T],
                      resources: TaskResources = TaskResources()) -> Iterator[R]:
        """``fn(item)`` for every item, yielded as each finishes."""
        ...


class LocalExecutor:
    """``workers`` processes on this machine; one worker (or one item) runs in this process."""

    name = "local"

    def __init__(self, workers: int = 1):
        self.workers = workers

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def map_unordered(self, fn: Callable[[T], R], items: Sequence[T],
                      resources: TaskResources = TaskResources()) -> Iterator[R]:
        if self.workers <= 1 or len(items) <= 1:
            for item in items:
                yield fn(item)
            return
        # not fork: a process forked from one that ran MediaPipe, onnxruntime or torch threads can hang
        with mp.get_context("forkserver").Pool(min(self.workers, len(items))) as pool:
            yield from pool.imap_unordered(fn, items)


@dataclass
class ExecutorOptions:
    """Where a stage's work items run; the stage configs that can scale out (detect, fit) extend it."""

    executor: ExecutorKind = "local"
    """Where the work items run: local (this machine's processes) or ray (Ray tasks, see --ray-address)."""
    ray_address: str | None = None
    """--executor ray: the cluster to use ("auto": the one this machine joined with `ray start`);
    default: start a local one for this run."""
    ray_temp_dir: Path | None = None
    """--executor ray without --ray-address: the local cluster's folder (sockets, logs); default: a
    fresh temporary folder, removed afterwards."""

    def local_executor(self, workers: int) -> LocalExecutor:
        """The stage's default executor when none is passed in (only --executor local can be made here)."""
        if self.executor != "local":
            raise ValueError(f"executor {self.executor!r}: pass one to the stage "
                             "(pipeline.executors.make_executor; the CLI does)")
        return LocalExecutor(workers)
