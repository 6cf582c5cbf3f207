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
