"""Robust multi-camera triangulation: 2D keypoints (C, F, 42) -> 3D joints (F, 42), vectorised.

Symbols (Hartley & Zisserman, *Multiple View Geometry*, 12.2)::

    x_cn = (x, y)     detection of point n in camera c, undistorted to normalized coordinates
    P_c = [R_c | t_c] (3, 4) camera c for normalized coordinates; P^1 P^2 P^3 its rows
    s_cn              the detection's score; 0 = not an observation
    X_n, X~ = (X, 1)  the 3D point, metres
    z_cn = P^3 X~     its depth in camera c
    e_cn              reprojection error, px: f_c |x_cn - (P^1 X~, P^2 X~) / z_cn|

DLT: camera c gives two rows ``a1 = x P^3 - P^1``, ``a2 = y P^3 - P^2`` with ``a . X~ = 0``
for a perfect detection; weighted and stacked they are ``A`` (2C, 4), and X~ is the
smallest right singular vector of A = the smallest eigenvector of ``M = A^T A`` (4, 4).
``M = sum_c W_c (a1 a1^T + a2 a2^T)`` is linear in each camera's features
``(W, W x, W y, W (x^2 + y^2))``, so for N points it is one matrix product
``(16, 4C) @ (4C, N)`` (``CameraArrays.basis``), with no (N, 2C, 4) array.

Since ``a1 . X~ = z (x - P^1 X~ / z)``, the weights ``W = s^2 w(e) (f / z)^2`` and the solve
``M[:3, :3] X = -M[:3, 3]`` (the 4th coordinate fixed to 1: the points are finite) are
one step of iteratively reweighted least squares (IRLS) on ``sum_c s^2 rho(e_cn)``, with
``w = rho'(e) / e`` Tukey's biweight: 0 beyond its cut-off, the inlier threshold.

Arrays are (cameras, points); a sequence goes through in blocks of frames (``triangulate_with``):

1. undistort every detection once, all cameras at once (``observations``)
2. triangulate with one of ``METHODS``:
   ``dlt``     score-weighted DLT over every view (``triangulate_dlt``)
   ``irls``    from the median of camera-pair triangulations, IRLS (``triangulate_irls``);
               RANSAC for the few points where that start broke down
   ``ransac``  camera-pair hypotheses, each scored in every camera by the truncated cost
               sum_c s min(e^2, t^2) (MSAC), the best refitted on its inliers
               (``triangulate_ransac``)
   ``robust``  = ``ROBUST``: IRLS. On the 50-camera dome (``bench/triangulation.py``) it
               matches RANSAC's error with 5 % outliers and 1 % swapped views (0.18 mm) at
               2-2.5x its speed, and beats it at 30 % outliers (worst joint ~2 mm, RANSAC's
               12 pairs miss a clean one for a few joints: ~0.5 m off)
3. left/right swaps: views (camera, frame) whose detections fit the other hand's
   projection far better than their own get their two 21-point blocks exchanged, and
   those frames are triangulated again (``find_swaps``)
4. inliers (error under the threshold; every view for ``dlt``), their count, and their
   mean error; NaN where fewer than ``MIN_CAMERAS`` views are inliers (``inlier_summary``)

Errors are in px of the undistorted image (f |x - projection| in normalized coordinates):
the inlier test's measure, within ~1 % of the distorted image's where the hands are.

Two executions of the same steps (``Engine``), on the arrays defined here: the numpy functions
of ``fitting/triangulate_numpy.py`` (the names above are theirs) state the algorithm on whole
(C, points) arrays and are the reference (``triangulate_reference``, blocks of ``BLOCK_FRAMES``
so that a block's arrays stay in the CPU cache); ``triangulate`` runs them compiled
(``fitting/triangulate_kernels.py``: numba, per point a loop over its cameras, on every core;
~8-10x faster on the 50-camera dome), through the ``*_compiled`` functions below. The tests
hold the kernels to the numpy functions, their tested twin:
the same inliers and swaps, points within 1e-9 m on the same observations (1e-7 m end to end:
the float32 undistortion stops per chunk). Their first call in a fresh checkout compiles them
(~15-20 s); numba's cache in ``fitting/__pycache__`` makes later processes load them in ~0.5 s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np

from data_schemas.calibration import CameraRig
from data_schemas.joints3d import MIN_CAMERAS
from data_schemas.keypoints import N_HAND_JOINTS, N_KEYPOINTS
from fitting import triangulate_kernels as kernels

Method = Literal["robust", "dlt", "irls", "ransac"]
METHODS = ("robust", "dlt", "irls", "ransac")
ROBUST = "irls"  # what method="robust" runs

INLIER_PX = 15.0  # default inlier threshold, px
START_PAIRS = 16  # camera pairs whose triangulations' median starts IRLS: the same for every point
N_PAIRS = 12  # camera pairs per point among those that see it: RANSAC's hypotheses
RESCUE_PAIRS = 48  # RANSAC's hypotheses where IRLS's start broke down: few points, more pairs
MIN_PAIR_ANGLE_DEG = 15.0  # start pairs' optical axes are at least this far from (anti)parallel
IRLS_ITERATIONS = 2  # Tukey from the median start, then least squares on the inliers; more change nothing
RANSAC_REFITS = 2
# 6 frames = 252 points: a block's (C, points) arrays stay in cache, and OpenBLAS runs the
# (16, 4C) @ (4C, points) product in one thread (from ~500 points it starts threads, which cost
# 100x more than they give on a shared machine)
BLOCK_FRAMES = 6
COMPILED_BLOCK_FRAMES = 64  # the kernels keep a chunk's data in cache themselves; at 64 frames the allocator reuses
# a block's (C, points) arrays (~1 MB each at 50 cameras) for the next instead of mapping them anew (page faults)
SWAP_MIN_POINTS = 4  # a view's swap test needs this many comparable points
UNDISTORT_MAX_ITERATIONS = 20
UNDISTORT_TOL = 1e-6  # normalized units; the error left is ~(contraction <= 0.05) x step: float32's resolution


@dataclass
class CameraArrays:
    """A rig's C cameras stacked for work on (C, points) arrays; (C, 1) columns broadcast."""

    names: list[str]
    fx: np.ndarray  # (C, 1) px
    fy: np.ndarray  # (C, 1)
    cx: np.ndarray  # (C, 1) px
    cy: np.ndarray  # (C, 1)
    dist: np.ndarray  # (C, 8) k1 k2 p1 p2 k3 k4 k5 k6
    R: np.ndarray  # (C, 3, 3) world -> camera
    Rt: np.ndarray  # (C, 3, 3) camera -> world (R^T)
    t: np.ndarray  # (C, 3)
    center: np.ndarray  # (C, 3) camera centres, world
    P: np.ndarray  # (3C, 4): P @ X~ = [P^1 X~ of every camera; P^2 X~ ...; P^3 X~ ...]
    basis: np.ndarray  # (16, 4C): basis @ [W; W x; W y; W (x^2 + y^2)] = M, flattened
    pairs: np.ndarray  # (2, K) camera indices a, b of the start pairs (``start_pairs``)

    @property
    def n(self) -> int:
        return len(self.names)

    @property
    def f(self) -> np.ndarray:  # (C, 1) mean focal length, px per normalized unit
        return 0.5 * (self.fx + self.fy)


