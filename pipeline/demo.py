"""``make demo``: the main job on the built-in synthetic capture, stage by stage.

Runs every stage this version has on the studio's demo session and prints a
summary table (time, and accuracy against the studio's ground truth where a
stage has a measure). Stages not in this version are listed as such.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import tyro

from data_schemas import __version__
from data_schemas.validate import validate_path
from pipeline.cli import IMPLEMENTED, STAGES
from pipeline.log import LOG, log_config, setup_logging


@dataclasses.dataclass
class DemoConfig:
    """Run the pipeline on the built-in synthetic capture."""

    session: Path = Path("sessions/demo")
    """Session folder to create (reused if it exists)."""
    preset: str = "demo"
    """Studio preset: demo (8 cameras, 640x512) or full (50 cameras, 3840x2160)."""
    seed: int = 0
    """Seed of everything synthetic."""


@dataclasses.dataclass
class StageRow:
    stage: str
    status: str
    seconds: float = 0.0
    measure: str = ""


def studio(cfg: DemoConfig) -> str:
    from capture.studio.build import StudioConfig, build_session

    s = build_session(StudioConfig(out=cfg.session, preset=cfg.preset, seed=cfg.seed))
    if s.skipped:
        return f"{s.cameras} cameras {s.resolution[0]}x{s.resolution[1]}, already built"
    return (f"{s.cameras} cameras {s.resolution[0]}x{s.resolution[1]}, {len(s.sequences)} sequences, "
            f"{s.images} images, {s.images_per_s:.1f} images/s")


def calibrate(cfg: DemoConfig) -> str:
    from capture.calibration.evaluate import compare_rigs
    from capture.calibration.stage import calibrate as run_calibrate
    from data_schemas.calibration import read_calibration

    r = run_calibrate(cfg.session)
    truth = read_calibration(cfg.session / "ground_truth" / "calibration.toml")
    return f"reprojection {r.error_px:.3f} px; vs truth: {compare_rigs(r.rig, truth).summary()}"


def detect(cfg: DemoConfig) -> str:
    from capture.detect.evaluate import DetectionScore, load_views, score_detections
    from capture.detect.stage import DetectConfig
    from capture.detect.stage import detect as run_detect
    from data_schemas.keypoints2d import read_keypoints2d

    summaries = run_detect(cfg.session, DetectConfig(overlay=True))
    total = DetectionScore()
    for s in summaries:
        gt = cfg.session / "ground_truth" / "sequences" / s.name
        kp = read_keypoints2d(cfg.session / "sequences" / s.name / "keypoints2d.h5")
        for score in score_detections(kp, read_keypoints2d(gt / "keypoints2d.h5"), load_views(gt / "views.npz")).values():
            total.add(score)
    images = sum(s.cameras * s.frames for s in summaries)
    return (f"{images} images; vs truth: detected {100 * total.rate:.1f}% of clear hand views, median error "
            f"{total.median_px:.1f} px at 512 px, {total.swapped} given the wrong side")


def validate_all(cfg: DemoConfig) -> str:
    results = validate_path(cfg.session)
    bad = [p for r in results for p in r.problems]
    if bad:
        raise RuntimeError("; ".join(bad))
    return f"{len(results)} files valid"


def run(cfg: DemoConfig) -> list[StageRow]:
    rows = []
    for name, fn in (("studio", studio), ("calibrate", calibrate), ("detect", detect), ("validate", validate_all)):
        t0 = time.perf_counter()
        LOG.info("demo: %s ...", name)
        measure = fn(cfg)
        rows.append(StageRow(name, "done", time.perf_counter() - t0, measure))
    rows += [StageRow(stage, f"not in {__version__}") for stage in STAGES if stage not in IMPLEMENTED]
    return rows


def print_table(rows: list[StageRow]) -> None:
    w = max(len(r.stage) for r in rows)
    print(f"\n{'stage':<{w}}  {'status':<12}  {'seconds':>7}  measure")
    for r in rows:
        secs = f"{r.seconds:7.2f}" if r.status == "done" else " " * 7
        print(f"{r.stage:<{w}}  {r.status:<12}  {secs}  {r.measure}")


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    cfg = tyro.cli(DemoConfig, args=argv, prog="python -m pipeline.demo")
    log_config("demo", cfg)
    rows = run(cfg)
    print_table(rows)
    print(f"\nSession: {cfg.session}  (check it any time with `handdiffuse validate {cfg.session}`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
