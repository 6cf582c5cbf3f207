"""Executors for the stages: this machine's processes, or Ray tasks on a cluster.

The contract (``map_unordered(fn, items, resources)``, results as they finish) and the
local executor live in ``data_schemas.executor``, so that stages take an executor without
importing ``pipeline``; here is the Ray one, and ``make_executor``, which the CLI calls
with the stage's ``--executor``, ``--ray-address``, ``--ray-temp-dir`` and ``--workers``.

Running the stages on a Ray cluster (a lab's dome)
--------------------------------------------------

1. Every machine: the same Python environment with handdiffuse installed
   (``pip install -e .`` with ``constraints.txt``; ray 2.60), and the session folder on a
   shared file system at the same path everywhere (NFS, Lustre, ...): workers read the
   videos and write chunk files there, the driver writes keypoints2d.h5 / mano.h5.
2. One machine (the head): ``ray start --head --port=6379``; every other machine:
   ``ray start --address=<head-ip>:6379``. Ray 2.60 turns token authentication on for
   clusters: ``ray get-auth-token --generate`` on the head and the same ``~/.ray/auth_token``
   (or ``RAY_AUTH_TOKEN``) on every machine and on the driver; see Ray's token-auth docs.
3. On any machine of the cluster::

       handdiffuse detect SESSION --executor ray --ray-address auto
       handdiffuse triangulate SESSION
       handdiffuse fit SESSION --executor ray --ray-address auto

   Detection runs one task per (sequence, camera, ``--chunk-frames`` instants) chunk
   (one CPU each; with a GPU backend, dwpose or mmpose, ``--task-gpus`` of a GPU where the
   cluster has GPUs), fitting one task per sequence (``--threads`` CPUs, ``--task-gpus``
   of a GPU where the cluster has them). A killed or failed run is resumed by running the
   same command again: finished chunk files and fitted sequences are kept. Ray retries a
   task whose machine died; an error in a task stops the stage with that error.

Without ``--ray-address`` the executor starts a private local cluster of ``--workers``
CPUs (fit: ``--workers`` x ``--threads``), with no token (``RAY_AUTH_MODE=disabled``
unless set) and its files under ``--ray-temp-dir`` (default: a fresh temporary folder,
removed afterwards), and stops it at the end.

What a dome's capture costs to detect
-------------------------------------

Measured here (MediaPipe Hands, the bundled backend, ``handdiffuse detect`` on the demo
preset: 2 sequences x 8 cameras x 60 frames at 640x512 = 960 images, local executor, 2
workers on the 2 CPU cores of a machine that was also running another job): 29.2
images/s from the stage's own summary, i.e. about 0.068 CPU-seconds per image (14.6
images/s per core); the same run on a local Ray cluster of 2 CPUs: 36.5 images/s, plus
~8 s to start the cluster.

The paper's capture, 250K frames x 50 cameras = 12.5M images, at 0.068 CPU-s per image
is about 240 CPU-hours of detection, e.g. 2.4 hours on a 100-core Ray cluster. Take it
as a lower bound: 3840x2160 frames cost more to decode and to detect in than 640x512
ones. GPU throughput (DWPose through onnxruntime-gpu, or fitting on CUDA) was not
measured here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

from data_schemas.errors import SchemaError
from data_schemas.executor import Executor, ExecutorKind, LocalExecutor, TaskResources

T = TypeVar("T")
R = TypeVar("R")

# Environment a private local cluster starts with (a user's own settings win).
LOCAL_CLUSTER_ENV = {
    "RAY_AUTH_MODE": "disabled",  # a private cluster on this machine needs no token (ray 2.60 asks for one)
    "RAY_USAGE_STATS_ENABLED": "0",  # nothing written to ~/.ray or sent out
}
# Ray puts unix sockets at <temp dir>/session_<date>_<time>_<us>_<pid>/sockets/plasma_store, and an
# AF_UNIX path holds at most 107 bytes.
MAX_TEMP_DIR_CHARS = 107 - len("/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")


class RayExecutor:
    """Ray tasks: on the cluster at ``address`` ("auto", "ray://...", "host:port"), or on a
    local cluster of ``num_cpus`` CPUs started here when ``address`` is None.

    Use as a context manager: it connects (or starts the local cluster) on entry and
    disconnects (and stops what it started, removing its temp folder if it made one) on exit.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, temp_dir: Path | None = None):
        self.address = address
        self.num_cpus = num_cpus
        self.temp_dir = Path(temp_dir) if temp_dir is not None else None
        self._made_temp: Path | None = None
        self._env_set: list[str] = []
        self._started = False

    def __enter__(self) -> "RayExecutor":
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        if self.temp_dir is not None and len(str(self.temp_dir.resolve())) > MAX_TEMP_DIR_CHARS:
            n = len(str(self.temp_dir.resolve()))
            raise SchemaError(self.temp_dir, f"too long a path for Ray's sockets below it ({n} characters, at most "
                              f"{MAX_TEMP_DIR_CHARS}): pass a shorter --ray-temp-dir")
        if self.address is None:
            for k, v in LOCAL_CLUSTER_ENV.items():
                if k not in os.environ:
                    os.environ[k] = v
                    self._env_set.append(k)
        import ray

        if self.address is not None:
            ray.init(address=self.address, log_to_driver=False, logging_level="WARNING")
        else:
            if self.temp_dir is None:
                # short: Ray's socket paths below it must fit in 107 characters
                self._made_temp = Path(tempfile.mkdtemp(prefix="hd-ray-"))
            temp = self.temp_dir or self._made_temp
            temp.mkdir(parents=True, exist_ok=True)
            ray.init(address="local", num_cpus=self.num_cpus, _temp_dir=str(temp.resolve()), include_dashboard=False,
                     log_to_driver=False, logging_level="WARNING")
        self._started = True

    def __exit__(self, *exc) -> None:
        import ray

        if self._started:
            ray.shutdown()
            self._started = False
        if self._made_temp is not None:
            shutil.rmtree(self._made_temp, ignore_errors=True)
            self._made_temp = None
        for k in self._env_set:
            os.environ.pop(k, None)
        self._env_set = []

    def has_gpus(self) -> bool:
        import ray

        return ray.cluster_resources().get("GPU", 0) > 0

    def map_unordered(self, fn: Callable[[T], R], items: Sequence[T],
                      resources: TaskResources = TaskResources()) -> Iterator[R]:
        import ray
        from ray.exceptions import RayTaskError

        if not self._started:
            raise RuntimeError("RayExecutor is used inside `with` (it connects to the cluster there)")
        if not items:
            return
        gpus = resources.gpus if resources.gpus > 0 and self.has_gpus() else 0
        task = ray.remote(_call).options(num_cpus=resources.cpus, num_gpus=gpus)
        fn_ref = ray.put(fn)
        pending = [task.remote(fn_ref, item) for item in items]
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                try:
                    result = ray.get(done[0])
                except RayTaskError as e:  # the item's own error, not Ray's wrapper with the remote traceback
                    raise (e.cause if isinstance(e.cause, BaseException) else e) from None
                yield result
        finally:
            for ref in pending:  # an error or a stopped consumer: the rest are not needed
                ray.cancel(ref, force=True)


def _call(fn: Callable[[T], R], item: T) -> R:
    """One task (any picklable callable, builtins included, which ``ray.remote`` does not take)."""
    return fn(item)


def make_executor(kind: ExecutorKind, workers: int = 1, ray_address: str | None = None,
                  ray_temp_dir: Path | None = None, cpus_per_worker: int = 1) -> Executor:
    """The executor a stage's ``--executor`` names (a context manager either way); a local Ray
    cluster gets ``workers`` x ``cpus_per_worker`` CPUs (what one task asks for)."""
    if kind == "local":
        return LocalExecutor(workers)
    if kind == "ray":
        return RayExecutor(ray_address, num_cpus=max(workers, 1) * max(cpus_per_worker, 1), temp_dir=ray_temp_dir)
    raise ValueError(f"unknown executor {kind!r}: local or ray")
