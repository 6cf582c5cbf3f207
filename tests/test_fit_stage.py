import dataclasses
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from capture.studio.build import StudioConfig, build_session
from data_schemas.joints3d import read_joints3d, write_joints3d
from data_schemas.keypoints2d import read_keypoints2d, write_keypoints2d
from data_schemas.mano import FailureReason, read_mano
from data_schemas.queue import read_queue
from data_schemas.validate import validate_path
from hand_model.model import HandModel

SEQ = "seq000"


def hd(*args):
    env = dict(os.environ, HANDDIFFUSE_LOG="WARNING")
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True, text=True,
                          env=env)


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """A tiny studio session whose stage files are the ground truth's (perfect detections and
    triangulation), the left hand of frame 3 seen by two cameras only, the right hand of frame 1
    detected 40 px off in 3 of the 5 views that see it (the triangulation right: the fit disagrees with them)."""
    root = tmp_path_factory.mktemp("fit") / "s"
    build_session(StudioConfig(out=root, sequences=1, frames=8, board_frames=1, seed=6, max_frame_offset=0))
    gt = root / "ground_truth"
    shutil.copy(gt / "calibration.toml", root / "calibration" / "calibration.toml")
    kp = read_keypoints2d(gt / "sequences" / SEQ / "keypoints2d.h5")
    kp.keypoints[:, 3, 21:, 2] = 1.0  # the right hand of frame 3 seen whole in every view, whatever the motion hides
    kp.keypoints[2:, 3, :21] = (np.nan, np.nan, 0.0)
    kp.keypoints[:2, 3, :21, 2] = 1.0  # seen, in those two
    kp.keypoints[[1, 2, 5], 1, 21:, 0] += 40.0  # 3 of the 5 views that see it
    write_keypoints2d(root / "sequences" / SEQ / "keypoints2d.h5", kp)
    write_joints3d(root / "sequences" / SEQ / "joints3d.h5", read_joints3d(gt / "sequences" / SEQ / "joints3d.h5"))
    return root


def test_fit_recovers_the_truth_and_queues_only_the_inconsistent_frame(studio):
    r = hd("fit", studio)
    assert r.returncode == 0, r.stderr
    assert f"fitted {SEQ}: 8 frames" in r.stdout
    assert ("1 frames inconsistent, 1 short of evidence, 1 under confidence 0.5 (flags: few_cameras 1, reprojection 1)"
            in r.stdout), r.stdout
    fit = read_mano(studio / "sequences" / SEQ / "mano.h5")
    truth = read_joints3d(studio / "ground_truth" / "sequences" / SEQ / "joints3d.h5").joints
    model = HandModel()
    with torch.no_grad():
        joints = model(*(torch.as_tensor(a) for a in (fit.global_orient, fit.hand_pose, fit.betas, fit.transl))).joints
    err = np.linalg.norm(joints.numpy().reshape(8, 42, 3) - truth, axis=-1)
    assert err.mean() < 0.002 and err.max() < 0.01
    q = fit.quality
    assert q.failure[3, 0] == FailureReason.FEW_CAMERAS and q.failure[1, 1] == FailureReason.REPROJECTION
    assert np.count_nonzero(q.failure) == 2
    assert 0.5 < q.confidence[3, 0] < 0.9 and q.confidence[1, 1] < 0.5  # few views vs views that disagree
    others = np.ones((8, 2), bool)
    others[3, 0] = others[1, 1] = False
    assert (q.confidence[others] > 0.9).all()
    items = read_queue(studio / "annotation" / "queue.jsonl")  # the weak but consistent frame 3 is not queued
    assert {(i.frame, i.hand, i.reason) for i in items} == {(1, "right", "reprojection")}
    assert 1 <= len(items) <= 3 and all(v.ok for v in validate_path(studio))
    assert "up to date" in hd("fit", studio).stdout


def test_queue_rebuilds_from_the_fits(studio):
    r = hd("queue", studio, "--rule.views-per-frame", 1)
    assert r.returncode == 0, r.stderr
    assert "1 views of 1 inconsistent frames" in r.stdout
    assert len(read_queue(studio / "annotation" / "queue.jsonl")) == 1


def test_fit_needs_the_triangulation(tmp_path, studio):
    root = tmp_path / "s"
    shutil.copytree(studio, root)
    (root / "sequences" / SEQ / "joints3d.h5").unlink()
    r = hd("fit", root, "--sequences", SEQ)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: {root}/sequences/{SEQ}/joints3d.h5: file not found: run `handdiffuse triangulate` first")


