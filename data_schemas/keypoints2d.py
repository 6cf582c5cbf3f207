"""2D hand keypoints of one sequence in every camera: ``sequences/<seq>/keypoints2d.h5``.

HDF5 tree (format ``handdiffuse.keypoints2d``, version 1)::

    /  attrs: format, version, detector (e.g. "mediapipe-0.10.14"), fps,
              inputs (optional: fingerprint of the videos and detector options it came from)
    cameras      (C,)            str    camera names, the order of axis 0 below
    image_sizes  (C, 2)          int32  (width, height) px
    frames       (F,)            int64  frame index of each row (after sync offsets)
    keypoints    (C, F, 42, 3)   float32  x, y (px), score in [0, 1]; 42 = left 21 + right 21
                                          (data_schemas.keypoints); x, y NaN where score is 0
    annotators   (C, F)          str      optional: who placed the view's points ("" = nobody)
    annotated_at (C, F)          str      optional: when, ISO 8601 UTC ("" = never)
    redetected   (C, F, 2)       bool     optional: the (view, hand)s a guided re-detection replaces

The manual annotation ``sequences/<seq>/keypoints2d_manual.h5`` (``handdiffuse merge``) is
this format too, with the same cameras and frames as keypoints2d.h5: score 1 where a person
placed or moved a point, 0 (x, y NaN) elsewhere, and ``annotators`` / ``annotated_at`` per view.

The guided re-detection ``sequences/<seq>/keypoints2d_guided.h5`` (``handdiffuse redetect``) is this
format too, with the same cameras and frames as keypoints2d.h5 and ``redetected``: where it is true,
the hand's 21 rows replace the first detection's (joints hidden by the other hand have score 0 and
leave the evidence); elsewhere the first detection stands. Its ``inputs`` begin with keypoints2d.h5's
``inputs`` and ``GUIDED_SEPARATOR``, so a reader tells whether it was made from the current detection.
(``redetected`` is optional: files without it read as before, so keypoints2d.h5 and people's
keypoints2d_manual.h5 stay version 1.)

A found point may lie outside its image: a detector guesses the joints of a hand the image
border cuts. It may not lie further out than ``OUTSIDE_MARGIN`` times the image's width
(x) or height (y): such a point is a unit or scale mistake (millimetres, a x1000 factor), not a
guess. ``handdiffuse validate`` refuses it (``check_inside``); triangulate leaves it out and
counts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_schemas import h5io
from data_schemas.checks import check_finite, check_range, check_shape
from data_schemas.errors import SchemaError
from data_schemas.keypoints import N_KEYPOINTS

FORMAT = "handdiffuse.keypoints2d"
VERSION = 1
PRODUCED_BY = "handdiffuse detect"
GUIDED_SEPARATOR = ">"  # keypoints2d_guided.h5's inputs: "<keypoints2d.h5's inputs>><its own>"
MANUAL_WEIGHT = 4.0  # score of a person's point where a detection scores <= 1 (triangulation, fit)
OUTSIDE_MARGIN = 0.5  # a found point lies at most this fraction of the image's width / height outside it


def far_outside(keypoints: np.ndarray, image_sizes: np.ndarray, margin: float = OUTSIDE_MARGIN) -> np.ndarray:
    """(C, F, K, 3) keypoints of images (C, 2) (width, height) px -> (C, F, K) bool: found (score > 0)
    and more than ``margin`` x the image's width / height outside it."""
    w = np.asarray(image_sizes, dtype=np.float64)[:, 0, None, None]  # (C, 1, 1)
    h = np.asarray(image_sizes, dtype=np.float64)[:, 1, None, None]
    x, y = keypoints[..., 0], keypoints[..., 1]
    with np.errstate(invalid="ignore"):
        out = (x < -margin * w) | (x > (1 + margin) * w) | (y < -margin * h) | (y > (1 + margin) * h)
    return out & (keypoints[..., 2] > 0)


