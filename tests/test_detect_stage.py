import os
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from capture.detect.evaluate import load_views, score_detections
from capture.studio.build import StudioConfig, build_session
from data_schemas.keypoints2d import read_keypoints2d
from data_schemas.validate import validate_path

SEQ = "seq000"


def hd(*args, env_extra=None, **kw):
    env = dict(os.environ, HANDDIFFUSE_LOG="DEBUG", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, **kw)


def chunks_run(stderr: str) -> set[str]:
    return {line.split("detected chunk ")[1].split()[0] for line in stderr.splitlines() if "detected chunk " in line}


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """A tiny studio session (8 cameras, one 8-frame sequence), never detected: copy it to use it."""
    root = tmp_path_factory.mktemp("detect") / "studio"
    build_session(StudioConfig(out=root, sequences=1, frames=8, board_frames=1, seed=5, max_frame_offset=1))
    return root


@pytest.fixture(scope="module")
def detected(studio, tmp_path_factory):
    root = tmp_path_factory.mktemp("detect") / "s"
    shutil.copytree(studio, root)
    r = hd("detect", root, "--overlay", "--chunk-frames", 4)
    assert r.returncode == 0, r.stderr
    return root, r


def test_detect_finds_the_studio_hands(detected):
    root, r = detected
    assert f"detected {SEQ}: 8 cameras x 6 frames" in r.stdout  # 8 frames, cameras up to 1 frame apart
    kp = read_keypoints2d(root / "sequences" / SEQ / "keypoints2d.h5")
    assert kp.keypoints.shape == (8, 6, 42, 3) and kp.detector.startswith("mediapipe-")
    assert all(v.ok for v in validate_path(root / "sequences" / SEQ / "keypoints2d.h5"))
    gt = root / "ground_truth" / "sequences" / SEQ
    scores = score_detections(kp, read_keypoints2d(gt / "keypoints2d.h5"), load_views(gt / "views.npz"))
    eligible = sum(s.eligible for s in scores.values())
    detected = sum(s.detected for s in scores.values())
    errors = [e for s in scores.values() for e in s.errors_px]
    assert eligible >= 10 and detected / eligible >= 0.7 and np.median(errors) < 15
    assert not (root / "sequences" / SEQ / ".detect").exists(), "chunk files are removed once the file is written"


def test_overlay_is_a_picture_of_the_detections(detected):
    root, r = detected
    png = root / "sequences" / SEQ / "overlays" / "detect.png"
    assert f"overlay: {png}" in r.stdout
    sheet = cv2.imread(str(png))
    assert sheet.shape[1] == 4 * 320 and sheet.shape[0] >= 6 * 200
    blue = (sheet[..., 0] > 200) & (sheet[..., 1] > 100) & (sheet[..., 1] < 180) & (sheet[..., 2] < 60)
    assert blue.sum() > 50, "left hands are drawn"


def test_rerun_is_skipped(detected):
    root, _ = detected
    r = hd("detect", root)
    assert r.returncode == 0 and "up to date" in r.stdout


def test_killed_run_redoes_only_unfinished_chunks(studio, detected, tmp_path):
    root = tmp_path / "s"
    shutil.copytree(studio, root)
    chunk_dir = root / "sequences" / SEQ / ".detect"
    env = dict(os.environ, HANDDIFFUSE_LOG="DEBUG")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "detect", str(root), "--workers", "1",
                             "--chunk-frames", "4"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(chunk_dir.glob("*.npz"))) < 5:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {p.stem for p in chunk_dir.glob("*.npz")}
    assert 5 <= len(done) < 16, done
    assert not (root / "sequences" / SEQ / "keypoints2d.h5").exists()
    r = hd("detect", root, "--chunk-frames", 4)
    assert r.returncode == 0, r.stderr
    run = chunks_run(r.stderr)
    assert len(run) == 16 - len(done) and not run & done
    assert f"{len(done)} of 16 chunks reused" in r.stdout
    resumed = read_keypoints2d(root / "sequences" / SEQ / "keypoints2d.h5")
    whole = read_keypoints2d(detected[0] / "sequences" / SEQ / "keypoints2d.h5")
    np.testing.assert_array_equal(resumed.keypoints, whole.keypoints)


