"""``make demo``: the main job on the built-in synthetic capture, stage by stage.

Runs every stage on the studio's demo session (five 60-frame takes seen by 8
cameras): capture to dataset, then a brief training of a tiny generator on the
dataset's train split, sampling under each control, and its evaluation on the
held-out test take; prints a summary table (time, and accuracy against the
studio's ground truth or the control's error where a stage has a measure). The
annotation loop is a person's: the table says how to start it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import tyro

from data_schemas.errors import EXIT_OK
from data_schemas.validate import validate_path
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
    sequences: int = 5
    """Hand sequences of the studio session (5: the dataset's split has a held-out test sequence)."""
    frames: int = 60
    """Frames per hand sequence."""
    runs: Path | None = None
    """Folder of the demo's generator run (default runs/<session name>)."""
    train_steps: int = 600
    """Training steps per phase (SHDe, then IHDe) of the demo's brief generator training."""
    window: int = 16
    """Frames per training window and sample."""

    @property
    def run_dir(self) -> Path:
        return (self.runs or Path("runs") / self.session.name) / "handdiffuse"


@dataclasses.dataclass
class StageRow:
    stage: str
    status: str
    seconds: float = 0.0
    measure: str = ""


def studio(cfg: DemoConfig) -> str:
    from capture.studio.build import StudioConfig, build_session

    s = build_session(StudioConfig(out=cfg.session, preset=cfg.preset, seed=cfg.seed, sequences=cfg.sequences,
                                   frames=cfg.frames))
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
            f"{total.median_error_px:.1f} px at 512 px, {total.swapped} given the wrong side")


def to_truth_frame(cfg: DemoConfig):
    """The similarity from the session's calibrated world frame (the board's) to the truth's."""
    from capture.calibration.evaluate import world_alignment
    from data_schemas.calibration import read_calibration

    return world_alignment(read_calibration(cfg.session / "calibration" / "calibration.toml"),
                           read_calibration(cfg.session / "ground_truth" / "calibration.toml"))


def errors_vs_truth(cfg: DemoConfig, sequences: list[str], read: Callable) -> np.ndarray:
    """The distances (m) of every estimated joint to its true one, over ``sequences``, on the frames
    both have; ``read(path)``: a file of the sequence folder (``joints3d.h5``, ``mano.h5``) with
    ``frames`` and ``joints`` (frames, 42, 3), brought into the truth's frame first; not estimated
    joints (NaN) left out."""
    from data_schemas.joints3d import read_joints3d

    align = to_truth_frame(cfg)
    errors = []
    for name in sequences:
        est = read(cfg.session / "sequences" / name)
        truth = read_joints3d(cfg.session / "ground_truth" / "sequences" / name / "joints3d.h5")
        common, i, j = np.intersect1d(est.frames, truth.frames, return_indices=True)
        e = np.linalg.norm(align.apply(est.joints[i]) - truth.joints[j], axis=-1)
        errors.append(e[np.isfinite(e)])
    return np.concatenate(errors)


def triangulate(cfg: DemoConfig) -> str:
    from data_schemas.joints3d import read_joints3d
    from fitting.triangulate_stage import triangulate_session

    summaries = triangulate_session(cfg.session)
    e = errors_vs_truth(cfg, [s.name for s in summaries], lambda folder: read_joints3d(folder / "joints3d.h5"))
    found = np.mean([s.triangulated for s in summaries])
    return (f"{100 * found:.1f}% of joints; vs truth: MPJPE {1000 * e.mean():.1f} mm (median "
            f"{1000 * np.median(e):.1f} mm)")


def fit(cfg: DemoConfig) -> str:
    from data_schemas.mano import read_mano
    from fitting.fit_stage import fit_session

    summaries = fit_session(cfg.session)
    e = errors_vs_truth(cfg, [s.name for s in summaries], lambda folder: read_mano(folder / "mano.h5"))
    queued = sum(s.queued for s in summaries)
    return (f"vs truth: MPJPE {1000 * e.mean():.1f} mm; {fit_counts(summaries)}; {queued} views queued for annotation")


def fit_counts(summaries) -> str:
    """Of the fit stage's summaries: how many frames are inconsistent, short of evidence, under confidence."""
    from fitting.quality import QualityRule

    frames = sum(s.frames for s in summaries)
    failed = sum(s.failed_frames for s in summaries)
    short = sum(s.short_frames for s in summaries)
    low = sum(s.low_confidence_frames for s in summaries)
    return (f"of {frames} frames {failed} inconsistent, {short} short of evidence, {low} under confidence "
            f"{QualityRule().min_confidence}")


