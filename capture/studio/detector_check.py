"""How well a 2D hand detector sees the studio's renders, against the ground truth.

A hand in a view is *eligible* when it is wholly in the image, not covered by the other
hand or forearm, and its palm or back faces the camera within ``max_facing_deg``. A
detection *matches* a hand when its mean landmark distance to the projected joints is
under ``match_fraction`` of the hand's size in the image (the diagonal of the joints'
bounding box); each detection matches at most one hand. Errors are scaled to an image
height of ``REFERENCE_HEIGHT`` px.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass
class StudioTake:
    """One camera's video of one take, as a detector sees it: ``images`` (the frames ``frames``, rendered
    as the studio renders, written to an mp4 and read back) and each one's ``truths``."""

    family: str
    take: int
    scene: object  # capture.studio.scene.Scene of the take
    camera: int
    images: list[np.ndarray]
    truths: list[ViewTruth]


def studio_takes(rig, model, fps: float, seed: int, takes_per_family: int, n_frames: int, frames: list[int],
                 folder: Path) -> Iterator[StudioTake]:
    """For each motion family, ``takes_per_family`` takes of ``n_frames`` at ``fps`` (take k of family i
    from seed ``seed + 10 i + k``) and each camera of ``rig``: the camera's video of ``frames`` (its mp4
    under ``folder``)."""
    from capture.studio.motion import FAMILIES, make_motion
    from capture.studio.render import make_background, render_view
    from capture.studio.scene import pose_scene, view_truth
    from data_schemas.video import VideoWriter, read_frames

    for fi, family in enumerate(FAMILIES):
        for k in range(takes_per_family):
            take_seed = seed + 10 * fi + k
            motion = make_motion(family, n_frames, fps, take_seed, model)
            scene = pose_scene(model, motion, np.random.default_rng(take_seed))
            for c, cam in enumerate(rig.cameras):
                rng = np.random.default_rng([take_seed, c])
                bg = make_background(cam, np.random.default_rng([seed, c]))
                path = folder / f"{family}-{k}-{cam.name}.mp4"
                truths = []
                with VideoWriter(path, fps, cam.size) as w:
                    for f in frames:
                        view = render_view(cam, scene.vertices[f].astype(np.float64), scene.template, scene.look, bg,
                                           rng, scene.lit[f])
                        w.write(view.image)
                        truths.append(view_truth(cam, scene.joints[f], scene.palm_normal[f], view))
                yield StudioTake(family, k, scene, c, read_frames(path), truths)
