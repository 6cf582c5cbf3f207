"""How well detections (keypoints2d.h5) match the studio's ground truth, per camera.

A hand in a view is *eligible* when it is wholly in the image, not covered by the
other hand or an arm, and its palm or back faces the camera within ``max_facing_deg``
(``ground_truth/sequences/<seq>/views.npz``; without that file: whole hand in the
image). It is *detected* when the row of its own side holds a hand whose mean keypoint
distance to the truth is under ``match_fraction`` of the hand's size in the image
(the diagonal of its true keypoints' box); it is *swapped* when only the other side's
row matches it. Errors are the matched hands' mean keypoint distance, scaled to an
image height of ``REFERENCE_HEIGHT`` px.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from capture.detect.base import hand_boxes_overlap, in_image
from capture.studio.detector_check import REFERENCE_HEIGHT, DetectorScore
from data_schemas.keypoints2d import Keypoints2D


@dataclass
class DetectionScore(DetectorScore):
    """The studio's detector score (eligible, detected, errors at 512 px) plus the hands found
    only in the other side's row."""

    swapped: int = 0

    @property
    def mean_error_px(self) -> float:
        return float(np.mean(self.errors_px)) if self.errors_px else float("nan")

    def add(self, other: "DetectionScore") -> None:
        super().add(other)
        self.swapped += other.swapped


def load_views(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def score_detections(kp: Keypoints2D, truth: Keypoints2D, views: dict[str, np.ndarray] | None = None,
                     max_facing_deg: float = 60.0, match_fraction: float = 0.35) -> dict[str, DetectionScore]:
    """Per camera of ``kp``: the DetectionScore over the instants both files hold."""
    out = {}
    for cam, i_gt, det, true, inside, H in _camera_views(kp, truth):
        eligible = inside  # (F, 2)
        if views is not None:
            v = list(views["cameras"]).index(cam)
            eligible = eligible & views["unoccluded"][v, i_gt] & (views["facing_deg"][v, i_gt] <= max_facing_deg)
        out[cam] = _score(det, true, eligible, H, match_fraction)
    return out


def _camera_views(kp: Keypoints2D, truth: Keypoints2D):
    """Per camera of ``kp``, on the instants both files hold: (camera, the truth's frame indices, detections
    (F, side, 21, 3), true points (F, hand, 21, 2), hands wholly inside the image (F, 2), image height)."""
    common, i_kp, i_gt = np.intersect1d(kp.frames, truth.frames, return_indices=True)
    for c, cam in enumerate(kp.cameras):
        g = truth.cameras.index(cam)
        W, H = truth.image_sizes[g]
        det = kp.keypoints[c, i_kp].reshape(len(common), 2, 21, 3)
        true = truth.keypoints[g, i_gt, :, :2].reshape(len(common), 2, 21, 2)
        inside = in_image(true, W, H).all(-1)
        yield cam, i_gt, det, true, inside, H


def _mean_distance(hand: np.ndarray, true: np.ndarray) -> float:
    """(21, 3) detected [x, y, score] vs (21, 2) truth: mean px distance over found points (inf if none)."""
    ok = hand[:, 2] > 0
    if ok.sum() < 11:  # at least half the hand
        return float("inf")
    return float(np.linalg.norm(hand[ok, :2] - true[ok], axis=1).mean())


def score_overlapping(kp: Keypoints2D, truth: Keypoints2D, match_fraction: float = 0.35) -> DetectionScore:
    """The DetectionScore over the views where the two hands' true joint boxes overlap (each hand counted
    where it lies wholly in the image, covered or not): where re-detection guided by the fit is for."""
    s = DetectionScore()
    for _, _, det, true, inside, H in _camera_views(kp, truth):
        s.add(_score(det, true, inside & hand_boxes_overlap(true)[:, None], H, match_fraction))
    return s


def _score(det: np.ndarray, true: np.ndarray, eligible: np.ndarray, height: float,
           match_fraction: float) -> DetectionScore:
    """One camera's score: det (F, side, 21, 3), true (F, hand, 21, 2), over the eligible (F, 2) hands. A
    hand is detected where its side's points lie within ``match_fraction`` of its size (mean distance),
    swapped where the other side's do."""
    size = np.linalg.norm(true.max(axis=2) - true.min(axis=2), axis=-1)  # (F, 2)
    s = DetectionScore()
    for f, h in zip(*np.nonzero(eligible)):
        s.eligible += 1
        dist = [_mean_distance(det[f, side], true[f, h]) for side in range(2)]
        if dist[h] < match_fraction * size[f, h]:
            s.detected += 1
            s.errors_px.append(dist[h] * REFERENCE_HEIGHT / height)
        elif dist[1 - h] < match_fraction * size[f, h]:
            s.swapped += 1
    return s
