"""The session report (pipeline.report): page, images, missing stages, bad input, and (slow) how
headless Chromium draws it."""

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from data_schemas.calibration import write_calibration
from data_schemas.dataset import DatasetOptions, append_to_dataset
from data_schemas.joints3d import write_joints3d
from data_schemas.keypoints2d import write_keypoints2d
from data_schemas.mano import write_mano
from data_schemas.queue import QueueItem, write_queue
from data_schemas.session import CameraSpec, SessionConfig, write_session_toml
from pipeline.cli import main
from pipeline.report import HAND_COLORS, RUNS_NOTE, ReportOptions, write_report
from pipeline.stats import StatsOptions, write_stats
from tests.factories import make_joints3d, make_keypoints2d, make_mano, make_rig, make_sequence

SECTIONS = ("calibration", "detection", "motion", "fit", "queue", "dataset", "samples")
PNG_MAGIC, GIF_MAGIC = b"\x89PNG\r\n\x1a\n", (b"GIF87a", b"GIF89a")


def bare_session(root: Path, n_cameras: int = 3) -> Path:
    cams = [CameraSpec(f"cam{i:02d}", 640, 480) for i in range(n_cameras)]
    write_session_toml(root / "session.toml", SessionConfig("tiny", 30.0, cams, subject="subject-01"))
    return root


def full_session(root: Path) -> Path:
    """Every stage's output, from the test factories: 3 cameras, one sequence, an export with stats."""
    bare_session(root)
    rig = make_rig(3)
    rig.metadata["reprojection_error_px"] = {n: 0.1 + 0.05 * i for i, n in enumerate(rig.names)}
    write_calibration(root / "calibration" / "calibration.toml", rig)
    seq = root / "sequences" / "s0"
    write_keypoints2d(seq / "keypoints2d.h5", make_keypoints2d(3, 7))
    write_joints3d(seq / "joints3d.h5", make_joints3d(7))
    write_mano(seq / "mano.h5", make_mano(7))
    (seq / "overlays").mkdir()
    _tiny_png(seq / "overlays" / "detect.png")
    write_queue(root / "annotation" / "queue.jsonl",
                [QueueItem("s0", 1, "cam00", "reprojection+temporal_jump", "left", 2.0),
                 QueueItem("s0", 1, "cam01", "reprojection", "left", 1.0),
                 QueueItem("s0", 3, "cam02", "no_data", "right", 0.5)])
    append_to_dataset(root / "export", [make_sequence("tiny.s0", 40)], DatasetOptions())
    write_stats(root / "export", root / "export" / "stats", StatsOptions(tsne_frames=0))
    return root


def _tiny_png(path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1], [0, 1], color=HAND_COLORS[0])
    fig.savefig(path, format="png", dpi=40)


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    root = full_session(tmp_path_factory.mktemp("report") / "tiny")
    return root, write_report(root, opts=ReportOptions(filmstrip_frames=4))


