"""How close a calibration is to the truth (the studio's), after aligning the world frames.

A calibration's world frame is its own (the board's best-seen pose), so the frames are
aligned first: the rotation that best maps the true cameras' orientations onto the
estimated ones (chordal mean), then translation and scale from the camera centres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from capture.calibration.initialize import mean_rotation
from data_schemas.calibration import CameraRig


@dataclass
class RigErrors:
    rotation_deg: np.ndarray  # (C,) angle between estimated and true camera orientation
    centre_m: np.ndarray  # (C,) distance between estimated and true camera centre
    focal_rel: np.ndarray  # (C,) |fx_est / fx_true - 1|
    scale: float  # the similarity's scale (1 = metric scale recovered)

    def summary(self) -> str:
        return (f"centres within {self.centre_m.max() * 1000:.2f} mm, rotations within {self.rotation_deg.max():.3f} deg, "
                f"focal within {self.focal_rel.max() * 100:.3f} %")


@dataclass
class Similarity:
    """x_truth = scale * rotation @ x_estimate + translation: an estimated world frame in the truth's."""

    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)
    scale: float

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) points of the estimated world -> the truth's world."""
        return self.scale * np.asarray(points) @ self.rotation.T + self.translation


def world_alignment(estimate: CameraRig, truth: CameraRig) -> Similarity:
    """The similarity taking ``estimate``'s world frame to ``truth``'s (module docstring)."""
    est = estimate.subset(truth.names)
    M = mean_rotation(np.stack([e.R.T @ g.R for e, g in zip(est.cameras, truth.cameras)]))  # truth world -> est world
    A = np.stack([M.T @ e.center for e in est.cameras])
    B = np.stack([g.center for g in truth.cameras])
    s = ((A - A.mean(0)) * (B - B.mean(0))).sum() / ((A - A.mean(0)) ** 2).sum()
    return Similarity(M.T, B.mean(0) - s * A.mean(0), float(s))


def compare_rigs(estimate: CameraRig, truth: CameraRig) -> RigErrors:
    est = estimate.subset(truth.names)
    align = world_alignment(est, truth)
    M = align.rotation.T  # truth world -> est world
    rot = np.array([np.degrees(np.arccos(np.clip((np.trace((e.R @ M).T @ g.R) - 1) / 2, -1, 1)))
                    for e, g in zip(est.cameras, truth.cameras)])
    B = np.stack([g.center for g in truth.cameras])
    centre = np.linalg.norm(align.apply(np.stack([e.center for e in est.cameras])) - B, axis=1)
    s = align.scale
    focal = np.array([abs(e.matrix[0, 0] / g.matrix[0, 0] - 1) for e, g in zip(est.cameras, truth.cameras)])
    return RigErrors(rot, centre, focal, float(s))
