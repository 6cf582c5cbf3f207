"""The steps of ``fitting.triangulate`` stated in numpy: the reference, the tested twin of the kernels.

Each function states one step on whole (C, points) arrays (``fitting.triangulate``'s
``CameraArrays``, ``Observations``, ``PointFit``; symbols and steps as in its docstring), in
the order the algorithm runs them. ``fitting/triangulate_kernels.py`` computes the same steps
compiled, and ``tests/test_triangulate.py`` holds each kernel to the function here that it
names: the same inliers and swaps, points within 1e-9 m on the same observations.
``triangulate_reference`` runs the sequence by these functions (``ENGINE``).
"""

from __future__ import annotations

import numpy as np

from data_schemas import camera_model
from data_schemas.joints3d import MIN_CAMERAS
from data_schemas.keypoints import N_HAND_JOINTS, N_KEYPOINTS
from fitting.triangulate import (
    BLOCK_FRAMES, INLIER_PX, IRLS_ITERATIONS, N_PAIRS, RANSAC_REFITS, SWAP_MIN_POINTS,
    UNDISTORT_MAX_ITERATIONS, UNDISTORT_TOL, CameraArrays, Engine, Observations, PointFit, camera_order, msac_cost,
    pairs_per_point, rescue,
)


# --- 1. undistortion (data_schemas.camera_model's numpy form), reprojection ------------------------

