"""The steps of ``fitting.triangulate``, compiled: numba kernels on its (C, points) arrays.

Each kernel computes what the numpy function named in its docstring computes (in
``fitting/triangulate_numpy.py``, the reference: its tested twin), but goes over the data once
where numpy makes a dozen passes over (C, points) arrays per step. Symbols as there.

Layout: the points are taken in chunks of ``CHUNK``; ``prange`` hands the chunks to numba's
threads (``NUMBA_NUM_THREADS``: the cores). In a chunk the cameras are the outer loop and the
points the inner one, so that the inner loop reads one camera's row of the chunk contiguously,
keeps the per-point sums in (k, CHUNK) arrays that stay in L1, and is the loop LLVM vectorises
(4 points per AVX instruction). The medians of the start go the same way, by a sorting network;
what does not vectorise (the 4 x 4 eigenvector, RANSAC's per-point pairs) loops over the points.
IRLS and RANSAC are one kernel, ``refine``: a start (the median of pairs, or MSAC's best pair),
then reweighted least squares steps.

Floating point: no fastmath, so each operation rounds as numpy's does, and sums over cameras run
in camera order, as numpy's reductions over axis 0. Numpy's normal matrix is a BLAS product that
sums in its own order, and the DLT's eigenvector is LAPACK's here a Jacobi iteration's: on the
same observations the points agree with the numpy statement to ~1e-15 relative (the DLT of
views with outliers, ill-conditioned: ~1e-9 m), not bit for bit. The undistortion is the camera
model's (``data_schemas.camera_model``: its numba form, the same operations as its numpy form), in
float32, but stops per chunk, not per block (values within 2e-7).

First call: numba compiles each kernel for its argument types (15-20 s in all on a slow core);
``cache=True`` keeps the machine code in ``fitting/__pycache__``, from where later processes
load it in ~0.5 s. numba checks only this file for changes: after an edit of
``camera_model.undistort_run``, which ``observe`` compiles in, delete ``fitting/__pycache__/*.nbi``.
The threading layer (workqueue) takes one parallel call at a time: call ``triangulate`` from one
thread of a process.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit, prange

from data_schemas import camera_model
from data_schemas.joints3d import MIN_CAMERAS
from data_schemas.keypoints import N_HAND_JOINTS, N_KEYPOINTS

CHUNK = 128  # points per chunk: the (9, CHUNK) sums and a camera's rows of the chunk stay in L1
JACOBI_SWEEPS = 30  # a 4 x 4 converges in ~5; the cap is for NaN input
KERNEL = dict(parallel=True, cache=True, error_model="numpy")  # numpy's error model: 1/0 = inf, no checks
HELPER = dict(cache=True, error_model="numpy")
undistort_run = camera_model.compiled(camera_model.undistort_run)  # the lens's inverse, numba's form


@njit(**HELPER)
def n_chunks(n):
    return (n + CHUNK - 1) // CHUNK


# --- 1. undistortion -------------------------------------------------------------------------------

@njit(**KERNEL)
def observe(px, py, s, threshold, fx, fy, cx, cy, dist, tol, max_iterations, x, y, score):
    """``observations`` + ``undistort``: detections px, py px, s score (C, N) -> x, y, score (C, N) float64.

    A detection is an observation where s > ``threshold`` (s's dtype, as numpy compares) and
    px, py are finite. fx, fy, cx, cy (C,) and dist (C, 8) are float32: OpenCV's fixed-point
    inversion (``data_schemas.camera_model.undistort_run``) runs in float32 as in ``undistort``, on
    a camera's chunk of detections at a time, until every step there is under ``tol`` (numpy: over
    the whole block; the values differ by < tol / 20)."""
    C, N = px.shape
    chunks = n_chunks(N)
    for job in prange(C * chunks):
        c, j0 = job // chunks, (job % chunks) * CHUNK
        m = min(N - j0, CHUNK)
        x0, y0 = np.empty(m, np.float32), np.empty(m, np.float32)
        for j in range(m):
            pxj, pyj, sj = px[c, j0 + j], py[c, j0 + j], s[c, j0 + j]
            ok = (sj > threshold) & np.isfinite(pxj) & np.isfinite(pyj)
            x0[j] = (np.float32(pxj if ok else 0) - cx[c]) / fx[c]
            y0[j] = (np.float32(pyj if ok else 0) - cy[c]) / fy[c]
            score[c, j0 + j] = np.float64(sj) if ok else 0.0
        xs, ys = np.empty(m, np.float32), np.empty(m, np.float32)
        undistort_run(x0, y0, dist[c], tol, max_iterations, xs, ys)
        for j in range(m):
            x[c, j0 + j] = xs[j]
            y[c, j0 + j] = ys[j]


# --- 2. the methods: shared pieces -----------------------------------------------------------------

@functools.cache
def sorting_network(n: int) -> np.ndarray:
    """(k, 2) index pairs (i, j), i < j: putting the smaller of v[i], v[j] first, pair after pair,
    sorts any n values (Batcher's odd-even merge sort: 63 pairs for 16). The same pairs for
    every point, so that a chunk's points are sorted side by side, vectorised."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return np.array(pairs, np.int64).reshape(-1, 2)


@njit(**HELPER)
def camera_ray(Rt, center, c):
    """Camera c's R^T (row-major) and centre: the 12 numbers ``pair_point`` takes for it."""
    return (Rt[c, 0, 0], Rt[c, 0, 1], Rt[c, 0, 2], Rt[c, 1, 0], Rt[c, 1, 1], Rt[c, 1, 2],
            Rt[c, 2, 0], Rt[c, 2, 1], Rt[c, 2, 2], center[c, 0], center[c, 1], center[c, 2])


@njit(**HELPER)
def pair_point(ca, cb, xa, ya, xb, yb, ok):
    """``pair_points`` for one pair of views in cameras ``ca``, ``cb`` (``camera_ray``'s): the midpoint of
    the rays' closest points (X, Y, Z); NaN where not ``ok`` or the rays are less than ~1 degree apart."""
    da0 = ca[0] * xa + ca[1] * ya + ca[2]  # the world ray d = R^T (x, y, 1) from the centre o
    da1 = ca[3] * xa + ca[4] * ya + ca[5]
    da2 = ca[6] * xa + ca[7] * ya + ca[8]
    norm = 1 / np.sqrt(da0 * da0 + da1 * da1 + da2 * da2)
    da0, da1, da2 = da0 * norm, da1 * norm, da2 * norm
    db0 = cb[0] * xb + cb[1] * yb + cb[2]
    db1 = cb[3] * xb + cb[4] * yb + cb[5]
    db2 = cb[6] * xb + cb[7] * yb + cb[8]
    norm = 1 / np.sqrt(db0 * db0 + db1 * db1 + db2 * db2)
    db0, db1, db2 = db0 * norm, db1 * norm, db2 * norm
    oa0, oa1, oa2, ob0, ob1, ob2 = ca[9], ca[10], ca[11], cb[9], cb[10], cb[11]
    w0, w1, w2 = oa0 - ob0, oa1 - ob1, oa2 - ob2
    cos = da0 * db0 + da1 * db1 + da2 * db2
    pa = da0 * w0 + da1 * w1 + da2 * w2
    pb = db0 * w0 + db1 * w1 + db2 * w2
    sin2 = 1 - cos * cos
    den = sin2 if ok and sin2 > 3e-4 else np.nan
    lam, mu = (cos * pb - pa) / den, (pb - cos * pa) / den
    return (0.5 * (oa0 + lam * da0 + ob0 + mu * db0), 0.5 * (oa1 + lam * da1 + ob1 + mu * db1),
            0.5 * (oa2 + lam * da2 + ob2 + mu * db2))


@njit(**HELPER)
def chunk_medians(H, network, X):
    """``nan_median`` over axis 1 of H (3, K, m) -> X (3, m), H destroyed: the lower median of each
    coordinate's values not NaN (NaN where none), all m points at once by the sorting network
    (``sorting_network(K)``), NaN sorted last as +inf."""
    K, m = H.shape[1], H.shape[2]
    count = np.empty(m, np.int64)
    for i in range(3):
        S = H[i]  # (K, m)
        count[:] = 0
        for k in range(K):
            for j in range(m):
                v = S[k, j]
                count[j] += not np.isnan(v)
                S[k, j] = np.inf if np.isnan(v) else v
        for q in range(network.shape[0]):
            lo, hi = S[network[q, 0]], S[network[q, 1]]
            for j in range(m):
                a, b = lo[j], hi[j]
                lo[j], hi[j] = (a, b) if a <= b else (b, a)
        for j in range(m):
            X[i, j] = S[(count[j] - 1) // 2, j] if count[j] else np.nan


@njit(**HELPER)
def lower_median(v, n):
    """``nan_median`` of v[:n] (reordered in place): the lower median of the values not NaN; NaN where
    none. Quickselect: the (k-1)//2-th smallest of the k values, without sorting them."""
    k = 0
    for i in range(n):  # the values not NaN to the front
        if not np.isnan(v[i]):
            v[k] = v[i]
            k += 1
    if k == 0:
        return np.nan
    target, lo, hi = (k - 1) // 2, 0, k - 1
    while lo < hi:  # v[lo:hi + 1] holds the target; partition it around its middle value (Hoare)
        pivot = v[(lo + hi) // 2]
        i, j = lo, hi
        while i <= j:
            while v[i] < pivot:
                i += 1
            while v[j] > pivot:
                j -= 1
            if i <= j:
                v[i], v[j] = v[j], v[i]
                i += 1
                j -= 1
        if target <= j:
            hi = j
        elif target >= i:
            lo = i
        else:  # between j and i: equal to the pivot
            return v[target]
    return v[target]


@njit(inline="always", **HELPER)
def camera_rows(P, c):
    """Camera c's projection matrix P[:, c] (3, 4) as twelve scalars, row by row."""
    return (P[0, c, 0], P[0, c, 1], P[0, c, 2], P[0, c, 3], P[1, c, 0], P[1, c, 1], P[1, c, 2], P[1, c, 3],
            P[2, c, 0], P[2, c, 1], P[2, c, 2], P[2, c, 3])


@njit(inline="always", **HELPER)
def error2_at(Pc, X0, X1, X2, xo, yo, fxc, fyc):
    """``errors_px``'s squared error of one view (rows Pc, focal lengths fxc, fyc) at X, and 1/z:
    (e^2, iz); e^2 = inf behind the camera (iz <= 0)."""
    P10, P11, P12, P13, P20, P21, P22, P23, P30, P31, P32, P33 = Pc
    iz = 1 / (P30 * X0 + P31 * X1 + P32 * X2 + P33)
    ex = (xo - (P10 * X0 + P11 * X1 + P12 * X2 + P13) * iz) * fxc
    ey = (yo - (P20 * X0 + P21 * X1 + P22 * X2 + P23) * iz) * fyc
    return (ex * ex + ey * ey if iz > 0 else np.inf), iz


@njit(inline="always", **HELPER)
def add_view(acc, j, W, xo, yo, Pc):
    """``normal_matrix``'s term of one view: M += W (a1 a1^T + a2 a2^T), a1 = x P^3 - P^1,
    a2 = y P^3 - P^2, into point j's acc[:9, j]: M's upper triangle less M33 (00 01 02 03 11 12 13 22 23),
    all that the 3 x 3 solve needs; the DLT adds M33 itself (here it would cost IRLS a fifth of its speed)."""
    P10, P11, P12, P13, P20, P21, P22, P23, P30, P31, P32, P33 = Pc
    a10, a11, a12, a13 = xo * P30 - P10, xo * P31 - P11, xo * P32 - P12, xo * P33 - P13
    a20, a21, a22, a23 = yo * P30 - P20, yo * P31 - P21, yo * P32 - P22, yo * P33 - P23
    acc[0, j] += W * (a10 * a10 + a20 * a20)
    acc[1, j] += W * (a10 * a11 + a20 * a21)
    acc[2, j] += W * (a10 * a12 + a20 * a22)
    acc[3, j] += W * (a10 * a13 + a20 * a23)
    acc[4, j] += W * (a11 * a11 + a21 * a21)
    acc[5, j] += W * (a11 * a12 + a21 * a22)
    acc[6, j] += W * (a11 * a13 + a21 * a23)
    acc[7, j] += W * (a12 * a12 + a22 * a22)
    acc[8, j] += W * (a12 * a13 + a22 * a23)


@njit(**HELPER)
def reweighted_step(P, f, fx, fy, x, y, score, j0, X, lost, c2, tukey, acc):
    """One step of ``triangulate_irls``'s loop (and ``triangulate_ransac``'s refit) on the chunk of points
    j0 : j0 + m, X (3, m) in place: ``errors_px`` at X, the weights W = s^2 w(e) (f/z)^2 (Tukey's
    biweight with the cut-off c, c2 = c^2, or 1 under c and 0 beyond), ``normal_matrix``, ``solve_finite``;
    ``lost`` (m,) |= no solution, and X = 0 there. acc: (9, m) scratch."""
    C = x.shape[0]
    m = X.shape[1]
    ic2 = 1 / c2
    acc[:] = 0.0
    for c in range(C):
        Pc = camera_rows(P, c)
        ff, fxc, fyc = f[c] * f[c], fx[c], fy[c]
        for j in range(m):
            xo, yo, s = x[c, j0 + j], y[c, j0 + j], score[c, j0 + j]
            e2, iz = error2_at(Pc, X[0, j], X[1, j], X[2, j], xo, yo, fxc, fyc)  # behind the camera: no fit
            sf2 = s * s * ff
            if tukey:  # w(e) = (1 - e^2/c^2)^2 inside c, 0 beyond
                u = 1 - e2 * ic2
                if u < 0:  # as np.maximum: NaN stays
                    u = 0.0
                u *= iz
                W = u * u * sf2
            else:  # least squares on the inliers
                W = sf2 * (iz * iz) if e2 < c2 else 0.0
            add_view(acc, j, W, xo, yo, Pc)
    for j in range(m):  # solve_finite: M[:3, :3] X = -M[:3, 3], adjugate over determinant
        a, b, c, d, e, f_ = acc[0, j], acc[1, j], acc[2, j], acc[4, j], acc[5, j], acc[7, j]
        r0, r1, r2 = acc[3, j], acc[6, j], acc[8, j]
        A00, A01, A02 = d * f_ - e * e, c * e - b * f_, b * e - c * d
        A11, A12, A22 = a * f_ - c * c, b * c - a * e, a * d - b * b
        det = a * A00 + b * A01 + c * A02
        trace = a + d + f_
        minus_inv = -1 / det if det > 1e-12 * (trace * trace * trace) else np.nan
        X0 = (A00 * r0 + A01 * r1 + A02 * r2) * minus_inv
        X1 = (A01 * r0 + A11 * r1 + A12 * r2) * minus_inv
        X2 = (A02 * r0 + A12 * r1 + A22 * r2) * minus_inv
        lost[j] = lost[j] or np.isnan(X0)
        X[0, j], X[1, j], X[2, j] = (0.0, 0.0, 0.0) if lost[j] else (X0, X1, X2)


@njit(**HELPER)
def final_errors(P, fx, fy, x, y, score, j0, X, lost, t2, points, error2, inliers, n_valid, n_inliers):
    """The end of ``triangulate_irls`` / ``triangulate_ransac`` on a chunk: ``errors_px`` at X into error2
    (C, N), points (N, 3) = X; NaN for the lost points; inliers: observed and e^2 < t^2.
    n_valid, n_inliers (m,): each point's observations and inliers."""
    C = x.shape[0]
    m = X.shape[1]
    n_valid[:] = 0
    n_inliers[:] = 0
    for c in range(C):
        Pc = camera_rows(P, c)
        fxc, fyc = fx[c], fy[c]
        for j in range(m):
            e2, _ = error2_at(Pc, X[0, j], X[1, j], X[2, j], x[c, j0 + j], y[c, j0 + j], fxc, fyc)
            e2 = np.nan if lost[j] else e2
            valid = score[c, j0 + j] > 0
            inlier = valid & (e2 < t2)
            error2[c, j0 + j] = e2
            inliers[c, j0 + j] = inlier
            n_valid[j] += valid
            n_inliers[j] += inlier
    for j in range(m):
        for i in range(3):
            points[j0 + j, i] = np.nan if lost[j] else X[i, j]


# --- 2. the methods --------------------------------------------------------------------------------

@njit(**HELPER)
def smallest_eigenvector(A, V):
    """The unit eigenvector (4,) of the symmetric A (4, 4)'s smallest eigenvalue, by cyclic Jacobi
    rotations (A is destroyed; V (4, 4) scratch). Each rotation zeroes A[p, q]; a sweep without one
    bigger than the rounding of A[p, p] A[q, q] ends it."""
    for i in range(4):
        for k in range(4):
            V[i, k] = 1.0 if i == k else 0.0
    for _ in range(JACOBI_SWEEPS):
        rotated = False
        for p in range(3):
            for q in range(p + 1, 4):
                apq = A[p, q]
                if not apq * apq > 1e-34 * abs(A[p, p] * A[q, q]) or apq == 0:
                    continue
                rotated = True
                theta = (A[q, q] - A[p, p]) / (2 * apq)
                t = 1 / (abs(theta) + np.sqrt(theta * theta + 1)) if abs(theta) < 1e150 else 0.5 / abs(theta)
                t = -t if theta < 0 else t
                c = 1 / np.sqrt(t * t + 1)
                s = t * c
                for k in range(4):  # A J
                    akp, akq = A[k, p], A[k, q]
                    A[k, p], A[k, q] = c * akp - s * akq, s * akp + c * akq
                for k in range(4):  # J^T A J
                    apk, aqk = A[p, k], A[q, k]
                    A[p, k], A[q, k] = c * apk - s * aqk, s * apk + c * aqk
                for k in range(4):  # V J
                    vkp, vkq = V[k, p], V[k, q]
                    V[k, p], V[k, q] = c * vkp - s * vkq, s * vkp + c * vkq
        if not rotated:
            break
    best = 0
    for i in range(1, 4):
        if A[i, i] < A[best, best]:
            best = i
    return V[:, best]


@njit(**KERNEL)
def dlt(P, fx, fy, x, y, score, points, error2, inliers):
    """``triangulate_dlt``: per point the score-weighted normal matrix M (W = s^2), scaled to max |M| = 1,
    its smallest eigenvector X~, X = X~[:3] / X~[3]; NaN where fewer than MIN_CAMERAS views. Every
    view counts as an inlier where there is a point."""
    C, N = x.shape
    for ch in prange(n_chunks(N)):
        j0 = ch * CHUNK
        m = min(N - j0, CHUNK)
        acc = np.zeros((10, m))  # M's upper triangle: 00 01 02 03 11 12 13 22 23 33
        views = np.zeros(m, np.int64)
        for c in range(C):
            Pc = camera_rows(P, c)
            for j in range(m):
                s = score[c, j0 + j]
                xo, yo, W = x[c, j0 + j], y[c, j0 + j], s * s
                add_view(acc, j, W, xo, yo, Pc)
                a13, a23 = xo * Pc[11] - Pc[3], yo * Pc[11] - Pc[7]
                acc[9, j] += W * (a13 * a13 + a23 * a23)
                views[j] += s > 0
        X = np.empty((3, m))
        lost = np.zeros(m, np.bool_)
        M = np.empty((4, 4))
        V = np.empty((4, 4))
        for j in range(m):
            k = 0
            for r in range(4):
                for q in range(r, 4):
                    M[r, q] = M[q, r] = acc[k, j]
                    k += 1
            scale = 1e-300
            for k in range(10):
                scale = max(scale, abs(acc[k, j]))
            for r in range(4):  # eigenvectors are scale-free
                for q in range(4):
                    M[r, q] /= scale
            h = smallest_eigenvector(M, V)
            for i in range(3):
                X[i, j] = h[i] / h[3] if views[j] >= MIN_CAMERAS else np.nan
            lost[j] = not np.isfinite(X[0, j])
        # errors_px at X: as final_errors, with X where it is not finite (inf, NaN: no inlier)
        for c in range(C):
            Pc = camera_rows(P, c)
            for j in range(m):
                e2, _ = error2_at(Pc, X[0, j], X[1, j], X[2, j], x[c, j0 + j], y[c, j0 + j], fx[c], fy[c])
                error2[c, j0 + j] = e2
                inliers[c, j0 + j] = score[c, j0 + j] > 0 and not lost[j]
        for j in range(m):
            for i in range(3):
                points[j0 + j, i] = X[i, j]


@njit(**HELPER)
def median_start(Rt, center, pairs, network, x, y, score, j0, X):
    """``start_points`` for the chunk of points j0 : j0 + m into X (3, m): the coordinate-wise median of
    the start pairs' (2, K) triangulations; ``network``: ``sorting_network(K)``."""
    K, m = pairs.shape[1], X.shape[1]
    H = np.empty((3, K, m))
    for k in range(K):
        a, b = pairs[0, k], pairs[1, k]
        ca, cb = camera_ray(Rt, center, a), camera_ray(Rt, center, b)
        for j in range(m):
            n = j0 + j
            H[0, k, j], H[1, k, j], H[2, k, j] = pair_point(
                ca, cb, x[a, n], y[a, n], x[b, n], y[b, n], (score[a, n] > 0) & (score[b, n] > 0))
    chunk_medians(H, network, X)


@njit(**HELPER)
def msac_start(P, Rt, center, fx, fy, order, n_pairs, x, y, score, t2, j0, X):
    """``triangulate_ransac``'s 2a. for the chunk of points j0 : j0 + m into X (3, m): per point ``n_pairs``
    pairs of the cameras that see it (``pair_indices``, cameras in ``order``), each pair's point
    scored by MSAC's cost sum_c s min(e^2, t^2); the first cheapest (NaN where none)."""
    C = x.shape[0]
    K, m = n_pairs, X.shape[1]
    H = np.empty((3, K, m))
    seen = np.empty(C, np.int64)
    for j in range(m):
        n = j0 + j
        V = 0
        for r in range(C):
            if score[order[r], n] > 0:
                seen[V] = order[r]
                V += 1
        Vk = max(V, 2)
        for k in range(K):
            if V >= 2 * K:  # disjoint pairs
                i, i2 = 2 * k, 2 * k + 1
            else:  # (i, i+1), (i, i+2), ...
                i, i2 = k % Vk, (k % Vk + 1 + (k // Vk) % (Vk - 1)) % Vk
            a, b = (seen[i], seen[i2]) if V >= 2 else (0, 0)
            H[0, k, j], H[1, k, j], H[2, k, j] = pair_point(
                camera_ray(Rt, center, a), camera_ray(Rt, center, b), x[a, n], y[a, n], x[b, n], y[b, n], V >= 2)
    cost = np.zeros((K, m))  # msac_cost at each hypothesis (not found: at the origin, then inf)
    for k in range(K):
        for c in range(C):
            Pc = camera_rows(P, c)
            fxc, fyc = fx[c], fy[c]
            for j in range(m):
                X0, X1, X2 = H[0, k, j], H[1, k, j], H[2, k, j]
                X0, X1, X2 = (X0, X1, X2) if np.isfinite(X0) else (0.0, 0.0, 0.0)
                e2, _ = error2_at(Pc, X0, X1, X2, x[c, j0 + j], y[c, j0 + j], fxc, fyc)
                cost[k, j] += score[c, j0 + j] * (e2 if e2 < t2 else t2)  # fmin: NaN counts as t^2
    for j in range(m):  # argmin
        best, lowest = 0, np.inf
        for k in range(K):
            ck = cost[k, j] if np.isfinite(H[0, k, j]) else np.inf
            if ck < lowest:
                best, lowest = k, ck
        for i in range(3):
            X[i, j] = H[i, best, j]


START_GIVEN, START_MEDIAN, START_MSAC = 0, 1, 2  # refine's starts


@njit(**KERNEL)
def refine(P, Rt, center, f, fx, fy, x, y, score, start_from, start, pairs, network, order, n_pairs, c2s, tukey, t2,
           points, error2, inliers, n_valid, n_inliers):
    """``triangulate_irls`` and ``triangulate_ransac`` less what they hand to other methods for a few
    points: a start, then one ``reweighted_step`` per squared cut-off in ``c2s`` (Tukey's where
    ``tukey``, else least squares on the inliers), then the errors.

    The start, by ``start_from``: START_GIVEN ``start`` (N, 3); START_MEDIAN ``median_start`` of
    ``pairs`` (IRLS); START_MSAC ``msac_start`` with ``n_pairs`` per point (RANSAC). Out: points,
    error2, inliers, and per point n_valid, n_inliers (N,): its observations and inliers."""
    N = x.shape[1]
    for ch in prange(n_chunks(N)):
        j0 = ch * CHUNK
        m = min(N - j0, CHUNK)
        X = np.empty((3, m))
        if start_from == START_MEDIAN:
            median_start(Rt, center, pairs, network, x, y, score, j0, X)
        elif start_from == START_MSAC:
            msac_start(P, Rt, center, fx, fy, order, n_pairs, x, y, score, t2, j0, X)
        else:
            for j in range(m):
                X[0, j], X[1, j], X[2, j] = start[j0 + j, 0], start[j0 + j, 1], start[j0 + j, 2]
        lost = np.empty(m, np.bool_)  # stays lost
        for j in range(m):
            lost[j] = np.isnan(X[0, j])
            if lost[j]:
                X[0, j], X[1, j], X[2, j] = 0.0, 0.0, 0.0
        acc = np.empty((9, m))
        for it in range(len(c2s)):
            reweighted_step(P, f, fx, fy, x, y, score, j0, X, lost, c2s[it], tukey[it], acc)
        final_errors(P, fx, fy, x, y, score, j0, X, lost, t2, points, error2, inliers, n_valid[j0:j0 + m],
                     n_inliers[j0:j0 + m])


# --- 3. left/right swaps -------------------------------------------------------------------------

@njit(**KERNEL)
def swaps(P, fx, fy, x, y, score, points, error2, t2, min_points, swapped):
    """``find_swaps``: swapped (F, C) = the views whose comparable points (at least ``min_points``) have
    median exchanged error < t < median as-is error, and the exchanged under half the as-is."""
    C, N = x.shape
    for fr in prange(N // N_KEYPOINTS):
        p0 = fr * N_KEYPOINTS
        as_is = np.empty(N_KEYPOINTS)
        exchanged = np.empty(N_KEYPOINTS)
        comparable = np.empty(N_KEYPOINTS, np.bool_)
        for p in range(N_KEYPOINTS):
            other = p0 + (p + N_HAND_JOINTS) % N_KEYPOINTS  # the other hand's same joint
            comparable[p] = np.isfinite(points[p0 + p, 0]) and np.isfinite(points[other, 0])
        for c in range(C):
            swapped[fr, c] = False
            n, fits = 0, 0
            for p in range(N_KEYPOINTS):
                if comparable[p] and score[c, p0 + p] > 0:
                    n += 1
                    fits += error2[c, p0 + p] < t2
            if n < min_points or not 2 * fits < n:  # candidates: median as-is above the threshold
                continue
            # the lower median exchanged < t needs (n - 1) // 2 + 1 exchanged errors under t: stop when
            # too few can be (NaN errors, which the median leaves out, turn that off)
            need = (n - 1) // 2 + 1
            k, under, nan = 0, 0, False
            for p in range(N_KEYPOINTS):  # against the other hand's projection
                if comparable[p] and score[c, p0 + p] > 0:
                    other = p0 + (p + N_HAND_JOINTS) % N_KEYPOINTS
                    X0, X1, X2 = points[other, 0], points[other, 1], points[other, 2]
                    xc = P[0, c, 0] * X0 + P[0, c, 1] * X1 + P[0, c, 2] * X2 + P[0, c, 3]
                    yc = P[1, c, 0] * X0 + P[1, c, 1] * X1 + P[1, c, 2] * X2 + P[1, c, 3]
                    z = P[2, c, 0] * X0 + P[2, c, 1] * X1 + P[2, c, 2] * X2 + P[2, c, 3]
                    ex = (x[c, p0 + p] - xc / z) * fx[c]
                    ey = (y[c, p0 + p] - yc / z) * fy[c]
                    e2 = ex * ex + ey * ey
                    as_is[k], exchanged[k] = error2[c, p0 + p], e2
                    k += 1
                    under += e2 < t2
                    nan |= np.isnan(e2)
                    if not nan and under + n - k < need:
                        break
            if not nan and under < need:
                continue
            med_as, med_ex = lower_median(as_is, k), lower_median(exchanged, k)
            swapped[fr, c] = med_ex < t2 and med_as > t2 and med_ex < med_as / 4  # px^2: half the error


# --- 4. inliers, their count and mean error ----------------------------------------------------------

@njit(**KERNEL)
def summarize(points, inliers, error2, n_cameras, error):
    """Step 4 of ``triangulate`` in place: points and inliers dropped where fewer than MIN_CAMERAS inliers;
    n_cameras (N,) and error (N,), the mean px over the inliers (NaN there)."""
    C, N = inliers.shape
    for ch in prange(n_chunks(N)):
        j0 = ch * CHUNK
        m = min(N - j0, CHUNK)
        n = np.zeros(m, np.int64)
        d = np.zeros(m)
        for c in range(C):
            for j in range(m):
                inl = inliers[c, j0 + j]
                n[j] += inl
                d[j] += np.sqrt(error2[c, j0 + j]) if inl else 0.0
        for j in range(m):
            few = n[j] < MIN_CAMERAS
            error[j0 + j] = np.nan if few else d[j] / max(n[j], 1)
            n_cameras[j0 + j] = 0 if few else n[j]
            if few:
                points[j0 + j, 0], points[j0 + j, 1], points[j0 + j, 2] = np.nan, np.nan, np.nan
                for c in range(C):
                    inliers[c, j0 + j] = False
