"""Camera rig calibration: the camera model, and ``calibration.toml`` in anipose's format.

File layout (readable by ``aniposelib.cameras.CameraGroup.load`` and written so that
a file from ``CameraGroup.dump`` loads here)::

    [cam_00]                      # one table per camera; index zero-padded so that
    name = "cam00"                #   lexicographic order (aniposelib's) = numeric order
    size = [3840, 2160]           # width, height in px
    matrix = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
    distortions = [k1, k2, p1, p2, k3]   # OpenCV order; 4, 5 or 8 values
    rotation = [rx, ry, rz]       # Rodrigues vector, world -> camera
    translation = [tx, ty, tz]    # metres, world -> camera
    [metadata]                    # free-form; our calibrate stage writes
    date = "2026-11-25T10:00:00"  #   date, error (mean px), adjusted,
    ...                           #   per-camera reprojection_error_px / board_views

The camera model is OpenCV's pinhole with radial-tangential (rational) distortion:
``x_cam = R X + t``; ``(x', y') = x_cam[:2] / z``; distort; ``u = fx x'' + cx``, written once
in ``data_schemas.camera_model`` (numpy, torch and numba forms). ``Camera.project`` equals
``cv2.projectPoints`` (and aniposelib's) to < 1e-6 px.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import toml

from data_schemas.atomic import atomic_write_text
from data_schemas.camera_model import UNDISTORT_ITERATIONS, distort, rodrigues_to_matrix, to_pixels, undistort
from data_schemas.checks import load_toml
from data_schemas.errors import SchemaError

CAMERA_KEYS = ("name", "size", "matrix", "distortions", "rotation", "translation")
N_DISTORTIONS = (4, 5, 8)
_CAM_KEY = re.compile(r"^cam_(\d+)$")


@dataclass
class Camera:
    """One calibrated camera. Units: px for intrinsics, metres for translation."""

    name: str
    size: tuple[int, int]  # (width, height) px
    matrix: np.ndarray  # (3, 3) K
    distortions: np.ndarray  # (D,) k1 k2 p1 p2 [k3 [k4 k5 k6]], D in 4, 5, 8
    rotation: np.ndarray  # (3,) Rodrigues, world -> camera
    translation: np.ndarray  # (3,) metres, world -> camera

    def __post_init__(self) -> None:
        self.size = (int(self.size[0]), int(self.size[1]))
        self.matrix = np.asarray(self.matrix, dtype=np.float64)
        self.distortions = np.asarray(self.distortions, dtype=np.float64).ravel()
        self.rotation = np.asarray(self.rotation, dtype=np.float64).ravel()
        self.translation = np.asarray(self.translation, dtype=np.float64).ravel()

    @property
    def R(self) -> np.ndarray:  # (3, 3)
        return rodrigues_to_matrix(self.rotation)

    @property
    def center(self) -> np.ndarray:
        """(3,) camera centre in world coordinates, metres."""
        return -self.R.T @ self.translation

    @property
    def projection_matrix(self) -> np.ndarray:
        """(3, 4) K [R | t] for undistorted pixel coordinates."""
        return self.matrix @ np.hstack([self.R, self.translation[:, None]])

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) world points -> (..., 3) camera coordinates."""
        return np.asarray(points, dtype=np.float64) @ self.R.T + self.translation

    @property
    def intrinsics(self) -> tuple[float, float, float, float]:
        """fx, fy, cx, cy px."""
        K = self.matrix
        return K[0, 0], K[1, 1], K[0, 2], K[1, 2]

    def distort(self, xy: np.ndarray) -> np.ndarray:
        """(..., 2) normalized undistorted coordinates -> (..., 2) normalized distorted."""
        return distort(xy, self.distortions)

    def project(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) world points -> (..., 2) distorted pixel coordinates (OpenCV's model)."""
        return to_pixels(self.to_camera(points), *self.intrinsics, self.distortions)

    def undistort_points(self, pixels: np.ndarray, iterations: int = UNDISTORT_ITERATIONS) -> np.ndarray:
        """(..., 2) distorted pixels -> (..., 2) normalized undistorted coordinates.

        OpenCV's fixed-point inversion of ``distort`` (as cv2.undistortPoints, with more
        iterations: exact to < 1e-9 for the mild distortion of real lenses).
        """
        px = np.asarray(pixels, dtype=np.float64)
        return np.stack(undistort(px[..., 0], px[..., 1], *self.intrinsics, self.distortions, iterations), axis=-1)

    def validate(self, source: str | Path) -> None:
        where = f"camera '{self.name}'"
        if not self.name:
            raise SchemaError(source, "a camera has an empty name")
        if self.size[0] <= 0 or self.size[1] <= 0:
            raise SchemaError(source, f"{where}: size must be positive [width, height], got {list(self.size)}")
        if self.matrix.shape != (3, 3):
            raise SchemaError(source, f"{where}: 'matrix' has shape {self.matrix.shape}, expected (3, 3)")
        if self.distortions.size not in N_DISTORTIONS:
            raise SchemaError(
                source, f"{where}: 'distortions' has {self.distortions.size} values, expected 4, 5 or 8 "
                "(OpenCV order k1 k2 p1 p2 k3 k4 k5 k6)",
            )
        for key, arr in (("rotation", self.rotation), ("translation", self.translation)):
            if arr.shape != (3,):
                raise SchemaError(source, f"{where}: '{key}' has {arr.size} values, expected 3")
        for key in ("matrix", "distortions", "rotation", "translation"):
            if not np.all(np.isfinite(getattr(self, key))):
                raise SchemaError(source, f"{where}: '{key}' contains NaN or inf")
        K = self.matrix
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise SchemaError(source, f"{where}: focal lengths must be positive, got fx={K[0, 0]}, fy={K[1, 1]}")
        if not np.allclose(K[2], [0, 0, 1]) or K[1, 0] != 0 or K[0, 1] != 0:
            raise SchemaError(source, f"{where}: 'matrix' must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]")

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "size": [int(self.size[0]), int(self.size[1])],
            "matrix": self.matrix.tolist(),
            "distortions": self.distortions.tolist(),
            "rotation": self.rotation.tolist(),
            "translation": self.translation.tolist(),
        }


