"""Triangulation + MANO fitting + failure detection on a synthetic 50-camera dome, against the truth.

Two-hand motion from the studio (one sequence per motion family, the bundled hand
model), seen by the studio's full dome (50 cameras, 3840x2160, with lens distortion).
2D detections = projected joints + realistic noise: 2 px Gaussian, 5% outlier points
(uniform in the image), left/right exchanged in 1% of single views. Then a share of
frames is *broken* on purpose, one way each:

- swap:     the two hands exchanged in 60% of the views (identity lost)
- outliers: one hand displaced by 40-200 px, differently in each of 70% of its views
- missing:  one hand seen by 2 cameras only

With ``--landmarks mediapipe`` (or a definition file) the detections are a detector's landmarks
instead of the joints: the shipped definition (``capture/detect/landmarks/mediapipe.h5``) applied
to the true vertices, projected, with the same noise; the fit then takes that definition
(``fit_sequence(..., landmarks=)``) and the failure measures its landmarks. MPJPE is always the
fitted skeleton joints' against the true ones.

Pipeline: ``fitting.triangulate.triangulate`` (robust) -> ``fitting.fit.fit_sequence``
-> ``fitting.quality.measure``. Reported: triangulation MPJPE (against the true detected points)
and fit MPJPE over the unbroken frames (mm), fit speed (fit + quality, frames/s, this process's
threads), and how well the failure rule finds the broken frames: recall (broken frames flagged)
and precision (flagged frames that were broken).

Speed is given twice: frames per wall-clock second, and frames per CPU-second of this process
(``time.process_time``, all its threads together): on a shared, loaded machine the wall clock
counts the other work too, the CPU time much less. The load average at the start and the end
is printed beside them.

    .venv/bin/python -m bench.fit [--frames 150] [--broken 0.08] [--threads 2] [--landmarks joints|mediapipe|FILE]

Last line: ``fitting frames=<n> frames_per_s=<r> mpjpe_mm=<e> failed_recall=<r1> failed_precision=<p>
fit_frames_per_s=<f> quality_frames_per_s=<q> cpu_frames_per_s=<c> fit_cpu_frames_per_s=<fc> landmarks=<l>
load=<a>-<b>``: frames_per_s counts fit + quality together,
fit_frames_per_s the fit alone (``fit_sequence``), quality_frames_per_s the failure measures
alone (``measure``, whose exact mesh penetration test is most of it); the cpu_ ones the same per
CPU-second
(issue targets: mpjpe <= 4.3 mm, aim 3; recall >= 0.9; precision >= 0.8; >= 200 frames/s).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from capture.studio.motion import FAMILIES, make_motion
from capture.studio.rig import FULL, make_rig
from data_schemas.keypoints import N_HAND_JOINTS
from data_schemas.landmarks import DEFINITIONS_DIR, LandmarkDefinition, read_landmarks
from fitting.fit import FitInputs, FitOptions, fit_sequence
from hand_model.landmarks import check_definition, landmark_points
from hand_model.model import HandModel
from fitting.quality import QualityRule, measure
from fitting.triangulate import triangulate

BREAKS = ("swap", "outliers", "missing")


def projections(rig, joints: np.ndarray) -> np.ndarray:
    """joints (F, 42, 3) -> (C, F, 42, 3) exact detections, score 1 inside the image."""
    px = np.stack([c.project(joints) for c in rig.cameras])  # (C, F, 42, 2)
    size = np.array([c.size for c in rig.cameras], float)[:, None, None]  # (C, 1, 1, 2)
    inside = ((px >= 0) & (px < size)).all(-1)
    return np.concatenate([px, inside[..., None].astype(float)], axis=-1)


def add_noise(rig, kp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Realistic detector noise on (C, F, 42, 3): 2 px Gaussian, 5% outlier points, 1% swapped views."""
    C, F = kp.shape[:2]
    size = np.array([c.size for c in rig.cameras], float)[:, None, None]  # (C, 1, 1, 2)
    kp = kp.copy()
    kp[..., :2] += rng.normal(0, 2.0, kp[..., :2].shape)
    out = rng.random((C, F, 42)) < 0.05
    kp[..., :2] = np.where(out[..., None], rng.random((C, F, 42, 2)) * size, kp[..., :2])
    swap = rng.random((C, F)) < 0.01
    kp[swap] = np.concatenate([kp[swap][:, N_HAND_JOINTS:], kp[swap][:, :N_HAND_JOINTS]], axis=1)
    kp[..., :2] = np.where(kp[..., 2:] > 0, kp[..., :2], np.nan)
    return kp.astype(np.float32)


