"""The studio's calibration take: a ChArUco board walked around the dome, rendered exactly.

Outputs, in a session folder (layout of ``data_schemas.session``)::

    calibration/videos/{cam}.mp4      the board as every camera saw it (data_schemas.video)
    ground_truth/board_poses.npz      BOARD_POSES: the board's true pose per frame
        version         int, NPZ_VERSION
        R               (F, 3, 3) float64, board -> world rotation
        t               (F, 3) float64, metres: world position of the board-frame origin
        fps             float
        squares_x, squares_y, square_length, marker_length, dictionary, legacy_pattern
                        the BoardSpec fields

so a board point ``X`` (board frame, see ``capture.charuco``) is at ``R[f] @ X + t[f]``
in frame ``f``, and camera ``c`` sees it at ``c.project(R[f] @ X + t[f])``.

Rendering is a ray caster: the ray through every pixel centre (OpenCV's convention:
pixel (col, row) is centred at (col, row)) is intersected with the board plane and
the printed texture is read there. Every blur in the image model (pixel footprint and
defocus: a Gaussian; motion: a line centred on the frame instant, along the image motion
of the board's middle) is point-symmetric, so it leaves the chessboard corners where
``Camera.project`` puts them (OpenCV's detector finds them to ~0.03 px in noise-free
renders). Lighting varies over the take (shared by all cameras), each camera has its own
wall, vignetting, exposure, blur and noise; everything is seeded.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from capture.charuco import BoardTexture, board_corners, board_texture
from data_schemas.video import VideoWriter
from data_schemas.atomic import atomic_path
from data_schemas.calibration import Camera, CameraRig
from data_schemas.errors import SchemaError
from data_schemas.session import CALIBRATION_VIDEOS, GROUND_TRUTH, BoardSpec

log = logging.getLogger(__name__)

BOARD_POSES = f"{GROUND_TRUTH}/board_poses.npz"
NPZ_VERSION = 1
MARGIN_M = 0.02  # white border of the printed sheet around the squares, metres
MAX_VIEW_ANGLE_DEG = 60.0  # beyond this a camera is not counted as seeing the board


# --- the board's ground truth -------------------------------------------------------

@dataclass
class BoardTruth:
    """The board's pose in every frame of the take (see the module docstring)."""

    R: np.ndarray  # (F, 3, 3) board -> world rotation
    t: np.ndarray  # (F, 3) world position of the board-frame origin, metres
    spec: BoardSpec
    fps: float

    def __len__(self) -> int:
        return len(self.t)

    def to_world(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) board-frame points -> (F, N, 3) world points in every frame."""
        return np.einsum("fij,nj->fni", self.R, points) + self.t[:, None, :]

    @property
    def centers(self) -> np.ndarray:
        """(F, 3) world position of the middle of the squares."""
        s = self.spec
        mid = np.array([s.squares_x * s.square_length / 2, s.squares_y * s.square_length / 2, 0.0])
        return self.to_world(mid[None])[:, 0]

    @property
    def face_normals(self) -> np.ndarray:
        """(F, 3) unit normal of the printed face, pointing towards the cameras that see it."""
        return -self.R[:, :, 2]

    def validate(self, source: str | Path) -> None:
        F = len(self.t)
        if self.R.shape != (F, 3, 3) or self.t.shape != (F, 3):
            raise SchemaError(source, f"R has shape {self.R.shape} and t {self.t.shape}, expected (F, 3, 3) and (F, 3)")
        if not (np.all(np.isfinite(self.R)) and np.all(np.isfinite(self.t))):
            raise SchemaError(source, "R or t contains NaN or inf")
        if F and np.abs(self.R @ self.R.transpose(0, 2, 1) - np.eye(3)).max() > 1e-6:
            raise SchemaError(source, "R is not a rotation in every frame")


def write_board_truth(path: str | Path, truth: BoardTruth) -> None:
    """Write ``board_poses.npz`` atomically."""
    truth.validate(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: savez adds no ".npz"
        np.savez(f, version=NPZ_VERSION, R=truth.R, t=truth.t, fps=float(truth.fps), **asdict(truth.spec))


def read_board_truth(path: str | Path) -> BoardTruth:
    path = Path(path)
    if not path.is_file():
        raise SchemaError(path, "file not found")
    with np.load(path) as z:
        missing = [k for k in ("version", "R", "t", "fps", *BoardSpec.__dataclass_fields__) if k not in z]
        if missing:
            raise SchemaError(path, f"missing {', '.join(repr(m) for m in missing)}")
        if int(z["version"]) != NPZ_VERSION:
            raise SchemaError(path, f"version {int(z['version'])}, this reader knows {NPZ_VERSION}")
        spec = BoardSpec(squares_x=int(z["squares_x"]), squares_y=int(z["squares_y"]),
                         square_length=float(z["square_length"]), marker_length=float(z["marker_length"]),
                         dictionary=str(z["dictionary"]), legacy_pattern=bool(z["legacy_pattern"]))
        truth = BoardTruth(R=z["R"].astype(np.float64), t=z["t"].astype(np.float64), spec=spec, fps=float(z["fps"]))
    truth.validate(path)
    return truth


# --- the trajectory -------------------------------------------------------------------

@dataclass
class BoardMotion:
    """How the board is walked around the dome (times are fractions of the take)."""

    revolutions: float = 3.0
    """Times the printed face turns all the way round the dome."""
    elevation_deg: tuple[float, float] = (0.0, 50.0)
    """The face normal's elevation rises from the first to the second value mid-take and falls back
    (a dome's top cameras still see a board tilted 50 deg up face-on enough)."""
    low_bias: float = 1.5
    """Exponent > 1 keeps the normal low for longer: the lower rings see the board over a narrower
    range of elevations than the top ones (which see it from almost any azimuth)."""
    wobble_deg: float = 10.0
    """Hand tremor / tilts: smooth deviation of the normal's azimuth and elevation."""
    roll_deg: float = 30.0
    """Largest turn of the board about its normal, away from upright."""
    wander_m: float = 0.3
    """The board's centre stays within this distance of the origin along every axis (far enough
    that it crosses the cameras' fields of view: corners near the image borders pin down the
    principal point and the distortion)."""


def _smooth_noise(rng: np.random.Generator, tau: np.ndarray, cycles: tuple[float, float],
                  n_terms: int = 3) -> np.ndarray:
    """(F,) a smooth random signal within [-1, 1]: a few sinusoids of ``cycles`` per take."""
    f = rng.uniform(*cycles, n_terms)
    a = rng.uniform(0.5, 1.0, n_terms)
    phase = rng.uniform(0, 2 * np.pi, n_terms)
    return (a[:, None] * np.sin(2 * np.pi * f[:, None] * tau + phase[:, None])).sum(0) / a.sum()


def board_trajectory(n_frames: int, spec: BoardSpec, seed: int, fps: float = 30.0,
                     motion: BoardMotion = BoardMotion()) -> BoardTruth:
    """A smooth, seeded board walk in which every camera of a dome sees the printed face.

    The face normal sweeps the azimuth ``revolutions`` times while its elevation rises
    over the dome and back, so each ring of cameras gets face-on views, and cameras next
    to each other get them at the same instants.
    """
    rng = np.random.default_rng([seed, 0])
    tau = np.linspace(0.0, 1.0, n_frames)  # (F,) fraction of the take

    # 1. face normal n (unit, world): azimuth sweep, elevation up and down, tremor
    wobble = np.deg2rad(motion.wobble_deg)
    az = rng.uniform(0, 2 * np.pi) + 2 * np.pi * motion.revolutions * tau + wobble * _smooth_noise(rng, tau, (3, 9))
    lo, hi = np.deg2rad(motion.elevation_deg)
    rise = (0.5 - 0.5 * np.cos(2 * np.pi * tau)) ** motion.low_bias  # 0 -> 1 (mid-take) -> 0
    el = lo + (hi - lo) * rise + wobble * _smooth_noise(rng, tau, (3, 9))
    n = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)  # (F, 3)

    # 2. board axes: z into the board (= -n), y (down the printed sheet) as close to
    #    world-down as the plane allows, then turned by the roll angle about z
    z = -n
    down = np.array([0.0, 0.0, -1.0])
    y0 = down - (z @ down)[:, None] * z
    y0 /= np.linalg.norm(y0, axis=-1, keepdims=True)
    x0 = np.cross(y0, z)
    roll = np.deg2rad(motion.roll_deg) * _smooth_noise(rng, tau, (1, 4))[:, None]  # (F, 1)
    x = np.cos(roll) * x0 + np.sin(roll) * y0
    y = -np.sin(roll) * x0 + np.cos(roll) * y0
    R = np.stack([x, y, z], axis=-1)  # (F, 3, 3), columns = board axes in world

    # 3. the centre wanders; t places the board-frame origin (a corner) accordingly
    center = motion.wander_m * np.stack([_smooth_noise(rng, tau, (0.5, 2.5)) for _ in range(3)], axis=-1)  # (F, 3)
    half = np.array([spec.squares_x * spec.square_length / 2, spec.squares_y * spec.square_length / 2, 0.0])
    t = center - R @ half
    return BoardTruth(R=R, t=t, spec=spec, fps=float(fps))


