"""A detector's landmarks on the hand model, fitted from studio renders with ground truth.

``make landmarks`` (``handdiffuse landmarks``) renders studio sequences of every motion family
into the demo dome (through mp4, as the studio writes them), runs the detector on every view, and
finds, per landmark, the fixed convex combination of the hand model's vertices whose projection
best matches the detections (``data_schemas.landmarks``):

1. samples (``collect_samples``): per frame and hand, the true posed vertices; per view where the
   hand is wholly in the image, not covered by the other hand, and a detection matches it
   (``capture.studio.detector_check.match``), the detected 2D landmarks
2. the linear system (``_rows``): a landmark p = sum_v w_v x_v (sum w_v = 1) seen at undistorted
   normalised point (u, v) by a camera with x_v^c = R x_v + t satisfies
   sum_v w_v (u z_v^c - x_v^c) = 0 and sum_v w_v (v z_v^c - y_v^c) = 0; each row divided by the
   landmark's depth and times the focal length is its reprojection error in px
3. per landmark (``fit_landmark``), both hands pooled (the left hand's vertex i is the mirror of
   the right's): non-negative least squares with the sum-to-one row, first over vertices
   within ``reach`` of the joint the landmark names, then over the ``candidates`` vertices
   nearest where that solution lies at rest; the ``k`` largest weights kept and solved again;
   detections off by more than ``outlier`` x the median residual left out, twice
4. the definition written with the detector's name and options, the hand model's fingerprint,
   the residual per landmark and how it was made

Step 3 alone (``fit_definition``) is tested on detections made by a known definition.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from capture.detect.base import in_image
from data_schemas.calibration import Camera
from data_schemas.keypoints import N_HAND_JOINTS
from data_schemas.landmarks import DEFINITIONS_DIR, LandmarkDefinition, write_landmarks

LOG = logging.getLogger("handdiffuse")
SUM_WEIGHT = 1e3  # weight of the sum-to-one row against px residuals


@dataclass
class LandmarkSamples:
    """Step 1's output: true meshes and the detections of them."""

    vertices: np.ndarray  # (S, V, 3) float32 one hand's true posed vertices per sample, world m
    cameras: list[Camera]
    sample: np.ndarray  # (N,) int: the sample each observation sees
    camera: np.ndarray  # (N,) int: the camera of each observation
    points: np.ndarray  # (N, 21, 2) detected px (distorted), our per-hand order
    found: np.ndarray  # (N, 21) bool
    joints: np.ndarray | None = None  # (S, 21, 3) the samples' true joints (to compare: the detections vs them)


def joint_residual_px(samples: LandmarkSamples) -> np.ndarray:
    """(21,) median px distance of the detections to the true joints' projections: what a fit that
    takes the detector's landmarks for the joints is left with."""
    err = np.full(samples.found.shape, np.nan)
    for c, cam in enumerate(samples.cameras):
        at = np.flatnonzero(samples.camera == c)
        err[at] = np.linalg.norm(cam.project(samples.joints[samples.sample[at]]) - samples.points[at], axis=-1)
    return np.nanmedian(np.where(samples.found, err, np.nan), axis=0)


@dataclass
class SolveOptions:
    """How each landmark's vertex combination is chosen (step 3)."""

    k: int = 6
    """Vertices per landmark."""
    reach: float = 0.035
    """First pass: candidate vertices within this distance (m, at rest) of the landmark's joint."""
    candidates: int = 48
    """Second pass: this many vertices nearest the first pass's landmark (at rest)."""
    first_pass: int = 96
    """First pass: at most this many candidates (evenly thinned)."""
    outlier: float = 4.0
    """Detections with a residual above this many times the median (and above 2 px) are left out."""
    ridge: float = 1e-3
    """Weight pulling the combination's weights towards zero (spreads them over near vertices)."""