def redetect(cfg: DemoConfig) -> str:
    """The second pass: re-detection guided by the first fit, then triangulate and fit again."""
    from capture.detect.evaluate import DetectionScore, score_overlapping
    from capture.detect.guided import redetect as run_redetect
    from data_schemas.keypoints2d import read_keypoints2d
    from data_schemas.mano import read_mano
    from fitting.fit_stage import fit_session
    from fitting.triangulate_stage import triangulate_session

    summaries = run_redetect(cfg.session)
    before, after = DetectionScore(), DetectionScore()
    for s in summaries:
        seq = cfg.session / "sequences" / s.name
        truth = read_keypoints2d(cfg.session / "ground_truth" / "sequences" / s.name / "keypoints2d.h5")
        before.add(score_overlapping(read_keypoints2d(seq / "keypoints2d.h5"), truth))
        after.add(score_overlapping(read_keypoints2d(seq / "keypoints2d_guided.h5"), truth))
    triangulate_session(cfg.session)
    fits = fit_session(cfg.session)
    e = errors_vs_truth(cfg, [s.name for s in fits], lambda folder: read_mano(folder / "mano.h5"))
    crops, seconds = sum(s.crops for s in summaries), sum(s.seconds for s in summaries)
    return (f"{crops} hand crops ({crops / max(seconds, 1e-9):.1f}/s); hands found on views where they overlap "
            f"{100 * before.rate:.1f}% -> {100 * after.rate:.1f}%; fit again vs truth: MPJPE {1000 * e.mean():.1f} mm, "
            f"{fit_counts(fits)}")


DEMO_SPLIT = (0.7, 0.0, 0.3)  # train / val / test shares of the demo's dataset


def demo_split(cfg: DemoConfig) -> ExportOptions:
    """Export options whose split gives the demo's few takes at least two training takes and a
    held-out test take: the first split seed that does, for this session's sequence names."""
    from data_schemas.dataset import assign_split
    from pipeline.export import ExportOptions

    names = [f"{cfg.session.name}.{p.name}" for p in sorted((cfg.session / "sequences").iterdir()) if p.is_dir()]
    for seed in range(1000):
        splits = [assign_split(n, seed, DEMO_SPLIT) for n in names]
        if splits.count("train") >= 2 and "test" in splits:
            return ExportOptions(split_ratios=DEMO_SPLIT, split_seed=seed)
    return ExportOptions(split_ratios=DEMO_SPLIT)


def export(cfg: DemoConfig) -> str:
    from pipeline.export import export_sessions

    s = export_sessions([cfg.session], cfg.session / "export", demo_split(cfg))
    return (f"{s.dataset_sequences} sequences, {s.dataset_frames} frames -> {cfg.session / 'export'} "
            f"({len(s.written)} written, {len(s.skipped_up_to_date)} up to date)")


def interaction(cfg: DemoConfig) -> str:
    from pipeline.versus_truth import interaction_figures

    f = interaction_figures(cfg.session)
    return (f"truth vs dataset: frames in contact {100 * f.contact_truth:.1f}% vs {100 * f.contact_export:.1f}%, "
            f"mean shortest joint distance {f.mindist_truth_cm:.2f} vs {f.mindist_export_cm:.2f} cm; contact "
            f"precision {f.contact_precision:.2f}, recall {f.contact_recall:.2f}; MPJPE {f.mpjpe_mm:.1f} mm, "
            f"{f.contact_mpjpe_mm:.1f} mm where the hands touch ({f.close_frames} frames); "
            f"{100 * f.failed:.1f}% of {f.frames} frames not handed to training")


def stats(cfg: DemoConfig) -> str:
    from pipeline.stats import write_stats

    out = cfg.session / "export" / "stats"
    st = write_stats(cfg.session / "export", out)
    return (f"mean shortest joint distance {st['mean_shortest_joint_distance_cm']:.2f} cm, contacting frames "
            f"{100 * st['contact_ratio']:.1f}% of {st['frames_both_hands_valid']} -> {out}")


def train(cfg: DemoConfig) -> str:
    from data_schemas.dataset import dataset_hash
    from generation.model import PRESETS
    from generation.train import TrainOptions, train as run_train

    model = dataclasses.replace(PRESETS["handdiffuse"], size="tiny", window=cfg.window)
    opts = TrainOptions(shde_steps=cfg.train_steps, ihde_steps=cfg.train_steps, batch_size=16, lr=1e-3,
                        checkpoint_every=200, log_every=20, threads=1, seed=cfg.seed)
    info = cfg.run_dir / "run.json"
    if info.is_file() and json.loads(info.read_text(encoding="utf-8")).get("data_hash") != \
            dataset_hash(cfg.session / "export", "train"):
        LOG.info("demo: the dataset changed since %s was trained: training it again", cfg.run_dir)
        shutil.rmtree(cfg.run_dir)  # the demo's own run, never a user's
    s = run_train(cfg.session / "export", cfg.run_dir, model, opts)
    ihde = [json.loads(line) for line in (cfg.run_dir / "loss.jsonl").read_text(encoding="utf-8").splitlines()]
    ihde = [r["total"] for r in ihde if r["phase"] == "ihde"]
    return (f"tiny SHDe + IHDe, {s.steps} steps on {s.windows} windows of {cfg.window} frames; IHDe loss "
            f"{ihde[0]:.3f} -> {ihde[-1]:.3f} -> {cfg.run_dir}")