def test_missing_dwpose_weights_is_one_clear_line(studio, tmp_path):
    r = hd("detect", studio, "--backend", "dwpose", "--dwpose.pose-model", tmp_path / "nope.onnx",
           "--dwpose.det-model", tmp_path / "yolox_l.onnx")
    assert r.returncode == 1
    line = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and "yolox_l.onnx" in line[0] and "not found" in line[0]
    assert "huggingface.co/yzd-v/DWPose" in line[0] and "--dwpose.det-model" in line[0]
    assert not (studio / "sequences" / SEQ / "keypoints2d.h5").exists()


def test_unknown_sequence_and_corrupt_video(studio, tmp_path):
    r = hd("detect", studio, "--sequences", "nope")
    assert r.returncode == 1 and f"{studio}/sequences/nope: sequence folder not found" in r.stderr
    root = tmp_path / "s"
    shutil.copytree(studio, root)
    video = root / "sequences" / SEQ / "videos" / "cam03.mp4"
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 3])
    r = hd("detect", root)
    assert r.returncode == 1
    assert f"error: {video}:" in r.stderr and len(r.stderr.strip().splitlines()[-1]) < 300
    assert not (root / "sequences" / SEQ / "keypoints2d.h5").exists()


OTHER_OPTIONS = ["--mediapipe.model-complexity", "0", "--mediapipe.min-detection-confidence", "0.9"]


def test_resume_with_other_detector_options_discards_the_old_chunks(studio, detected, tmp_path, capsys):
    """A run killed with some chunks done, resumed with other detector options, gives what a clean
    run with those options gives, and says that it discarded the old chunks."""
    from capture.detect.stage import Chunk, DetectConfig, detect_chunk
    from data_schemas.takes import open_take
    from data_schemas.session import Session
    from pipeline.cli import main

    root, clean = tmp_path / "s", tmp_path / "clean"
    shutil.copytree(studio, root)
    shutil.copytree(studio, clean)
    # the killed default run: half the cameras' first chunks done, no keypoints2d.h5
    instants = list(open_take(Session.open(root), SEQ).instants)
    for cam in ("cam00", "cam01", "cam02", "cam03"):
        detect_chunk(root, Chunk(SEQ, cam, instants[:4]), DetectConfig(chunk_frames=4))
    assert len(list((root / "sequences" / SEQ / ".detect").glob("*.npz"))) == 4
    capsys.readouterr()
    assert main(["detect", str(root), "--workers", "1", "--chunk-frames", "4", *OTHER_OPTIONS]) == 0
    out = capsys.readouterr()
    assert "chunks reused" not in out.out
    assert (f"detect {SEQ}: 4 chunk files of an earlier run with other videos or detector options discarded"
            in out.err)
    assert main(["detect", str(clean), "--workers", "1", "--chunk-frames", "4", *OTHER_OPTIONS]) == 0
    resumed = read_keypoints2d(root / "sequences" / SEQ / "keypoints2d.h5")
    whole = read_keypoints2d(clean / "sequences" / SEQ / "keypoints2d.h5")
    np.testing.assert_array_equal(resumed.keypoints, whole.keypoints)
    assert resumed.inputs == whole.inputs
    default = read_keypoints2d(detected[0] / "sequences" / SEQ / "keypoints2d.h5")
    assert not np.array_equal(default.keypoints, whole.keypoints, equal_nan=True), "the options change the result"


