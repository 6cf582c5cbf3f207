"""Triangulated 3D joints of one sequence, with the 2D evidence they came from: ``sequences/<seq>/joints3d.h5``.

HDF5 tree (format ``handdiffuse.joints3d``, version 2)::

    /  attrs: format, version, fps, method (e.g. "dlt", "irls"),
              inputs (optional: fingerprint of the keypoints, calibration and options it came from),
              spliced_from (optional, with `spliced`: the `inputs` of the file a frame-subset run
              spliced its frames into)
    frames        (F,)           int64    frame indices
    joints        (F, 42, 3)     float32  metres, world frame of the calibration;
                                          NaN where fewer than 2 cameras support the point
    reproj_error  (F, 42)        float32  mean reprojection error over the supporting cameras, px
    n_cameras     (F, 42)        int16    cameras that support the point
    cameras       (C,)           str      optional: the cameras triangulated from, the order of the two below
    swapped       (F, C)         bool     optional: views whose left and right hands were exchanged
                                          (the detector put each in the other's slot)
    keypoints     (C, F, 42, 3)  float32  optional: the 2D evidence, resolved once for every reader
                                          (fit, queue, annotation): keypoints2d.h5's detections with
                                          the hands of the `swapped` views exchanged back, a person's
                                          points (keypoints2d_manual.h5) over them at score
                                          ``MANUAL_WEIGHT`` (so a score above 1 marks a manual point),
                                          points far outside their image left out (score 0, x, y NaN)
    spliced       (K,)           int64    optional: the frames the last frame-subset run
                                          (``handdiffuse triangulate --frames``) triangulated again

The triangulate stage writes all of them; a file made elsewhere (the studio's ground truth)
may lack the optional ones, and its readers then take keypoints2d.h5's detections as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_schemas import h5io
from data_schemas.checks import check_finite, check_range, check_shape
from data_schemas.errors import SchemaError
from data_schemas.keypoints import N_KEYPOINTS

FORMAT = "handdiffuse.joints3d"
VERSION = 2
PRODUCED_BY = "handdiffuse triangulate"
MIN_CAMERAS = 2


@dataclass
class Joints3D:
    frames: np.ndarray  # (F,) int
    joints: np.ndarray  # (F, 42, 3) float32 metres
    reproj_error: np.ndarray  # (F, 42) float32 px
    n_cameras: np.ndarray  # (F, 42) int16
    fps: float
    method: str = "dlt"
    inputs: str = ""  # what the file was made from; the stage skips work whose inputs are unchanged
    cameras: list[str] | None = None  # (C,) optional
    swapped: np.ndarray | None = None  # (F, C) bool, optional
    keypoints: np.ndarray | None = None  # (C, F, 42, 3) float32 [x, y, score], optional: the 2D evidence
    spliced: np.ndarray | None = None  # (K,) int frames, optional: the last frame-subset run's
    spliced_from: str = ""  # with ``spliced``: the ``inputs`` of the file before that run

    def __post_init__(self) -> None:
        self.frames = np.asarray(self.frames, dtype=np.int64)
        self.joints = np.asarray(self.joints, dtype=np.float32)
        self.reproj_error = np.asarray(self.reproj_error, dtype=np.float32)
        self.n_cameras = np.asarray(self.n_cameras, dtype=np.int16)
        if self.cameras is not None:
            self.cameras = [str(c) for c in self.cameras]
        if self.swapped is not None:
            self.swapped = np.asarray(self.swapped, dtype=bool)
        if self.keypoints is not None:
            self.keypoints = np.asarray(self.keypoints, dtype=np.float32)
        if self.spliced is not None:
            self.spliced = np.asarray(self.spliced, dtype=np.int64)

    @property
    def valid(self) -> np.ndarray:
        """(F, 42) bool: triangulated from at least two cameras."""
        return self.n_cameras >= MIN_CAMERAS

    def validate(self, source: str | Path) -> None:
        dims: dict[str, int] = {}
        check_shape(source, "joints", self.joints, ("F", N_KEYPOINTS, 3), dims)
        check_shape(source, "reproj_error", self.reproj_error, ("F", N_KEYPOINTS), dims)
        check_shape(source, "n_cameras", self.n_cameras, ("F", N_KEYPOINTS), dims)
        check_shape(source, "frames", self.frames, ("F",), dims)
        if self.cameras is not None:
            dims["C"] = len(self.cameras)
            if len(set(self.cameras)) != len(self.cameras):
                raise SchemaError(source, "camera names are not unique")
        if self.swapped is not None:
            check_shape(source, "swapped", self.swapped, ("F", "C"), dims)
        if not (np.isfinite(self.fps) and self.fps > 0):
            raise SchemaError(source, f"'fps' must be positive, got {self.fps}")
        check_range(source, "n_cameras", self.n_cameras, 0)
        valid = self.valid
        check_finite(source, "joints", self.joints, where=valid, why="where n_cameras >= 2")
        check_finite(source, "reproj_error", self.reproj_error, where=valid, why="where n_cameras >= 2")
        check_range(source, "reproj_error", self.reproj_error, 0.0)
        if np.isfinite(self.joints[~valid]).any():
            raise SchemaError(source, "'joints' has values where n_cameras < 2 (must be NaN there)")
        self._validate_evidence(source, dims)

    def _validate_evidence(self, source: str | Path, dims: dict[str, int]) -> None:
        if self.keypoints is not None:
            if self.cameras is None:
                raise SchemaError(source, "'keypoints' needs 'cameras' (the order of its first axis)")
            check_shape(source, "keypoints", self.keypoints, ("C", "F", N_KEYPOINTS, 3), dims)
            score = self.keypoints[..., 2]
            check_finite(source, "keypoints score", score)
            check_range(source, "keypoints score", score, 0.0)
            check_finite(source, "keypoints x, y", self.keypoints[..., :2], where=score > 0, why="where score > 0")
        if (self.spliced is None) != (not self.spliced_from):
            raise SchemaError(source, "'spliced' and 'spliced_from' come together (one is missing)")
        if self.spliced is not None:
            check_shape(source, "spliced", self.spliced, ("K",), dims)
            if not np.isin(self.spliced, self.frames).all():
                raise SchemaError(source, "'spliced' names a frame that is not in 'frames'")


def write_joints3d(path: str | Path, j: Joints3D) -> None:
    j.validate(path)
    extra = {"inputs": j.inputs} if j.inputs else {}
    if j.spliced_from:
        extra["spliced_from"] = j.spliced_from
    with h5io.create(path, FORMAT, VERSION, fps=float(j.fps), method=j.method, **extra) as f:
        h5io.write_array(f, "frames", j.frames)
        h5io.write_array(f, "joints", j.joints)
        h5io.write_array(f, "reproj_error", j.reproj_error)
        h5io.write_array(f, "n_cameras", j.n_cameras)
        if j.cameras is not None:
            h5io.write_array(f, "cameras", np.array(j.cameras, dtype=object), chunk_frames=None)
        if j.swapped is not None:
            h5io.write_array(f, "swapped", j.swapped)
        if j.keypoints is not None:
            h5io.write_array(f, "keypoints", j.keypoints, frame_axis=1)
        if j.spliced is not None:
            h5io.write_array(f, "spliced", j.spliced, chunk_frames=None)


def read_joints3d(path: str | Path) -> Joints3D:
    with h5io.open_checked(path, FORMAT, VERSION, PRODUCED_BY) as f:
        optional = {k: h5io.read_array(f, k, path) for k in ("swapped", "keypoints", "spliced") if k in f}
        j = Joints3D(
            frames=h5io.read_array(f, "frames", path),
            joints=h5io.read_array(f, "joints", path),
            reproj_error=h5io.read_array(f, "reproj_error", path),
            n_cameras=h5io.read_array(f, "n_cameras", path),
            fps=h5io.attr_float(f, "fps", path),
            method=h5io.attr_str(f, "method", path),
            inputs=str(f.attrs.get("inputs", "")),
            cameras=list(h5io.read_array(f, "cameras", path)) if "cameras" in f else None,
            spliced_from=str(f.attrs.get("spliced_from", "")),
            **optional,
        )
    j.validate(path)
    return j


def read_joints3d_inputs(path: str | Path) -> tuple[str, str]:
    """(inputs, spliced_from) of a joints3d.h5, without reading its arrays: what a later stage's
    fingerprint takes from it."""
    with h5io.open_checked(path, FORMAT, VERSION, PRODUCED_BY) as f:
        return str(f.attrs.get("inputs", "")), str(f.attrs.get("spliced_from", ""))
