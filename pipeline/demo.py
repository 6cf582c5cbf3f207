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
from data_schemas.calibration import write_calibration
from data_schemas.session import GROUND_TRUTH, SESSION_TOML, SessionConfig, write_session_toml
from data_schemas.validate import validate_path
from pipeline.cli import PLANNED
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


def build_rig(cfg: DemoConfig) -> str:
    from capture.studio.rig import BOARD, PRESETS, make_rig

    rig, specs = make_rig(PRESETS[cfg.preset], cfg.seed)
    session = SessionConfig(name=cfg.session.name, fps=PRESETS[cfg.preset].fps, cameras=specs, board=BOARD,
                            subject="studio-hands", capture_date=time.strftime("%Y-%m-%d"))
    write_session_toml(cfg.session / SESSION_TOML, session)
    write_calibration(cfg.session / GROUND_TRUTH / "calibration.toml", rig)
    return f"{len(rig)} cameras {specs[0].width}x{specs[0].height}"


def validate_all(cfg: DemoConfig) -> str:
    results = validate_path(cfg.session) + validate_path(cfg.session / GROUND_TRUTH / "calibration.toml")
    bad = [p for r in results for p in r.problems]
    if bad:
        raise RuntimeError("; ".join(bad))
    return f"{len(results)} files valid"


def run(cfg: DemoConfig) -> list[StageRow]:
    rows = []
    for name, fn in (("studio rig", build_rig), ("validate", validate_all)):
        t0 = time.perf_counter()
        LOG.info("demo: %s ...", name)
        measure = fn(cfg)
        rows.append(StageRow(name, "done", time.perf_counter() - t0, measure))
    rows += [StageRow(stage, f"not in {__version__}") for stage in PLANNED if stage != "studio"]
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