def test_chunk_fingerprint_covers_every_detector_option():
    import dataclasses
    from pathlib import Path

    from capture.detect.stage import DetectConfig, chunk_fingerprint
    from capture.detect.dwpose import DWPoseConfig
    from capture.detect.mediapipe import MediaPipeConfig

    video = Path(__file__)
    base = chunk_fingerprint(video, DetectConfig(), "mediapipe-x")
    assert base == chunk_fingerprint(video, DetectConfig(workers=5, batch=3, chunk_frames=7, overlay=True), "mediapipe-x")
    for f in dataclasses.fields(MediaPipeConfig):
        other = {bool: lambda v: not v, int: lambda v: v + 1, float: lambda v: v + 0.25}[type(getattr(MediaPipeConfig(), f.name))]
        cfg = DetectConfig(mediapipe=MediaPipeConfig(**{f.name: other(getattr(MediaPipeConfig(), f.name))}))
        assert chunk_fingerprint(video, cfg, "mediapipe-x") != base, f.name
    assert chunk_fingerprint(video, DetectConfig(), "mediapipe-y") != base
    dw = DetectConfig(backend="dwpose")
    assert chunk_fingerprint(video, dw, "dwpose") != chunk_fingerprint(
        video, DetectConfig(backend="dwpose", dwpose=DWPoseConfig(box_padding=1.5)), "dwpose")


def test_short_video_is_refused_unless_allowed(studio, tmp_path, capsys):
    from data_schemas.video import VideoWriter, read_frames
    from pipeline.cli import main

    root = tmp_path / "s"
    shutil.copytree(studio, root)
    video = root / "sequences" / SEQ / "videos" / "cam03.mp4"  # frame_offset 0: shows instants 0..7
    frames = read_frames(video)
    with VideoWriter(video, 30.0, (frames.shape[2], frames.shape[1])) as w:
        for f in frames[:5]:
            w.write(f)
    capsys.readouterr()
    assert main(["detect", str(root), "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (
        f"error: {video}: camera 'cam03' has 5 frames where the other cameras have 8: every camera shows only "
        "4 instants (1..4) instead of 6 (1..6); pass --allow-short-videos to keep those 4")
    assert not (root / "sequences" / SEQ / "keypoints2d.h5").exists()
    assert not (root / "sequences" / SEQ / ".detect").exists()
    assert main(["detect", str(root), "--workers", "1", "--allow-short-videos"]) == 0
    out = capsys.readouterr()
    assert f"detected {SEQ}: 8 cameras x 4 frames" in out.out
    assert (f"detect {SEQ}: keeping the 4 instants every camera shows (--allow-short-videos): camera 'cam03' has "
            "5 frames where the other cameras have 8: every camera shows only 4 instants (1..4) instead of 6 (1..6)"
            in out.err)
    assert list(read_keypoints2d(root / "sequences" / SEQ / "keypoints2d.h5").frames) == [1, 2, 3, 4]


def test_two_detects_on_one_session_both_succeed_and_agree(studio, detected, tmp_path):
    from data_schemas.lock import hold

    root = tmp_path / "s"
    shutil.copytree(studio, root)
    seq_dir = root / "sequences" / SEQ
    env = dict(os.environ, HANDDIFFUSE_LOG="INFO")
    with hold(seq_dir, "test"):
        procs = [subprocess.Popen([sys.executable, "-m", "pipeline.cli", "detect", str(root), "--chunk-frames", "4"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for _ in range(2)]
        for p in procs:
            for line in p.stderr:
                if "waiting for" in line:
                    assert f"detect: waiting for {seq_dir}: in use by pid {os.getpid()} (test, since " in line
                    break
            else:
                raise AssertionError(f"detect did not wait: rc {p.wait()}")
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sum("up to date" in out for out, _ in outs) == 1  # the second found the first's result
    ref = read_keypoints2d(detected[0] / "sequences" / SEQ / "keypoints2d.h5")
    got = read_keypoints2d(seq_dir / "keypoints2d.h5")
    np.testing.assert_array_equal(got.keypoints, ref.keypoints)