def _rows(samples: LandmarkSamples, landmark: int, ids: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """Step 2: the rows (2 n, len(ids)) of observations ``obs`` of ``landmark`` over vertices ``ids``."""
    rows = np.empty((2 * len(obs), len(ids)))
    for c, cam in enumerate(samples.cameras):
        at = np.flatnonzero(samples.camera[obs] == c)
        if len(at) == 0:
            continue
        o = obs[at]
        uv = cam.undistort_points(samples.points[o, landmark])  # (n, 2) normalised
        xc = cam.to_camera(samples.vertices[samples.sample[o]][:, ids].astype(np.float64))  # (n, m, 3)
        depth = xc[..., 2].mean(1, keepdims=True)  # (n, 1): the landmark's depth, nearly
        f = np.array(cam.intrinsics[:2])
        for a in range(2):
            rows[2 * at + a] = f[a] * (uv[:, a, None] * xc[..., 2] - xc[..., a]) / depth
    return rows


def _solve(A: np.ndarray, ridge: float) -> np.ndarray:
    """min |A w|^2 + ridge |w|^2, w >= 0, sum w = 1 (the sum as a heavy row)."""
    m = A.shape[1]
    M = np.vstack([A, SUM_WEIGHT * np.ones((1, m)), np.sqrt(ridge) * np.eye(m)])
    b = np.zeros(len(M))
    b[len(A)] = SUM_WEIGHT
    w, _ = nnls(M, b, maxiter=50 * m)
    return w / max(w.sum(), 1e-12)


def _residual_px(A: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(2 n, m) rows, weights -> (n,) px residual per observation."""
    return np.linalg.norm((A @ w).reshape(-1, 2), axis=1)


def fit_landmark(samples: LandmarkSamples, landmark: int, rest: np.ndarray, anchor: np.ndarray,
                 opts: SolveOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 3 for one landmark: rest (V, 3) vertices, anchor (3,) its joint at rest ->
    (vertex ids (k,), weights (k,), per-observation px residual (N,), NaN where not detected)."""
    obs = np.flatnonzero(samples.found[:, landmark])
    residual = np.full(len(samples.found), np.nan)
    if len(obs) == 0:
        raise ValueError(f"landmark {landmark} was never detected")
    near = np.flatnonzero(np.linalg.norm(rest - anchor, axis=1) < opts.reach)
    if len(near) < opts.k:
        near = np.argsort(np.linalg.norm(rest - anchor, axis=1))[:opts.candidates]
    ids = near[np.linspace(0, len(near) - 1, min(len(near), opts.first_pass)).astype(int)]
    keep = np.ones(len(obs), bool)
    for stage in range(4):  # wide, narrow, k of them, k again without outliers
        A = _rows(samples, landmark, ids, obs)
        use = np.repeat(keep, 2)
        w = _solve(A[use], opts.ridge)
        err = _residual_px(A, w)
        keep = err <= max(2.0, opts.outlier * np.median(err[keep]))
        if stage == 0:  # the second pass: vertices nearest where the first put the landmark
            centre = w @ rest[ids]
            ids = np.argsort(np.linalg.norm(rest - centre, axis=1))[:opts.candidates]
        elif stage >= 1:
            top = np.argsort(-w)[:opts.k]
            ids, w = ids[top], w[top]
    w = w / w.sum()
    residual[obs] = _residual_px(_rows(samples, landmark, ids, obs), w)
    return ids, w, residual


def fit_definition(samples: LandmarkSamples, rest: np.ndarray, rest_joints: np.ndarray,
                   opts: SolveOptions | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Step 3: rest (V, 3) vertices and rest_joints (21, 3) of one hand (candidates are chosen there;
    samples of both hands share the vertex indices, the left's vertex i being the mirror of the
    right's) -> vertex_ids (21, k), weights (21, k), median px residual (21,), observations (21,)."""
    opts = opts or SolveOptions()
    ids = np.zeros((N_HAND_JOINTS, opts.k), np.int64)
    weights = np.zeros((N_HAND_JOINTS, opts.k))
    residual = np.full(N_HAND_JOINTS, np.nan)
    count = samples.found.sum(0)
    for lm in range(N_HAND_JOINTS):
        i, w, r = fit_landmark(samples, lm, rest, rest_joints[lm], opts)
        ids[lm, :len(i)], weights[lm, :len(w)] = i, w
        residual[lm] = np.nanmedian(r)
    return ids, weights, residual, count


@dataclass
class LandmarkFitConfig:
    """Fit a detector's landmarks on the hand model from studio renders with ground truth ->
    capture/detect/landmarks/<detector>.h5 (the definition triangulation and fit use)."""

    out: Path = DEFINITIONS_DIR / "mediapipe.h5"
    """Definition file to write."""
    sequences_per_family: int = 2
    """Studio sequences of each motion family rendered."""
    frames: int = 36
    """Frames per sequence."""
    stride: int = 3
    """Every k-th frame is rendered and detected."""
    seed: int = 1000
    """Seed of the renders (kept apart from the demo's sessions)."""
    solve: SolveOptions = field(default_factory=SolveOptions)


def collect_samples(cfg: LandmarkFitConfig, model, detector) -> tuple[LandmarkSamples, int]:
    """Step 1 (module docstring): -> the samples and the number of views rendered."""
    from capture.studio.detector_check import match, studio_takes
    from capture.studio.rig import DEMO, make_rig

    rig, _ = make_rig(DEMO, cfg.seed)
    V = model.n_vertices
    vertices, joints, sample, camera, points, found = [], [], [], [], [], []
    views = 0
    picked = list(range(0, cfg.frames, cfg.stride))
    first, family = 0, None
    with tempfile.TemporaryDirectory() as tmp:
        for take in studio_takes(rig, model, DEMO.fps, cfg.seed, cfg.sequences_per_family, cfg.frames, picked,
                                 Path(tmp)):
            if take.camera == 0:  # a new take: its hands' vertices and joints at the picked frames
                if family is not None and take.family != family:
                    LOG.info("landmarks: %s rendered and detected, %d hand views so far", family, len(sample))
                family, first = take.family, len(vertices)
                for f in picked:
                    vertices += [take.scene.vertices[f, h * V:(h + 1) * V] for h in range(2)]
                    joints += [take.scene.joints[f, h] for h in range(2)]
            W, H = rig.cameras[take.camera].size
            for i, image in enumerate(take.images):
                views += 1
                hands = detector.hands(image)
                matched = match([pts[:, :2] for pts, _, _ in hands], take.truths[i].pixels)
                for h in range(2):
                    if matched[h] is None or not take.truths[i].unoccluded[h]:
                        continue
                    pts = hands[matched[h]][0][:, :2]
                    sample.append(first + 2 * i + h)
                    camera.append(take.camera)
                    points.append(pts)
                    found.append(in_image(pts, W, H))
        LOG.info("landmarks: %s rendered and detected, %d hand views so far", family, len(sample))
    return LandmarkSamples(np.stack(vertices).astype(np.float32), list(rig.cameras), np.array(sample),
                           np.array(camera), np.array(points), np.array(found), np.stack(joints)), views


def refit(cfg: LandmarkFitConfig) -> LandmarkDefinition:
    """Steps 1-4 for MediaPipe (the bundled detector) on the bundled hand model."""
    import torch

    from capture.detect.mediapipe import MediaPipeConfig, MediaPipeHands
    from hand_model.landmarks import model_fingerprint
    from hand_model.posing import hand_model_for

    t0 = time.perf_counter()
    model = hand_model_for("open_hand")
    det_cfg = MediaPipeConfig()
    with MediaPipeHands(det_cfg) as det:
        samples, views = collect_samples(cfg, model, det)  # 1.
        name = det.name
    with torch.no_grad():
        z = torch.zeros(1, 2, 3)
        out = model(z, torch.zeros(1, 2, 45), None, z)
    rest, rest_joints = out.vertices[0, 1].numpy(), out.joints[0, 1].numpy()  # the right hand's, at rest
    ids, w, residual, count = fit_definition(samples, rest, rest_joints, cfg.solve)  # 2. 3.
    opts = json.dumps(dataclasses.asdict(cfg.solve), sort_keys=True)
    definition = LandmarkDefinition(
        detector=name, detector_config=json.dumps(dataclasses.asdict(det_cfg), sort_keys=True),
        hand_model=model.name, n_vertices=model.n_vertices, model_fingerprint=model_fingerprint(model),
        method=f"capture.detect.landmark_fit: NNLS on reprojection rows, both hands pooled, options {opts}",
        made_from=f"studio demo dome, seed {cfg.seed}, {cfg.sequences_per_family} sequences per motion family x "
                  f"{cfg.frames} frames (every {cfg.stride}th): {views} views, {len(samples.sample)} hand views",
        vertex_ids=np.stack([ids, ids]), weights=np.stack([w, w]), residual_px=np.stack([residual, residual]),
        n_observations=np.stack([count, count]))
    write_landmarks(cfg.out, definition)  # 4.
    LOG.info("landmarks: %s written in %.1f s; median residual per landmark %.2f px (the joints': %.2f px)",
             cfg.out, time.perf_counter() - t0, float(np.median(residual)),
             float(np.median(joint_residual_px(samples))))
    return definition