def motion_for_rig(rig: CameraRig) -> BoardMotion:
    """The default walk, its lowest elevation at the rig's lowest cameras (clamped to -30..0 deg)."""
    centers = np.stack([c.center for c in rig.cameras])  # (C, 3)
    lowest = np.rad2deg(np.arcsin(centers[:, 2] / np.linalg.norm(centers, axis=-1))).min()
    default = BoardMotion()
    return replace(default, elevation_deg=(float(np.clip(lowest, -30.0, 0.0)), default.elevation_deg[1]))


def corner_visibility(camera: Camera, truth: BoardTruth, max_angle_deg: float = MAX_VIEW_ANGLE_DEG,
                      border_px: float = 2.0) -> np.ndarray:
    """(F, N) bool: corner n is in front of ``camera``, inside its image, on a face within
    ``max_angle_deg`` of the direction to the camera. Geometry only (no rendering)."""
    X = truth.to_world(board_corners(truth.spec))  # (F, N, 3)
    depth = camera.to_camera(X)[..., 2]  # (F, N)
    uv = camera.project(X)  # (F, N, 2)
    w, h = camera.size
    inside = ((uv[..., 0] >= border_px) & (uv[..., 0] <= w - 1 - border_px)
              & (uv[..., 1] >= border_px) & (uv[..., 1] <= h - 1 - border_px))
    to_cam = camera.center - truth.centers  # (F, 3)
    cos = np.einsum("fi,fi->f", truth.face_normals, to_cam) / np.linalg.norm(to_cam, axis=-1)
    facing = cos > np.cos(np.deg2rad(max_angle_deg))  # (F,)
    return (depth > 0) & inside & facing[:, None]