def sample(cfg: DemoConfig) -> str:
    from pipeline.generate import SampleCommand, sample_run

    parts = []
    for control in ("none", "inbetween", "trajectory", "keypoints2d"):
        s = sample_run(SampleCommand(run=cfg.run_dir, control=control, n=4, ddim_steps=50, seed=cfg.seed,
                                     reference_split="test", video=control == "none"))
        err = "".join(f" {k.rsplit('_', 1)[0].replace('_', ' ')} {v:.2g} {k.rsplit('_', 1)[1]}"
                      for k, v in s["control_error"].items())
        parts.append(f"{control} {s['sample_seconds']:.1f} s{err}")
    return f"4 x {cfg.window} frames each, DDIM-50: " + "; ".join(parts)


def evaluate(cfg: DemoConfig) -> str:
    from generation.evaluate import EvaluateOptions, evaluate as run_evaluate

    out = cfg.run_dir.parent / "evaluation"
    s = run_evaluate([cfg.run_dir], cfg.session / "export", out,
                     EvaluateOptions(samples=16, repetitions=2, ddim_steps=20, evaluator_steps=300, real_stride=1,
                                     device="cpu"))
    c = s["runs"][0]["conditions"]["unconditioned"]
    return (f"unconditioned FID {c['fid']['mean']:.2f} (real {s['real']['fid']:.2f}), Diversity "
            f"{c['diversity']['mean']:.2f} (real {s['real']['diversity']:.2f}), SDF {c['sdf_mm']['mean']:.2f} mm "
            f"on {s['real_windows']} held-out windows -> {out / 'tables.md'}")


def report(cfg: DemoConfig) -> str:
    from pipeline.report import ReportOptions, write_report

    r = write_report(cfg.session, opts=ReportOptions(runs=cfg.run_dir.parent))
    present = sum(r.sections.values())
    return f"{present} of {len(r.sections)} sections, {len(r.images)} figures -> {r.path}"


def validate_all(cfg: DemoConfig) -> str:
    results = validate_path(cfg.session)
    bad = [p for r in results for p in r.problems]
    if bad:
        raise RuntimeError("; ".join(bad))
    return f"{len(results)} files valid"


CAPTURE_STAGES = (("studio", studio), ("calibrate", calibrate), ("detect", detect), ("triangulate", triangulate),
                  ("fit", fit), ("redetect", redetect), ("export", export), ("interaction", interaction))
"""The demo's stages from the studio to the dataset, and the interaction figures against the truth."""
LATER_STAGES = (("stats", stats), ("train", train), ("sample", sample), ("evaluate", evaluate),
                ("validate", validate_all), ("report", report))


def run_stages(cfg: DemoConfig, stages) -> list[StageRow]:
    """Run ``stages`` ((name, fn) pairs) in order, timing each; a table row each."""
    rows = []
    for name, fn in stages:
        t0 = time.perf_counter()
        LOG.info("demo: %s ...", name)
        measure = fn(cfg)
        rows.append(StageRow(name, "done", time.perf_counter() - t0, measure))
    return rows


def run(cfg: DemoConfig) -> list[StageRow]:
    rows = run_stages(cfg, CAPTURE_STAGES + LATER_STAGES)
    from annotation.status import annotation_status

    queued = annotation_status(cfg.session).queued
    rows.append(StageRow("annotate", "by a person", measure=f"{queued} views queued: `make annotate "
                         f"SESSION={cfg.session}` starts Label Studio, `make merge` brings the clicks back"))
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
    print(f"Report:  file://{(cfg.session / 'report' / 'index.html').resolve()}  (open it in a browser)")
    print(f"Fix the failed frames by hand: `make annotate SESSION={cfg.session}`, then `make merge "
          f"SESSION={cfg.session}`")
    print(f"Generator: {cfg.run_dir} (samples in {cfg.run_dir / 'samples'}), evaluation tables in "
          f"{cfg.run_dir.parent / 'evaluation' / 'tables.md'}; all configurations: `make eval-demo`")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
