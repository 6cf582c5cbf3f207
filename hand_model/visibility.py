"""What a camera sees of two posed hands: per joint visible or hidden (by which hand), and which
hand is in front at each pixel around them, from a z-buffer of both meshes (``raster``).

1. project both meshes' vertices and joints through the camera (lens distortion included)
2. rasterize the front faces of both hands, only in the window the hands cover (plus a margin),
   so a 4K image costs what the hands' pixels cost
3. per joint: outside the image (or behind the camera); hidden when the nearest surface at its
   pixel lies more than ``tolerance`` in front of it (a joint lies up to ~1.5 cm under the skin),
   by the hand that surface belongs to; visible otherwise
4. ``owner``: per window pixel, the hand whose surface is nearest (-1 where neither)

The same test as the studio's ground truth (``capture.studio.scene.view_truth``), made from the
fitted meshes instead of the true ones (no forearms: the fit has none).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_schemas.calibration import Camera
from hand_model.raster import NEAR, rasterize

JOINT_DEPTH_TOLERANCE = 0.015  # m: a joint lies this far under the skin at most
VISIBLE, HIDDEN_BY_OTHER, HIDDEN_BY_SELF, OUTSIDE = 0, 1, 2, 3


@dataclass
class HandsInView:
    """Two hands seen by one camera in one frame."""

    pixels: np.ndarray  # (2, 21, 2) projected joints, px (distorted)
    state: np.ndarray  # (2, 21) int8: VISIBLE, HIDDEN_BY_OTHER, HIDDEN_BY_SELF or OUTSIDE
    owner: np.ndarray  # (h, w) int8 window: 0 left / 1 right hand nearest, -1 neither
    origin: tuple[int, int]  # (x, y) px of the window's top-left pixel in the image

    def front_of(self, hand: int) -> np.ndarray:
        """(h, w) bool window: pixels where ``hand`` is the nearest surface."""
        return self.owner == hand


def _window(pix: np.ndarray, size: tuple[int, int], margin: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) exclusive: the projected points' box plus ``margin``, clipped to the image."""
    W, H = size
    ok = np.isfinite(pix).all(axis=1)
    if not ok.any():
        return 0, 0, 0, 0
    lo = np.floor(pix[ok].min(axis=0)).astype(int) - margin
    hi = np.ceil(pix[ok].max(axis=0)).astype(int) + margin + 1
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    x1, y1 = min(hi[0], W), min(hi[1], H)
    return x0, y0, max(x1, x0), max(y1, y0)


def hands_in_view(camera: Camera, vertices: np.ndarray, faces: tuple[np.ndarray, np.ndarray], joints: np.ndarray,
                  tolerance: float = JOINT_DEPTH_TOLERANCE, margin: int = 8) -> HandsInView:
    """vertices (2, V, 3) and joints (2, 21, 3) world m of the left and right hand, faces (left, right)
    (F, 3) each -> what ``camera`` sees of them."""
    W, H = camera.size
    V = vertices.shape[1]
    # 1.
    allv = np.concatenate([vertices[0], vertices[1]]).astype(np.float64)  # (2V, 3)
    pix, z = camera.project(allv), camera.to_camera(allv)[:, 2]  # (2V, 2), (2V,)
    jpix = camera.project(joints.reshape(-1, 3)).reshape(2, 21, 2)
    jz = camera.to_camera(joints.reshape(-1, 3))[:, 2].reshape(2, 21)
    f = np.concatenate([faces[0], faces[1] + V])  # (F, 3) into allv
    hand_of_face = np.concatenate([np.zeros(len(faces[0]), np.int8), np.ones(len(faces[1]), np.int8)])
    # 2. front faces only: the normal points towards the camera
    fn = np.cross(allv[f[:, 1]] - allv[f[:, 0]], allv[f[:, 2]] - allv[f[:, 0]])
    front = np.einsum("ij,ij->i", fn, camera.center - allv[f[:, 0]]) > 0
    x0, y0, x1, y1 = _window(np.where((z > NEAR)[:, None], pix, np.nan), (W, H), margin)
    w, h = x1 - x0, y1 - y0
    owner = np.full((h, w), -1, np.int8)
    depth = np.full(h * w, np.inf)
    if w > 0 and h > 0:
        frag = rasterize(pix - (x0, y0), z, f, front, (w, h))
        owner.reshape(-1)[frag.pixel] = hand_of_face[frag.face]
        depth[frag.pixel] = frag.depth
    depth = depth.reshape(h, w)
    # 3.
    col, row = np.rint(jpix[..., 0]).astype(int), np.rint(jpix[..., 1]).astype(int)
    inside = (jz > NEAR) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
    in_window = inside & (col >= x0) & (col < x1) & (row >= y0) & (row < y1)
    r, c = np.clip(row - y0, 0, max(h - 1, 0)), np.clip(col - x0, 0, max(w - 1, 0))
    surface = np.where(in_window, depth[r, c] if h and w else np.inf, np.inf)  # (2, 21)
    by = np.where(in_window, owner[r, c] if h and w else -1, -1)
    hidden = surface < jz - tolerance
    state = np.full((2, 21), VISIBLE, np.int8)
    state[hidden & (by == np.array([[1], [0]]))] = HIDDEN_BY_OTHER
    state[hidden & (by == np.array([[0], [1]]))] = HIDDEN_BY_SELF
    state[~inside] = OUTSIDE
    return HandsInView(jpix, state, owner, (x0, y0))
