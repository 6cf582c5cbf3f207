"""MediaPipe's hand landmark model on a crop we choose, without its palm detector.

The ``mediapipe`` wheel ships the landmark model (``hand_landmark_full.tflite``, ``_lite``) and the
calculators of its ``HandLandmarkCpu`` subgraph. ``GRAPH`` is that subgraph with its outputs
ungated: the hand-presence score comes out of every crop (the subgraph drops the landmarks
under 0.5 and never says the score), and the threshold is ours. Run through
``mediapipe.python.solution_base.SolutionBase``, as ``mp.solutions.hands`` itself runs.

1. the image is cut to the box around the turned crop (``roi.Roi``), so a 4K frame is not copied
   whole into the graph, and the crop's NormalizedRect is made relative to that cut
2. the graph: crop -> 224 x 224 tensor -> the landmark model -> 21 landmarks in the crop ->
   projected back into the cut image (MediaPipe's own calculators); presence and handedness
3. landmarks -> image px; handedness -> P(left) for a camera image (MediaPipe labels hands as if
   the image were a mirrored selfie: its "Left" is the real right hand)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from capture.detect.mediapipe import _quiet_native_stderr  # noqa: F401  (sets MediaPipe's log level too)
from capture.detect.roi import Roi

MODELS = {0: "mediapipe/modules/hand_landmark/hand_landmark_lite.tflite",
          1: "mediapipe/modules/hand_landmark/hand_landmark_full.tflite"}

GRAPH = """
input_stream: "IMAGE:image"
input_stream: "ROI:roi"
output_stream: "LANDMARKS:landmarks"
output_stream: "PRESENCE:presence"
output_stream: "HANDEDNESS:handedness"
node {
  calculator: "ImageToTensorCalculator"
  input_stream: "IMAGE:image"
  input_stream: "NORM_RECT:roi"
  output_stream: "TENSORS:input_tensor"
  output_stream: "LETTERBOX_PADDING:letterbox_padding"
  options: { [mediapipe.ImageToTensorCalculatorOptions.ext] {
    output_tensor_width: 224 output_tensor_height: 224 keep_aspect_ratio: true
    output_tensor_float_range { min: 0.0 max: 1.0 } } }
}
node {
  calculator: "InferenceCalculator"
  input_stream: "TENSORS:input_tensor"
  output_stream: "TENSORS:output_tensors"
  options: { [mediapipe.InferenceCalculatorOptions.ext] { model_path: "%s" delegate { xnnpack {} } } }
}
node {
  calculator: "SplitTensorVectorCalculator"
  input_stream: "output_tensors"
  output_stream: "landmark_tensors"
  output_stream: "hand_flag_tensor"
  output_stream: "handedness_tensor"
  options: { [mediapipe.SplitVectorCalculatorOptions.ext] {
    ranges: { begin: 0 end: 1 } ranges: { begin: 1 end: 2 } ranges: { begin: 2 end: 3 } } }
}
node {
  calculator: "TensorsToFloatsCalculator"
  input_stream: "TENSORS:hand_flag_tensor"
  output_stream: "FLOAT:presence"
}
node {
  calculator: "TensorsToClassificationCalculator"
  input_stream: "TENSORS:handedness_tensor"
  output_stream: "CLASSIFICATIONS:handedness"
  options: { [mediapipe.TensorsToClassificationCalculatorOptions.ext] {
    top_k: 1 label_map_path: "mediapipe/modules/hand_landmark/handedness.txt" binary_classification: true } }
}
node {
  calculator: "TensorsToLandmarksCalculator"
  input_stream: "TENSORS:landmark_tensors"
  output_stream: "NORM_LANDMARKS:crop_landmarks"
  options: { [mediapipe.TensorsToLandmarksCalculatorOptions.ext] {
    num_landmarks: 21 input_image_width: 224 input_image_height: 224 normalize_z: 0.4 } }
}
node {
  calculator: "LandmarkLetterboxRemovalCalculator"
  input_stream: "LANDMARKS:crop_landmarks"
  input_stream: "LETTERBOX_PADDING:letterbox_padding"
  output_stream: "LANDMARKS:roi_landmarks"
}
node {
  calculator: "LandmarkProjectionCalculator"
  input_stream: "NORM_LANDMARKS:roi_landmarks"
  input_stream: "NORM_RECT:roi"
  output_stream: "NORM_LANDMARKS:landmarks"
}
"""


@dataclass
class CropLandmarks:
    points: np.ndarray  # (21, 3) x, y px in the image, depth (x's units, relative to the wrist)
    presence: float  # the model's hand-presence score in [0, 1]
    p_left: float  # P(this is the left hand), from the model's handedness


class HandLandmarks:
    """``with HandLandmarks() as lm: lm.on_crop(image_bgr, roi)``: one hand's landmarks per crop."""

    def __init__(self, model_complexity: int = 1):
        import mediapipe as mp
        from mediapipe.python.solution_base import SolutionBase

        if model_complexity not in MODELS:
            raise ValueError(f"model_complexity must be 0 or 1, got {model_complexity}")
        with _quiet_native_stderr():
            self._graph = SolutionBase(graph_config=GRAPH % MODELS[model_complexity])
            self.on_crop(np.zeros((64, 64, 3), np.uint8), Roi(np.array([32.0, 32.0]), 32.0, 0.0))  # starts delegates
        self.name = f"mediapipe-{mp.__version__}-landmarks{'-lite' if model_complexity == 0 else ''}"

    def on_crop(self, image_bgr: np.ndarray, roi: Roi) -> CropLandmarks:
        """The landmark model on ``roi`` of a (H, W, 3) uint8 BGR image (steps 1-3)."""
        from mediapipe.framework.formats import rect_pb2

        H, W = image_bgr.shape[:2]
        # 1.
        lo, hi = roi.bounds()
        x0, y0 = int(np.clip(np.floor(lo[0]), 0, W - 1)), int(np.clip(np.floor(lo[1]), 0, H - 1))
        x1, y1 = int(np.clip(np.ceil(hi[0]) + 1, x0 + 1, W)), int(np.clip(np.ceil(hi[1]) + 1, y0 + 1, H))
        cut = np.ascontiguousarray(image_bgr[y0:y1, x0:x1, ::-1])  # RGB
        local = Roi(roi.center - (x0, y0), roi.side, roi.rotation)
        rect = rect_pb2.NormalizedRect(**local.normalized(x1 - x0, y1 - y0))
        # 2.
        out = self._graph.process({"image": cut, "roi": rect})
        # 3.
        w = x1 - x0
        pts = np.array([[p.x * w + x0, p.y * (y1 - y0) + y0, p.z * w] for p in out.landmarks.landmark])  # (21, 3)
        label = out.handedness.classification[0]
        p_left = 1.0 - label.score if label.label == "Left" else label.score  # the mirror swap
        return CropLandmarks(pts, float(out.presence), float(p_left))

    def close(self) -> None:
        self._graph.close()

    def __enter__(self) -> "HandLandmarks":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
