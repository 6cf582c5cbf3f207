"""A z-buffer triangle rasterizer (the studio's renderer core; the fitted hands' visibility), compiled with numba.

Pixel centres are at integer coordinates (OpenCV's convention: pixel (row i, column j)
covers [j - 0.5, j + 0.5] x [i - 0.5, i + 0.5]). Vertices come already projected to
pixels (with lens distortion: triangles are a few pixels wide, so distorting vertices
and rasterizing straight edges is exact to a small fraction of a pixel) and with their
camera depth, so attributes are interpolated perspective-correctly.

1. cull faces behind the near plane and faces turned away from the camera
2. for each face, the pixel centres inside its bounding box
3. screen-space barycentrics by edge functions; keep the pixels inside the face
4. depth = 1 / sum(b_i / z_i); the nearest face per pixel wins (z-buffer)
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

NEAR = 0.05  # m
INSIDE_EPS = 1e-7  # barycentric slack: pixel centres on a shared edge belong to both faces


@dataclass
class Fragments:
    """The winning face per covered pixel."""

    pixel: np.ndarray  # (P,) int64 linear pixel index (row * width + column)
    face: np.ndarray  # (P,) int64 face index
    bary: np.ndarray  # (P, 3) perspective-correct barycentric weights of the face's vertices
    depth: np.ndarray  # (P,) camera depth, m


@numba.njit(cache=True, nogil=True)
def _zbuffer(tri, z, fidx, W, H, zbuf, fbuf, b0, b1):  # pragma: no cover - compiled
    for k in range(tri.shape[0]):
        ax, ay = tri[k, 0, 0], tri[k, 0, 1]
        bx, by = tri[k, 1, 0], tri[k, 1, 1]
        cx, cy = tri[k, 2, 0], tri[k, 2, 1]
        area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
        if abs(area) < 1e-12:
            continue
        # 2.
        x_lo = max(int(np.ceil(min(ax, bx, cx) - 1e-9)), 0)
        x_hi = min(int(np.floor(max(ax, bx, cx) + 1e-9)), W - 1)
        y_lo = max(int(np.ceil(min(ay, by, cy) - 1e-9)), 0)
        y_hi = min(int(np.floor(max(ay, by, cy) + 1e-9)), H - 1)
        iz0, iz1, iz2 = 1.0 / z[k, 0], 1.0 / z[k, 1], 1.0 / z[k, 2]
        for y in range(y_lo, y_hi + 1):
            for x in range(x_lo, x_hi + 1):
                # 3.
                w0 = ((bx - x) * (cy - y) - (by - y) * (cx - x)) / area
                w1 = ((cx - x) * (ay - y) - (cy - y) * (ax - x)) / area
                w2 = 1.0 - w0 - w1
                if w0 < -INSIDE_EPS or w1 < -INSIDE_EPS or w2 < -INSIDE_EPS:
                    continue
                # 4.
                inv = w0 * iz0 + w1 * iz1 + w2 * iz2
                d = 1.0 / inv
                p = y * W + x
                if d < zbuf[p]:
                    zbuf[p] = d
                    fbuf[p] = fidx[k]
                    b0[p] = w0 * iz0 / inv
                    b1[p] = w1 * iz1 / inv


def rasterize(pix: np.ndarray, depth: np.ndarray, faces: np.ndarray, front: np.ndarray,
              size: tuple[int, int]) -> Fragments:
    """pix (N, 2) px, depth (N,) m, faces (F, 3), front (F,) bool (faces to draw), size (width, height)."""
    W, H = size
    # 1.
    fidx = np.flatnonzero(front & (depth[faces] > NEAR).all(axis=1))
    tri = np.ascontiguousarray(pix[faces[fidx]], dtype=np.float64)  # (F', 3, 2)
    z = np.ascontiguousarray(depth[faces[fidx]], dtype=np.float64)  # (F', 3)
    zbuf = np.full(W * H, np.inf)
    fbuf = np.full(W * H, -1, np.int64)
    b0 = np.zeros(W * H)
    b1 = np.zeros(W * H)
    _zbuffer(tri, z, fidx.astype(np.int64), W, H, zbuf, fbuf, b0, b1)
    pixel = np.flatnonzero(fbuf >= 0)
    bary = np.stack([b0[pixel], b1[pixel], 1.0 - b0[pixel] - b1[pixel]], axis=1)
    return Fragments(pixel, fbuf[pixel], bary, zbuf[pixel])
