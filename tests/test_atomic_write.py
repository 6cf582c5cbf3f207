import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_schemas import SchemaError
from data_schemas.atomic import atomic_path, is_partial, remove_stale_partials
from data_schemas.shard import read_shard

CHILD = """
import sys
sys.path.insert(0, {root!r})
from data_schemas.shard import write_shard
from tests.factories import make_sequence
seqs = [make_sequence(f"s{{i}}", 20000, i) for i in range(12)]
print("ready", flush=True)
write_shard({target!r}, seqs)
print("finished", flush=True)
"""


def test_sigkill_mid_write_leaves_no_complete_looking_file(tmp_path):
    target = tmp_path / "export" / "shard-00000.h5"
    code = CHILD.format(root=str(Path(__file__).resolve().parents[1]), target=str(target))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 60
    partial = None
    while time.monotonic() < deadline:  # wait until the write is under way, then kill
        partials = [p for p in target.parent.glob(".*") if is_partial(p)] if target.parent.exists() else []
        if partials and partials[0].stat().st_size > 2_000_000:
            partial = partials[0]
            break
        assert child.poll() is None, "writer finished before it could be killed; make the data bigger"
        time.sleep(0.02)
    assert partial is not None
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not target.exists()  # nothing at the real name
    assert [p.name for p in target.parent.iterdir()] == [partial.name]  # only the hidden temp file
    with pytest.raises(SchemaError):
        read_shard(partial)  # and the temp file does not read as a shard
    assert remove_stale_partials(tmp_path) == [partial]
    assert list(target.parent.iterdir()) == []


def test_exception_inside_write_removes_temp_and_keeps_old_file(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("new, half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]
