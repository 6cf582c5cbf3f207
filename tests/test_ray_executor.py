"""The detect and fit stages give the same files on local processes and on a local Ray cluster."""

import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from capture.studio.build import StudioConfig, build_session
from data_schemas.errors import SchemaError
from data_schemas.executor import LocalExecutor
from data_schemas.keypoints2d import read_keypoints2d
from data_schemas.mano import read_mano
from data_schemas.queue import read_queue
from pipeline.executors import MAX_TEMP_DIR_CHARS, RayExecutor

SEQS = ["seq000", "seq001"]


def hd(*args):
    env = dict(os.environ, HANDDIFFUSE_LOG="WARNING")
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True, text=True,
                          env=env)


@pytest.fixture(scope="module")
def ray_temp(tmp_path_factory):
    """The local clusters' folder: in pytest's base temp folder, since tmp_path itself is too long
    a path for Ray's sockets."""
    path = tmp_path_factory.mktemp("ray")
    assert len(str(path)) <= MAX_TEMP_DIR_CHARS, path
    return path


def test_local_executor_maps_in_process_and_in_a_pool():
    assert sorted(LocalExecutor(1).map_unordered(math.sqrt, [4.0, 9.0])) == [2.0, 3.0]
    assert sorted(LocalExecutor(2).map_unordered(math.sqrt, [4.0, 9.0, 16.0])) == [2.0, 3.0, 4.0]


def test_a_too_long_temp_dir_is_one_clear_error(tmp_path):
    long = tmp_path / ("x" * MAX_TEMP_DIR_CHARS)
    before = os.environ.get("RAY_AUTH_MODE")
    with pytest.raises(SchemaError, match="too long a path for Ray's sockets"):
        with RayExecutor(num_cpus=1, temp_dir=long):
            pass
    assert os.environ.get("RAY_AUTH_MODE") == before, "the environment is given back"


def test_ray_tasks_return_results_and_raise_the_item_s_own_error(ray_temp):
    with RayExecutor(num_cpus=1, temp_dir=ray_temp / "unit") as ex:
        assert sorted(ex.map_unordered(math.sqrt, [4.0, 9.0])) == [2.0, 3.0]
        with pytest.raises(ValueError, match="math domain error") as e:
            list(ex.map_unordered(math.sqrt, [4.0, -1.0]))
        assert type(e.value) is ValueError  # the cause, not Ray's wrapper
    assert any(p.name.startswith("session_") for p in (ray_temp / "unit").iterdir()), "its files stay under temp_dir"


@pytest.mark.slow
def test_detect_and_fit_are_the_same_on_local_processes_and_on_ray(tmp_path, ray_temp):
    base = tmp_path / "studio"
    build_session(StudioConfig(out=base, sequences=2, frames=8, board_frames=1, seed=5, max_frame_offset=1))
    shutil.copy(base / "ground_truth" / "calibration.toml", base / "calibration" / "calibration.toml")
    local, ray = tmp_path / "local", tmp_path / "ray"
    shutil.copytree(base, local)
    shutil.copytree(base, ray)
    cluster = ["--executor", "ray", "--workers", 2, "--ray-temp-dir", ray_temp / "stages"]

    r = hd("detect", local, "--chunk-frames", 4, "--workers", 2)
    assert r.returncode == 0, r.stderr
    r = hd("detect", ray, "--chunk-frames", 4, *cluster)
    assert r.returncode == 0, r.stderr
    assert all(f"detected {s}: 8 cameras x 6 frames" in r.stdout for s in SEQS), r.stdout
    for s in SEQS:
        a = read_keypoints2d(local / "sequences" / s / "keypoints2d.h5")
        b = read_keypoints2d(ray / "sequences" / s / "keypoints2d.h5")
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
        assert (a.keypoints[..., 2] > 0).mean() > 0.5
        assert not (ray / "sequences" / s / ".detect").exists()

    for root in (local, ray):
        r = hd("triangulate", root)
        assert r.returncode == 0, r.stderr
    r = hd("fit", local, "--workers", 2)
    assert r.returncode == 0, r.stderr
    r = hd("fit", ray, *cluster)
    assert r.returncode == 0, r.stderr
    assert all(f"fitted {s}: 6 frames" in r.stdout for s in SEQS), r.stdout
    for s in SEQS:
        a, b = read_mano(local / "sequences" / s / "mano.h5"), read_mano(ray / "sequences" / s / "mano.h5")
        for k in ("global_orient", "hand_pose", "betas", "transl"):
            np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=f"{s} {k}")
        np.testing.assert_array_equal(a.quality.failure, b.quality.failure)
    queues = [root / "annotation" / "queue.jsonl" for root in (local, ray)]
    queues = [read_queue(q) if q.is_file() else [] for q in queues]
    assert queues[0] == queues[1]
    assert "up to date" in hd("fit", ray, *cluster).stdout
