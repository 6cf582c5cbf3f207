"""``handdiffuse``: one subcommand per stage, each a thin shell over a stage function; a
subcommand's help is its class docstring and its options' field docstrings.

Exit codes (``data_schemas.errors``): 0 done; 1 bad input or failed validation (one line per
cause, naming the file); 2 bad command line.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Annotated, Union

import tyro

from annotation.cli import AnnotateCommand, AnnotateStopCommand, AnnotationStatusCommand
from capture.calibration.stage import CalibrateConfig
from capture.detect.guided import RedetectConfig
from capture.detect.landmark_fit import LandmarkFitConfig
from capture.detect.stage import DetectConfig
from fitting.fit_stage import FitConfig, QueueConfig
from fitting.triangulate_stage import TriangulateConfig
from pipeline.export import ExportCommand
from pipeline.generate import EvaluateCommand, SampleCommand, TrainCommand
from pipeline.importers import ImportCommand
from pipeline.merge import MergeCommand
from pipeline.report import ReportCommand
from pipeline.stats import StatsCommand
from capture.studio.build import StudioConfig
from data_schemas import SchemaError, __version__
from data_schemas.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_USAGE
from pipeline.log import LOG, log_config, setup_logging


@dataclasses.dataclass
class Validate:
    """Check a file of any stage (calibration.toml, session.toml, keypoints2d / joints3d / mano
    .h5, queue.jsonl, shard .h5) or a whole session folder, and print what is wrong."""

    paths: tyro.conf.Positional[list[Path]]
    """Files or session folders to check."""

    def run(self) -> int:
        from data_schemas.validate import validate_path

        if not self.paths:
            print("error: validate needs at least one PATH", file=sys.stderr)
            return EXIT_USAGE
        results = [r for p in self.paths for r in validate_path(p)]
        bad = 0
        for r in results:
            if r.ok:
                print(f"ok {r.path} ({r.kind}): {r.summary}")
            else:
                bad += 1
                for line in r.problems:
                    print(f"error: {line}", file=sys.stderr)
        LOG.info("validate: %d checked, %d with problems", len(results), bad)
        return EXIT_BAD_INPUT if bad else EXIT_OK


@dataclasses.dataclass
class ManoConvert:
    """Convert MANO's licensed model files (MANO_RIGHT.pkl, MANO_LEFT.pkl, v1.2, which hold chumpy
    objects) into numpy-only pickles that smplx.MANO loads without chumpy; fixes the sign of
    MANO_LEFT's shapedirs x component (smplx issue #48)."""

    src: tyro.conf.Positional[Path]
    """Folder with the licensed MANO_RIGHT.pkl and MANO_LEFT.pkl."""
    out: tyro.conf.Positional[Path]
    """Folder to write the converted MANO_RIGHT.pkl and MANO_LEFT.pkl to (not the source folder)."""

    def run(self) -> int:
        from hand_model.mano_io import convert

        written = convert(self.src, self.out)
        for path in written:
            print(f"wrote {path}")
        LOG.info("mano-convert: %d files written to %s", len(written), self.out)
        return EXIT_OK


@dataclasses.dataclass
class Landmarks(LandmarkFitConfig):
    """Fit MediaPipe's landmarks on the hand model from studio renders with ground truth ->
    capture/detect/landmarks/mediapipe.h5 (what triangulation and fit compare the detections with)."""

    def run(self) -> int:
        from capture.detect.landmark_fit import refit

        d = refit(self)
        print(f"landmarks of {d.detector} on {d.hand_model} -> {self.out}: residual "
              f"{float(d.residual_px.mean()):.2f} px (mean over landmarks of the median); {d.made_from}")
        return EXIT_OK


@dataclasses.dataclass
class Studio(StudioConfig):
    """Build a synthetic capture session (camera dome, board and hand videos, ground truth)."""

    def run(self) -> int:
        from capture.studio.build import build_session

        s = build_session(self)
        if s.skipped:
            print(f"{self.out}: already built with this configuration (ground_truth/studio.toml); nothing to do")
            return EXIT_OK
        print(f"studio {self.out}: {s.cameras} cameras {s.resolution[0]}x{s.resolution[1]}, "
              f"{len(s.sequences)} sequences, {s.images} images at {s.images_per_s:.1f} images/s, "
              f"{s.seconds:.1f} s")
        LOG.info("studio: done in %.1f s", s.seconds)
        return EXIT_OK


