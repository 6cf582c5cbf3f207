"""Locks on shared places: two real processes writing one place never lose or mix data.

A test holds a place's lock itself, starts two real writers, sees each say whom it waits
for, then lets go: both must land their data.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from data_schemas.atomic import partial_path
from data_schemas.lock import LockedError, hold, lock_path, writing
from data_schemas.manifest import read_manifest
from data_schemas.validate import validate_path
from tests.test_export import make_fitted_session

ROOT = Path(__file__).resolve().parents[1]
HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
from data_schemas.lock import hold
with hold({place!r}, "holder"):
    print("held", flush=True)
    time.sleep(60)
"""


def hd(*args: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def wait_for_line(proc: subprocess.Popen, needle: str, timeout: float = 120) -> str:
    """Read ``proc``'s stderr until a line containing ``needle``; that line."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return line
    proc.kill()
    raise AssertionError(f"no line with {needle!r} from {proc.args}; stderr:\n{''.join(seen)}")


def test_second_holder_is_refused_naming_the_pid_and_a_killed_holder_frees_the_place(tmp_path):
    place = tmp_path / "dataset"
    child = subprocess.Popen([sys.executable, "-c", HOLDER.format(root=str(ROOT), place=str(place))],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(LockedError) as e:
            with hold(place, "export", wait=False):
                pass
        assert str(e.value).startswith(f"{place}: in use by pid {child.pid} (holder, since ")
        assert str(e.value).endswith("): wait for it to finish, or stop it")
        assert not place.exists()  # locking creates nothing inside the place, nor the place
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    with hold(place, "export", wait=False):  # the kernel released the killed holder's lock
        assert json.loads(lock_path(place).read_text())["pid"] == os.getpid()


def test_lock_is_reentrant_within_a_process(tmp_path):
    with hold(tmp_path / "x", "fit"):
        with hold(tmp_path / "x", "queue", wait=False):
            pass
        with hold(tmp_path / "x", "queue", wait=False):
            pass


def test_partials_are_cleared_only_in_the_place_and_not_in_a_nested_place(tmp_path):
    out = tmp_path / "export"
    stale = partial_path(out / "shard-00000.h5")
    nested = partial_path(out / "stats" / "stats.json")
    for p in (stale, nested):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half")
    with hold(out / "stats", "stats"):  # stats/ is a place of its own: its writer's partials stay
        with writing(out, "export"):
            pass
    assert not stale.exists() and nested.exists()


def test_two_exports_into_one_dataset_both_land(tmp_path):
    a = make_fitted_session(tmp_path / "a", name="a", unfitted=())
    b = make_fitted_session(tmp_path / "b", name="b", unfitted=(), seed=5)
    out = tmp_path / "dataset"
    with hold(out, "test"):
        procs = [hd("export", s, "--out", out) for s in (a, b)]
        for p in procs:
            line = wait_for_line(p, "waiting for")
            assert f"export: waiting for {out}: in use by pid {os.getpid()} (test, since " in line
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    m = read_manifest(out)
    assert sorted(m["name"]) == ["a.seq000", "a.seq001", "b.seq000", "b.seq001"]
    assert sorted(m["shard"].unique()) == ["shard-00000.h5", "shard-00001.h5"]
    assert all(r.ok for r in validate_path(out))


def test_two_trains_in_one_run_folder_log_each_step_once(tmp_path):
    from data_schemas.dataset import DatasetOptions, append_to_dataset
    from tests.factories import posed_sequence

    shards = tmp_path / "shards"
    append_to_dataset(shards, [posed_sequence(f"t.s{i}", 40, seed=i) for i in range(3)],
                      DatasetOptions(split_ratios=(1.0, 0.0, 0.0)))
    run = tmp_path / "run"
    args = ["train", "--shards", shards, "--run", run, "--size", "tiny", "--window", "16", "--batch-size", "4",
            "--threads", "1", "--device", "cpu", "--shde-steps", "4", "--ihde-steps", "4", "--log-every", "1"]
    with hold(run, "test"):
        procs = [hd(*args) for _ in range(2)]
        for p in procs:
            wait_for_line(p, f"train: waiting for {run}: in use by pid {os.getpid()}")
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sum("nothing to do" in out for out, _ in outs) == 1  # the second found the run complete
    steps = [json.loads(line)["step"] for line in (run / "loss.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and len(steps) == 8


def test_export_removes_an_interrupted_runs_orphan_shard_and_partials(tmp_path):
    session = make_fitted_session(tmp_path / "demo", unfitted=())
    out = tmp_path / "dataset"
    assert subprocess.run([sys.executable, "-m", "pipeline.cli", "export", session, "--out", out],
                          cwd=ROOT, capture_output=True).returncode == 0
    # a run killed between its shard and its manifest, and one killed mid-write
    (out / "shard-00001.h5").write_bytes((out / "shard-00000.h5").read_bytes())
    partial = out / ".shard-00002.h5.partial-999999"  # a killed process's temp file
    partial.write_bytes(b"half a shard")
    problems = [p for r in validate_path(out) for p in r.problems]
    assert problems == [f"{out / 'shard-00001.h5'}: shard not in the manifest (left by an interrupted export): "
                        "run `handdiffuse export` again to remove it"]
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "export", session, "--out", out], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0 and "up to date, nothing to do" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == ["manifest.parquet", "shard-00000.h5"]
    assert all(r.ok for r in validate_path(out))


def test_export_is_not_up_to_date_when_a_shard_is_missing(tmp_path):
    from pipeline.export import export_sessions

    session = make_fitted_session(tmp_path / "demo", unfitted=())
    out = tmp_path / "dataset"
    export_sessions([session], out)
    (out / "shard-00000.h5").unlink()
    assert [p for r in validate_path(out) for p in r.problems]  # the manifest names a missing shard
    s = export_sessions([session], out)
    assert s.written == ["demo.seq000", "demo.seq001"] and s.shards_written == ["shard-00001.h5"]
    assert all(r.ok for r in validate_path(out))
    assert np.all(read_manifest(out)["shard"] == "shard-00001.h5")
