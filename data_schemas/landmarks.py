"""A 2D detector's keypoints defined on the hand model's surface: ``capture/detect/landmarks/<name>.h5``.

A detector's 21 landmarks per hand are not the hand model's joints (MediaPipe's wrist sits about
2 cm from the model's wrist joint, its knuckles on the skin above the joints). A *landmark
definition* says where each of a detector's landmarks lies on the hand model: a fixed convex
combination of K of the model's vertices (weights >= 0, summing to 1), per hand, fitted once
from studio renders with ground truth (``capture.detect.landmark_fit``, ``make landmarks``).
Triangulation and fit then compare like with like: the detections against the model's
*landmarks* (the definition applied to the posed vertices); the fitted joints stay the model's
skeleton joints. A detector without a definition is taken to see the joints themselves.

HDF5 tree (format ``handdiffuse.landmarks``, version 1)::

    /  attrs: format, version,
              detector          the detector it was fitted for, as keypoints2d.h5 names it ("mediapipe-0.10.14")
              detector_config   JSON of the detector's options it was fitted with
              hand_model        the hand model's name ("open_hand")
              n_vertices        the hand model's vertex count
              model_fingerprint what the vertex indices refer to (hand_model.landmarks.model_fingerprint)
              method            how it was made (the procedure and its options)
              made_from         the data it was fitted on (renders, views, seeds)
    vertex_ids     (2, 21, K)  int32    vertex indices per hand (0 left, 1 right) and landmark (our order)
    weights        (2, 21, K)  float32  >= 0, each landmark's K weights sum to 1
    residual_px    (2, 21)     float32  the fit's median reprojection residual per landmark, px
    n_observations (2, 21)     int32    detections the landmark was fitted to

The detectors' shipped definitions live in ``DEFINITIONS_DIR`` (beside the detectors' code),
one file per detector family: the detector name up to its first "-" (``mediapipe.h5``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_schemas import h5io
from data_schemas.checks import check_finite, check_range, check_shape
from data_schemas.errors import SchemaError
from data_schemas.keypoints import N_HAND_JOINTS

FORMAT = "handdiffuse.landmarks"
VERSION = 1
PRODUCED_BY = "make landmarks"
DEFINITIONS_DIR = Path(__file__).resolve().parents[1] / "capture" / "detect" / "landmarks"
WEIGHT_SUM_TOLERANCE = 1e-4


def detector_family(detector: str) -> str:
    """'mediapipe-0.10.14' -> 'mediapipe': the shipped definition's file name (without .h5)."""
    return detector.split("-", 1)[0]


def shipped_definition(detector: str, folder: Path = DEFINITIONS_DIR) -> Path | None:
    """The shipped definition file of ``detector``'s family, or None (the detector sees the joints)."""
    name = detector_family(detector)
    path = folder / f"{name}.h5"
    return path if name and path.is_file() else None


@dataclass
class LandmarkDefinition:
    detector: str
    detector_config: str  # JSON
    hand_model: str
    n_vertices: int
    model_fingerprint: str
    method: str
    made_from: str
    vertex_ids: np.ndarray  # (2, 21, K) int32
    weights: np.ndarray  # (2, 21, K) float32
    residual_px: np.ndarray  # (2, 21) float32
    n_observations: np.ndarray  # (2, 21) int32

    def __post_init__(self) -> None:
        self.vertex_ids = np.asarray(self.vertex_ids, dtype=np.int32)
        self.weights = np.asarray(self.weights, dtype=np.float32)
        self.residual_px = np.asarray(self.residual_px, dtype=np.float32)
        self.n_observations = np.asarray(self.n_observations, dtype=np.int32)
        self.n_vertices = int(self.n_vertices)

    @property
    def digest(self) -> str:
        """What a fit made with this definition depends on: its ids and weights, detector and model."""
        h = [self.detector, self.hand_model, self.model_fingerprint, h5io.digest(self.vertex_ids),
             h5io.digest(self.weights)]
        return h5io.digest(np.array(h, dtype=object))[:16]

    def validate(self, source: str | Path) -> None:
        dims: dict[str, int] = {}
        check_shape(source, "vertex_ids", self.vertex_ids, (2, N_HAND_JOINTS, "K"), dims)
        check_shape(source, "weights", self.weights, (2, N_HAND_JOINTS, "K"), dims)
        check_shape(source, "residual_px", self.residual_px, (2, N_HAND_JOINTS), dims)
        check_shape(source, "n_observations", self.n_observations, (2, N_HAND_JOINTS), dims)
        for name in ("detector", "hand_model", "model_fingerprint"):
            if not getattr(self, name):
                raise SchemaError(source, f"'{name}' is empty")
        if dims["K"] < 1:
            raise SchemaError(source, "'vertex_ids' has no vertex per landmark (K = 0)")
        if self.n_vertices < 1:
            raise SchemaError(source, f"'n_vertices' must be positive, got {self.n_vertices}")
        check_range(source, "vertex_ids", self.vertex_ids, 0, self.n_vertices - 1)
        check_finite(source, "weights", self.weights)
        check_range(source, "weights", self.weights, 0.0, 1.0)
        total = self.weights.astype(np.float64).sum(-1)
        worst = np.unravel_index(np.argmax(np.abs(total - 1)), total.shape)
        if abs(total[worst] - 1) > WEIGHT_SUM_TOLERANCE:
            raise SchemaError(source, f"the weights of hand {worst[0]} landmark {worst[1]} sum to "
                                      f"{total[worst]:.6f}, not 1")
        try:
            json.loads(self.detector_config or "{}")
        except json.JSONDecodeError as e:
            raise SchemaError(source, f"'detector_config' is not JSON ({e.msg})") from None


def write_landmarks(path: str | Path, d: LandmarkDefinition) -> None:
    d.validate(path)
    attrs = {k: getattr(d, k) for k in ("detector", "detector_config", "hand_model", "model_fingerprint", "method",
                                        "made_from")}
    with h5io.create(path, FORMAT, VERSION, n_vertices=d.n_vertices, **attrs) as f:
        for k in ("vertex_ids", "weights", "residual_px", "n_observations"):
            h5io.write_array(f, k, getattr(d, k), chunk_frames=None)


def read_landmarks(path: str | Path) -> LandmarkDefinition:
    with h5io.open_checked(path, FORMAT, VERSION, PRODUCED_BY) as f:
        text = {k: h5io.attr_str(f, k, path) for k in ("detector", "detector_config", "hand_model",
                                                         "model_fingerprint", "method", "made_from")}
        d = LandmarkDefinition(n_vertices=int(h5io.attr_float(f, "n_vertices", path)), **text,
                               **{k: h5io.read_array(f, k, path) for k in ("vertex_ids", "weights", "residual_px",
                                                                           "n_observations")})
    d.validate(path)
    return d