@dataclasses.dataclass
class Calibrate(CalibrateConfig):
    """Calibrate every camera from the ChArUco board videos -> calibration/calibration.toml."""

    session: tyro.conf.Positional[Path] = Path("sessions/demo")
    """Session folder."""

    def run(self) -> int:
        from capture.calibration.stage import calibrate

        r = calibrate(self.session, self)
        out = self.session / "calibration" / "calibration.toml"
        if r.skipped:
            print(f"{out}: up to date (same videos, board and options); nothing to do")
            return EXIT_OK
        views = r.rig.metadata["board_views"]
        print(f"calibrated {len(r.rig)} cameras -> {out}: mean reprojection error {r.error_px:.3f} px, "
              f"board views per camera {min(views.values())}-{max(views.values())}, {r.seconds:.1f} s")
        return EXIT_OK


@dataclasses.dataclass
class Detect(DetectConfig):
    """Detect 2D hand keypoints in every camera of every sequence -> sequences/<seq>/keypoints2d.h5."""

    session: tyro.conf.Positional[Path] = Path("sessions/demo")
    """Session folder."""

    def run(self) -> int:
        from capture.detect.stage import detect
        from pipeline.executors import make_executor

        with make_executor(self.executor, self.workers, self.ray_address, self.ray_temp_dir) as executor:
            summaries = detect(self.session, self, executor=executor)
        for s in summaries:
            out = self.session / "sequences" / s.name / "keypoints2d.h5"
            if s.skipped:
                print(f"{out}: up to date (same videos and detector); nothing to do")
                continue
            reused = f", {s.chunks_reused} of {s.chunks} chunks reused from an interrupted run" if s.chunks_reused else ""
            print(f"detected {s.name}: {s.cameras} cameras x {s.frames} frames -> {out}: hands found in "
                  f"{100 * s.found:.1f}% of views, {s.images_per_s:.1f} images/s, {s.seconds:.1f} s{reused}")
            if s.overlay:
                print(f"  overlay: {s.overlay}")
        return EXIT_OK


@dataclasses.dataclass
class Redetect(RedetectConfig):
    """Detect the hands again in crops from the first fit, the other hand painted over where it is in
    front -> sequences/<seq>/keypoints2d_guided.h5; then run triangulate and fit again (they use it)."""

    session: tyro.conf.Positional[Path] = Path("sessions/demo")
    """Session folder."""

    def run(self) -> int:
        from capture.detect.guided import redetect
        from pipeline.executors import make_executor

        with make_executor(self.executor, self.workers, self.ray_address, self.ray_temp_dir) as executor:
            summaries = redetect(self.session, self, executor=executor)
        for s in summaries:
            out = self.session / "sequences" / s.name / "keypoints2d_guided.h5"
            if s.skipped:
                print(f"{out}: up to date (same detection, fit, videos and options); nothing to do")
                continue
            why = ", ".join(f"{k} {v}" for k, v in s.planned.items())
            reused = f", {s.chunks_reused} of {s.chunks} chunks reused from an interrupted run" \
                if s.chunks_reused else ""
            print(f"re-detected {s.name}: {s.crops} hands in {s.views} views planned ({why}) -> {out}: "
                  f"{s.found} found, {s.hidden} joints hidden by the other hand left out; "
                  f"{s.crops_per_s:.1f} crops/s, {s.seconds:.1f} s{reused}")
        return EXIT_OK


@dataclasses.dataclass
class Triangulate(TriangulateConfig):
    """Triangulate 3D joints from the 2D keypoints of every camera -> sequences/<seq>/joints3d.h5."""

    session: tyro.conf.Positional[Path] = Path("sessions/demo")
    """Session folder."""

    def run(self) -> int:
        from fitting.triangulate_stage import triangulate_session

        for s in triangulate_session(self.session, self):
            out = self.session / "sequences" / s.name / "joints3d.h5"
            if s.skipped:
                print(f"{out}: up to date (same keypoints, calibration and options); nothing to do")
                continue
            what = f"{s.frames} frames" if s.spliced is None else f"frames {_frames(s.spliced)} spliced"
            print(f"triangulated {s.name}: {what} -> {out}: {100 * s.triangulated:.1f}% of joints, "
                  f"reprojection {s.reproj_px:.2f} px, {s.swapped_views} views with the hands exchanged, "
                  f"{s.outside} keypoints far outside the image left out, {s.guided} hands re-detected, "
                  f"{s.seconds:.1f} s")
        return EXIT_OK


