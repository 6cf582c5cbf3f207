"""MediaPipe Hands (bundled with the ``mediapipe`` wheel, so it runs offline): the default backend.

Per image, up to two hands with 21 landmarks in our per-hand order (MediaPipe uses the
OpenPose order). Which hand is which comes from two pieces of evidence, added as
log-odds (``left_logit``):

1. the model's handedness label. MediaPipe labels hands as if the image were a
   mirrored selfie; camera images are not mirrored, so its "Left" is the real right hand;
2. a geometric check on the landmarks' 3D shape (``chirality``): MediaPipe also
   predicts each landmark's depth, and a hand is not its own mirror image. Its depths
   are rough, so the check weighs little: it decides when the label is unsure.

MediaPipe gives no per-landmark confidence. A found hand's landmarks score 1, except
landmarks it places outside the image (guessed, not seen), which score 0.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from capture.detect.base import HandCandidate, in_image

os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ logging: errors only
# mediapipe 0.10.14 calls a protobuf API that protobuf 4.25 flags on every image
warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype", category=UserWarning)

# Joints of the palm plane and of the side the fingers curl to (our per-hand order).
_WRIST, _INDEX1, _MIDDLE1, _PINKY1, _THUMB2 = 0, 5, 9, 17, 2
_TIPS = [4, 8, 12, 16, 20]


@dataclass
class MediaPipeConfig:
    """MediaPipe Hands options."""

    model_complexity: int = 1
    """Landmark model: 0 (lite, faster) or 1 (full)."""
    min_detection_confidence: float = 0.5
    """Palm detector threshold."""
    video_mode: bool = False
    """Track landmarks from frame to frame instead of detecting palms in every image (faster,
    but a lost hand is found again only by the next palm detection)."""
    geometry_weight: float = 1.0
    """Weight of the 3D-shape handedness check against the model's label (log-odds per unit of
    ``chirality``; 0 = the model's label alone). A tie-breaker: on studio renders the check alone
    gets 61% of sides right, the label 92% (bench/detection.py)."""


def chirality(points: np.ndarray) -> np.ndarray:
    """(..., 21, 3) landmarks in a right-handed frame -> (...,) > 0 for a right hand, < 0 for a left.

    n = (index1 - wrist) x (pinky1 - wrist) is the palm's normal; which side of the palm
    the fingers curl to (tips, and the thumb's MCP, which sits in front of the palm)
    relative to n flips with the hand. The value is that offset over the palm length:
    about +-0.4 for natural poses of the hand model, near 0 for a flat hand.
    """
    p = np.asarray(points, dtype=np.float64)
    wrist = p[..., _WRIST, :]
    n = np.cross(p[..., _INDEX1, :] - wrist, p[..., _PINKY1, :] - wrist)
    n /= np.linalg.norm(n, axis=-1, keepdims=True) + 1e-12
    palm = (wrist + p[..., _INDEX1, :] + p[..., _MIDDLE1, :] + p[..., _PINKY1, :]) / 4
    length = np.linalg.norm(p[..., _MIDDLE1, :] - wrist, axis=-1) + 1e-12
    front = (p[..., _TIPS, :].mean(axis=-2) + p[..., _THUMB2, :]) / 2 - palm  # (..., 3)
    return np.einsum("...d,...d->...", n, front) / length


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence what MediaPipe's C++ side prints while its graph starts (TFLite delegate notes,
    absl warnings before absl's log is set up), which GLOG_minloglevel does not reach."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to silence
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _logit(p: float) -> float:
    p = min(max(p, 0.01), 0.99)
    return float(np.log(p / (1 - p)))


class MediaPipeHands:
    """``with MediaPipeHands() as det: det.candidates(frames)``; ``det.hands(image)`` for one image."""

    def __init__(self, cfg: MediaPipeConfig | None = None):
        import mediapipe as mp

        self.cfg = cfg or MediaPipeConfig()
        with _quiet_native_stderr():
            self._hands = mp.solutions.hands.Hands(
                static_image_mode=not self.cfg.video_mode, max_num_hands=2,
                model_complexity=self.cfg.model_complexity, min_detection_confidence=self.cfg.min_detection_confidence,
            )
            self._hands.process(np.zeros((64, 64, 3), np.uint8))  # the first image starts the delegates
        self.name = f"mediapipe-{mp.__version__}"

    def hands(self, image_bgr: np.ndarray) -> list[tuple[np.ndarray, float, float]]:
        """One image -> per hand: (21, 3) landmarks (x, y px, depth px), model's P(left), chirality."""
        H, W = image_bgr.shape[:2]
        result = self._hands.process(np.ascontiguousarray(image_bgr[..., ::-1]))
        out = []
        for lm, handed in zip(result.multi_hand_landmarks or [], result.multi_handedness or []):
            # x right, y down, z away from the camera: a right-handed frame, z in x's units.
            pts = np.array([[p.x * W, p.y * H, p.z * W] for p in lm.landmark])  # (21, 3)
            label = handed.classification[0]
            p_left = 1.0 - label.score if label.label == "Left" else label.score  # the mirror swap
            out.append((pts, p_left, float(chirality(pts))))
        return out

    def candidates(self, frames: list[np.ndarray]) -> list[list[HandCandidate]]:
        per_image = []
        for image in frames:
            H, W = image.shape[:2]
            cands = []
            for pts, p_left, chiral in self.hands(image):
                inside = in_image(pts, W, H)
                kp = np.concatenate([pts[:, :2], inside[:, None].astype(float)], axis=1)  # (21, 3)
                cands.append(HandCandidate(kp, _logit(p_left) - self.cfg.geometry_weight * chiral))
            per_image.append(cands)
        return per_image

    def close(self) -> None:
        self._hands.close()

    def __enter__(self) -> "MediaPipeHands":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