def test_killed_fit_resumes_with_the_unfinished_sequences(studio, tmp_path):
    """SIGKILL once the first sequence's mano.h5 is written: the rerun fits only the others, and
    every mano.h5 and the queue equal those of an uninterrupted run."""
    import signal
    import time

    root = tmp_path / "s"
    shutil.copytree(studio, root, ignore=shutil.ignore_patterns("mano.h5", "queue.jsonl"))
    for name in ("seq001", "seq002", "seq003"):
        shutil.copytree(root / "sequences" / SEQ, root / "sequences" / name)
    whole = tmp_path / "whole"
    shutil.copytree(root, whole)
    assert hd("fit", whole).returncode == 0
    names = [SEQ, "seq001", "seq002", "seq003"]
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "fit", str(root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (root / "sequences" / SEQ / "mano.h5").exists():
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = [n for n in names if (root / "sequences" / n / "mano.h5").exists()]
    assert 1 <= len(done) < len(names), done
    r = hd("fit", root)
    assert r.returncode == 0, r.stderr
    for n in names:
        assert (f"sequences/{n}/mano.h5: up to date" in r.stdout) == (n in done), r.stdout
        a, b = read_mano(root / "sequences" / n / "mano.h5"), read_mano(whole / "sequences" / n / "mano.h5")
        for k in ("global_orient", "hand_pose", "betas", "transl"):
            np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
        np.testing.assert_array_equal(a.quality.failure, b.quality.failure)
    assert read_queue(root / "annotation" / "queue.jsonl") == read_queue(whole / "annotation" / "queue.jsonl")


def test_manual_points_take_part_in_triangulation_and_fit(studio, tmp_path):
    """A person's points (keypoints2d_manual.h5) replace the detections in the triangulate and fit
    stages, and a new manual file makes both stages run again."""
    from data_schemas.calibration import read_calibration
    from data_schemas.keypoints2d import Keypoints2D

    root = tmp_path / "s"
    shutil.copytree(studio, root, ignore=shutil.ignore_patterns("mano.h5", "queue.jsonl"))
    assert hd("triangulate", root).returncode == 0
    before = read_joints3d(root / "sequences" / SEQ / "joints3d.h5").joints
    rig = read_calibration(root / "calibration" / "calibration.toml")
    kp = read_keypoints2d(root / "sequences" / SEQ / "keypoints2d.h5")
    truth = read_joints3d(root / "ground_truth" / "sequences" / SEQ / "joints3d.h5").joints
    target = truth[2, 21] + (0.02, 0.0, 0.0)  # the right wrist of frame 2, 2 cm off: where the person clicked
    manual = np.full(kp.keypoints.shape, np.nan, np.float32)
    manual[..., 2] = 0.0
    for c, cam in enumerate(kp.cameras):
        manual[c, 2, 21] = (*rig[cam].project(target[None])[0], 1.0)
    who = np.full(manual.shape[:2], "", object)
    who[:, 2] = "ann"
    write_keypoints2d(root / "sequences" / SEQ / "keypoints2d_manual.h5",
                      Keypoints2D(kp.cameras, kp.image_sizes, kp.frames, manual, "manual", kp.fps, annotators=who,
                                  annotated_at=np.where(who == "", "", "2026-11-26T00:00:00+00:00")))
    r = hd("triangulate", root)
    assert r.returncode == 0 and "up to date" not in r.stdout, r.stdout
    joints = read_joints3d(root / "sequences" / SEQ / "joints3d.h5").joints
    assert np.linalg.norm(joints[2, 21] - target) < 1e-3
    others = np.arange(len(joints)) != 2
    np.testing.assert_allclose(joints[others], before[others], atol=1e-6)  # the other frames as before
    assert "up to date" in hd("triangulate", root).stdout
    r = hd("fit", root)
    assert r.returncode == 0 and f"fitted {SEQ}" in r.stdout, r.stdout
    assert "up to date" in hd("fit", root).stdout


def test_rerun_clears_partials_a_killed_run_left_in_the_sequence(studio):
    folder = studio / "sequences" / SEQ
    if not (folder / "mano.h5").is_file():
        assert hd("fit", studio).returncode == 0
    stale = [folder / f".{name}.partial-999999" for name in ("mano.h5", "joints3d.h5", "keypoints2d.h5")]
    for p in stale:
        p.write_bytes(b"half")
    r = hd("fit", studio)
    assert r.returncode == 0 and "up to date" in r.stdout, r.stderr
    assert not any(p.exists() for p in stale)


def test_fit_splices_the_frames_the_triangulation_spliced(studio, tmp_path):
    """--frames after `triangulate --frames`: only those frames are fitted again (with context) and
    replaced, and mano.h5 is current; a mano.h5 made with other options is fitted whole."""
    from fitting.fit_stage import FitConfig, fit_session
    from fitting.triangulate_stage import TriangulateConfig, triangulate_session
    from tests.test_triangulate import write_manual_point

    root = tmp_path / "s"
    shutil.copytree(studio, root, ignore=shutil.ignore_patterns("mano.h5", "queue.jsonl"))
    triangulate_session(root)
    [whole] = fit_session(root)
    before = read_mano(root / "sequences" / SEQ / "mano.h5")
    queue = read_queue(root / "annotation" / "queue.jsonl")
    write_manual_point(root, 5, 37, 4.0)
    triangulate_session(root, TriangulateConfig(frames=[5]))
    [s] = fit_session(root, FitConfig(frames=[5], context_frames=1))
    assert (s.spliced, s.fitted, whole.spliced, whole.fitted) == ([5], 3, None, 8)
    after = read_mano(root / "sequences" / SEQ / "mano.h5")
    others = np.arange(8) != 5
    for k in ("global_orient", "hand_pose", "transl", "joints", "betas"):
        np.testing.assert_array_equal(getattr(after, k)[others] if k != "betas" else after.betas,
                                      getattr(before, k)[others] if k != "betas" else before.betas)
    assert not np.array_equal(after.joints[5], before.joints[5])
    assert read_queue(root / "annotation" / "queue.jsonl") == queue  # the queue as it was
    assert fit_session(root)[0].skipped and triangulate_session(root)[0].skipped
    write_manual_point(root, 6, 37, 4.0)
    triangulate_session(root, TriangulateConfig(frames=[6]))
    [other] = fit_session(root, FitConfig(frames=[6], rule=dataclasses.replace(FitConfig().rule, relative=4.0)))
    assert other.spliced is None and other.fitted == 8