@dataclass
class CameraRig:
    """All calibrated cameras of a session, in file order."""

    cameras: list[Camera]
    metadata: dict = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cameras]

    def __len__(self) -> int:
        return len(self.cameras)

    def __getitem__(self, name: str) -> Camera:
        for c in self.cameras:
            if c.name == name:
                return c
        raise KeyError(name)

    def subset(self, names: list[str], source: str | Path = "calibration") -> "CameraRig":
        """The cameras ``names``, in that order; a missing one is an error naming it."""
        have = set(self.names)
        missing = [n for n in names if n not in have]
        if missing:
            raise SchemaError(source, f"camera{'s' if len(missing) > 1 else ''} "
                              f"{', '.join(repr(m) for m in missing)} not in the calibration")
        return CameraRig([self[n] for n in names], dict(self.metadata))

    def project(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) world points -> (C, ..., 2) pixels in every camera."""
        return np.stack([c.project(points) for c in self.cameras])

    def projection_matrices(self) -> np.ndarray:
        """(C, 3, 4) K [R | t] of every camera."""
        return np.stack([c.projection_matrix for c in self.cameras])

    def validate(self, source: str | Path) -> None:
        if not self.cameras:
            raise SchemaError(source, "no cameras")
        seen: set[str] = set()
        for c in self.cameras:
            c.validate(source)
            if c.name in seen:
                raise SchemaError(source, f"camera name '{c.name}' appears twice")
            seen.add(c.name)


def read_calibration(path: str | Path) -> CameraRig:
    """Read an anipose-compatible ``calibration.toml``; errors name the file and the cause."""
    path = Path(path)
    doc = load_toml(path)
    tables = {k: v for k, v in doc.items() if k != "metadata"}
    for key, value in tables.items():
        if not isinstance(value, dict):
            raise SchemaError(path, f"'{key}' is not a [table]; expected [cam_N] tables and [metadata]")

    if not any(_CAM_KEY.match(k) or "matrix" in v for k, v in tables.items()):
        raise SchemaError(path, "not a calibration file (no [cam_N] tables)")

    def order(key: str) -> tuple[int, int, str]:
        m = _CAM_KEY.match(key)
        return (0, int(m.group(1)), key) if m else (1, 0, key)

    cameras = []
    for key in sorted(tables, key=order):
        table = tables[key]
        missing = [k for k in CAMERA_KEYS if k not in table]
        if missing:
            raise SchemaError(path, f"[{key}] is missing {', '.join(repr(m) for m in missing)}")
        if table.get("fisheye"):
            raise SchemaError(path, f"[{key}] is a fisheye camera, which is not supported")
        try:
            cam = Camera(
                name=str(table["name"]), size=tuple(table["size"]), matrix=table["matrix"],
                distortions=table["distortions"], rotation=table["rotation"], translation=table["translation"],
            )
        except (TypeError, ValueError, IndexError) as e:
            raise SchemaError(path, f"[{key}] has a malformed value ({e})")
        cameras.append(cam)
    metadata = doc.get("metadata", {})
    if not isinstance(metadata, dict):
        raise SchemaError(path, "'metadata' is not a [table]")
    rig = CameraRig(cameras, metadata)
    rig.validate(path)
    return rig


def write_calibration(path: str | Path, rig: CameraRig) -> None:
    """Write atomically in anipose's layout; keys zero-padded so every reader keeps the order."""
    rig.validate(path)
    width = len(str(len(rig.cameras) - 1))
    doc = {f"cam_{i:0{width}d}": cam.to_dict() for i, cam in enumerate(rig.cameras)}
    doc["metadata"] = _plain(rig.metadata)
    atomic_write_text(path, toml.dumps(doc))


def _plain(value: object) -> object:
    """numpy scalars/arrays -> Python types, so TOML writers accept them."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
