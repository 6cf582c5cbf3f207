"""Crops around the hands for the annotator, and Label Studio's percent coordinates <-> full-frame pixels.

A task shows a crop of one camera's frame, not the whole 4K image: the hands fill the view
and a click lands to a fraction of a full-frame pixel. The crop box is kept with the task,
so every click maps back to the frame the keypoints live in.

Conventions::

    full frame   pixel (u, v), pixel centres at integers (OpenCV's, keypoints2d.h5's):
                 pixel (0, 0) covers [-0.5, 0.5) x [-0.5, 0.5)
    crop box     (x0, y0, w, h) integers, full-frame pixels: image = frame[y0:y0+h, x0:x0+w]
    crop image   W x H px as stored (W = s w, H = s h for a scale s; 1 here)
    Label Studio (x%, y%) of the image's width and height from its top-left *corner*

so, with the box's left edge at x0 - 0.5 in full-frame pixels::

    u = x0 - 0.5 + x% / 100 * w          x% = 100 * (u - x0 + 0.5) / w
    v = y0 - 0.5 + y% / 100 * h          y% = 100 * (v - y0 + 0.5) / h

The image's own size only enters through the check that an annotation was made on it
(Label Studio reports ``original_width`` / ``original_height`` with every result).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MARGIN = 0.25  # crop margin around the hands, as a fraction of their box's longer side
MIN_MARGIN_PX = 12  # ... and at least this many pixels
MIN_SIZE_PX = 96  # smallest crop side: a tiny or far hand still gets some context


@dataclass(frozen=True)
class CropBox:
    """A crop of a full frame: ``frame[y0:y0 + h, x0:x0 + w]``, full-frame pixels."""

    x0: int
    y0: int
    w: int
    h: int

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.w, self.h]

    @classmethod
    def of(cls, values: list[int] | tuple[int, ...]) -> "CropBox":
        x0, y0, w, h = (int(v) for v in values)
        return cls(x0, y0, w, h)

    def cut(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, 3) full frame -> (h, w, 3) crop."""
        return frame[self.y0:self.y0 + self.h, self.x0:self.x0 + self.w]


def crop_box(points: np.ndarray, image_size: tuple[int, int]) -> CropBox:
    """The box around ``points`` (N, 2) px (NaN rows ignored) with a margin, inside the image
    ``image_size`` (width, height); the whole image when no point is finite."""
    width, height = int(image_size[0]), int(image_size[1])
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    p = p[np.isfinite(p).all(axis=1)]
    if len(p) == 0:
        return CropBox(0, 0, width, height)
    lo, hi = p.min(axis=0), p.max(axis=0)  # (2,)
    side = float((hi - lo).max())
    margin = max(MARGIN * side, MIN_MARGIN_PX)
    centre = (lo + hi) / 2
    half = np.maximum((hi - lo) / 2 + margin, MIN_SIZE_PX / 2)  # (2,)
    x0, y0 = np.floor(centre - half).astype(int)
    x1, y1 = np.ceil(centre + half).astype(int)
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:  # every point off the image: show the whole frame
        return CropBox(0, 0, width, height)
    return CropBox(int(x0), int(y0), int(x1 - x0), int(y1 - y0))


def to_percent(pixels: np.ndarray, box: CropBox) -> np.ndarray:
    """(..., 2) full-frame px -> (..., 2) Label Studio percent of the crop image."""
    p = np.asarray(pixels, dtype=np.float64)
    return np.stack([100.0 * (p[..., 0] - box.x0 + 0.5) / box.w,
                     100.0 * (p[..., 1] - box.y0 + 0.5) / box.h], axis=-1)


def to_pixels(percent: np.ndarray, box: CropBox) -> np.ndarray:
    """(..., 2) Label Studio percent of the crop image -> (..., 2) full-frame px."""
    q = np.asarray(percent, dtype=np.float64)
    return np.stack([box.x0 - 0.5 + q[..., 0] / 100.0 * box.w,
                     box.y0 - 0.5 + q[..., 1] / 100.0 * box.h], axis=-1)


def inside_percent(percent: np.ndarray) -> np.ndarray:
    """(..., 2) -> (...,) bool: the point lies on the image (0 <= x%, y% <= 100)."""
    q = np.asarray(percent, dtype=np.float64)
    return np.isfinite(q).all(axis=-1) & (q >= 0).all(axis=-1) & (q <= 100).all(axis=-1)