def break_frames(kp: np.ndarray, frames: np.ndarray, rng: np.random.Generator) -> dict[int, str]:
    """Break ``frames`` of kp (C, F, 42, 3) in place, one way each; returns frame -> way."""
    C = kp.shape[0]
    ways = {}
    for f in frames:
        way = BREAKS[rng.integers(len(BREAKS))]
        hand = slice(0, 21) if rng.random() < 0.5 else slice(21, 42)
        if way == "swap":
            views = rng.random(C) < 0.6
            kp[views, f] = np.concatenate([kp[views, f, N_HAND_JOINTS:], kp[views, f, :N_HAND_JOINTS]], axis=1)
        elif way == "outliers":
            for c in np.nonzero(rng.random(C) < 0.7)[0]:
                angle = rng.uniform(0, 2 * np.pi)
                kp[c, f, hand, :2] += rng.uniform(40, 200) * np.array([np.cos(angle), np.sin(angle)])
        else:
            keep = rng.choice(C, 2, replace=False)
            drop = np.setdiff1d(np.arange(C), keep)
            kp[drop, f, hand] = (np.nan, np.nan, 0.0)
        ways[int(f)] = way
    return ways


def definition_of(choice: str, model: HandModel) -> LandmarkDefinition | None:
    """--landmarks: None for "joints", else the shipped definition of that name or a definition file."""
    if choice == "joints":
        return None
    path = Path(choice) if choice.endswith(".h5") else DEFINITIONS_DIR / f"{choice}.h5"
    definition = read_landmarks(path)
    check_definition(definition, model, path)
    return definition


