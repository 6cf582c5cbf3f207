"""A z-buffer triangle rasterizer in numpy (the studio's renderer core).

Pixel centres are at integer coordinates (OpenCV's convention: pixel (row i, column j)
covers [j - 0.5, j + 0.5] x [i - 0.5, i + 0.5]). Vertices come already projected to
pixels (with lens distortion: triangles are a few pixels wide, so distorting vertices
and rasterizing straight edges is exact to a small fraction of a pixel) and with their
camera depth, so attributes are interpolated perspective-correctly.

1. cull faces behind the near plane and faces turned away from the camera
2. enumerate the (face, pixel) pairs inside each face's bounding box, in chunks
3. screen-space barycentrics by edge functions; keep the pixels inside the face
4. depth = 1 / sum(b_i / z_i); the nearest pair per pixel wins
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEAR = 0.05  # m
MAX_PAIRS = 4_000_000  # per chunk, bounds memory on large images


@dataclass
class Fragments:
    """The winning face per covered pixel."""

    pixel: np.ndarray  # (P,) int64 linear pixel index (row * width + column)
    face: np.ndarray  # (P,) int64 face index
    bary: np.ndarray  # (P, 3) perspective-correct barycentric weights of the face's vertices
    depth: np.ndarray  # (P,) camera depth, m


def rasterize(pix: np.ndarray, depth: np.ndarray, faces: np.ndarray, front: np.ndarray,
              size: tuple[int, int]) -> Fragments:
    """pix (N, 2) px, depth (N,) m, faces (F, 3), front (F,) bool (faces to draw), size (width, height)."""
    W, H = size
    # 1.
    keep = front & (depth[faces] > NEAR).all(axis=1)
    fidx = np.flatnonzero(keep)
    tri = pix[faces[fidx]].astype(np.float32)  # (F', 3, 2); float32: pixels, exact to ~1e-4 px
    lo = np.ceil(tri.min(axis=1) - 1e-9).astype(np.int64)
    hi = np.floor(tri.max(axis=1) + 1e-9).astype(np.int64)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, [W - 1, H - 1])
    w = hi[:, 0] - lo[:, 0] + 1
    h = hi[:, 1] - lo[:, 1] + 1
    ok = (w > 0) & (h > 0)
    fidx, tri, lo, w, h = fidx[ok], tri[ok], lo[ok], w[ok], h[ok]
    count = w * h
    # 2. faces grouped into chunks of about MAX_PAIRS pairs
    chunk = (np.cumsum(count) - count) // MAX_PAIRS
    edges = np.flatnonzero(np.diff(chunk)) + 1
    out = []
    for s, e in zip(np.r_[0, edges], np.r_[edges, len(fidx)]):
        if e > s:
            out.append(_chunk(fidx[s:e], tri[s:e], lo[s:e], w[s:e], count[s:e], faces, depth, W))
    if not out:
        z = np.zeros(0)
        return Fragments(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3)), z)
    pixel, face, bary, zbuf = (np.concatenate(a) for a in zip(*out))
    # 4. nearest per pixel
    order = np.lexsort((zbuf, pixel))
    first = np.ones(len(order), bool)
    first[1:] = pixel[order][1:] != pixel[order][:-1]
    win = order[first]
    return Fragments(pixel[win], face[win], bary[win], zbuf[win])


def _chunk(fidx, tri, lo, w, count, faces, depth, W):
    n = int(count.sum())
    which = np.repeat(np.arange(len(fidx)), count)  # (n,)
    local = np.arange(n) - np.repeat(np.cumsum(count) - count, count)
    wi = w[which]
    x = lo[which, 0] + local % wi
    y = lo[which, 1] + local // wi
    xf, yf = x.astype(np.float32), y.astype(np.float32)
    # 3. edge functions
    a, b, c = tri[which, 0], tri[which, 1], tri[which, 2]  # (n, 2)
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    area = np.where(np.abs(area) < 1e-12, 1e-12, area)
    w0 = ((b[:, 0] - xf) * (c[:, 1] - yf) - (b[:, 1] - yf) * (c[:, 0] - xf)) / area
    w1 = ((c[:, 0] - xf) * (a[:, 1] - yf) - (c[:, 1] - yf) * (a[:, 0] - xf)) / area
    w2 = 1.0 - w0 - w1
    inside = (w0 >= -1e-6) & (w1 >= -1e-6) & (w2 >= -1e-6)
    f = fidx[which[inside]]
    bs = np.stack([w0[inside], w1[inside], w2[inside]], axis=1).astype(np.float64)
    inv_z = 1.0 / depth[faces[f]]  # (m, 3)
    denom = (bs * inv_z).sum(axis=1)
    bary = bs * inv_z / denom[:, None]
    return y[inside] * W + x[inside], f, bary, 1.0 / denom