@dataclass
class Keypoints2D:
    cameras: list[str]  # (C,)
    image_sizes: np.ndarray  # (C, 2) int (width, height) px
    frames: np.ndarray  # (F,) int frame indices
    keypoints: np.ndarray  # (C, F, 42, 3) float32 [x, y, score]
    detector: str
    fps: float
    inputs: str = ""  # what the file was made from; the stage skips work whose inputs are unchanged
    annotators: np.ndarray | None = None  # (C, F) str, manual files: who placed the view's points ("" nobody)
    annotated_at: np.ndarray | None = None  # (C, F) str, manual files: when (ISO 8601 UTC; "" never)
    redetected: np.ndarray | None = None  # (C, F, 2) bool, guided files: the (view, hand)s it replaces

    def __post_init__(self) -> None:
        self.cameras = [str(c) for c in self.cameras]
        self.image_sizes = np.asarray(self.image_sizes, dtype=np.int32)
        self.frames = np.asarray(self.frames, dtype=np.int64)
        self.keypoints = np.asarray(self.keypoints, dtype=np.float32)
        for k in ("annotators", "annotated_at"):
            if getattr(self, k) is not None:
                setattr(self, k, np.asarray(getattr(self, k), dtype=object))
        if self.redetected is not None:
            self.redetected = np.asarray(self.redetected, dtype=bool)

    @property
    def found(self) -> np.ndarray:
        """(C, F, 42) bool: the detector returned the point."""
        return self.keypoints[..., 2] > 0

    def check_inside(self, source: str | Path, margin: float = OUTSIDE_MARGIN) -> None:
        """SchemaError if a found point lies further outside its image than ``margin`` x its size: how
        many, and the first (camera, frame, keypoint, position)."""
        far = far_outside(self.keypoints, self.image_sizes, margin)
        if not far.any():
            return
        c, f, k = (int(i[0]) for i in np.nonzero(far))
        x, y = self.keypoints[c, f, k, :2]
        w, h = self.image_sizes[c]
        how_far = "half the image size" if margin == 0.5 else f"{margin:g} x the image size"
        raise SchemaError(source, f"{int(far.sum())} keypoints lie more than {how_far} outside the image "
                                  f"(first: camera '{self.cameras[c]}', frame {int(self.frames[f])}, keypoint {k} at "
                                  f"x={x:.1f}, y={y:.1f} in a {w}x{h} image)")

    def validate(self, source: str | Path) -> None:
        dims: dict[str, int] = {"C": len(self.cameras)}
        check_shape(source, "keypoints", self.keypoints, ("C", "F", N_KEYPOINTS, 3), dims)
        check_shape(source, "image_sizes", self.image_sizes, ("C", 2), dims)
        check_shape(source, "frames", self.frames, ("F",), dims)
        if len(set(self.cameras)) != len(self.cameras):
            raise SchemaError(source, "camera names are not unique")
        if (self.image_sizes <= 0).any():
            raise SchemaError(source, "'image_sizes' must be positive")
        if not self.detector:
            raise SchemaError(source, "'detector' is empty")
        if not (np.isfinite(self.fps) and self.fps > 0):
            raise SchemaError(source, f"'fps' must be positive, got {self.fps}")
        score = self.keypoints[..., 2]
        check_finite(source, "keypoints score", score)
        check_range(source, "keypoints score", score, 0.0, 1.0)
        check_finite(source, "keypoints x, y", self.keypoints[..., :2], where=score > 0, why="where score > 0")
        if (self.annotators is None) != (self.annotated_at is None):
            raise SchemaError(source, "'annotators' and 'annotated_at' come together (one is missing)")
        for k in ("annotators", "annotated_at"):
            if getattr(self, k) is not None:
                check_shape(source, k, getattr(self, k), ("C", "F"), dims)
        if self.redetected is not None:
            check_shape(source, "redetected", self.redetected, ("C", "F", 2), dims)


def write_keypoints2d(path: str | Path, kp: Keypoints2D) -> None:
    kp.validate(path)
    extra = {"inputs": kp.inputs} if kp.inputs else {}
    with h5io.create(path, FORMAT, VERSION, detector=kp.detector, fps=float(kp.fps), **extra) as f:
        h5io.write_array(f, "cameras", np.array(kp.cameras, dtype=object), chunk_frames=None)
        h5io.write_array(f, "image_sizes", kp.image_sizes, chunk_frames=None)
        h5io.write_array(f, "frames", kp.frames)
        h5io.write_array(f, "keypoints", kp.keypoints, frame_axis=1)
        for k in ("annotators", "annotated_at"):
            if getattr(kp, k) is not None:
                h5io.write_array(f, k, getattr(kp, k), chunk_frames=None)
        if kp.redetected is not None:
            h5io.write_array(f, "redetected", kp.redetected, frame_axis=1)


