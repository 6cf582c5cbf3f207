"""The detect stage on studio renders, scored against the projected ground-truth joints.

Builds a studio session with one sequence per motion family (or uses --session), runs
``handdiffuse detect`` on it (timed: images/s of the whole stage, decoding included),
and scores keypoints2d.h5 per camera with ``capture.detect.evaluate``: detection rate
over eligible views (hand wholly in the image, not covered, palm or back within 60 deg
of facing the camera), hands given the wrong side, median and mean keypoint error at
512 px image height.

Then, from one more pass of the detector over the same frames, how the side of each
hand is decided: the model's handedness label alone, the geometric check alone, both,
and both with tracking over time (the stage's default).

Then the second pass (unless --no-redetect): triangulate and fit (with the truth's
calibration where the session has none: the built session's board take is one frame),
``handdiffuse redetect`` (timed: crops/s of the whole stage, decoding, posing and
visibility included), and the detection rate on the views where the two hands' true boxes
overlap (``score_overlapping``), before (keypoints2d.h5) and after (the guided hands in
place of the first detection's).

    .venv/bin/python -m bench.detection [--frames 30] [--backend mediapipe] [--no-redetect]

Last line: ``detection backend=<b> images_per_s=<r> detected=<fraction> px_err=<median px>``
(issue target: detected >= 0.85, px_err <= 10), and before it
``redetection crops_per_s=<r> overlap_detected_before=<fraction> overlap_detected_after=<fraction>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

from capture.detect.base import HandCandidate, to_rows
from capture.detect.evaluate import DetectionScore, load_views, score_detections
from capture.detect.stage import DetectConfig, detect
from capture.detect.tracking import track_sides
from capture.studio.build import GT_SEQUENCE, VIEWS, StudioConfig, build_session
from capture.studio.motion import FAMILIES
from data_schemas.keypoints2d import Keypoints2D, read_keypoints2d
from data_schemas.session import KEYPOINTS2D, Session


def truth_of(root: Path, seq: str) -> tuple[Keypoints2D, dict | None]:
    gt = root / GT_SEQUENCE.format(seq=seq)
    return read_keypoints2d(gt / "keypoints2d.h5"), load_views(gt / VIEWS)


def side_ablation(root: Path, seqs: list[str]) -> dict[str, DetectionScore]:
    """One detector pass; the sides decided four ways, each scored."""
    from capture.detect.mediapipe import MediaPipeConfig, MediaPipeHands, _logit
    from data_schemas.takes import open_take

    session = Session.open(root)
    weight = MediaPipeConfig().geometry_weight
    ways = {"label": (1.0, 0.0, False), "geometry": (0.0, 1.0, False), "label+tracking": (1.0, 0.0, True)}
    for w in sorted({0.5, 1.0, 2.0, 4.0, weight}):
        ways[f"label+geometry(w={w:g})"] = (1.0, w, False)
        ways[f"label+geometry(w={w:g})+tracking"] = (1.0, w, True)
    totals = {k: DetectionScore() for k in ways}
    with MediaPipeHands() as det:
        for seq in seqs:
            truth, views = truth_of(root, seq)
            take = open_take(session, seq)
            raw = {cam: [det.hands(frame) for _, frame in take.read(cam, take.instants)] for cam in session.cameras}
            for way, (a, b, tracked) in ways.items():
                rows = []
                for cam in session.cameras:
                    per_image = []
                    for hands in raw[cam]:
                        cands = []
                        for pts, p_left, chiral in hands:
                            kp = np.concatenate([pts[:, :2], np.ones((21, 1))], axis=1)
                            cands.append(HandCandidate(kp, a * _logit(p_left) - b * chiral))
                        per_image.append(cands)
                    rows.append(track_sides(per_image) if tracked else to_rows(per_image))
                kp = Keypoints2D(session.cameras, truth.image_sizes, np.array(take.instants), np.stack(rows),
                                 "ablation", 30.0)
                for s in score_detections(kp, truth, views).values():
                    totals[way].add(s)
    return totals


def redetection(root: Path, seqs: list[str], workers: int) -> tuple[float, DetectionScore, DetectionScore]:
    """Triangulate, fit, redetect (timed); the overlapping views' scores before and after."""
    import shutil

    from capture.detect.evaluate import score_overlapping
    from capture.detect.guided import RedetectConfig, redetect
    from data_schemas.keypoints2d import overlay_guided
    from data_schemas.session import CALIBRATION_TOML, KEYPOINTS2D_GUIDED
    from fitting.fit_stage import fit_session
    from fitting.triangulate_stage import triangulate_session

    if not (root / CALIBRATION_TOML).is_file():
        shutil.copy(root / "ground_truth" / "calibration.toml", root / CALIBRATION_TOML)
    triangulate_session(root)
    fit_session(root)
    t0 = time.perf_counter()
    summaries = redetect(root, RedetectConfig(workers=workers), progress=False)
    seconds = time.perf_counter() - t0
    crops = sum(s.crops for s in summaries if not s.skipped)
    print(f"\nredetect: {crops} crops planned, {sum(s.found for s in summaries)} hands found, {seconds:.1f} s")
    session = Session.open(root)
    before, after = DetectionScore(), DetectionScore()
    for seq in seqs:
        truth, _ = truth_of(root, seq)
        kp = read_keypoints2d(session.path(KEYPOINTS2D, seq=seq))
        before.add(score_overlapping(kp, truth))
        kp.keypoints = overlay_guided(kp.keypoints, read_keypoints2d(session.path(KEYPOINTS2D_GUIDED, seq=seq)))
        after.add(score_overlapping(kp, truth))
    return crops / max(seconds, 1e-9), before, after


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--session", type=Path, default=None, help="score an existing studio session instead")
    ap.add_argument("--frames", type=int, default=30, help="frames per sequence of the built session")
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--backend", default="mediapipe", choices=["mediapipe", "dwpose"])
    ap.add_argument("--dwpose-det", type=Path, default=None)
    ap.add_argument("--dwpose-pose", type=Path, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-ablation", action="store_true")
    ap.add_argument("--no-redetect", action="store_true", help="skip the second pass (triangulate, fit, redetect)")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    root = args.session
    if root is None:
        root = Path(tmp.name) / "studio"
        t0 = time.perf_counter()
        build_session(StudioConfig(out=root, sequences=len(FAMILIES), frames=args.frames, board_frames=1,
                                   seed=args.seed))
        print(f"studio session: {len(FAMILIES)} sequences x {args.frames} frames x 8 cameras, "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
    cfg = DetectConfig(backend=args.backend, workers=args.workers)
    cfg.dwpose = dataclasses.replace(cfg.dwpose, det_model=args.dwpose_det, pose_model=args.dwpose_pose)
    t0 = time.perf_counter()
    summaries = detect(root, cfg, progress=False)
    seconds = time.perf_counter() - t0
    images = sum(s.cameras * s.frames for s in summaries)
    session = Session.open(root)
    per_camera: dict[str, DetectionScore] = {c: DetectionScore() for c in session.cameras}
    total = DetectionScore()
    print(f"{'sequence':<10} {'category':<22} {'eligible':>8} {'rate':>6} {'swapped':>7} {'median_px':>9} {'mean_px':>8}")
    for s in summaries:
        truth, views = truth_of(root, s.name)
        seq_total = DetectionScore()
        for cam, score in score_detections(read_keypoints2d(session.path(KEYPOINTS2D, seq=s.name)), truth,
                                           views).items():
            per_camera[cam].add(score)
            seq_total.add(score)
        total.add(seq_total)
        category = session.config.sequences.get(s.name, {}).get("category", "")
        print(f"{s.name:<10} {category:<22} {seq_total.eligible:8d} {seq_total.rate:6.3f} {seq_total.swapped:7d} "
              f"{seq_total.median_error_px:9.2f} {seq_total.mean_error_px:8.2f}")
    print(f"\n{'camera':<10} {'eligible':>8} {'rate':>6} {'swapped':>7} {'median_px':>9} {'mean_px':>8}")
    for cam, score in per_camera.items():
        print(f"{cam:<10} {score.eligible:8d} {score.rate:6.3f} {score.swapped:7d} {score.median_error_px:9.2f} "
              f"{score.mean_error_px:8.2f}")
    if args.backend == "mediapipe" and not args.no_ablation:
        print("\nhow the side of a hand is decided (same frames, one more detector pass):")
        for way, score in side_ablation(root, [s.name for s in summaries]).items():
            print(f"  {way:<34} rate={score.rate:.3f} swapped={score.swapped} of {score.eligible}")
    if not args.no_redetect:
        crops_per_s, before, after = redetection(root, [s.name for s in summaries], args.workers)
        for name, score in (("before", before), ("after", after)):
            print(f"  overlapping views, {name:<6} rate={score.rate:.3f} swapped={score.swapped} of {score.eligible} "
                  f"median_px={score.median_error_px:.2f}")
        print(f"redetection crops_per_s={crops_per_s:.1f} overlap_detected_before={before.rate:.3f} "
              f"overlap_detected_after={after.rate:.3f}")
    print(f"\nstage: {images} images in {seconds:.1f} s with {args.workers} workers")
    print(f"detection backend={args.backend} images_per_s={images / seconds:.1f} detected={total.rate:.3f} "
          f"px_err={total.median_error_px:.2f}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
