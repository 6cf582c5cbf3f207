"""Fit quality per frame and hand, the rule that calls a fit failed, and which views to annotate.

Measures (``measure``), per frame and hand:

- per view (camera): the median px distance between the fitted joints' projections and
  the hand's detected keypoints (views where at least half the hand was detected)
- ``n_cameras``: views with a detection of the hand
- ``reproj_mean_px`` / ``reproj_max_px``: mean / max of the view errors over the views
  that *agree* with the fit (below the agreement threshold, next paragraph)
- ``residual3d``: mean distance of the fitted joints to the triangulated ones, m
- ``bone_deviation``: median over the hand's bones of |triangulated length / fitted length - 1|
- ``penetration``: depth of the deepest vertex of either hand inside the other, m
  (exact, ``hand_model.contact``; measured where the hands come within 2 cm)
- temporal spike: how far the frame's joints sit from the midpoint of its two
  neighbours beyond half the neighbours' own distance (a one-frame glitch), m

Thresholds adapt to the capture: detectors, lenses and resolutions differ, so a value is
called bad when it is above both its floor (a ``QualityRule`` field) and ``relative`` x
its median over the sequence: ``bad(x) = x > max(floor, relative x median(x))``. A view
agrees with the fit when its error, as a fraction of the image height, is not bad
(floor ``inlier_px``). The rule sets FailureReason bits:

    NO_DATA          fewer than 2 views, or no triangulated palm to fit
    FEW_CAMERAS      n_cameras < min_cameras
    REPROJECTION     agreeing views / views < min_agreement, or bad mean error (floor max_reproj)
    RESIDUAL_3D      bad residual3d (floor max_residual_3d)
    PENETRATION      penetration > max_penetration
    BONE_LENGTH      bad bone_deviation (floor max_bone_deviation)
    TEMPORAL_JUMP    spike > max_spike
    LEFT_RIGHT_SWAP  the triangulation exchanged the hands in > max_swapped of the views

The first two say the hand had too little evidence (``data_schemas.mano.EVIDENCE``): the fit
carried it from its neighbours; the others, that the fit disagrees with its evidence
(inconsistent). From the same measures over their thresholds, each hand's confidence in [0, 1]
(``fitting.confidence``).

Views for people (``choose_views``): the frames that stay inconsistent, a hand with an
inconsistency flag and a confidence under ``min_confidence`` (a hand carried across missing
evidence and consistent with what there is is not queued: there is nothing for a person to
correct, and its confidence already keeps it out of training); among cameras that see the
queued hand(s) wholly in the image, the best ``k`` by score = hand size in the image
(fraction of the image height) x (1 + how far the view disagrees, capped at 3) x (1 -
overlap of the two hands' boxes), picked greedily at least ``min_angle_deg`` apart
around the hand, so a person's clicks add new directions. Priority = the score.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from data_schemas.calibration import CameraRig
from data_schemas.keypoints import HAND_BONES, HANDS, N_HAND_JOINTS
from data_schemas.mano import FailureReason, FitQuality
from data_schemas.queue import QueueItem

PALM = [0, 1, 5, 9, 13, 17]


@dataclass
class ViewRule:
    """Which views of a failed frame are queued for a person (annotation/queue.jsonl)."""

    inlier_px: float = 0.02
    """A view agrees with the fit when its median keypoint error is under this fraction of the image height."""
    views_per_frame: int = 3
    """Camera views queued for a person per failed frame."""
    min_angle_deg: float = 30.0
    """Queued views of one frame at least this far apart as seen from the hand."""
    min_confidence: float = 0.5
    """Frames whose fit disagrees with its evidence are queued when a hand's confidence is below this
    (frames carried across missing evidence but consistent are not)."""


@dataclass
class QualityRule(ViewRule):
    """Thresholds that turn fit quality into failed frames, and the views of them queued (annotation/queue.jsonl)."""

    min_cameras: int = 3
    """Fewer views with a detection of the hand than this: failed (few_cameras)."""
    min_agreement: float = 0.6
    """Fewer agreeing views than this fraction: failed (reprojection)."""
    max_reproj: float = 0.01
    """Mean error over agreeing views above this fraction of the image height: failed (reprojection)."""
    max_residual_3d: float = 0.01
    """Fitted joints further than this (m, mean) from the triangulated ones: failed (residual_3d)."""
    max_penetration: float = 0.005
    """Hands interpenetrating deeper than this (m): failed (penetration)."""
    max_bone_deviation: float = 0.15
    """Triangulated bones off the fitted lengths by more than this fraction (median over bones): failed
    (bone_length)."""
    relative: float = 3.0
    """A measure is bad only above this many times its median over the sequence (and above its floor)."""
    max_spike: float = 0.01
    """A one-frame jump of the joints larger than this (m): failed (temporal_jump)."""
    max_swapped: float = 0.3
    """The triangulation exchanged the hands in more than this fraction of views: failed (left_right_swap)."""
    carry_seconds: float = 0.1
    """Confidence of a hand carried across frames without evidence: its nearest well-supported frame's,
    decaying by e every this many seconds away (fitting.confidence)."""


@dataclass
class Measures:
    quality: FitQuality  # the file's fields, failure included
    view_error: np.ndarray  # (C, F, 2) median px error per view (NaN: hand not detected there)
    projected: np.ndarray  # (C, F, 2, 21, 2) fitted joints in every camera, px


def threshold(x: np.ndarray, floor: float, relative: float) -> float:
    """max(floor, relative x median of x's finite values): above it, a measure is bad."""
    finite = np.isfinite(x)
    median = float(np.median(x[finite])) if finite.any() else 0.0
    return max(floor, relative * median)


def bad(x: np.ndarray, floor: float, relative: float) -> np.ndarray:
    """x > max(floor, relative x median of x's finite values); NaN is never bad."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(x) & (x > threshold(x, floor, relative))


def view_errors(fit_joints: np.ndarray, keypoints: np.ndarray, rig: CameraRig) -> tuple[np.ndarray, np.ndarray]:
    """fit_joints (F, 2, 21, 3), keypoints (C, F, 42, 3) -> (median px error per view (C, F, 2), NaN
    where the hand is not detected in at least half its points; the fitted joints projected (C, F, 2, 21, 2))."""
    F, C = len(fit_joints), len(rig)
    proj = np.stack([c.project(fit_joints) for c in rig.cameras])  # (C, F, 2, 21, 2)
    det = keypoints.reshape(C, F, 2, N_HAND_JOINTS, 3)
    found = det[..., 2] > 0  # (C, F, 2, 21)
    err = np.where(found, np.linalg.norm(proj - np.nan_to_num(det[..., :2]), axis=-1), np.nan)
    seen = found.sum(-1) >= (N_HAND_JOINTS + 1) // 2  # (C, F, 2)
    with warnings.catch_warnings():  # views without a detection: all-NaN medians, masked next
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.where(seen, np.nanmedian(err, axis=-1), np.nan), proj


@dataclass
class _Raw:
    """The measures of a fit before the rule, each (F, 2) (module docstring)."""

    n_cameras: np.ndarray  # views with a detection of the hand
    n_agree: np.ndarray  # of them, views that agree with the fit
    mean_err: np.ndarray  # px, over agreeing views
    max_err: np.ndarray
    rel_mean: np.ndarray  # mean_err as a fraction of the image height
    residual: np.ndarray  # m
    bone_dev: np.ndarray
    penetration: np.ndarray  # m
    spike: np.ndarray  # m
    n_joints: np.ndarray  # triangulated joints
    palm: np.ndarray  # bool: at least 3 palm joints triangulated


def _raw(fit_joints, joints3d, keypoints, rig: CameraRig, rule: "QualityRule", vertices_of, faces,
         fit_landmarks: np.ndarray | None = None) -> tuple[_Raw, np.ndarray, np.ndarray]:
    """The measures (``_Raw``), the view errors (C, F, 2) and the projections (C, F, 2, 21, 2);
    views and triangulated points are compared with ``fit_landmarks`` (default: the joints)."""
    F = len(fit_joints)
    fit_points = fit_joints if fit_landmarks is None else fit_landmarks
    X = joints3d.reshape(F, 2, N_HAND_JOINTS, 3)
    heights = np.array([c.size[1] for c in rig.cameras], float)[:, None, None]  # (C, 1, 1)
    # views: projected fit vs detections
    view_error, proj = view_errors(fit_points, keypoints, rig)  # (C, F, 2), (C, F, 2, 21, 2)
    seen = np.isfinite(view_error)
    agree = seen & ~bad(view_error / heights, rule.inlier_px, rule.relative)  # error as a fraction of the height
    n_agree = agree.sum(0)
    with np.errstate(all="ignore"):
        mean_err = np.where(agree, view_error, 0).sum(0) / np.maximum(n_agree, 1)
        max_err = np.where(agree, view_error, 0).max(0)
        rel_mean = np.where(agree, view_error / heights, 0).sum(0) / np.maximum(n_agree, 1)
    # 3D
    valid = np.isfinite(X).all(-1)  # (F, 2, 21)
    d3 = np.linalg.norm(fit_points - np.nan_to_num(X), axis=-1)
    residual = np.where(valid, d3, 0).sum(-1) / np.maximum(valid.sum(-1), 1)
    parents, children = [p for p, _ in HAND_BONES], [c for _, c in HAND_BONES]
    tri_len = np.linalg.norm(X[:, :, children] - X[:, :, parents], axis=-1)  # (F, 2, 20)
    fit_len = np.linalg.norm(fit_points[:, :, children] - fit_points[:, :, parents], axis=-1)
    with warnings.catch_warnings():  # a hand with no triangulated bone: NaN, then 0
        warnings.simplefilter("ignore", RuntimeWarning)
        bone_dev = np.nan_to_num(np.nanmedian(np.abs(tri_len / fit_len - 1), axis=-1))
    # contact
    penetration = np.zeros((F, 2))
    if vertices_of is not None:
        from hand_model.contact import hand_contact

        gap = np.linalg.norm(fit_joints[:, 0, :, None] - fit_joints[:, 1, None], axis=-1).min((1, 2))
        close = np.nonzero(gap < 0.02)[0]
        for start in range(0, len(close), 64):
            idx = close[start:start + 64]
            depth = hand_contact(vertices_of(idx), faces, with_distance=False).depth
            penetration[idx] = depth[:, None]
    # time
    spike = np.zeros((F, 2))
    if F >= 3:
        mid = (fit_joints[2:] + fit_joints[:-2]) / 2
        half = np.linalg.norm(fit_joints[2:] - fit_joints[:-2], axis=-1).mean(-1) / 2  # (F-2, 2)
        spike[1:-1] = np.maximum(np.linalg.norm(fit_joints[1:-1] - mid, axis=-1).mean(-1) - half, 0)
    raw = _Raw(seen.sum(0), n_agree, mean_err, max_err, rel_mean, residual, bone_dev, penetration, spike,
               valid.sum(-1), valid[:, :, PALM].sum(-1) >= 3)
    return raw, view_error, proj


def measure(fit_joints: np.ndarray, joints3d: np.ndarray, keypoints: np.ndarray, rig: CameraRig,
            rule: QualityRule, vertices_of=None, faces=None, swapped: np.ndarray | None = None,
            fps: float = 30.0, fit_landmarks: np.ndarray | None = None) -> Measures:
    """fit_joints (F, 2, 21, 3), joints3d (F, 42, 3), keypoints (C, F, 42, 3) (joints3d.h5's 2D evidence:
    hands on their sides), ``vertices_of(frame_indices) -> (K, 2, V, 3)`` for the penetration check
    (None: skipped), swapped (F, C) the views whose hands the triangulation exchanged, fps of the frames
    (the confidence's reach in time, ``fitting.confidence``); fit_landmarks (F, 2, 21, 3) the fit's
    points that the detections and the triangulated points are compared with (the detector's landmarks
    on the model; default: the joints). Contact and time use the joints."""
    from fitting.confidence import confidence

    r, view_error, proj = _raw(fit_joints, joints3d, keypoints, rig, rule, vertices_of, faces, fit_landmarks)
    F = len(fit_joints)
    # the rule: each measure over its threshold (NaN: not measured), where the hand has data
    R = FailureReason
    no_data = (r.n_cameras < 2) | ~r.palm
    with np.errstate(all="ignore"):
        agreement = np.where(r.n_cameras > 0, r.n_agree / np.maximum(r.n_cameras, 1), np.nan)
        disagree = (1 - agreement) / max(1 - rule.min_agreement, 1e-9)
    over = {}  # flag -> (F, 2) measure / threshold
    for flag, x, floor in ((R.REPROJECTION, r.rel_mean, rule.max_reproj), (R.RESIDUAL_3D, r.residual,
                           rule.max_residual_3d), (R.BONE_LENGTH, r.bone_dev, rule.max_bone_deviation)):
        x = np.where(no_data, np.nan, x)
        over[flag] = x / threshold(x, floor, rule.relative)
    over[R.PENETRATION] = r.penetration / rule.max_penetration
    over[R.TEMPORAL_JUMP] = r.spike / rule.max_spike
    swap = np.zeros((F, 2))
    if swapped is not None and swapped.size:
        swap[:] = (swapped.mean(1) / rule.max_swapped)[:, None]  # (F,) -> both hands
    fail = np.where(no_data, R.NO_DATA, 0) | np.where(~no_data & (r.n_cameras < rule.min_cameras), R.FEW_CAMERAS, 0)
    fail |= np.where(~no_data & (np.nan_to_num(disagree) > 1), R.REPROJECTION, 0)
    for flag, ratio in over.items():
        with np.errstate(invalid="ignore"):
            fail |= np.where(np.isfinite(ratio) & (ratio > 1), flag, 0)
    fail |= np.where(swap > 1, R.LEFT_RIGHT_SWAP, 0)
    conf = confidence(r.n_agree, r.n_joints, r.palm, [np.where(no_data, np.nan, disagree), swap, *over.values()],
                      rule.min_cameras, rule.carry_seconds, fps)
    quality = FitQuality(reproj_mean_px=r.mean_err, reproj_max_px=r.max_err, residual3d=r.residual,
                         penetration=r.penetration, bone_deviation=r.bone_dev, n_cameras=r.n_cameras,
                         failure=fail.astype(np.uint16), confidence=conf)
    return Measures(quality, view_error, proj)


def to_queue(quality: FitQuality, rule: ViewRule) -> np.ndarray:
    """(F, 2) bool: the hands that stay inconsistent, with a confidence under ``rule.min_confidence``."""
    return quality.inconsistent & (quality.confidence < rule.min_confidence)


def choose_views(m: Measures, rig: CameraRig, rule: ViewRule, sequence: str, frames: np.ndarray,
                 fit_joints: np.ndarray) -> list[QueueItem]:
    """Queue items for every frame that stays inconsistent (``to_queue``): ``rule.views_per_frame``
    cameras each (module docstring)."""
    failure = m.quality.failure
    queued = to_queue(m.quality, rule)  # (F, 2)
    items: list[QueueItem] = []
    centres = np.stack([c.center for c in rig.cameras])  # (C, 3)
    sizes = np.array([c.size for c in rig.cameras], float)  # (C, 2)
    for f in np.nonzero(queued.any(1))[0]:
        hands = [h for h in range(2) if queued[f, h]]
        hand = HANDS[hands[0]] if len(hands) == 1 else "both"
        reason = "+".join(FailureReason.names_of(int(failure[f, hands[0]] | failure[f, hands[-1]])))
        p = m.projected[:, f]  # (C, 2, 21, 2)
        lo, hi = p.min(axis=2), p.max(axis=2)  # (C, 2, 2)
        inside = ((lo >= 0) & (hi < sizes[:, None])).all(-1)  # (C, 2)
        usable = inside[:, hands].all(1)
        size = np.linalg.norm(hi - lo, axis=-1)[:, hands].mean(1) / sizes[:, 1]
        with np.errstate(all="ignore"):
            disagree = np.nan_to_num(m.view_error[:, f, hands] / (rule.inlier_px * sizes[:, 1:2]), nan=3.0)
        disagree = np.clip(disagree, 0, 3).mean(1)
        inter = np.clip(np.minimum(hi[:, 0], hi[:, 1]) - np.maximum(lo[:, 0], lo[:, 1]), 0, None).prod(-1)
        area = np.maximum(np.prod(hi - lo, axis=-1).min(1), 1e-9)
        overlap = np.clip(inter / area, 0, 1)
        score = np.where(usable, size * (1 + disagree) * (1 - 0.8 * overlap), -np.inf)
        centre = np.nanmean(fit_joints[f, hands, 0], axis=0)
        dirs = centres - centre
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        chosen: list[int] = []
        for c in np.argsort(-score):
            if not np.isfinite(score[c]) or len(chosen) == rule.views_per_frame:
                break
            if all(np.degrees(np.arccos(np.clip(dirs[c] @ dirs[k], -1, 1))) >= rule.min_angle_deg for k in chosen):
                chosen.append(int(c))
        for c in chosen:
            items.append(QueueItem(sequence, int(frames[f]), rig.cameras[c].name, reason, hand,
                                   round(float(score[c]), 4)))
    return items
