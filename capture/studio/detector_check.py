"""How well a 2D hand detector sees the studio's renders, against the ground truth.

A hand in a view is *eligible* when it is wholly in the image, not covered by the other
hand or forearm, and its palm or back faces the camera within ``max_facing_deg``. A
detection *matches* a hand when its mean landmark distance to the projected joints is
under ``match_fraction`` of the hand's size in the image (the diagonal of the joints'
bounding box); each detection matches at most one hand. Errors are scaled to an image
height of ``REFERENCE_HEIGHT`` px.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from capture.studio.scene import ViewTruth

REFERENCE_HEIGHT = 512


@dataclass
class DetectorScore:
    eligible: int = 0
    detected: int = 0
    errors_px: list[float] = field(default_factory=list)  # mean landmark error of each matched eligible hand
    views: int = 0

    @property
    def rate(self) -> float:
        return self.detected / max(self.eligible, 1)

    @property
    def median_error_px(self) -> float:
        return float(np.median(self.errors_px)) if self.errors_px else float("nan")

    def add(self, other: "DetectorScore") -> None:
        self.eligible += other.eligible
        self.detected += other.detected
        self.errors_px += other.errors_px
        self.views += other.views


def match(landmarks: list[np.ndarray], truth_px: np.ndarray, match_fraction: float = 0.35) -> list[int | None]:
    """For each of the 2 hands, the index of its matching detection or None (greedy by distance)."""
    sizes = np.linalg.norm(truth_px.max(axis=1) - truth_px.min(axis=1), axis=1)  # (2,)
    cost = np.array([[np.linalg.norm(d - truth_px[h], axis=1).mean() for d in landmarks] for h in range(2)])
    out: list[int | None] = [None, None]
    if not landmarks:
        return out
    for flat in np.argsort(cost, axis=None):
        h, d = np.unravel_index(flat, cost.shape)
        if out[h] is None and d not in out and cost[h, d] < match_fraction * sizes[h]:
            out[h] = int(d)
    return out


def score_view(landmarks: list[np.ndarray], truth: ViewTruth, image_height: int,
               max_facing_deg: float = 60.0) -> DetectorScore:
    s = DetectorScore(views=1)
    matched = match(landmarks, truth.pixels)
    for h in range(2):
        if not (truth.unoccluded[h] and truth.facing_deg[h] <= max_facing_deg):
            continue
        s.eligible += 1
        if matched[h] is not None:
            s.detected += 1
            err = np.linalg.norm(landmarks[matched[h]] - truth.pixels[h], axis=1).mean()
            s.errors_px.append(float(err * REFERENCE_HEIGHT / image_height))
    return s
