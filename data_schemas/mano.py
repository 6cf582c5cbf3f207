"""Fitted hand-model parameters of one sequence with per-frame fit quality:
``sequences/<seq>/mano.h5``. Hand axis: 0 = left, 1 = right (as the keypoint order).

HDF5 tree (format ``handdiffuse.mano``, version 3)::

    /  attrs: format, version, fps, hand_model ("open_hand" | "mano" | ...),
              flat_hand_mean (bool: hand_pose is relative to the flat hand, not MANO's mean),
              inputs (optional: fingerprint of the files and options the fit came from)
    frames          (F,)        int64
    global_orient   (F, 2, 3)   float32  axis-angle
    hand_pose       (F, 2, 45)  float32  15 joints x axis-angle, MANO's joint order
    betas           (2, 10)     float32  one shape per hand for the whole sequence
    transl          (F, 2, 3)   float32  metres
    joints          (F, 42, 3)  float32  the fitted model's joints, metres (data_schemas.keypoints order:
                                         left 21 then right 21), computed by the fit: readers (queue,
                                         annotation, export) take them instead of posing the model again
    quality/
      reproj_mean_px  (F, 2)  float32   mean 2D reprojection error over supporting views
      reproj_max_px   (F, 2)  float32
      residual3d      (F, 2)  float32   mean distance of model joints to triangulated joints, m
      penetration     (F, 2)  float32   max depth of this hand inside the other, m
      bone_deviation  (F, 2)  float32   relative deviation of the triangulated bone lengths from the
                                        subject's (median over the hand's bones)
      n_cameras       (F, 2)  int16     cameras with a detection of this hand
      failure         (F, 2)  uint16    FailureReason bit flags; 0 = fit accepted
      confidence      (F, 2)  float32   in [0, 1]: how far the hand's estimate is trusted, from the
                                        evidence that supported it (views, joints, agreement) or, for a
                                        hand carried by the fit's temporal terms, from its distance to
                                        the nearest well-supported frame (``fitting.confidence``)
    Quality values may be NaN only where failure has the NO_DATA bit; confidence never.

Every frame has an estimate: a hand with too little evidence (NO_DATA, FEW_CAMERAS: the
``EVIDENCE`` flags) is carried by the fit from its neighbours and gets a low confidence; the
other flags say the fit disagrees with its evidence (``FitQuality.inconsistent``). Version 2
(no confidence) is refused: re-run ``handdiffuse fit``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_schemas import h5io
from data_schemas.checks import check_finite, check_range, check_shape
from data_schemas.errors import SchemaError
from data_schemas.keypoints import N_KEYPOINTS

FORMAT = "handdiffuse.mano"
VERSION = 3
PRODUCED_BY = "handdiffuse fit"
N_BETAS = 10
N_POSE = 45


class FailureReason(enum.IntFlag):
    """Why a hand in a frame is not trusted; names are the queue's ``reason`` words."""

    NO_DATA = 1  # too few detections to fit at all
    FEW_CAMERAS = 2  # supported by fewer cameras than required
    REPROJECTION = 4  # 2D reprojection error above threshold
    RESIDUAL_3D = 8  # model joints far from triangulated joints
    PENETRATION = 16  # hands interpenetrate deeper than allowed
    BONE_LENGTH = 32  # bone lengths deviate from the subject's
    TEMPORAL_JUMP = 64  # implausible jump from the neighbouring frames
    LEFT_RIGHT_SWAP = 128  # hand identities disagree between views

    @classmethod
    def names_of(cls, flags: int) -> list[str]:
        return [r.name.lower() for r in cls if flags & r.value]

    @classmethod
    def from_names(cls, names: list[str]) -> "FailureReason":
        out = cls(0)
        for n in names:
            out |= cls[n.upper()]
        return out


REASON_NAMES = tuple(r.name.lower() for r in FailureReason)
EVIDENCE = FailureReason.NO_DATA | FailureReason.FEW_CAMERAS  # too little evidence, not a disagreement

_QUALITY_FLOAT = ("reproj_mean_px", "reproj_max_px", "residual3d", "penetration", "bone_deviation")
QUALITY_FIELDS = _QUALITY_FLOAT + ("n_cameras", "failure", "confidence")  # quality/'s datasets


