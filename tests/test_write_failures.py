"""A stage that cannot write its output (read-only folder, full disk) or meets a value no file
format can carry (an unquoted TOML date) says so in one line, ``error: <file>: <cause>``, exits 1
and leaves nothing behind: no output file, no temp file."""

import contextlib
import errno
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from data_schemas.calibration import write_calibration
from data_schemas.dataset import DatasetOptions, append_to_dataset
from data_schemas.joints3d import write_joints3d
from data_schemas.keypoints2d import write_keypoints2d
from pipeline.cli import main
from tests.factories import make_joints3d, make_keypoints2d, make_sequence
from tests.test_export import make_fitted_session
from tests.test_session import make_session

SEQ = "seq000"
TINY = ["--size", "tiny", "--window", "16", "--batch-size", "4", "--threads", "1", "--device", "cpu"]


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` refuses new files; yields the refusal's text. Root ignores permissions, so as
    root the folder is made immutable (``chattr +i``) instead of mode 0555."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield os.strerror(errno.EACCES)
        finally:
            folder.chmod(0o755)
        return
    r = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True) \
        if shutil.which("chattr") else None
    if r is None or r.returncode != 0:
        pytest.skip(f"running as root where `chattr +i` does not work ({r.stderr.strip() if r else 'no chattr'})")
    try:
        yield os.strerror(errno.EPERM)
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@contextlib.contextmanager
def full_disk(folder: Path):
    """``folder`` (new) on a disk with no room left: a full tmpfs where this process may mount one
    (root), else an ordinary folder under a file size limit that only the child processes
    started with ``preexec`` get. Yields (preexec, the failure's text, fill) where ``fill(room)``
    takes the free space left after the inputs are in place but ``room`` bytes: a writer's first
    bytes go through, the rest fail, as on a disk that fills while a stage writes."""
    folder.mkdir(parents=True)
    if os.geteuid() == 0 and shutil.which("mount") and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(folder)], capture_output=True).returncode == 0:
        def fill(room: int):
            filler = folder / "filler"
            with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 4096)
            os.truncate(filler, filler.stat().st_size - room)
        try:
            yield None, os.strerror(errno.ENOSPC), fill
        finally:
            subprocess.run(["umount", str(folder)], check=True)
        return

    def limit():  # in the child: writes past 4 KiB fail with EFBIG instead of killing it
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    yield limit, os.strerror(errno.EFBIG), lambda room: None


def hd(*args, preexec=None):
    env = dict(os.environ, HANDDIFFUSE_LOG="WARNING")
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, preexec_fn=preexec)


def errors(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def files(folder: Path) -> list[str]:
    """Every file under ``folder``, temp files included; not the locks beside places."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def triangulation_session(root: Path) -> Path:
    """session.toml, calibration and a 5-frame keypoints2d.h5 of 3 cameras."""
    _, rig = make_session(root, 3)
    write_calibration(root / "calibration" / "calibration.toml", rig)
    write_keypoints2d(root / "sequences" / SEQ / "keypoints2d.h5", make_keypoints2d(3, 5))
    return root


def test_triangulate_into_a_read_only_folder(tmp_path, capsys):
    root = triangulation_session(tmp_path / "s")
    seq = root / "sequences" / SEQ
    with read_only(seq) as why:
        assert main(["triangulate", str(root)]) == 1
    assert errors(capsys) == [f"error: {seq / 'joints3d.h5'}: cannot write: {why}"]
    assert files(seq) == ["keypoints2d.h5"]


def test_fit_into_a_read_only_folder(tmp_path, capsys):
    root = triangulation_session(tmp_path / "s")
    seq = root / "sequences" / SEQ
    write_joints3d(seq / "joints3d.h5", make_joints3d(5))
    with read_only(seq) as why:
        assert main(["fit", str(root)]) == 1
    assert errors(capsys) == [f"error: {seq / 'mano.h5'}: cannot write: {why}"]
    assert files(seq) == ["joints3d.h5", "keypoints2d.h5"]


def test_export_into_a_read_only_folder(tmp_path, capsys):
    session = make_fitted_session(tmp_path / "demo")
    out = tmp_path / "dataset"
    out.mkdir()
    with read_only(out) as why:
        assert main(["export", str(session), "--out", str(out)]) == 1
    assert errors(capsys) == [f"error: {out / 'shard-00000.h5'}: cannot write: {why}"]
    assert files(out) == []


def test_train_into_a_read_only_run_folder(tmp_path, capsys):
    shards = tmp_path / "shards"
    append_to_dataset(shards, [make_sequence(f"t.s{i}", 40, seed=i) for i in range(2)],
                      DatasetOptions(split_ratios=(1.0, 0.0, 0.0)))
    run = tmp_path / "run"
    run.mkdir()
    with read_only(run) as why:
        assert main(["train", "--shards", str(shards), "--run", str(run), *TINY, "--shde-steps", "1",
                     "--ihde-steps", "1"]) == 1
    assert errors(capsys) == [f"error: {run / 'run.json'}: cannot write: {why}"]
    assert files(run) == []


def test_export_onto_a_full_disk(tmp_path):
    """HDF5 2.0 crashes (SIGSEGV) closing a file whose writes failed: the export must not let it."""
    session = make_fitted_session(tmp_path / "demo")
    with full_disk(tmp_path / "disk") as (preexec, why, fill):
        out = tmp_path / "disk" / "dataset"
        fill(16384)
        r = hd("export", session, "--out", out, preexec=preexec)
        assert (r.returncode, r.stderr.strip()) == (1, f"error: {out / 'shard-00000.h5'}: cannot write: {why}")
        assert not out.exists() or files(out) == []


def test_triangulate_onto_a_full_disk(tmp_path):
    with full_disk(tmp_path / "disk") as (preexec, why, fill):
        root = triangulation_session(tmp_path / "disk" / "s")
        fill(8192)  # the lock's page and half of joints3d.h5
        r = hd("triangulate", root, preexec=preexec)
        seq = root / "sequences" / SEQ
        assert (r.returncode, r.stderr.strip()) == (1, f"error: {seq / 'joints3d.h5'}: cannot write: {why}")
        assert files(seq) == ["keypoints2d.h5"]


def test_train_onto_a_full_disk(tmp_path):
    """torch.save reports a failed write as a RuntimeError naming neither the file nor the cause."""
    shards = tmp_path / "shards"
    append_to_dataset(shards, [make_sequence(f"t.s{i}", 40, seed=i) for i in range(2)],
                      DatasetOptions(split_ratios=(1.0, 0.0, 0.0)))
    with full_disk(tmp_path / "disk") as (preexec, why, fill):
        run = tmp_path / "disk" / "run"
        fill(16384)  # the lock, run.json and loss.jsonl, a page each; not the checkpoint
        r = hd("train", "--shards", shards, "--run", run, *TINY, "--shde-steps", "1", "--ihde-steps", "1",
               preexec=preexec)
        assert (r.returncode, r.stderr.strip()) == (1, f"error: {run / 'checkpoint.pt'}: cannot write: {why}")
        assert files(run) == ["loss.jsonl", "run.json"]  # a run started: a rerun resumes it


def test_an_unquoted_toml_date_is_refused(tmp_path, capsys):
    session = make_fitted_session(tmp_path / "demo")
    toml = session / "session.toml"
    toml.write_text(toml.read_text().replace('capture_date = "2026-11-25"', "capture_date = 2026-11-25"))
    line = (f'error: {toml}: [session] capture_date = 2026-11-25 is a TOML date, not a string: quote it, '
            f'capture_date = "2026-11-25"')
    assert main(["validate", str(session)]) == 1
    assert errors(capsys) == [line]
    assert main(["export", str(session)]) == 1
    assert errors(capsys) == [line]
    assert not (session / "export").exists() or files(session / "export") == []


def test_an_os_error_from_a_stage_is_one_line(tmp_path, capsys, monkeypatch):
    """The CLI's last resort for an OSError no stage turned into a SchemaError."""
    import fitting.triangulate_stage

    def fail(*args, **kw):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path / "x"))

    monkeypatch.setattr(fitting.triangulate_stage, "triangulate_session", fail)
    assert main(["triangulate", str(tmp_path)]) == 1
    assert errors(capsys) == [f"error: {tmp_path / 'x'}: Permission denied"]
