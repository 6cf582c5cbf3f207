"""The studio's camera dome: cameras on rings of a hemisphere around the capture volume.

World frame: metres, z up, origin at the centre of the capture volume (where the
hands are). Cameras look at the origin (with a little aim jitter), image x to the
right and y down (OpenCV). Intrinsics are those of a machine-vision camera with a
fixed lens: square pixels, principal point within a few px of the image centre,
mild barrel distortion (k1 ~ -0.05, k2 ~ 0.02, small tangential terms).

Presets: ``full`` is the paper's dome (50 cameras, 3840x2160); ``demo`` is 8 cameras
at 640x512 so the whole pipeline runs in minutes on 2 cores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_schemas.calibration import Camera, CameraRig
from data_schemas.camera_model import matrix_to_rodrigues
from data_schemas.session import BoardSpec, CameraSpec


@dataclass
class RigConfig:
    n_cameras: int = 50
    """Number of cameras on the dome."""
    width: int = 3840
    """Image width, px."""
    height: int = 2160
    """Image height, px."""
    fps: float = 30.0
    """Frame rate of every camera."""
    radius: float = 1.2
    """Distance of the cameras from the volume centre, m."""
    min_elevation_deg: float = -15.0
    """Lowest ring's elevation above the horizontal plane through the centre."""
    max_elevation_deg: float = 75.0
    """Highest ring's elevation."""
    horizontal_fov_deg: float = 55.0
    """Horizontal field of view of the lens."""
    distortion: bool = True
    """Give the lenses mild radial-tangential distortion."""
    max_frame_offset: int = 0
    """Cameras start up to this many frames apart (0: synchronised); exercises sync."""


FULL = RigConfig()
DEMO = RigConfig(n_cameras=8, width=640, height=512, radius=0.9, min_elevation_deg=0.0,
                 max_elevation_deg=60.0, horizontal_fov_deg=45.0)
PRESETS = {"full": FULL, "demo": DEMO}

BOARD = BoardSpec(squares_x=10, squares_y=7, square_length=0.04, marker_length=0.03,
                  dictionary="DICT_5X5_100", legacy_pattern=False)


def look_at(center: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """World->camera rotation (3, 3) whose optical axis (+z) points from ``center`` to ``target``."""
    z = target - center
    z = z / np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-8:  # looking straight up or down
        x = np.cross(z, np.array([0.0, 1.0, 0.0]))
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)  # image y points down when up is +z
    return np.stack([x, y, z])


def ring_layout(n: int, lo_deg: float, hi_deg: float) -> list[tuple[float, float]]:
    """(azimuth, elevation) in radians for ``n`` cameras on rings spaced evenly in elevation,
    each ring's count proportional to its circumference; neighbouring rings staggered."""
    n_rings = max(1, int(round(np.sqrt(n / 3))))
    elevations = np.deg2rad(np.linspace(lo_deg, hi_deg, n_rings))
    weights = np.cos(elevations)
    counts = np.floor(weights / weights.sum() * n).astype(int)
    for i in np.argsort(-(weights / weights.sum() * n - counts))[: n - counts.sum()]:
        counts[i] += 1  # largest remainders get the cameras left over
    out = []
    for r, (el, k) in enumerate(zip(elevations, counts)):
        offset = (r % 2) * np.pi / max(k, 1)
        out += [(offset + 2 * np.pi * j / k, float(el)) for j in range(k)]
    return out


def make_rig(cfg: RigConfig, seed: int = 0) -> tuple[CameraRig, list[CameraSpec]]:
    """The dome's ground-truth calibration and the session's camera list."""
    rng = np.random.default_rng(seed)
    cameras, specs = [], []
    width = len(str(cfg.n_cameras - 1))
    for i, (az, el) in enumerate(ring_layout(cfg.n_cameras, cfg.min_elevation_deg, cfg.max_elevation_deg)):
        name = f"cam{i:0{max(width, 2)}d}"
        center = cfg.radius * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        center += rng.normal(0, 0.01, 3)  # mounting tolerance
        R = look_at(center, rng.normal(0, 0.01, 3))
        f = cfg.width / 2 / np.tan(np.deg2rad(cfg.horizontal_fov_deg) / 2) * rng.uniform(0.98, 1.02)
        K = np.array([[f, 0.0, cfg.width / 2 + rng.normal(0, cfg.width * 0.004)],
                      [0.0, f, cfg.height / 2 + rng.normal(0, cfg.height * 0.004)],
                      [0.0, 0.0, 1.0]])
        if cfg.distortion:
            dist = np.array([rng.normal(-0.05, 0.015), rng.normal(0.02, 0.008),
                             rng.normal(0, 2e-4), rng.normal(0, 2e-4), 0.0])
        else:
            dist = np.zeros(5)
        cameras.append(Camera(name, (cfg.width, cfg.height), K, dist, matrix_to_rodrigues(R), -R @ center))
        offset = int(rng.integers(-cfg.max_frame_offset, cfg.max_frame_offset + 1)) if cfg.max_frame_offset else 0
        specs.append(CameraSpec(name, cfg.width, cfg.height, offset))
    rig = CameraRig(cameras, {"source": "studio ground truth", "world_frame": "studio: z up, origin at volume centre"})
    return rig, specs
