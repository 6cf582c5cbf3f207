"""The ChArUco calibration board: its OpenCV object, geometry, printable texture, detector.

Board frame (OpenCV's, >= 4.6): metres, origin at the board's outer top-left corner
(the corner of the first square, not of the white margin), x along the squares_x
squares, y along the squares_y squares (downwards on the printed image), z = 0 on
the board and +z pointing *into* the board, away from a camera that sees the printed
face (a face-on camera has R_board->camera = I). Chessboard inner corner ``id`` sits at
``((id % (squares_x - 1) + 1) * square_length, (id // (squares_x - 1) + 1) * square_length, 0)``.

Pixel coordinates follow ``Camera.project`` (= ``cv2.projectPoints``, ``cv2.remap``,
``cv2.cornerSubPix``): the centre of pixel (col, row) is at (col, row), so a pixel covers
[col - 0.5, col + 0.5). ``BoardTexture`` maps board metres to texture pixels in that
convention. OpenCV's ArUco/ChArUco detectors (4.12 at least) report corners with the
pixel's *top-left* at (col, row), 0.5 px more than that; ``detect_charuco`` measures
the detector's offset once on an image of known geometry and takes it off.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np

from data_schemas.session import BoardSpec

# cornerSubPix stops when a step is below this (px); OpenCV's default 0.1 px is far
# too coarse for calibration, which needs corners to a few hundredths of a pixel.
SUBPIX_MIN_ACCURACY = 1e-3
SUBPIX_MAX_ITERATIONS = 100


def make_board(spec: BoardSpec) -> cv2.aruco.CharucoBoard:
    """The OpenCV board object of ``spec`` (current API; legacy pattern as the spec says)."""
    dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, spec.dictionary))
    board = cv2.aruco.CharucoBoard((spec.squares_x, spec.squares_y), spec.square_length,
                                   spec.marker_length, dictionary)
    board.setLegacyPattern(bool(spec.legacy_pattern))
    return board


def board_corners(spec: BoardSpec) -> np.ndarray:
    """(N, 3) chessboard inner corners in the board frame, metres, row ``i`` = ChArUco id ``i``.

    N = (squares_x - 1) * (squares_y - 1); equals ``make_board(spec).getChessboardCorners()``
    but computed in float64 (OpenCV stores float32).
    """
    nx, ny = spec.squares_x - 1, spec.squares_y - 1
    ids = np.arange(nx * ny)
    return np.stack([(ids % nx + 1) * spec.square_length,
                     (ids // nx + 1) * spec.square_length,
                     np.zeros(ids.size)], axis=-1).astype(np.float64)  # (N, 3)


@dataclass
class BoardTexture:
    """Where board points lie in a texture image: ``pixel = origin_px + px_per_m * (x, y)``.

    Pixel-centre convention (OpenCV's): a board point on the boundary between texel
    columns 9 and 10 maps to u = 9.5. The texture covers the board and a white margin of
    ``margin_m`` on every side, as on a printed board.
    """

    px_per_m: float  # texels per metre (the requested value rounded to whole texels per square)
    margin_px: int  # white margin width, texels
    size: tuple[int, int]  # (width, height) of the texture, texels

    @property
    def origin_px(self) -> np.ndarray:
        """(2,) texture pixel coordinates of the board-frame origin."""
        return np.array([self.margin_px - 0.5, self.margin_px - 0.5])

    def to_pixels(self, xy: np.ndarray) -> np.ndarray:
        """(..., 2) board-frame metres -> (..., 2) texture pixel coordinates."""
        return self.origin_px + self.px_per_m * np.asarray(xy, dtype=np.float64)

    @property
    def extent_m(self) -> tuple[float, float, float, float]:
        """(x_min, y_min, x_max, y_max) of the printed sheet (board + margin), board metres."""
        m = self.margin_px / self.px_per_m
        w = (self.size[0] - 2 * self.margin_px) / self.px_per_m
        h = (self.size[1] - 2 * self.margin_px) / self.px_per_m
        return (-m, -m, w + m, h + m)


def board_texture(spec: BoardSpec, px_per_m: float, margin_m: float) -> tuple[np.ndarray, BoardTexture]:
    """(H, W) uint8 gray image of the printed board (black on white) and its mapping.

    ``px_per_m`` is rounded so that a square is a whole number of texels: OpenCV draws
    the squares on whole texels, so only then do the square edges lie exactly where
    the mapping says (the markers may be off by a fraction of a texel; only the
    chessboard corners are measured).
    """
    square_px = int(round(spec.square_length * px_per_m))
    if square_px < 8:
        raise ValueError(f"texture too coarse: {square_px} texels per square (need >= 8)")
    margin_px = int(round(margin_m * square_px / spec.square_length))
    size = (spec.squares_x * square_px + 2 * margin_px, spec.squares_y * square_px + 2 * margin_px)
    # borderBits=1: the markers' black frame is one bit wide, as the detector expects
    image = make_board(spec).generateImage(size, marginSize=margin_px, borderBits=1)  # (H, W) uint8
    return image, BoardTexture(px_per_m=square_px / spec.square_length, margin_px=margin_px, size=size)


def make_detector(spec: BoardSpec) -> cv2.aruco.CharucoDetector:
    """OpenCV's ChArUco detector for ``spec``, set up to refine corners to ~0.01 px.

    The ChArUco corners are refined by ``cornerSubPix`` with the ArUco detector
    parameters ``cornerRefinementMaxIterations`` / ``cornerRefinementMinAccuracy``
    (window: up to 10 px, limited by the distance to the nearest marker corner).
    ``cornerRefinementMethod`` (of the marker corners) stays NONE: with SUBPIX, 1.5 % of
    the ChArUco corners of the studio's steep (40-60 deg) views land > 0.5 px off, 0.35 %
    without.
    """
    params = cv2.aruco.DetectorParameters()
    params.cornerRefinementMaxIterations = SUBPIX_MAX_ITERATIONS
    params.cornerRefinementMinAccuracy = SUBPIX_MIN_ACCURACY
    return cv2.aruco.CharucoDetector(make_board(spec), cv2.aruco.CharucoParameters(), params)


def detect_charuco(gray_image: np.ndarray, spec: BoardSpec,
                   detector: cv2.aruco.CharucoDetector | None = None) -> tuple[np.ndarray, np.ndarray]:
    """ChArUco corners in one image: ids (K,) int ascending, corners (K, 2) px.

    Corners are in ``Camera.project``'s pixel convention (OpenCV's detector output minus
    ``detector_offset()``). ``gray_image`` (H, W) uint8 (a BGR image is converted). Empty
    (0,) and (0, 2) arrays when the board is not found. Pass ``detector``
    (``make_detector(spec)``) to reuse one across frames.
    """
    if gray_image.ndim == 3:
        gray_image = cv2.cvtColor(gray_image, cv2.COLOR_BGR2GRAY)
    detector = detector or make_detector(spec)
    corners, ids, _, _ = detector.detectBoard(gray_image)
    if ids is None or len(ids) == 0:
        return np.zeros(0, np.int64), np.zeros((0, 2), np.float64)
    ids = ids.reshape(-1).astype(np.int64)  # (K,)
    corners = corners.reshape(-1, 2).astype(np.float64) - detector_offset()  # (K, 1, 2) -> (K, 2)
    order = np.argsort(ids)
    return ids[order], corners[order]


@cache
def detector_offset() -> float:
    """What OpenCV's ChArUco detector adds to pixel-centre coordinates: 0.5 or 0.0 px.

    Found by detecting the board in its own texture, where every corner lies exactly on
    a texel boundary (``BoardTexture``); a mild blur makes the corners sub-pixel measurable.
    """
    spec = BoardSpec(squares_x=5, squares_y=4, square_length=0.04, marker_length=0.03, dictionary="DICT_4X4_50")
    image, texmap = board_texture(spec, px_per_m=1000.0, margin_m=0.02)
    corners, ids, _, _ = make_detector(spec).detectBoard(cv2.GaussianBlur(image, (0, 0), 1.0))
    if ids is None or len(ids) < 4:
        raise RuntimeError("OpenCV's ChArUco detector does not find a board in its own image")
    truth = texmap.to_pixels(board_corners(spec)[ids.ravel(), :2])  # (K, 2)
    offset = float(np.median(corners.reshape(-1, 2) - truth))
    return round(offset * 2) / 2  # the detector's convention, not its sub-pixel noise
