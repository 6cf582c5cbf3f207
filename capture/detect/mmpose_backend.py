"""An mmpose whole-body top-down model (e.g. RTMPose / DWPose checkpoints) as a hand backend.

Only for machines where mmpose (1.x, with mmcv and mmengine) is installed; it is not a
dependency, and nothing here is exercised by the tests (mmpose cannot be installed in
the test environment). The model sees each whole image as one box, as DWPose's
full-frame fallback does, and must output the 133 COCO-WholeBody keypoints; the hands
are then chosen as in ``capture.detect.dwpose.hand_candidates``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from capture.detect.base import HandCandidate
from capture.detect.dwpose import N_WHOLEBODY, hand_candidates
from data_schemas.errors import SchemaError


class MMPoseHands:
    """``with MMPoseHands(config, checkpoint) as det: det.candidates(frames)``."""

    def __init__(self, config: Path | None, checkpoint: Path | None, device: str | None = None,
                 min_score: float = 0.3, side_logit: float = 4.0):
        try:
            import mmpose
            from mmpose.apis import inference_topdown, init_model
        except ImportError as e:
            raise ImportError("mmpose is not installed; use --backend dwpose (ONNX) or mediapipe") from e
        for path, option in ((config, "--mmpose-config"), (checkpoint, "--mmpose-checkpoint")):
            if path is None or not Path(path).is_file():
                raise SchemaError(path or option, f"mmpose model file not found; set {option}")
        if device is None:
            import torch

            device = "cuda:0" if torch.cuda.is_available() else "cpu"
        self._infer = inference_topdown
        self.model = init_model(str(config), str(checkpoint), device=device)
        self.min_score, self.side_logit = min_score, side_logit
        self.name = f"mmpose-{mmpose.__version__}:{Path(checkpoint).stem}"

    def candidates(self, frames: list[np.ndarray]) -> list[list[HandCandidate]]:
        """N x (H, W, 3) uint8 BGR images (mmpose's own image order) -> N lists of hand candidates."""
        out = []
        for image in frames:
            (sample,) = self._infer(self.model, image)  # no boxes: the whole image is one
            xy = np.asarray(sample.pred_instances.keypoints, dtype=np.float64)  # (1, K, 2)
            score = np.asarray(sample.pred_instances.keypoint_scores, dtype=np.float64)  # (1, K)
            if xy.shape[1] != N_WHOLEBODY:
                raise SchemaError(self.name, f"{xy.shape[1]} keypoints; a COCO-WholeBody model has {N_WHOLEBODY}")
            people = np.concatenate([xy, np.clip(score, 0.0, 1.0)[..., None]], axis=-1)  # (1, 133, 3)
            out.append(hand_candidates(people, self.min_score, self.side_logit))
        return out

    def close(self) -> None:
        self.model = None

    def __enter__(self) -> "MMPoseHands":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
