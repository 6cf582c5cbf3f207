"""Checks on triangle meshes: self-intersection (edge-triangle crossings)."""

from __future__ import annotations

import numpy as np


def unique_edges(faces: np.ndarray) -> np.ndarray:
    """(E, 2) sorted vertex pairs of every edge."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.unique(np.sort(e, axis=1), axis=0)


def self_intersections(vertices: np.ndarray, faces: np.ndarray, chunk: int = 128) -> np.ndarray:
    """(K, 2) pairs (edge index, face index) where a mesh edge crosses a triangle it does not touch.

    Moller-Trumbore segment test, after an axis-aligned bounding-box filter. An empty result
    means the surface does not pass through itself.
    """
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    edges = unique_edges(f)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    tri_lo, tri_hi = np.minimum(np.minimum(a, b), c), np.maximum(np.maximum(a, b), c)
    e1, e2 = b - a, c - a
    hits = []
    for s in range(0, len(edges), chunk):
        E = edges[s:s + chunk]
        p, q = v[E[:, 0]], v[E[:, 1]]
        lo, hi = np.minimum(p, q), np.maximum(p, q)
        box = np.all((lo[:, None] <= tri_hi[None]) & (hi[:, None] >= tri_lo[None]), axis=2)  # (e, F)
        shares = (f[None, :, :, None] == E[:, None, None, :]).any(axis=(2, 3))
        ei, fi = np.nonzero(box & ~shares)
        if len(ei) == 0:
            continue
        d = q[ei] - p[ei]
        h = np.cross(d, e2[fi])
        det = np.einsum("ij,ij->i", e1[fi], h)
        ok = np.abs(det) > 1e-18
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        sv = p[ei] - a[fi]
        u = inv * np.einsum("ij,ij->i", sv, h)
        qv = np.cross(sv, e1[fi])
        w = inv * np.einsum("ij,ij->i", d, qv)
        t = inv * np.einsum("ij,ij->i", e2[fi], qv)
        cross = ok & (u >= 0) & (w >= 0) & (u + w <= 1) & (t >= 0) & (t <= 1)
        hits.append(np.stack([ei[cross] + s, fi[cross]], axis=1))
    return np.concatenate(hits) if hits else np.zeros((0, 2), np.int64)
