"""The crop MediaPipe's hand landmark model expects, from a hand's 21 points in an image.

MediaPipe tracks a hand from frame to frame by cropping the next image where the last
landmarks were (``HandLandmarkLandmarksToRoi``: ``HandLandmarksToRectCalculator``, then
``RectTransformationCalculator`` with scale 2, shift -0.1, square_long). The same crop from
the fitted hand's projected joints puts the hand where the model was trained to find it:

1. the stable points: wrist and the CMC/MCP/IP of the thumb, MCP and PIP of the four fingers
2. rotation theta = pi/2 - atan2(-(y1 - y0), x1 - x0): p0 the wrist, p1 the mean of the middle
   PIP and the mean of the index and ring PIPs, so the wrist -> fingers axis points up in the crop
3. the stable points' box in the frame rotated by theta: its centre and size (w, h)
4. shifted by ``shift`` x h along the crop's vertical axis (negative: towards the fingers, which
   reach beyond the stable points), made square on its long side, scaled by ``scale``

Points are in our per-hand order (data_schemas.keypoints), which is MediaPipe's. Pixels, y down;
theta in radians, positive turning the crop clockwise on screen, as MediaPipe's ``rotation``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STABLE = [0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18]  # 1. wrist, thumb 1-3, each finger's MCP and PIP
_WRIST, _INDEX_PIP, _MIDDLE_PIP, _RING_PIP = 0, 6, 10, 14
SCALE, SHIFT = 2.0, -0.1  # MediaPipe's landmarks -> ROI transformation


@dataclass
class Roi:
    """A square crop turned by ``rotation``: what MediaPipe's NormalizedRect holds, in pixels."""

    center: np.ndarray  # (2,) px
    side: float  # px
    rotation: float  # rad

    def corners(self) -> np.ndarray:
        """(4, 2) px: the crop's top-left, top-right, bottom-right, bottom-left as the model sees it."""
        half = self.side / 2
        local = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
        return local @ _rot(self.rotation).T + self.center

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) image px -> (N, 2) crop coordinates in [0, 1] (x right, y down, as the model sees it)."""
        local = (np.asarray(points, np.float64) - self.center) @ _rot(self.rotation)  # rotate by -theta
        return local / self.side + 0.5

    def normalized(self, width: int, height: int) -> dict[str, float]:
        """The NormalizedRect fields for an image of ``width`` x ``height`` px."""
        return dict(x_center=float(self.center[0] / width), y_center=float(self.center[1] / height),
                    width=float(self.side / width), height=float(self.side / height), rotation=float(self.rotation))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) (2,) px: the axis-aligned box around the turned crop."""
        c = self.corners()
        return c.min(axis=0), c.max(axis=0)


def _rot(theta: float) -> np.ndarray:
    """(2, 2): turns image vectors by ``theta`` (clockwise on screen, y down)."""
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def hand_rotation(points: np.ndarray) -> float:
    """2. (21, 2) px -> theta in [-pi, pi): the turn that makes wrist -> fingers point up."""
    p0 = points[_WRIST]
    p1 = ((points[_INDEX_PIP] + points[_RING_PIP]) / 2 + points[_MIDDLE_PIP]) / 2
    theta = np.pi / 2 - np.arctan2(-(p1[1] - p0[1]), p1[0] - p0[0])
    return float(theta - 2 * np.pi * np.floor((theta + np.pi) / (2 * np.pi)))


def hand_roi(points: np.ndarray, scale: float = SCALE, shift: float = SHIFT) -> Roi:
    """(21, 2) px of one hand -> the crop MediaPipe would track it with (steps 1-4)."""
    p = np.asarray(points, np.float64)[STABLE]  # (12, 2)
    theta = hand_rotation(np.asarray(points, np.float64))
    # 3. the box in the turned frame (MediaPipe turns about the axis-aligned box's centre)
    mid = (p.min(axis=0) + p.max(axis=0)) / 2
    local = (p - mid) @ _rot(theta)  # (12, 2) rotated by -theta
    lo, hi = local.min(axis=0), local.max(axis=0)
    w, h = hi - lo
    center = mid + _rot(theta) @ ((lo + hi) / 2)
    # 4.
    center = center + _rot(theta) @ np.array([0.0, shift * h])
    return Roi(center, float(max(w, h) * scale), theta)
