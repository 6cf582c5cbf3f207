"""MediaPipe Hands (bundled with the ``mediapipe`` wheel, so it runs offline) on one image.

Returns landmarks in pixels, in our per-hand order (MediaPipe uses the same 21-point
order as OpenPose). MediaPipe labels handedness as if the image were a mirrored selfie;
camera images are not mirrored, so the label is swapped to name the real hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ logging: errors only


@dataclass
class HandDetection:
    landmarks: np.ndarray  # (21, 2) px
    depth: np.ndarray  # (21,) MediaPipe's relative z (wrist-relative, image-width units)
    hand: str  # "left" | "right": the real hand
    score: float  # handedness confidence, [0, 1]


class MediaPipeHands:
    """``with MediaPipeHands() as det: det.detect(bgr)`` -> list of HandDetection."""

    def __init__(self, max_hands: int = 2, min_detection_confidence: float = 0.5, model_complexity: int = 1):
        import mediapipe as mp

        self._hands = mp.solutions.hands.Hands(
            static_image_mode=True, max_num_hands=max_hands, model_complexity=model_complexity,
            min_detection_confidence=min_detection_confidence,
        )
        self.version = f"mediapipe-{mp.__version__}"

    def detect(self, image_bgr: np.ndarray) -> list[HandDetection]:
        H, W = image_bgr.shape[:2]
        result = self._hands.process(np.ascontiguousarray(image_bgr[..., ::-1]))
        out = []
        for lm, handed in zip(result.multi_hand_landmarks or [], result.multi_handedness or []):
            pts = np.array([[p.x * W, p.y * H, p.z] for p in lm.landmark])
            label = handed.classification[0]
            out.append(HandDetection(pts[:, :2], pts[:, 2], "right" if label.label == "Left" else "left",
                                     float(label.score)))
        return out

    def close(self) -> None:
        self._hands.close()

    def __enter__(self) -> "MediaPipeHands":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