def camera_arrays(rig: CameraRig) -> CameraArrays:
    C = len(rig)
    R = np.stack([c.R for c in rig.cameras])  # (C, 3, 3)
    t = np.stack([c.translation for c in rig.cameras])  # (C, 3)
    P = np.concatenate([R, t[:, :, None]], axis=2)  # (C, 3, 4)
    P1, P2, P3 = P[:, 0], P[:, 1], P[:, 2]  # (C, 4) each

    def sym(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # (C, 4, 4): a b^T + b a^T
        return np.einsum("ci,cj->cij", a, b) + np.einsum("ci,cj->cij", b, a)

    B = np.stack([0.5 * (sym(P1, P1) + sym(P2, P2)),  # times W
                  -sym(P3, P1),  # times W x
                  -sym(P3, P2),  # times W y
                  0.5 * sym(P3, P3)])  # times W (x^2 + y^2); (4, C, 4, 4)
    dist = np.zeros((C, 8))
    for i, c in enumerate(rig.cameras):
        dist[i, : c.distortions.size] = c.distortions
    K = np.stack([c.matrix for c in rig.cameras])  # (C, 3, 3)
    return CameraArrays(
        names=rig.names, fx=K[:, 0, 0:1], fy=K[:, 1, 1:2], cx=K[:, 0, 2:3], cy=K[:, 1, 2:3],
        dist=dist, R=R, Rt=R.transpose(0, 2, 1).copy(), t=t,
        center=np.einsum("cji,cj->ci", R, -t),  # -R^T t
        P=P.transpose(1, 0, 2).reshape(3 * C, 4),  # (3, C, 4) -> (3C, 4)
        basis=B.reshape(4 * C, 16).T,  # (4, C, 4, 4) -> (4C, 16) -> (16, 4C)
        pairs=start_pairs(R),
    )


def start_pairs(R: np.ndarray, n_pairs: int = START_PAIRS) -> np.ndarray:
    """(2, K) camera pairs for the start: every pair of a small rig; else K pairs in near-disjoint
    rounds (a camera in round r only when every camera was in r - 1), shuffled with a fixed seed,
    so that one bad view spoils few pairs. Pairs with (anti)parallel optical axes only if
    there are no others: their rays meet at grazing angles."""
    C = len(R)
    a, b = np.triu_indices(C, 1)
    cos = np.abs(np.einsum("ki,ki->k", R[a, 2], R[b, 2]))  # optical axes: the rows R[2]
    wide = cos < np.cos(np.deg2rad(MIN_PAIR_ANGLE_DEG))
    if wide.any():
        a, b = a[wide], b[wide]
    if len(a) <= n_pairs:
        return np.stack([a, b])
    shuffle = np.random.default_rng(0).permutation(len(a))
    a, b = a[shuffle], b[shuffle]
    used = np.zeros(C, int)
    taken = np.zeros(len(a), bool)
    for r in range(1, n_pairs + 1):  # rounds
        for k in np.flatnonzero(~taken):
            if used[a[k]] < r and used[b[k]] < r:
                taken[k] = True
                used[a[k]] += 1
                used[b[k]] += 1
                if taken.sum() == n_pairs:
                    return np.stack([a[taken], b[taken]])
    return np.stack([a[taken], b[taken]])


@dataclass
class Observations:
    """N points' detections in C cameras: (C, N) arrays; score 0 where not observed (x, y finite there)."""

    x: np.ndarray  # (C, N) normalized undistorted coordinates
    y: np.ndarray  # (C, N)
    score: np.ndarray  # (C, N) detection score; 0 = not an observation

    @property
    def valid(self) -> np.ndarray:  # (C, N) bool
        return self.score > 0

    def __getitem__(self, index: np.ndarray) -> "Observations":  # a subset of the points: indices or a mask (N,)
        index = np.flatnonzero(index) if index.dtype == bool else index
        return Observations(*(np.take(a, index, axis=1) for a in (self.x, self.y, self.score)))  # (C, n) C-ordered

    def frames(self, frames: np.ndarray) -> "Observations":  # the 42 points of each of these frames (f,), a copy
        C = self.score.shape[0]
        return Observations(*(np.take(a.reshape(C, -1, N_KEYPOINTS), frames, axis=1).reshape(C, -1)
                              for a in (self.x, self.y, self.score)))


@dataclass
class PointFit:
    """What a method returns for N points seen by C cameras."""

    points: np.ndarray  # (N, 3) m; NaN where it found none
    inliers: np.ndarray  # (C, N) bool: the views it kept
    error2: np.ndarray  # (C, N) squared reprojection error at ``points``, px^2 of the undistorted image

    def frame_points(self, frames: np.ndarray) -> np.ndarray:  # (f x 42, 3) the points of these frames (f,)
        return self.points.reshape(-1, N_KEYPOINTS, 3)[frames].reshape(-1, 3)

    def put_frames(self, frames: np.ndarray, fit: "PointFit") -> None:  # these frames' points := fit's (f x 42)
        C = self.inliers.shape[0]
        self.points.reshape(-1, N_KEYPOINTS, 3)[frames] = fit.points.reshape(-1, N_KEYPOINTS, 3)
        for a, b in ((self.inliers, fit.inliers), (self.error2, fit.error2)):
            a.reshape(C, -1, N_KEYPOINTS)[:, frames] = b.reshape(C, -1, N_KEYPOINTS)


@dataclass
class Triangulation:
    """A sequence triangulated: F frames, C cameras, 42 points (left 21 then right 21)."""

    joints: np.ndarray  # (F, 42, 3) metres; NaN where n_cameras < 2
    reproj_error: np.ndarray  # (F, 42) mean px over the inlier views; NaN where n_cameras < 2
    n_cameras: np.ndarray  # (F, 42) int: inlier views
    inliers: np.ndarray  # (C, F, 42) bool: the view supports the point
    swapped: np.ndarray  # (F, C) bool: the view's two hands were exchanged before the final triangulation
    method: str  # the method that ran: "irls", "ransac" or "dlt"


# --- pieces both executions use ------------------------------------------------------------------

def camera_order(n_cameras: int) -> np.ndarray:
    """RANSAC's fixed shuffled order of the cameras (neighbours in a rig's order are close: narrow baselines)."""
    return np.random.default_rng(0).permutation(n_cameras)


def pairs_per_point(views: np.ndarray, n_pairs: int = N_PAIRS) -> int:
    """``n_pairs``, but no more than the most pairs any point has (``views`` (N,): cameras that see it)."""
    return int(min(n_pairs, max(1, (views * (views - 1) // 2).max(initial=0))))


def msac_cost(obs: Observations, e2: np.ndarray, t2: float) -> np.ndarray:
    """(N,) truncated cost sum_c s min(e^2, t^2): inliers by their error, the rest by t^2."""
    return (obs.score * np.fmin(e2, t2)).sum(axis=0)  # fmin: NaN (no point) counts as t^2


def rescue(cams: CameraArrays, obs: Observations, fit: PointFit, weak: np.ndarray, ransac: Callable[..., PointFit],
           inlier_px: float) -> PointFit:
    """IRLS's step 2b: RANSAC (``ransac``: the numpy function or the kernels') on the points ``weak``
    (n,), where IRLS's start broke down; its answer replaces ``fit``'s where its MSAC cost is lower."""
    if weak.size:
        sub = obs[weak]
        alt = ransac(cams, sub, inlier_px, n_pairs=RESCUE_PAIRS)
        t2 = inlier_px ** 2
        better = msac_cost(sub, alt.error2, t2) < msac_cost(sub, fit.error2[:, weak], t2)
        w = weak[better]
        fit.points[w], fit.inliers[:, w], fit.error2[:, w] = alt.points[better], alt.inliers[:, better], \
            alt.error2[:, better]
    return fit


def exchange_hands(obs: Observations, swapped: np.ndarray) -> Observations:
    """``obs`` with the hands' 21-point blocks exchanged in the views ``swapped`` (F, C), in place."""
    C, N = obs.score.shape
    c, f = np.nonzero(swapped.T)  # the views
    for a in (obs.x, obs.y, obs.score):
        blocks = a.reshape(C, N // N_KEYPOINTS, 2, N_HAND_JOINTS)  # (C, F, hand, joint), a view
        blocks[c, f] = blocks[c, f, ::-1]
    return obs


# --- the steps compiled (fitting/triangulate_kernels.py) ------------------------------------------
# What ``triangulate`` runs: each kernel goes over a point's cameras once, on every core. The
# numpy functions of fitting/triangulate_numpy.py state the algorithm; the tests hold the kernels to them.

def column(a: np.ndarray) -> np.ndarray:  # (C, 1) -> (C,) contiguous, as the kernels take
    return np.ascontiguousarray(a[:, 0])


def rows_by_camera(cams: CameraArrays) -> np.ndarray:  # (3C, 4) -> (3, C, 4): [r, c] = camera c's P^(r+1)
    return cams.P.reshape(3, cams.n, 4)


def observations_compiled(cams: CameraArrays, keypoints: np.ndarray, min_score: float = 0.0) -> Observations:
    """``observations``: keypoints (C, F, 42, 3) -> Observations of N = F x 42 points."""
    C, F = keypoints.shape[:2]
    kp = keypoints.reshape(C, F * N_KEYPOINTS, 3)  # (C, N, 3)
    if kp.dtype not in (np.float32, np.float64):
        kp = kp.astype(np.float64)
    x, y, score = (np.empty(kp.shape[:2]) for _ in range(3))
    f32 = np.float32
    # (C, N) views with a stride of 3: the kernel is compiled once per dtype, whatever the layout
    kernels.observe(kp[..., 0], kp[..., 1], kp[..., 2], kp.dtype.type(max(min_score, 0.0)),
                    column(cams.fx).astype(f32), column(cams.fy).astype(f32), column(cams.cx).astype(f32),
                    column(cams.cy).astype(f32), cams.dist.astype(f32), f32(UNDISTORT_TOL), UNDISTORT_MAX_ITERATIONS,
                    x, y, score)
    return Observations(x, y, score)


def empty_fit(n_cameras: int, n_points: int) -> PointFit:
    return PointFit(np.empty((n_points, 3)), np.empty((n_cameras, n_points), bool), np.empty((n_cameras, n_points)))


def triangulate_dlt_compiled(cams: CameraArrays, obs: Observations) -> PointFit:
    """``triangulate_dlt``."""
    fit = empty_fit(*obs.score.shape)
    kernels.dlt(rows_by_camera(cams), column(cams.fx), column(cams.fy), obs.x, obs.y, obs.score, fit.points,
                fit.error2, fit.inliers)
    return fit


def triangulate_irls_compiled(cams: CameraArrays, obs: Observations, inlier_px: float = INLIER_PX,
                              iterations: int = IRLS_ITERATIONS, start: np.ndarray | None = None) -> PointFit:
    """``triangulate_irls``: ``kernels.refine`` from the median start (or ``start``), then RANSAC's
    rescue for the points whose start broke down."""
    C, N = obs.score.shape
    t2 = inlier_px ** 2
    cutoffs = [inlier_px] * iterations
    if start is None:
        cutoffs[0] *= 2
    fit, n_valid, n_inliers = empty_fit(C, N), np.empty(N, np.int64), np.empty(N, np.int64)
    kernels.refine(rows_by_camera(cams), cams.Rt, cams.center, column(cams.f), column(cams.fx), column(cams.fy),
                   obs.x, obs.y, obs.score,
                   start_from=kernels.START_MEDIAN if start is None else kernels.START_GIVEN,
                   start=np.empty((0, 3)) if start is None else np.ascontiguousarray(start, np.float64),
                   pairs=cams.pairs, network=kernels.sorting_network(cams.pairs.shape[1]),
                   order=np.empty(0, np.int64), n_pairs=0,  # RANSAC's
                   c2s=np.array([c * c for c in cutoffs]), tukey=np.arange(iterations) < iterations - 1, t2=t2,
                   points=fit.points, error2=fit.error2, inliers=fit.inliers, n_valid=n_valid, n_inliers=n_inliers)
    # 2b. RANSAC where the start broke down
    weak = np.flatnonzero((n_valid >= MIN_CAMERAS) & (np.isnan(fit.points[:, 0]) | (2 * n_inliers < n_valid)))
    return rescue(cams, obs, fit, weak, triangulate_ransac_compiled, inlier_px)


def triangulate_ransac_compiled(cams: CameraArrays, obs: Observations, inlier_px: float = INLIER_PX,
                                n_pairs: int = N_PAIRS, refits: int = RANSAC_REFITS) -> PointFit:
    """``triangulate_ransac``: ``kernels.refine`` from MSAC's best pair, DLT where it found no point."""
    C, N = obs.score.shape
    t2 = inlier_px ** 2
    fit, n_valid, n_inliers = empty_fit(C, N), np.empty(N, np.int64), np.empty(N, np.int64)
    kernels.refine(rows_by_camera(cams), cams.Rt, cams.center, column(cams.f), column(cams.fx), column(cams.fy),
                   obs.x, obs.y, obs.score, start_from=kernels.START_MSAC, start=np.empty((0, 3)),
                   pairs=cams.pairs, network=kernels.sorting_network(cams.pairs.shape[1]),  # IRLS's
                   order=camera_order(C), n_pairs=pairs_per_point(obs.valid.sum(axis=0), n_pairs),
                   c2s=np.full(refits, t2), tukey=np.zeros(refits, bool), t2=t2,
                   points=fit.points, error2=fit.error2, inliers=fit.inliers, n_valid=n_valid, n_inliers=n_inliers)
    fallback = np.flatnonzero(np.isnan(fit.points[:, 0]) & (n_valid >= MIN_CAMERAS))  # every pair near-parallel
    if fallback.size:
        dlt = triangulate_dlt_compiled(cams, obs[fallback])
        fit.points[fallback], fit.inliers[:, fallback], fit.error2[:, fallback] = dlt.points, dlt.inliers, dlt.error2
    return fit


def find_swaps_compiled(cams: CameraArrays, obs: Observations, fit: PointFit,
                        inlier_px: float = INLIER_PX) -> np.ndarray:
    """``find_swaps``: (F, C) bool."""
    C, N = obs.score.shape
    swapped = np.empty((N // N_KEYPOINTS, C), bool)
    kernels.swaps(rows_by_camera(cams), column(cams.fx), column(cams.fy), obs.x, obs.y, obs.score, fit.points,
                  fit.error2, inlier_px ** 2, SWAP_MIN_POINTS, swapped)
    return swapped


def inlier_summary_compiled(fit: PointFit) -> tuple[np.ndarray, np.ndarray]:
    """``inlier_summary``."""
    N = fit.points.shape[0]
    error, n = np.empty(N), np.empty(N, np.int64)
    kernels.summarize(fit.points, fit.inliers, fit.error2, n, error)
    return error, n


# --- the sequence --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Engine:
    """How the steps run: the numpy functions (the reference) or the compiled kernels."""

    observations: Callable[[CameraArrays, np.ndarray, float], Observations]  # 1.
    dlt: Callable[[CameraArrays, Observations], PointFit]  # 2., the methods
    irls: Callable[..., PointFit]  # (cams, obs, inlier_px, start=...)
    ransac: Callable[[CameraArrays, Observations, float], PointFit]
    find_swaps: Callable[[CameraArrays, Observations, PointFit, float], np.ndarray]  # 3.
    inlier_summary: Callable[[PointFit], tuple[np.ndarray, np.ndarray]]  # 4.
    block_frames: int  # frames per block

    def run_method(self, cams: CameraArrays, obs: Observations, method: str, inlier_px: float,
                   start: np.ndarray | None = None) -> PointFit:
        """``method`` ("dlt", "irls" or "ransac") on N points; IRLS may start from ``start``."""
        if method == "dlt":
            return self.dlt(cams, obs)
        if method == "ransac":
            return self.ransac(cams, obs, inlier_px)
        return self.irls(cams, obs, inlier_px, start=start)


COMPILED = Engine(observations_compiled, triangulate_dlt_compiled, triangulate_irls_compiled,
                  triangulate_ransac_compiled, find_swaps_compiled, inlier_summary_compiled, COMPILED_BLOCK_FRAMES)


def triangulate(rig: CameraRig, keypoints: np.ndarray, method: Method = "robust", inlier_px: float = INLIER_PX,
                min_score: float = 0.0, fix_swaps: bool = True) -> Triangulation:
    """keypoints (C, F, 42, 3) [x, y px, score] in ``rig``'s C cameras (its order) -> 3D joints."""
    return triangulate_with(COMPILED, rig, keypoints, method, inlier_px, min_score, fix_swaps)


def triangulate_reference(rig: CameraRig, keypoints: np.ndarray, method: Method = "robust",
                          inlier_px: float = INLIER_PX, min_score: float = 0.0,
                          fix_swaps: bool = True) -> Triangulation:
    """``triangulate`` by the numpy functions (``fitting.triangulate_numpy``): what the compiled
    kernels are tested against."""
    from fitting.triangulate_numpy import ENGINE  # it imports this module's arrays

    return triangulate_with(ENGINE, rig, keypoints, method, inlier_px, min_score, fix_swaps)


def triangulate_with(engine: Engine, rig: CameraRig, keypoints: np.ndarray, method: Method = "robust",
                     inlier_px: float = INLIER_PX, min_score: float = 0.0, fix_swaps: bool = True) -> Triangulation:
    """``triangulate``, the steps run by ``engine``."""
    if method not in METHODS:
        raise ValueError(f"unknown triangulation method {method!r} (one of {', '.join(METHODS)})")
    keypoints = np.asarray(keypoints)
    C, F = keypoints.shape[:2]
    if keypoints.shape != (len(rig), F, N_KEYPOINTS, 3):
        raise ValueError(f"keypoints have shape {keypoints.shape}, expected ({len(rig)}, F, {N_KEYPOINTS}, 3)")
    cams = camera_arrays(rig)
    method = ROBUST if method == "robust" else method
    joints = np.full((F * N_KEYPOINTS, 3), np.nan)
    error = np.full(F * N_KEYPOINTS, np.nan)
    n_cameras = np.zeros(F * N_KEYPOINTS, int)
    inliers = np.zeros((C, F * N_KEYPOINTS), bool)
    swapped = np.zeros((F, C), bool)
    for f0 in range(0, F, engine.block_frames):
        fs = slice(f0, f0 + engine.block_frames)
        ps = slice(f0 * N_KEYPOINTS, (f0 + engine.block_frames) * N_KEYPOINTS)
        # 1.
        obs = engine.observations(cams, keypoints[:, fs], min_score)
        # 2.
        fit = engine.run_method(cams, obs, method, inlier_px)
        # 3.
        if fix_swaps:
            swapped[fs] = engine.find_swaps(cams, obs, fit, inlier_px)
            frames = np.flatnonzero(swapped[fs].any(axis=1))
            if frames.size:
                again = engine.run_method(cams, exchange_hands(obs.frames(frames), swapped[fs][frames]), method,
                                          inlier_px, start=fit.frame_points(frames))
                fit.put_frames(frames, again)
        # 4.
        error[ps], n_cameras[ps] = engine.inlier_summary(fit)
        joints[ps], inliers[:, ps] = fit.points, fit.inliers
    return Triangulation(
        joints=joints.reshape(F, N_KEYPOINTS, 3),
        reproj_error=error.reshape(F, N_KEYPOINTS),
        n_cameras=n_cameras.reshape(F, N_KEYPOINTS),
        inliers=inliers.reshape(C, F, N_KEYPOINTS),
        swapped=swapped,
        method=method,
    )