@dataclasses.dataclass
class Fit(FitConfig):
    """Fit both hands' MANO parameters to the joints and keypoints -> sequences/<seq>/mano.h5, and
    queue the frames whose fit failed -> annotation/queue.jsonl."""

    session: tyro.conf.Positional[Path] = Path("sessions/demo")
    """Session folder."""

    def run(self) -> int:
        from fitting.fit_stage import fit_session
        from pipeline.executors import make_executor

        with make_executor(self.executor, self.workers, self.ray_address, self.ray_temp_dir,
                           cpus_per_worker=self.threads) as executor:
            summaries = fit_session(self.session, self, executor=executor)
        for s in summaries:
            out = self.session / "sequences" / s.name / "mano.h5"
            if s.skipped:
                print(f"{out}: up to date (same joints, keypoints, calibration and options); nothing to do")
                continue
            why = ", ".join(f"{k} {v}" for k, v in s.reasons.items()) or "none"
            what = f"{s.frames} frames" if s.spliced is None else \
                f"frames {_frames(s.spliced)} spliced ({s.fitted} fitted with their context)"
            print(f"fitted {s.name}: {what} -> {out}: {s.failed_frames} frames inconsistent, {s.short_frames} "
                  f"short of evidence, {s.low_confidence_frames} under confidence "
                  f"{self.rule.min_confidence} (flags: {why}); {s.queued} views queued; {s.frames_per_s:.1f} "
                  f"frames/s, {s.seconds:.1f} s")
        return EXIT_OK


def _frames(frames: list[int]) -> str:
    return ", ".join(map(str, frames[:10])) + (f" and {len(frames) - 10} more" if len(frames) > 10 else "")


@dataclasses.dataclass
class Queue(QueueConfig):
    """Rebuild annotation/queue.jsonl from every sequence's fit (mano.h5 failure flags): the views
    where a person's 2D clicks help most."""

    session: tyro.conf.Positional[Path] = Path("sessions/demo")
    """Session folder."""

    def run(self) -> int:
        from fitting.fit_stage import queue_session

        items = queue_session(self.session, self)
        frames = {(i.sequence, i.frame) for i in items}
        print(f"{self.session / 'annotation' / 'queue.jsonl'}: {len(items)} views of {len(frames)} inconsistent frames")
        return EXIT_OK


# Every stage in pipeline order (each one's help is its class docstring); `validate` and
# `mano-convert` work beside them, on the files any of them write and on MANO's own files, and
# `landmarks` refits the bundled detector's landmarks on the hand model.
STAGES: dict[str, type] = {
    "studio": Studio, "calibrate": Calibrate, "detect": Detect, "triangulate": Triangulate, "fit": Fit,
    "redetect": Redetect, "queue": Queue, "annotate": AnnotateCommand, "annotate-stop": AnnotateStopCommand,
    "merge": MergeCommand,
    "annotation-status": AnnotationStatusCommand, "export": ExportCommand, "stats": StatsCommand,
    "import": ImportCommand, "train": TrainCommand, "sample": SampleCommand, "evaluate": EvaluateCommand,
    "report": ReportCommand,
}
_COMMANDS: dict[str, type] = {**STAGES, "validate": Validate, "mano-convert": ManoConvert, "landmarks": Landmarks}


def _command_name(cfg: object) -> str:
    return next(n for n, c in _COMMANDS.items() if isinstance(cfg, c))


Command = Union[tuple(Annotated[c, tyro.conf.subcommand(n)] for n, c in _COMMANDS.items())]  # type: ignore[valid-type]


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    cfg = tyro.cli(
        Command, args=argv, prog="handdiffuse",
        description=f"HandDiffuse {__version__}: multi-camera two-hand capture to a motion dataset, "
        "and the generator trained on it.",
    )
    name = _command_name(cfg)
    if int(os.environ.get("RANK", "0")) == 0:  # one log of the config under torchrun
        log_config(name, cfg)
    try:
        # train / sample have a field named `run` (the run folder): their method is run_stage
        return cfg.run_stage() if hasattr(cfg, "run_stage") else cfg.run()
    except SchemaError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:  # last resort: a stage's read or write the system refused, said in one line
        cause = os.strerror(e.errno) if e.errno else " ".join(str(e).split())
        print(f"error: {e.filename}: {cause}" if e.filename else f"error: {cause}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