def undistort(cams: CameraArrays, px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distorted px (C, N) each -> x, y (C, N) normalized undistorted coordinates, float64.

    OpenCV's fixed-point inversion (cv2.undistortPoints), every camera at once, in float32
    until a step is under ``UNDISTORT_TOL`` (2-3 steps near the image centre): detections are
    float32 in keypoints2d.h5 (~2e-4 px at 4K), and float32 here adds about as much."""
    f32 = np.float32
    x, y = camera_model.undistort(px.astype(f32, copy=False), py.astype(f32, copy=False), cams.fx, cams.fy, cams.cx,
                                  cams.cy, cams.dist[:, None, :], UNDISTORT_MAX_ITERATIONS, UNDISTORT_TOL)
    return x.astype(np.float64), y.astype(np.float64)


def observations(cams: CameraArrays, keypoints: np.ndarray, min_score: float = 0.0) -> Observations:
    """keypoints (C, F, 42, 3) [x, y px, score] -> Observations of N = F x 42 points.

    A detection is an observation where its score is above ``min_score`` (and 0) and its
    x, y are finite; the others are not used."""
    C, F = keypoints.shape[:2]
    kp = keypoints.reshape(C, F * N_KEYPOINTS, 3)  # (C, N, 3)
    px, py, score = kp[..., 0], kp[..., 1], kp[..., 2]
    valid = (score > max(min_score, 0.0)) & np.isfinite(px) & np.isfinite(py)  # (C, N)
    x, y = undistort(cams, np.where(valid, px, 0), np.where(valid, py, 0))
    return Observations(x, y, np.where(valid, score, 0).astype(np.float64))


def camera_coordinates(cams: CameraArrays, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 3) points -> P^1 X~, P^2 X~, P^3 X~ (C, N) each, by one matrix product."""
    C = cams.n
    Y = cams.P[:, :3] @ X.T + cams.P[:, 3:]  # (3C, N)
    return Y[:C], Y[C:2 * C], Y[2 * C:]


def errors_px(cams: CameraArrays, obs: Observations, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Squared reprojection errors e^2 (C, N) in px^2, and 1/z (C, N); e^2 is inf behind the
    camera and where X is NaN, meaningless where not observed."""
    xc, yc, z = camera_coordinates(cams, X)
    iz = 1 / z
    ex = (obs.x - xc * iz) * cams.fx
    ey = (obs.y - yc * iz) * cams.fy
    return np.where(iz > 0, ex * ex + ey * ey, np.inf), iz  # behind the camera: no fit


# --- 2. the methods --------------------------------------------------------------------------------

def normal_matrix(cams: CameraArrays, obs: Observations, W: np.ndarray) -> np.ndarray:
    """(16, N) flattened ``M = A^T A``, camera c's rows scaled by sqrt(W[c]); W (C, N)."""
    C, N = W.shape
    feats = np.empty((4, C, N))  # W, W x, W y, W (x^2 + y^2)
    feats[0] = W
    np.multiply(W, obs.x, out=feats[1])
    np.multiply(W, obs.y, out=feats[2])
    np.multiply(feats[1], obs.x, out=feats[3])
    feats[3] += feats[2] * obs.y
    return cams.basis @ feats.reshape(4 * C, N)  # (16, 4C) @ (4C, N)


def solve_finite(M: np.ndarray) -> np.ndarray:
    """(16, N) normal matrices -> (N, 3) X with ``M[:3, :3] X = -M[:3, 3]``; NaN where singular
    (fewer than two weighted views, or parallel rays). Adjugate over determinant."""
    a, b, c, d, e, f = M[0], M[1], M[2], M[5], M[6], M[10]
    r0, r1, r2 = M[3], M[7], M[11]  # the right-hand side, negated below
    A00, A01, A02 = d * f - e * e, c * e - b * f, b * e - c * d
    A11, A12, A22 = a * f - c * c, b * c - a * e, a * d - b * b
    det = a * A00 + b * A01 + c * A02
    ok = det > 1e-12 * (a + d + f) ** 3  # relative to the scale of a 3 x 3 determinant
    minus_inv = np.where(ok, -1 / np.where(ok, det, 1.0), np.nan)
    return np.stack([A00 * r0 + A01 * r1 + A02 * r2,
                     A01 * r0 + A11 * r1 + A12 * r2,
                     A02 * r0 + A12 * r1 + A22 * r2], axis=1) * minus_inv[:, None]


def triangulate_dlt(cams: CameraArrays, obs: Observations) -> PointFit:
    """Score-weighted DLT: camera c's two rows scaled by its score; X~ = the smallest eigenvector
    of the (N, 4, 4) normal matrix (= the smallest right singular vector of A). Keeps every view."""
    valid = obs.valid
    M = normal_matrix(cams, obs, obs.score ** 2).T.reshape(-1, 4, 4)  # (N, 4, 4)
    M /= np.maximum(np.abs(M).max(axis=(1, 2)), 1e-300)[:, None, None]  # eigenvectors are scale-free
    _, V = np.linalg.eigh(M)  # eigenvalues ascending
    h = V[:, :, 0]  # (N, 4) homogeneous point
    with np.errstate(divide="ignore", invalid="ignore"):
        X = h[:, :3] / h[:, 3:]
    X[valid.sum(axis=0) < MIN_CAMERAS] = np.nan
    e2, _ = errors_px(cams, obs, X)
    return PointFit(X, valid & np.isfinite(X[:, 0]), e2)


def pair_indices(valid: np.ndarray, n_pairs: int = N_PAIRS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each point, ``n_pairs`` pairs of the cameras that see it: (N, K) camera indices a, b,
    and (N, K) bool, False for a point seen by fewer than 2 cameras.

    Cameras are taken in a fixed shuffled order (neighbours in a rig's order are close: narrow
    baselines). A point seen by V >= 2K cameras gets K disjoint pairs, so that one bad view
    spoils one pair; fewer get (i, i+1), (i, i+2), ... of its V cameras."""
    C, N = valid.shape
    order = camera_order(C)
    seen = valid[order].T  # (N, C)
    V = seen.sum(axis=1)  # (N,)
    n_pairs = pairs_per_point(V, n_pairs)
    _, cols = np.nonzero(seen)  # row-major: each point's cameras in turn
    start = np.cumsum(V) - V  # (N,) where each point's cameras begin in cols
    k = np.arange(n_pairs)
    Vk = np.maximum(V, 2)[:, None]  # (N, 1)
    disjoint = V[:, None] >= 2 * n_pairs
    i = np.where(disjoint, 2 * k, k % Vk)  # (N, K) rank among the point's cameras
    j = np.where(disjoint, 2 * k + 1, (k % Vk + 1 + (k // Vk) % (Vk - 1)) % Vk)
    ok = np.broadcast_to((V >= 2)[:, None], i.shape)
    if not len(cols):
        return i, j, ok

    def camera(rank: np.ndarray) -> np.ndarray:  # (N, K) rank -> camera index
        return order[cols[np.minimum(start[:, None] + rank, len(cols) - 1)]]

    return camera(i), camera(j), ok


def pair_points(cams: CameraArrays, a: np.ndarray, b: np.ndarray, xa: np.ndarray, ya: np.ndarray, xb: np.ndarray,
                yb: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Pairs of views of the same point, shape S: each triangulated at the midpoint of the two
    rays' closest points. ``a``, ``b`` camera indices broadcasting to S ((K, 1): the same pairs
    for every point); (xa, ya), (xb, yb) the two views' coordinates, S. Returns (3, *S), NaN
    where not ``ok`` or the rays are less than ~1 degree apart."""
    rays = []
    for cam, x, y in ((a, xa, ya), (b, xb, yb)):  # the world ray d = R^T (x, y, 1) from the centre o
        d = [cams.Rt[cam, i, 0] * x + cams.Rt[cam, i, 1] * y + cams.Rt[cam, i, 2] for i in range(3)]
        norm = 1 / np.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
        rays.append(([cams.center[cam, i] for i in range(3)], [di * norm for di in d]))
    (oa, da), (ob, db) = rays
    w0 = [oa[i] - ob[i] for i in range(3)]
    cos = da[0] * db[0] + da[1] * db[1] + da[2] * db[2]  # S
    pa = da[0] * w0[0] + da[1] * w0[1] + da[2] * w0[2]
    pb = db[0] * w0[0] + db[1] * w0[1] + db[2] * w0[2]
    sin2 = 1 - cos * cos
    den = np.where(ok & (sin2 > 3e-4), sin2, np.nan)  # NaN spreads to X
    lam, mu = (cos * pb - pa) / den, (pb - cos * pa) / den  # along da, db
    return np.stack([0.5 * (oa[i] + lam * da[i] + ob[i] + mu * db[i]) for i in range(3)])  # (3, *S)


def nan_median(values: np.ndarray, axis: int) -> np.ndarray:
    """The (lower) median along ``axis`` of the values not NaN; NaN where none. np.nanmedian's
    masked arrays cost 100x more on small arrays."""
    v = np.sort(values, axis=axis)  # NaN last
    middle = (np.maximum((~np.isnan(values)).sum(axis=axis, keepdims=True), 1) - 1) // 2
    return np.take_along_axis(v, middle, axis=axis).squeeze(axis)


def start_points(cams: CameraArrays, obs: Observations) -> np.ndarray:
    """A robust first estimate (N, 3): the median of the start pairs' triangulations (NaN for a
    point that none of them sees)."""
    a, b = cams.pairs  # (K,) each
    ok = (obs.score[a] > 0) & (obs.score[b] > 0)  # (K, N)
    X = pair_points(cams, a[:, None], b[:, None], obs.x[a], obs.y[a], obs.x[b], obs.y[b], ok)  # (3, K, N)
    return nan_median(X, axis=1).T  # coordinate-wise


def triangulate_irls(cams: CameraArrays, obs: Observations, inlier_px: float = INLIER_PX,
                     iterations: int = IRLS_ITERATIONS, start: np.ndarray | None = None) -> PointFit:
    """IRLS from ``start`` (default: ``start_points``): Tukey's biweight, whose cut-off is twice
    the threshold after the median start, then the threshold; the last iteration least squares
    on the inliers (weight 1 under the threshold, 0 beyond).

    The median start breaks down where most of a point's pairs hold a bad view (~30 % bad
    views); where IRLS then ends with no point or inliers in fewer than half the views,
    RANSAC's answer replaces it when its cost is lower."""
    valid = obs.valid
    t2 = inlier_px ** 2
    sf2 = obs.score * obs.score * (cams.f * cams.f)  # (C, N) s^2 f^2; 0 where not observed
    cutoffs = [inlier_px] * iterations
    if start is None:
        start = start_points(cams, obs)
        cutoffs[0] *= 2
    lost = np.isnan(start[:, 0])  # (N,) stays lost
    X = np.where(lost[:, None], 0.0, start)
    # 2a. IRLS: W = s^2 w(e) (f/z)^2
    for it, c in enumerate(cutoffs):
        e2, iz = errors_px(cams, obs, X)
        if it < len(cutoffs) - 1:  # Tukey: w(e) = (1 - e^2/c^2)^2 inside c, 0 beyond
            u = np.maximum(1 - e2 * (1 / (c * c)), 0)
            u *= iz
            W = u * u * sf2
        else:  # least squares on the inliers
            W = np.where(e2 < c * c, sf2 * (iz * iz), 0.0)
        X = solve_finite(normal_matrix(cams, obs, W))
        lost |= np.isnan(X[:, 0])
        X[lost] = 0.0
    e2, _ = errors_px(cams, obs, X)
    X[lost], e2[:, lost] = np.nan, np.nan
    fit = PointFit(X, valid & (e2 < t2), e2)
    # 2b. RANSAC where the start broke down
    n_valid = valid.sum(axis=0)
    weak = np.flatnonzero((n_valid >= MIN_CAMERAS) & (lost | (2 * fit.inliers.sum(axis=0) < n_valid)))
    return rescue(cams, obs, fit, weak, triangulate_ransac, inlier_px)


def triangulate_ransac(cams: CameraArrays, obs: Observations, inlier_px: float = INLIER_PX,
                       n_pairs: int = N_PAIRS, refits: int = RANSAC_REFITS) -> PointFit:
    """Per point, ``n_pairs`` pairs of the cameras that see it (``pair_indices``), each pair's
    point scored in every camera by MSAC's truncated cost; the best refitted by least squares
    on its inliers (weights s^2 (f/z)^2), ``refits`` times."""
    valid = obs.valid
    sf2 = obs.score * obs.score * (cams.f * cams.f)
    t2 = inlier_px ** 2
    # 2a. hypotheses and their cost
    a, b, ok = (v.T for v in pair_indices(valid, n_pairs))  # (K, N)
    n = np.arange(a.shape[1])
    H = pair_points(cams, a, b, obs.x[a, n], obs.y[a, n], obs.x[b, n], obs.y[b, n],
                    ok & valid[a, n] & valid[b, n])  # (3, K, N)
    cost = np.full(H.shape[1:], np.inf)  # (K, N)
    for k in range(H.shape[1]):
        hk = H[:, k].T  # (N, 3)
        found = np.isfinite(hk[:, 0])
        e2, _ = errors_px(cams, obs, np.where(found[:, None], hk, 0.0))
        cost[k] = np.where(found, msac_cost(obs, e2, t2), np.inf)
    best = np.argmin(cost, axis=0)  # (N,)
    X = np.take_along_axis(H, best[None, None], axis=1)[:, 0].T  # (N, 3)
    lost = np.isnan(X[:, 0])
    X[lost] = 0.0
    # 2b. refit on the inliers
    for _ in range(refits):
        e2, iz = errors_px(cams, obs, X)
        X = solve_finite(normal_matrix(cams, obs, np.where(e2 < t2, sf2 * (iz * iz), 0.0)))
        lost |= np.isnan(X[:, 0])
        X[lost] = 0.0
    e2, _ = errors_px(cams, obs, X)
    X[lost], e2[:, lost] = np.nan, np.nan
    fit = PointFit(X, valid & (e2 < t2), e2)
    fallback = lost & (valid.sum(axis=0) >= MIN_CAMERAS)  # every pair near-parallel
    if fallback.any():
        dlt = triangulate_dlt(cams, obs[fallback])
        fit.points[fallback], fit.inliers[:, fallback], fit.error2[:, fallback] = dlt.points, dlt.inliers, dlt.error2
    return fit


# --- 3. left/right swaps -------------------------------------------------------------------------

def find_swaps(cams: CameraArrays, obs: Observations, fit: PointFit, inlier_px: float = INLIER_PX) -> np.ndarray:
    """Views (frame, camera) whose two hands are exchanged: (F, C) bool, for N = F x 42 points.

    A detected point of a view is *comparable* when its joint and the other hand's same
    joint are both triangulated. Over a view's comparable points (at least
    ``SWAP_MIN_POINTS``), with errors as-is (against its own joint's projection) and
    exchanged (against the other hand's), the view is exchanged when

        median exchanged < threshold < median as-is,  and  median exchanged < median as-is / 2.

    A view with one hand in the wrong slot (the other block empty) is the same test on
    that block's points."""
    C, N = obs.score.shape
    F = N // N_KEYPOINTS
    t2 = inlier_px ** 2
    X = fit.points
    other = X.reshape(F, 2, N_HAND_JOINTS, 3)[:, ::-1].reshape(N, 3)  # the other hand's same joint
    comparable = obs.valid & np.isfinite(X[:, 0]) & np.isfinite(other[:, 0])  # (C, N)
    per_view = comparable.reshape(C, F, N_KEYPOINTS)
    n = per_view.sum(axis=2)  # (C, F)
    fits = (per_view & (fit.error2 < t2).reshape(C, F, N_KEYPOINTS)).sum(axis=2)
    c, f = np.nonzero((n >= SWAP_MIN_POINTS) & (2 * fits < n))  # candidates: median as-is above the threshold
    swapped = np.zeros((F, C), bool)
    if not c.size:
        return swapped
    # the candidates' 42 points against the other hand's projection
    rows = f[:, None] * N_KEYPOINTS + np.arange(N_KEYPOINTS)  # (V, 42)
    cc = c[:, None]  # (V, 1)
    Xc = np.einsum("vij,vkj->vki", cams.R[c], other[rows]) + cams.t[c][:, None]  # (V, 42, 3) camera frame
    ex = (obs.x[cc, rows] - Xc[..., 0] / Xc[..., 2]) * cams.fx[c]
    ey = (obs.y[cc, rows] - Xc[..., 1] / Xc[..., 2]) * cams.fy[c]
    cmp = comparable[cc, rows]
    med_as = nan_median(np.where(cmp, fit.error2[cc, rows], np.nan), axis=1)  # (V,) px^2
    med_ex = nan_median(np.where(cmp, ex * ex + ey * ey, np.nan), axis=1)
    swapped[f, c] = (med_ex < t2) & (med_as > t2) & (med_ex < med_as / 4)  # px^2: half the error
    return swapped


# --- 4. inliers, their count and mean error ----------------------------------------------------

def inlier_summary(fit: PointFit) -> tuple[np.ndarray, np.ndarray]:
    """(N,) mean px over the inlier views and (N,) their count; NaN and 0 where fewer than
    ``MIN_CAMERAS``, whose points and inliers are dropped from ``fit`` (in place)."""
    X, inl = fit.points, fit.inliers
    n = inl.sum(axis=0)  # (N,)
    few = n < MIN_CAMERAS
    X[few], inl[:, few] = np.nan, False
    d = np.sqrt(np.where(inl, fit.error2, 0.0))  # (C, N) px
    return np.where(few, np.nan, d.sum(axis=0) / np.maximum(n, 1)), np.where(few, 0, n)


ENGINE = Engine(observations, triangulate_dlt, triangulate_irls, triangulate_ransac, find_swaps, inlier_summary,
                BLOCK_FRAMES)