@dataclass
class FitQuality:
    reproj_mean_px: np.ndarray  # (F, 2)
    reproj_max_px: np.ndarray  # (F, 2)
    residual3d: np.ndarray  # (F, 2) m
    penetration: np.ndarray  # (F, 2) m
    bone_deviation: np.ndarray  # (F, 2)
    n_cameras: np.ndarray  # (F, 2) int16
    failure: np.ndarray  # (F, 2) uint16 FailureReason flags
    confidence: np.ndarray  # (F, 2) float32 in [0, 1]

    def __post_init__(self) -> None:
        for k in _QUALITY_FLOAT + ("confidence",):
            setattr(self, k, np.asarray(getattr(self, k), dtype=np.float32))
        self.n_cameras = np.asarray(self.n_cameras, dtype=np.int16)
        self.failure = np.asarray(self.failure, dtype=np.uint16)

    @property
    def failed(self) -> np.ndarray:
        """(F, 2) bool."""
        return self.failure != 0

    @property
    def inconsistent(self) -> np.ndarray:
        """(F, 2) bool: the fit disagrees with its evidence (a flag other than the ``EVIDENCE`` ones)."""
        return (self.failure & ~np.uint16(EVIDENCE)) != 0

    def validate(self, source: str | Path, dims: dict[str, int]) -> None:
        for k in _QUALITY_FLOAT + ("n_cameras", "failure", "confidence"):
            check_shape(source, f"quality/{k}", getattr(self, k), ("F", 2), dims)
        check_finite(source, "quality/confidence", self.confidence)
        check_range(source, "quality/confidence", self.confidence, 0.0, 1.0)
        has_data = (self.failure & FailureReason.NO_DATA) == 0
        for k in _QUALITY_FLOAT:
            check_finite(source, f"quality/{k}", getattr(self, k), where=has_data, why="where the hand has data")
            check_range(source, f"quality/{k}", getattr(self, k), 0.0)
        check_range(source, "quality/n_cameras", self.n_cameras, 0)
        unknown = int(np.bitwise_or.reduce(self.failure.ravel(), initial=0)) & ~sum(r.value for r in FailureReason)
        if unknown:
            raise SchemaError(source, f"'quality/failure' has unknown flag bits {unknown:#x}")


@dataclass
class ManoFit:
    frames: np.ndarray  # (F,) int
    global_orient: np.ndarray  # (F, 2, 3)
    hand_pose: np.ndarray  # (F, 2, 45)
    betas: np.ndarray  # (2, 10)
    transl: np.ndarray  # (F, 2, 3) m
    joints: np.ndarray  # (F, 42, 3) m, the fitted model's joints
    quality: FitQuality
    fps: float
    hand_model: str
    flat_hand_mean: bool = True
    inputs: str = ""  # what the fit was made from; the stage skips work whose inputs are unchanged

    def __post_init__(self) -> None:
        self.frames = np.asarray(self.frames, dtype=np.int64)
        for k in ("global_orient", "hand_pose", "betas", "transl", "joints"):
            setattr(self, k, np.asarray(getattr(self, k), dtype=np.float32))

    def validate(self, source: str | Path) -> None:
        dims: dict[str, int] = {}
        check_shape(source, "frames", self.frames, ("F",), dims)
        check_shape(source, "global_orient", self.global_orient, ("F", 2, 3), dims)
        check_shape(source, "hand_pose", self.hand_pose, ("F", 2, N_POSE), dims)
        check_shape(source, "betas", self.betas, (2, N_BETAS), dims)
        check_shape(source, "transl", self.transl, ("F", 2, 3), dims)
        check_shape(source, "joints", self.joints, ("F", N_KEYPOINTS, 3), dims)
        for k in ("global_orient", "hand_pose", "betas", "transl", "joints"):
            check_finite(source, k, getattr(self, k))
        if not (np.isfinite(self.fps) and self.fps > 0):
            raise SchemaError(source, f"'fps' must be positive, got {self.fps}")
        if not self.hand_model:
            raise SchemaError(source, "'hand_model' is empty")
        self.quality.validate(source, dims)


def write_mano(path: str | Path, fit: ManoFit) -> None:
    fit.validate(path)
    extra = {"inputs": fit.inputs} if fit.inputs else {}
    with h5io.create(path, FORMAT, VERSION, fps=float(fit.fps), hand_model=fit.hand_model,
                     flat_hand_mean=bool(fit.flat_hand_mean), **extra) as f:
        for k in ("frames", "global_orient", "hand_pose", "transl", "joints"):
            h5io.write_array(f, k, getattr(fit, k))
        h5io.write_array(f, "betas", fit.betas, chunk_frames=None)
        q = f.create_group("quality")
        for k in QUALITY_FIELDS:
            h5io.write_array(q, k, getattr(fit.quality, k))


def read_mano(path: str | Path) -> ManoFit:
    with h5io.open_checked(path, FORMAT, VERSION, PRODUCED_BY) as f:
        if "quality" not in f:
            raise SchemaError(path, "missing group '/quality'")
        q = f["quality"]
        quality = FitQuality(**{k: h5io.read_array(q, k, path) for k in QUALITY_FIELDS})
        fit = ManoFit(
            **{k: h5io.read_array(f, k, path) for k in ("frames", "global_orient", "hand_pose", "betas", "transl",
                                                        "joints")},
            quality=quality,
            fps=h5io.attr_float(f, "fps", path),
            hand_model=h5io.attr_str(f, "hand_model", path),
            flat_hand_mean=bool(f.attrs.get("flat_hand_mean", True)),
            inputs=str(f.attrs.get("inputs", "")),
        )
    fit.validate(path)
    return fit