def truth_of(model: HandModel, motion, definition: LandmarkDefinition | None) -> tuple[np.ndarray, np.ndarray]:
    """A motion's true joints (F, 42, 3) and the points a detector sees (F, 42, 3): the joints, or the
    definition's landmarks on the true vertices."""
    with torch.no_grad():
        out = model(*(torch.as_tensor(a) for a in (motion.global_orient, motion.hand_pose, motion.betas,
                                                    motion.transl)))
    F = len(motion.global_orient)
    joints = out.joints.numpy().reshape(F, 42, 3)
    if definition is None:
        return joints, joints
    return joints, landmark_points(definition, out.vertices.numpy()).reshape(F, 42, 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=150, help="frames per sequence (one sequence per family)")
    ap.add_argument("--broken", type=float, default=0.08, help="share of frames broken on purpose")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--landmarks", default="joints",
                    help='what the detections are: "joints", or a detector\'s landmarks ("mediapipe": its shipped '
                         'definition, or a definition file), which the fit then takes')
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]
    rng = np.random.default_rng(args.seed)
    rig, _ = make_rig(FULL, args.seed)
    model = HandModel()
    definition = definition_of(args.landmarks, model)
    rule = QualityRule()
    tri_err, fit_err, fit_seconds, fit_only, n_frames = [], [], 0.0, 0.0, 0
    cpu_seconds, cpu_fit = 0.0, 0.0
    broken_all, flagged_all = {}, set()
    reasons: dict[str, int] = {}
    # warm-up, untimed: the first fit in a process pays torch's one-time initialisation (~1 s)
    _, warm = truth_of(model, make_motion(FAMILIES[0], 10, 30.0, args.seed, model), definition)
    kp = projections(rig, warm)
    fit_sequence(model, FitInputs(triangulate(rig, kp).joints, kp, rig), FitOptions(), landmarks=definition)
    print(f"{'sequence':<20} {'frames':>6} {'tri_mm':>7} {'fit_mm':>7} {'fit_p95':>7} {'broken':>6} {'flagged':>7} "
          f"{'fit_fps':>7} {'cpu_fps':>7}")
    for s, family in enumerate(FAMILIES):
        joints, seen = truth_of(model, make_motion(family, args.frames, 30.0, args.seed + s, model), definition)
        kp = projections(rig, seen)
        candidates = np.arange(2, args.frames - 2)
        bad = rng.choice(candidates, int(round(args.broken * args.frames)), replace=False)
        ways = break_frames(kp, bad, rng)  # on the exact detections, then noise on everything
        kp = add_noise(rig, kp, rng)
        tri = triangulate(rig, kp)
        t0, c0 = time.perf_counter(), time.process_time()
        keypoints = kp.copy()
        for f, c in zip(*np.nonzero(tri.swapped)):  # the fit sees the exchanges the triangulation undid
            keypoints[c, f] = np.concatenate([keypoints[c, f, N_HAND_JOINTS:], keypoints[c, f, :N_HAND_JOINTS]])
        res = fit_sequence(model, FitInputs(tri.joints, keypoints, rig), FitOptions(), landmarks=definition)
        t1, c1 = time.perf_counter(), time.process_time()

        def vertices_of(idx):
            with torch.no_grad():
                return model(*(torch.as_tensor(a[idx]) for a in (res.global_orient, res.hand_pose)),
                             torch.as_tensor(res.betas), torch.as_tensor(res.transl[idx])).vertices.numpy()

        q = measure(res.joints, tri.joints, keypoints, rig, rule, vertices_of, model.faces, tri.swapped,
                    fit_landmarks=res.landmarks)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        fit_only += t1 - t0
        cpu_fit += c1 - c0
        good = np.setdiff1d(np.arange(args.frames), bad)
        e_tri = np.linalg.norm(tri.joints[good] - seen[good], axis=-1)
        e_fit = np.linalg.norm(res.joints.reshape(-1, 42, 3)[good] - joints[good], axis=-1)
        tri_err.append(e_tri[np.isfinite(e_tri)])
        fit_err.append(e_fit.ravel())
        flagged = set(np.nonzero((q.quality.failure != 0).any(1))[0].tolist())
        for f, flags in enumerate(q.quality.failure):
            for name in {n for h in range(2) for n in _names(int(flags[h]))}:
                reasons[name] = reasons.get(name, 0) + 1
        broken_all.update({(s, f): w for f, w in ways.items()})
        flagged_all |= {(s, f) for f in flagged}
        fit_seconds += seconds
        cpu_seconds += cpu
        n_frames += args.frames
        print(f"{family:<20} {args.frames:6d} {1000 * e_tri[np.isfinite(e_tri)].mean():7.3f} "
              f"{1000 * e_fit.mean():7.3f} {1000 * np.percentile(e_fit, 95):7.3f} {len(bad):6d} {len(flagged):7d} "
              f"{args.frames / seconds:7.1f} {args.frames / cpu:7.1f}", flush=True)
    hit = {k for k in broken_all if k in flagged_all}
    recall = len(hit) / max(len(broken_all), 1)
    precision = len(hit) / max(len(flagged_all), 1)
    for way in BREAKS:
        ks = [k for k, w in broken_all.items() if w == way]
        print(f"  broken by {way:<9} {len(ks):3d} frames, caught {sum(k in flagged_all for k in ks):3d}")
    print(f"  reasons over all (frame, hand): {reasons}")
    tri_mm = 1000 * np.concatenate(tri_err).mean()
    fit_mm = 1000 * np.concatenate(fit_err).mean()
    print(f"triangulation mpjpe {tri_mm:.3f} mm; fit mpjpe {fit_mm:.3f} mm over unbroken frames")
    quality_seconds = fit_seconds - fit_only
    print(f"fitting frames={n_frames} frames_per_s={n_frames / fit_seconds:.1f} mpjpe_mm={fit_mm:.3f} "
          f"failed_recall={recall:.3f} failed_precision={precision:.3f} fit_frames_per_s={n_frames / fit_only:.1f} "
          f"quality_frames_per_s={n_frames / quality_seconds:.1f} cpu_frames_per_s={n_frames / cpu_seconds:.1f} "
          f"fit_cpu_frames_per_s={n_frames / cpu_fit:.1f} landmarks={args.landmarks} "
          f"load={load0:.1f}-{os.getloadavg()[0]:.1f}")


def _names(flags: int) -> list[str]:
    from data_schemas.mano import FailureReason

    return FailureReason.names_of(flags)


if __name__ == "__main__":
    main()