def read_keypoints2d(path: str | Path) -> Keypoints2D:
    with h5io.open_checked(path, FORMAT, VERSION, PRODUCED_BY) as f:
        kp = Keypoints2D(
            cameras=list(h5io.read_array(f, "cameras", path)),
            image_sizes=h5io.read_array(f, "image_sizes", path),
            frames=h5io.read_array(f, "frames", path),
            keypoints=h5io.read_array(f, "keypoints", path),
            detector=h5io.attr_str(f, "detector", path),
            fps=h5io.attr_float(f, "fps", path),
            inputs=str(f.attrs.get("inputs", "")),
            annotators=h5io.read_array(f, "annotators", path) if "annotators" in f else None,
            annotated_at=h5io.read_array(f, "annotated_at", path) if "annotated_at" in f else None,
            redetected=h5io.read_array(f, "redetected", path) if "redetected" in f else None,
        )
    kp.validate(path)
    return kp


def read_detector(path: str | Path) -> str:
    """The ``detector`` attribute alone (which landmarks the keypoints are), without reading the points."""
    with h5io.open_checked(path, FORMAT, VERSION, PRODUCED_BY) as f:
        return h5io.attr_str(f, "detector", path)


def overlay_manual(keypoints: np.ndarray, cameras: list[str], frames: np.ndarray, manual: Keypoints2D | None,
                   weight: float = MANUAL_WEIGHT) -> np.ndarray:
    """(C, F, 42, 3) detections of ``cameras`` x ``frames`` -> a copy with the points a person placed
    (keypoints2d_manual.h5: score > 0) over them at score ``weight``. Cameras or frames the
    manual file lacks keep their detections."""
    out = np.array(keypoints, copy=True)
    if manual is None:
        return out
    c_at = {c: i for i, c in enumerate(manual.cameras)}
    f_at = {int(f): i for i, f in enumerate(manual.frames)}
    cams = np.array([c_at.get(c, -1) for c in cameras])
    rows = np.array([f_at.get(int(f), -1) for f in frames])
    m = manual.keypoints[np.maximum(cams, 0)][:, np.maximum(rows, 0)]  # (C, F, 42, 3)
    placed = (m[..., 2] > 0) & (cams >= 0)[:, None, None] & (rows >= 0)[None, :, None]
    m = np.concatenate([m[..., :2], np.full(m.shape[:-1] + (1,), weight, m.dtype)], axis=-1)
    out[placed] = m[placed]
    return out


def guided_inputs(kp: Keypoints2D, own: str) -> str:
    """keypoints2d_guided.h5's ``inputs``: those of the keypoints2d.h5 ``kp`` it re-detected, then its own."""
    return f"{kp.inputs}{GUIDED_SEPARATOR}{own}"


def made_from(guided: Keypoints2D, kp: Keypoints2D) -> bool:
    """Whether the guided re-detection ``guided`` was made from this keypoints2d.h5: its inputs begin
    with kp's, and it has kp's cameras and frames."""
    return (guided.redetected is not None and guided.inputs.startswith(kp.inputs + GUIDED_SEPARATOR)
            and guided.cameras == kp.cameras and np.array_equal(guided.frames, kp.frames))


def overlay_guided(keypoints: np.ndarray, guided: Keypoints2D | None) -> np.ndarray:
    """(C, F, 42, 3) first detections -> a copy with each hand ``guided`` re-detected (``redetected``,
    (C, F, 2)) in its place, hidden joints (score 0) included; same cameras and frames (``made_from``)."""
    out = np.array(keypoints, copy=True)
    if guided is None:
        return out
    hands = out.reshape(*out.shape[:2], 2, -1, 3)  # (C, F, 2, 21, 3) view of out
    hands[guided.redetected] = guided.keypoints.reshape(hands.shape)[guided.redetected]
    return out