def sources(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def test_report_has_every_section_and_valid_images(reported):
    root, summary = reported
    assert summary.path == root / "report" / "index.html"
    page = summary.path.read_text(encoding="utf-8")
    for key in SECTIONS:
        assert f'<section id="{key}">' in page and f'href="#{key}"' in page  # section and table of contents
    assert all(summary.sections[t] for t in ("Calibration", "2D detection", "3D motion", "Fit quality",
                                             "Annotation queue", "Dataset"))
    assert not summary.sections["Generated samples"] and RUNS_NOTE in page
    srcs = sources(page)
    for name in ("calibration_rig.png", "calibration_errors_px.png", "detection_rate.png", "detect_s0.png",
                 "motion_s0.png", "fit_quality.png", "fit_s0.png", "queue.png", "stats_tsne.png"):
        assert name in srcs
    for src in srcs:  # relative, beside the page, each a real image
        assert "/" not in src and ":" not in src
        data = (summary.path.parent / src).read_bytes()
        assert data.startswith(PNG_MAGIC) or data[:6] in GIF_MAGIC, src
    assert sorted(summary.path.parent / s for s in srcs) == sorted(summary.images)
    assert not list(summary.path.parent.glob(".*"))  # no temp files left behind
    assert "<script" not in page and "http://" not in page and "https://" not in page


def test_report_captions_carry_the_numbers(reported):
    page = reported[1].path.read_text(encoding="utf-8")
    assert "3 cameras, centres" in page
    assert "worst cam02 0.200 px" in page  # the per-camera errors written above
    assert "3 views of 2 frames queued" in page
    assert re.search(r"1 sequences, 7 frames, 2 with a failed hand \(28\.6%\)", page)  # make_quality's two
    assert "No annotations merged yet" in page and "make merge SESSION=" in page
    assert "contacting frames" in page and "(paper 57.3%)" in page


def test_missing_stages_say_how_to_run_them(tmp_path):
    root = bare_session(tmp_path / "bare")
    s = write_report(root)
    page = s.path.read_text(encoding="utf-8")
    for stage in ("calibrate", "detect", "triangulate", "fit", "queue", "export"):
        assert f"not run yet: <code>make {stage} SESSION={root}</code>" in page
    assert not any(s.sections.values()) and not s.images
    assert sources(page) == []


def test_report_follows_the_stages_that_ran(tmp_path):
    root = bare_session(tmp_path / "half")
    write_calibration(root / "calibration" / "calibration.toml", make_rig(3))
    write_keypoints2d(root / "sequences" / "s0" / "keypoints2d.h5", make_keypoints2d(3, 5))
    s = write_report(root, tmp_path / "elsewhere")
    assert s.path == tmp_path / "elsewhere" / "index.html" and not (root / "report").exists()
    page = s.path.read_text(encoding="utf-8")
    assert s.sections["Calibration"] and s.sections["2D detection"] and not s.sections["3D motion"]
    assert "calibration_errors_px.png" not in page  # that calibration has no per-camera errors
    assert "s0: no overlay" in page
    assert f"not run yet: <code>make triangulate SESSION={root}</code>" in page


def test_runs_hook_shows_a_generator_run(tmp_path):
    root = bare_session(tmp_path / "bare")
    run = tmp_path / "runs" / "r1"
    (run / "samples").mkdir(parents=True)
    (run / "metrics.json").write_text('{"fid": 1.5, "diversity": 7.25}')
    (run / "model.pt").write_bytes(b"")
    _tiny_png(run / "samples" / "clasp.png")
    (tmp_path / "runs" / "evaluation").mkdir()  # not a run: no model.pt
    (tmp_path / "runs" / "evaluation" / "metrics.json").write_text('{"window": 16}')
    s = write_report(root, opts=ReportOptions(runs=tmp_path / "runs"))
    page = s.path.read_text(encoding="utf-8")
    assert s.sections["Generated samples"] and "<td>fid</td><td>1.5</td>" in page
    assert "run_r1_clasp.png" in sources(page)
    assert "<h3>evaluation</h3>" not in page and "<td>window</td>" not in page


def test_cli_report_prints_where_and_how_to_open(reported, tmp_path, capsys):
    root, _ = reported
    assert main(["report", str(root), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert f"report {tmp_path / 'r' / 'index.html'}: 6 of 7 sections" in out
    assert f"xdg-open {tmp_path / 'r' / 'index.html'}" in out and "file:///" in out


def test_cli_report_on_a_folder_that_is_not_a_session(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HANDDIFFUSE_LOG", "WARNING")  # stderr holds the error alone
    folder = tmp_path / "not-a-session"
    folder.mkdir()
    assert main(["report", str(folder)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {folder}: not a session folder (no session.toml)"]
    assert not (folder / "report").exists()
    assert main(["report", str(tmp_path / "missing")]) == 1
    assert not (tmp_path / "missing").exists()


# ---- slow: the page as a browser draws it ------------------------------------------------------

def _hex_rgb(color: str) -> np.ndarray:
    return np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])


@pytest.mark.slow
def test_report_renders_in_headless_chromium(reported, tmp_path):
    from PIL import Image

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "chromium is not installed: run `make browser` (apt-get install chromium) first"
    shot = tmp_path / "report.png"
    index = reported[1].path.resolve()
    run = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                          f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                          "--window-size=1280,4000", index.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert shot.is_file(), f"chromium wrote no screenshot (exit {run.returncode}): {run.stderr[-2000:]}"
    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(int)  # (H, W, 3)
    assert rgb.shape[:2] == (4000, 1280)
    non_white = (rgb < 235).any(-1).mean()
    assert non_white > 0.08, f"the page looks blank: {100 * non_white:.1f}% non-white pixels"
    colours = len(np.unique((rgb // 16).reshape(-1, 3), axis=0))
    assert colours > 100, f"only {colours} distinct colours: the figures are not drawn"
    for hand, color in zip(("left", "right"), HAND_COLORS):
        near = (np.abs(rgb - _hex_rgb(color)).max(-1) < 40).sum()
        assert near > 500, f"the {hand} hand's colour {color} is nearly absent ({near} pixels)"
