"""The detector interface: a batch of one camera's images -> hand candidates -> (N, 42, 3).

A backend returns, per image, a list of ``HandCandidate`` (21 keypoints in our per-hand
order, ``data_schemas.keypoints``, and its evidence for being the left hand). Turning
candidates into the 42-point rows (left hand 21, then right hand 21) is done here for
single images (``assign_sides``) and over time by ``capture.detect.tracking``, which
keeps a hand's identity stable through a momentary handedness flip.

Rows where a hand is not found hold x, y = NaN and score = 0, as keypoints2d.h5 does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from data_schemas.keypoints import N_HAND_JOINTS, N_KEYPOINTS


def in_image(px: np.ndarray, width: float, height: float) -> np.ndarray:
    """(..., >= 2) pixel positions (x, y first) -> (...) bool: inside an image of that width and height."""
    return (px[..., 0] >= 0) & (px[..., 0] < width) & (px[..., 1] >= 0) & (px[..., 1] < height)


def hand_boxes_overlap(px: np.ndarray, grow: np.ndarray | float = 0.0) -> np.ndarray:
    """(F, 2, n, 2) both hands' points per frame -> (F,) bool: the hands' bounding boxes, each grown by
    ``grow`` px ((F, 2, 1) per hand, or one number), overlap."""
    lo, hi = px.min(axis=2) - grow, px.max(axis=2) + grow  # (F, 2, 2)
    return (np.minimum(hi[:, 0], hi[:, 1]) > np.maximum(lo[:, 0], lo[:, 1])).all(axis=-1)


@dataclass
class HandCandidate:
    keypoints: np.ndarray  # (21, 3) float: x, y px, score in [0, 1]; our per-hand order
    left_logit: float  # log(P(left) / P(right)) from the backend; 0 = no idea

    @property
    def score(self) -> float:
        """Mean keypoint score: how sure the backend is that this is a hand."""
        return float(np.mean(self.keypoints[:, 2]))


class Detector(Protocol):
    """A 2D hand keypoint backend. Use as a context manager; ``close`` frees its sessions."""

    name: str  # written to keypoints2d.h5 as ``detector``, e.g. "mediapipe-0.10.14"

    def candidates(self, frames: list[np.ndarray]) -> list[list[HandCandidate]]:
        """frames: N x (H, W, 3) uint8 BGR images of one camera -> N lists of hand candidates."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> "Detector": ...

    def __exit__(self, *exc: object) -> None: ...


def empty_rows(n: int) -> np.ndarray:
    """(n, 42, 3) float32 rows with no hand: x, y NaN, score 0."""
    rows = np.full((n, N_KEYPOINTS, 3), np.nan, dtype=np.float32)
    rows[..., 2] = 0.0
    return rows


def put(row: np.ndarray, side: int, cand: HandCandidate) -> None:
    """Write one candidate into a (42, 3) row as hand ``side`` (0 left, 1 right); unfound points stay NaN/0."""
    kp = np.asarray(cand.keypoints, dtype=np.float32)
    block = row[side * N_HAND_JOINTS:(side + 1) * N_HAND_JOINTS]
    found = kp[:, 2] > 0
    block[found] = kp[found]
    block[~found] = (np.nan, np.nan, 0.0)


def dedupe(cands: list[HandCandidate], same: float = 0.15) -> list[HandCandidate]:
    """Best-scoring first, dropping a candidate that repeats a better one: mean keypoint
    distance under ``same`` x the hand's size (a detector can report one hand twice)."""
    kept: list[HandCandidate] = []
    for c in sorted(cands, key=lambda c: -c.score):
        if (c.keypoints[:, 2] > 0).any() and all(mean_distance(c, k) >= same * hand_size(c) for k in kept):
            kept.append(c)
    return kept


def hand_size(c: HandCandidate) -> float:
    """Diagonal of the found keypoints' bounding box, px (at least 1)."""
    ok = c.keypoints[:, 2] > 0
    if not ok.any():
        return 1.0
    return max(float(np.linalg.norm(np.ptp(c.keypoints[ok, :2], axis=0))), 1.0)


def mean_distance(a: HandCandidate, b: HandCandidate) -> float:
    """Mean px distance of the keypoints both found (inf when they share none)."""
    both = (a.keypoints[:, 2] > 0) & (b.keypoints[:, 2] > 0)
    if not both.any():
        return float("inf")
    return float(np.linalg.norm(a.keypoints[both, :2] - b.keypoints[both, :2], axis=1).mean())


def assign_sides(cands: list[HandCandidate]) -> list[tuple[int, HandCandidate]]:
    """One image's candidates -> at most one per side, by handedness evidence alone.

    Keeps the two best-scoring distinct candidates; with two, the pair is labelled the
    way that agrees best with both logits (so two "left" votes still give one left and
    one right hand); with one, it takes the side its logit says.
    """
    best = dedupe(cands)[:2]
    if len(best) == 2:
        a, b = best
        # a left, b right scores a.left_logit - b.left_logit; the swap scores its negative.
        return [(0, a), (1, b)] if a.left_logit - b.left_logit >= 0 else [(1, a), (0, b)]
    return [(0 if c.left_logit >= 0 else 1, c) for c in best]


def to_rows(per_image: list[list[HandCandidate]]) -> np.ndarray:
    """Candidates of N images -> (N, 42, 3) rows, each image on its own (no tracking)."""
    rows = empty_rows(len(per_image))
    for i, cands in enumerate(per_image):
        for side, cand in assign_sides(cands):
            put(rows[i], side, cand)
    return rows


def detect_frames(detector: Detector, frames: list[np.ndarray]) -> np.ndarray:
    """The detector interface of the stage: N images of one camera -> (N, 42, 3) [x, y, score]."""
    return to_rows(detector.candidates(frames))