# --- rendering -----------------------------------------------------------------------

@dataclass
class Look:
    """Image formation constants of one camera (fixed over the take)."""

    exposure: float  # scene radiance -> DN
    noise_dn: float  # sensor noise, DN (standard deviation)
    blur_px: tuple[float, float]  # per-frame blur sigma range, px: lens + pixel footprint (a sharp camera: ~0.5)
    shutter: float  # exposure time / frame interval (motion blur)


def take_lighting(n_frames: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Studio lighting over the take, shared by all cameras: gain (F,), offset (F,) DN,
    and the key light's direction (3,) (world, unit)."""
    rng = np.random.default_rng([seed, 1])
    tau = np.linspace(0.0, 1.0, n_frames)
    gain = 1.0 + 0.12 * _smooth_noise(rng, tau, (0.5, 3))
    offset = 8.0 * _smooth_noise(rng, tau, (0.5, 3))
    az = rng.uniform(0, 2 * np.pi)
    key = np.array([0.5 * np.cos(az), 0.5 * np.sin(az), 1.0])
    return gain, offset, key / np.linalg.norm(key)


def pixel_rays(camera: Camera, rows_per_chunk: int = 128) -> np.ndarray:
    """(H, W, 2) float32 normalized undistorted coordinates (x/z, y/z) of every pixel centre."""
    w, h = camera.size
    xs = np.arange(w, dtype=np.float64)
    out = np.empty((h, w, 2), np.float32)
    for r0 in range(0, h, rows_per_chunk):
        ys = np.arange(r0, min(h, r0 + rows_per_chunk), dtype=np.float64)
        grid = np.stack(np.meshgrid(xs, ys), axis=-1)  # (rows, W, 2) pixel centres
        # 10 fixed-point iterations reach 1e-9 px for the studio's lenses (20 is the default)
        out[r0:r0 + len(ys)] = camera.undistort_points(grid, iterations=10)
    return out


def pixel_to_board(camera: Camera, R: np.ndarray, t: np.ndarray, rays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where pixel rays meet the board plane: (..., 2) board metres and (...,) inverse depth.

    ``rays`` (..., 2) are normalized undistorted coordinates (``Camera.undistort_points``).
    A board point (X, Y, 0) is at ``H @ (X, Y, 1)`` in camera coordinates with
    ``H = [r1 r2 t]`` of the board->camera pose, so ``H^-1 @ (x, y, 1) = (X, Y, 1) / depth``;
    the ray hits the plane in front of the camera where the inverse depth is > 0.
    """
    Rc = camera.R @ R  # board -> camera
    tc = camera.R @ t + camera.translation
    Hinv = np.linalg.inv(np.column_stack([Rc[:, 0], Rc[:, 1], tc]))  # (3, 3)
    x = rays[..., 0].astype(np.float64)
    y = rays[..., 1].astype(np.float64)
    a = Hinv[0, 0] * x + Hinv[0, 1] * y + Hinv[0, 2]
    b = Hinv[1, 0] * x + Hinv[1, 1] * y + Hinv[1, 2]
    c = Hinv[2, 0] * x + Hinv[2, 1] * y + Hinv[2, 2]
    c_safe = np.where(c > 0, c, 1.0)
    return np.stack([a / c_safe, b / c_safe], axis=-1), c


def _background(size: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A dim studio wall (H, W) float32 DN: soft gradient, blotches, a few soft struts; and the
    lens's vignetting (H, W) float32 gain."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    diag = float(np.hypot(w, h))
    angle = rng.uniform(0, 2 * np.pi)
    ramp = ((xx - w / 2) * np.cos(angle) + (yy - h / 2) * np.sin(angle)) / diag  # -0.5..0.5 across the image
    img = rng.uniform(70, 120) + rng.uniform(15, 40) * ramp
    for cells, amp in ((4, 14.0), (24, 5.0), (96, 2.0)):  # low-contrast texture at three scales
        coarse = rng.normal(0, amp, (max(2, cells * h // w), cells)).astype(np.float32)
        img += cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    struts = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(2, 5))):  # out-of-focus dome struts / cables
        p0 = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        p1 = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        cv2.line(struts, p0, p1, float(rng.choice([-25.0, 20.0])), max(2, w // 60))
    img += cv2.GaussianBlur(struts, (0, 0), max(2.0, w / 300))
    r2 = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / (diag / 2) ** 2
    return np.clip(img, 20, 235).astype(np.float32), (1.0 - 0.25 * r2).astype(np.float32)


def _motion_kernel(dx: float, dy: float) -> np.ndarray | None:
    """Point-symmetric line kernel for a blur of (dx, dy) px centred on the frame instant."""
    length = float(np.hypot(dx, dy))
    if length < 0.25:
        return None
    r = int(np.ceil(length / 2)) + 1
    k = np.zeros((2 * r + 1, 2 * r + 1), np.float32)
    for s in np.linspace(-0.5, 0.5, max(3, int(np.ceil(length * 4)) | 1)):  # symmetric samples
        x, y = r + s * dx, r + s * dy
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - x0, y - y0
        k[y0, x0] += (1 - fx) * (1 - fy)
        k[y0, x0 + 1] += fx * (1 - fy)
        k[y0 + 1, x0] += (1 - fx) * fy
        k[y0 + 1, x0 + 1] += fx * fy
    return k / k.sum()


class BoardRenderer:
    """One camera's view of the board, frame by frame; deterministic per (seed, index)."""

    TEXELS_PER_PX = 1.5  # finest texture sampling, at the nearest the board comes
    INK, PAPER, BACKING = 0.06, 0.82, 0.45  # reflectances: black print, white paper, back of the board
    MAX_ANISOTROPY = 3.0  # see _footprint

    def __init__(self, camera: Camera, spec: BoardSpec, seed: int, index: int):
        self.camera, self.spec = camera, spec
        self.seed, self.index = seed, index
        rng = np.random.default_rng([seed, 2, index])
        # 1. the ray of every pixel centre, once (the lens distortion lives here)
        self.rays = pixel_rays(camera)  # (H, W, 2)
        # 2. the printed board, fine enough that a texel is <= 1/1.5 px wherever the board goes
        reach = (BoardMotion.wander_m * np.sqrt(3)  # farthest a sheet point gets from the origin
                 + np.hypot(spec.squares_x, spec.squares_y) * spec.square_length / 2 + MARGIN_M)
        nearest = max(0.2, np.linalg.norm(camera.center) - reach)
        image, self.texmap = board_texture(spec, self.TEXELS_PER_PX * camera.matrix[0, 0] / nearest, MARGIN_M)
        self.texture = image.astype(np.float32) / 255.0  # (Ht, Wt) reflectance in [0, 1] of the print
        self.sheet = self.texmap.extent_m
        # 3. the studio wall behind, and this camera's image formation
        self.background, self.vignette = _background(camera.size, rng)
        self.background *= self.vignette
        self.look = Look(exposure=rng.uniform(0.88, 1.0) * 255.0, noise_dn=rng.uniform(1.0, 2.2),
                         blur_px=(0.45, 0.65), shutter=rng.uniform(0.05, 0.12))

    def _region(self, R: np.ndarray, t: np.ndarray, pad: int) -> tuple[slice, slice] | None:
        """Pixel rows/cols that can see the sheet (its projected outline, padded), or None."""
        x0, y0, x1, y1 = self.sheet
        s = np.linspace(0.0, 1.0, 17)
        edge = np.concatenate([np.stack([x0 + (x1 - x0) * s, np.full_like(s, y0)], -1),
                               np.stack([x0 + (x1 - x0) * s, np.full_like(s, y1)], -1),
                               np.stack([np.full_like(s, x0), y0 + (y1 - y0) * s], -1),
                               np.stack([np.full_like(s, x1), y0 + (y1 - y0) * s], -1)])  # (68, 2)
        X = np.column_stack([edge, np.zeros(len(edge))]) @ R.T + t
        w, h = self.camera.size
        if (self.camera.to_camera(X)[:, 2] <= 0.01).any():
            return (slice(0, h), slice(0, w))  # board beside/behind the camera: cast every ray
        uv = self.camera.project(X)
        c0, r0 = np.floor(uv.min(0)).astype(int) - pad
        c1, r1 = np.ceil(uv.max(0)).astype(int) + pad + 1
        c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(c1, w), min(r1, h)
        if c0 >= c1 or r0 >= r1:
            return None
        return (slice(r0, r1), slice(c0, c1))

    def _image_velocity(self, truth: BoardTruth, frame: int) -> np.ndarray:
        """(2,) px per frame of the board's middle in this image."""
        f0, f1 = max(frame - 1, 0), min(frame + 1, len(truth) - 1)
        if f1 == f0:
            return np.zeros(2)
        uv = self.camera.project(truth.centers[[f0, f1]])
        return (uv[1] - uv[0]) / (f1 - f0)

    def _footprint(self, R: np.ndarray, t: np.ndarray) -> tuple[float, float]:
        """Texels per px along the most compressed image direction (largest over the sheet) and
        metres per px (median): from J = d(texel)/d(pixel) at a 3 x 3 grid of sheet points.

        The first is capped at MAX_ANISOTROPY x the least compressed direction's: an isotropic
        texture blur of a board seen edge-on would smear it across the image (and take long);
        such views (> ~70 deg) alias a little instead, and no detector uses them.
        """
        x0, y0, x1, y1 = self.sheet
        gx, gy = np.meshgrid(np.linspace(x0, x1, 3), np.linspace(y0, y1, 3))
        X = np.column_stack([gx.ravel(), gy.ravel(), np.zeros(9)]) @ R.T + t  # (9, 3) world
        X = X[self.camera.to_camera(X)[:, 2] > 0.01]
        if not len(X):
            return 1.0, 1.0 / self.texmap.px_per_m
        p = self.camera.project(X)  # (S, 2)
        px = np.stack([p, p + [1.0, 0.0], p + [0.0, 1.0]], axis=1)  # (S, 3, 2): p, one column on, one row on
        uv = self.texmap.to_pixels(pixel_to_board(self.camera, R, t, self.camera.undistort_points(px))[0])
        J = np.stack([uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]], axis=-1)  # (S, 2, 2): columns d/dcol, d/drow
        sv = np.linalg.svd(J, compute_uv=False)  # (S, 2), largest first
        texels_per_px = np.minimum(sv[:, 0], self.MAX_ANISOTROPY * sv[:, 1]).max()
        return float(texels_per_px), float(np.median(np.sqrt(sv[:, 0] * sv[:, 1]))) / self.texmap.px_per_m

    def render(self, truth: BoardTruth, frame: int, lighting: tuple[np.ndarray, np.ndarray, np.ndarray],
               noise: bool = True) -> np.ndarray:
        """(H, W) uint8 gray image of ``frame``; ``lighting`` from ``take_lighting``."""
        R, t = truth.R[frame], truth.t[frame]
        gain, offset = float(lighting[0][frame]), float(lighting[1][frame])
        key = lighting[2]
        rng = np.random.default_rng([self.seed, 3, self.index, frame])
        look = self.look
        sigma_px = rng.uniform(*look.blur_px)
        motion = _motion_kernel(*(look.shutter * self._image_velocity(truth, frame)))
        region = self._region(R, t, pad=3 + (motion.shape[0] if motion is not None else 0))
        patch = None
        if region is not None:
            patch = self.background[region].copy()  # (h, w) float32 DN
            # 1. where each pixel's ray meets the board plane, in board metres and in texels
            xy, inv_depth = pixel_to_board(self.camera, R, t, self.rays[region])  # (h, w, 2), (h, w)
            x0, y0, x1, y1 = self.sheet
            inside_m = np.minimum(np.minimum(xy[..., 0] - x0, x1 - xy[..., 0]),
                                  np.minimum(xy[..., 1] - y0, y1 - xy[..., 1]))  # signed distance to the sheet's edge
            hit = (inv_depth > 0) & (inside_m > -0.01)
            if hit.any():
                texels_per_px, m_per_px = self._footprint(R, t)
                normal = -R[:, 2]
                front = float(normal @ (self.camera.center - t)) > 0
                if front:
                    # 2. blur the print by sigma_px in every image direction (pixel footprint + defocus;
                    #    an isotropic blur in the texture, so a little more along foreshortened
                    #    directions), then read it at each ray's point (pixel-centre conventions)
                    uv = np.where(hit[..., None], self.texmap.to_pixels(xy), 0.0).astype(np.float32)  # (h, w, 2)
                    tex = cv2.GaussianBlur(self.texture, (0, 0), sigma_px * texels_per_px,
                                           borderType=cv2.BORDER_REPLICATE)
                    printed = cv2.remap(tex, uv[..., 0], uv[..., 1], cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_REPLICATE)
                    reflectance = self.INK + (self.PAPER - self.INK) * printed
                else:  # the back of the board is plain
                    reflectance = np.float32(self.BACKING)
                # 3. shading: Lambertian under the key light
                irradiance = 0.72 + 0.28 * max(0.0, float((normal if front else -normal) @ key))
                board = (look.exposure * irradiance) * reflectance * self.vignette[region]
                # 4. over the wall, the sheet's edge anti-aliased over ~1.5 px
                alpha = np.clip(0.5 + inside_m / (1.5 * m_per_px), 0.0, 1.0) * hit
                patch += (alpha * (board - patch)).astype(np.float32)
            if motion is not None:  # 5. motion blur, centred on the frame instant
                patch = cv2.filter2D(patch, -1, motion, borderType=cv2.BORDER_REPLICATE)
        # 6. studio light level, sensor noise, 8-bit quantisation
        grain = np.zeros(self.background.shape, np.float32)
        if noise:
            cv2.setRNGSeed(int(rng.integers(2**31)))
            cv2.randn(grain, 0.0, look.noise_dn)
        image = cv2.scaleAdd(self.background, gain, grain)  # (H, W) float32
        if patch is not None:
            image[region] = gain * patch + grain[region]
        np.maximum(image, -offset, out=image)  # so that the abs of convertScaleAbs changes nothing
        return cv2.convertScaleAbs(image, alpha=1.0, beta=offset)


# --- the take ------------------------------------------------------------------------

@dataclass
class _CameraJob:
    camera: Camera
    index: int
    truth: BoardTruth
    seed: int
    path: Path
    in_worker: bool = False
    offset: int = 0  # the camera's frame_offset: its video frame i shows instant i - offset


def _render_video(job: _CameraJob) -> tuple[str, int, float]:
    """Render and encode one camera's take; (camera name, frames, seconds)."""
    if job.in_worker:
        cv2.setNumThreads(1)  # one process per core
    start = time.perf_counter()
    renderer = BoardRenderer(job.camera, job.truth.spec, job.seed, job.index)
    lighting = take_lighting(len(job.truth), job.seed)
    with VideoWriter(job.path, job.truth.fps, job.camera.size) as writer:
        for f in range(len(job.truth)):
            instant = min(max(f - job.offset, 0), len(job.truth) - 1)  # the take's ends repeat
            writer.write(cv2.cvtColor(renderer.render(job.truth, instant, lighting), cv2.COLOR_GRAY2BGR))
    return job.camera.name, len(job.truth), time.perf_counter() - start


def write_board_videos(root: Path, rig: CameraRig, spec: BoardSpec, fps: float, n_frames: int, seed: int,
                       workers: int = 2, motion: BoardMotion | None = None,
                       offsets: list[int] | None = None) -> BoardTruth:
    """Render the calibration take of every camera of ``rig`` into session folder ``root``.

    Writes ``calibration/videos/<camera>.mp4`` (one process per camera, ``workers`` at a
    time) and ``ground_truth/board_poses.npz``; returns the ground truth. ``motion``
    None: ``motion_for_rig(rig)``. With ``offsets`` (the session's frame_offset per camera)
    camera c's video frame i shows the board at instant i - offset_c, as session.toml says;
    instants beyond the take's ends show its first or last pose (no instant shared by all
    cameras falls there).
    """
    root = Path(root)
    truth = board_trajectory(n_frames, spec, seed, fps, motion or motion_for_rig(rig))
    log.info("board take: %d cameras x %d frames, %s, seed %d, %d workers", len(rig), n_frames, spec, seed, workers)
    offsets = offsets or [0] * len(rig)
    jobs = [_CameraJob(cam, i, truth, seed, root / CALIBRATION_VIDEOS / f"{cam.name}.mp4", workers > 1, offsets[i])
            for i, cam in enumerate(rig.cameras)]
    start = time.perf_counter()
    if workers > 1:
        # forkserver: fresh workers. A forked child of a process whose OpenCV thread pool has
        # run hangs in cv2.setNumThreads (OpenCV 4.12); scripts need the __main__ guard.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) as pool:
            results = list(pool.map(_render_video, jobs))
    else:
        results = [_render_video(job) for job in jobs]
    wall = time.perf_counter() - start
    write_board_truth(root / BOARD_POSES, truth)
    images = sum(n for _, n, _ in results)
    log.info("board take: %d images in %.1f s (%.1f images/s)", images, wall, images / max(wall, 1e-9))
    return truth
