"""The camera model that ``calibration.toml`` means: OpenCV's pinhole, lens and Rodrigues vector.

Symbols (OpenCV's calib3d documentation; ``cv2.projectPoints``, ``cv2.undistortPoints``)::

    r, R        rotation world -> camera: Rodrigues vector (3,) = axis x angle, and its matrix (3, 3)
    t           translation world -> camera, metres
    x_cam       = R X + t, camera coordinates of a world point X (x right, y down, z ahead)
    (x, y)      = x_cam[:2] / z, normalized undistorted coordinates
    k           = k1 k2 p1 p2 [k3 [k4 k5 k6]], OpenCV's order: 4, 5 or 8 values, the missing ones 0
    r2          = x^2 + y^2
    radial      = (1 + k1 r2 + k2 r2^2 + k3 r2^3) / (1 + k4 r2 + k5 r2^2 + k6 r2^3)
    (x'', y'')  = (x radial + 2 p1 x y + p2 (r2 + 2 x^2),  y radial + p1 (r2 + 2 y^2) + 2 p2 x y)
    (u, v)      = (fx x'' + cx, fy y'' + cy), distorted pixels

1. Rodrigues: R = I + sin(theta)/theta [r]x + (1 - cos(theta))/theta^2 [r]x^2, theta = |r|
   (``rodrigues_to_matrix``; back: ``matrix_to_rodrigues``)
2. lens: (x, y) -> (x'', y'') (``distort``); pixels from camera coordinates (``to_pixels``)
3. inverse lens (``undistort``): from x0 = ((u - cx) / fx, (v - cy) / fy), OpenCV's fixed point
   x <- (x0 - tangential(x)) / radial(x), a contraction for real lenses (by ~0.05 per step at a
   4K image's corners); ``iterations`` steps, or until every point's step is under ``tol``

Forms, side by side, each written once:

- numpy and torch: the lens polynomials (``lens``, ``undistort_step``) use operators only, so
  both run the same code (torch's is differentiable); the steps around them (division by the
  depth, stacking) and Rodrigues need each library's functions: ``to_pixels`` / ``to_pixels_torch``,
  ``rodrigues_to_matrix`` / ``rodrigues_to_matrix_torch``. numpy's ``to_pixels`` divides by the
  depth as OpenCV does (a point behind the camera is mirrored); torch's clamps the depth at
  ``MIN_DEPTH``, so that an optimiser never divides by 0 or flips a point through the camera.
- numba: ``undistort_run`` (a camera's run of points, in numba's subset of Python; compile it with
  ``compiled``), for kernels that loop over points (``fitting/triangulate_kernels.py``). numba
  types Python constants as float64, so float32 arithmetic needs its own constants: a third form.

Every form computes in its input's dtype (float32 or float64). ``tests/test_camera_model.py`` ties
the forms to each other and to OpenCV's ``projectPoints``, ``undistortPoints`` and ``Rodrigues``.
numba's on-disk cache of a kernel that calls ``undistort_run`` does not see edits to this file:
after changing ``undistort_run``, delete the callers' ``__pycache__/*.nbi`` files.
"""

from __future__ import annotations

import functools

import numpy as np

UNDISTORT_ITERATIONS = 20  # cv2.undistortPoints stops at 5: more make its inverse exact to < 1e-9 on real lenses
MIN_DEPTH = 1e-6  # metres: the torch form's floor on a point's depth


# --- 1. Rodrigues -----------------------------------------------------------------------------

def rodrigues_to_matrix(rvec: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle -> (..., 3, 3) rotation matrix (cv2.Rodrigues), numpy."""
    r = np.asarray(rvec, dtype=np.float64)
    theta = np.linalg.norm(r, axis=-1, keepdims=True)  # (..., 1)
    small = theta < 1e-12
    k = r / np.where(small, 1.0, theta)  # unit axis (..., 3)
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    zero = np.zeros_like(kx)
    K = np.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], axis=-1).reshape(r.shape[:-1] + (3, 3))
    s = np.sin(theta)[..., None]
    c = np.cos(theta)[..., None]
    eye = np.broadcast_to(np.eye(3), K.shape)
    R = eye + s * K + (1 - c) * (K @ K)
    return np.where(small[..., None], eye, R)


def matrix_to_rodrigues(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrix -> (..., 3) axis-angle, angle in [0, pi], numpy."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(np.asarray(R, dtype=np.float64)).as_rotvec()


def rodrigues_to_matrix_torch(rvec):
    """(..., 3) axis-angle tensor -> (..., 3, 3), differentiable: exact, with the series of
    sin(theta)/theta and (1 - cos(theta))/theta^2 below 1e-6 rad, so that the gradient at 0 is
    exact too (and finite in float32: the exact branch never sees theta = 0)."""
    import torch

    theta2 = (rvec * rvec).sum(-1)[..., None, None]  # (..., 1, 1)
    small = theta2 < 1e-12
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    theta = torch.sqrt(safe2)
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / safe2)
    x, y, z = rvec.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(rvec.shape[:-1] + (3, 3))  # [r]x
    return torch.eye(3, dtype=rvec.dtype, device=rvec.device) + a * K + b * (K @ K)


# --- 2. the lens, forward ----------------------------------------------------------------------

def _radial(r2, k):
    """The radial factor's numerator 1 + k1 r2 + k2 r2^2 + k3 r2^3 and denominator (None for 4 or
    5 coefficients: 1), in Horner's form. ``k`` (..., D): coefficients on the last axis."""
    n = k.shape[-1]
    k1, k2 = k[..., 0], k[..., 1]
    num = 1 + r2 * (k1 + r2 * (k2 + r2 * k[..., 4])) if n > 4 else 1 + r2 * (k1 + r2 * k2)
    den = 1 + r2 * (k[..., 5] + r2 * (k[..., 6] + r2 * k[..., 7])) if n == 8 else None
    return num, den


def lens(x, y, k):
    """(x, y) -> (x'', y''): normalized undistorted -> distorted coordinates, numpy arrays or torch
    tensors; ``k`` (..., D) D in 4, 5, 8 broadcasting with x on its leading axes, or None (no lens).
    Terms of coefficients that are absent are left out; zero ones change no value."""
    if k is None:
        return x, y
    p1, p2 = k[..., 2], k[..., 3]
    r2 = x * x + y * y
    num, den = _radial(r2, k)
    radial = num if den is None else num / den
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return xd, yd


def distort(xy: np.ndarray, k: np.ndarray) -> np.ndarray:
    """(..., 2) normalized undistorted -> (..., 2) distorted coordinates, numpy; ``k`` (D,) or
    (..., D), one set or one per point."""
    k = np.asarray(k, dtype=np.float64)
    return np.stack(lens(xy[..., 0], xy[..., 1], k), axis=-1)


def to_pixels(pc: np.ndarray, fx, fy, cx, cy, k: np.ndarray) -> np.ndarray:
    """(..., 3) camera coordinates -> (..., 2) distorted pixels, numpy (cv2.projectPoints after
    R X + t). Intrinsics are scalars or arrays broadcasting with the points; ``k`` as ``distort``."""
    z = pc[..., 2:3]
    xd = distort(pc[..., :2] / np.where(z == 0, 1.0, z), k)
    return np.stack([fx * xd[..., 0] + cx, fy * xd[..., 1] + cy], axis=-1)


def to_pixels_torch(pc, fx, fy, cx, cy, k):
    """(..., 3) camera coordinates -> (..., 2) distorted pixels, torch, differentiable; the depth
    clamped at ``MIN_DEPTH``. ``k`` (..., D) as ``lens``, or None for a pinhole without a lens."""
    import torch

    x, y = (pc[..., :2] / pc[..., 2:3].clamp(min=MIN_DEPTH)).unbind(-1)
    xd, yd = lens(x, y, k)
    return torch.stack([fx * xd + cx, fy * yd + cy], dim=-1)


# --- 3. the lens, inverse ----------------------------------------------------------------------

def undistort_step(x, y, x0, y0, k):
    """One step of OpenCV's fixed point, numpy or torch: (x, y) -> the next estimate of the
    undistorted coordinates of the distorted (x0, y0); ``k`` as ``lens``."""
    p1, p2 = k[..., 2], k[..., 3]
    xx, yy, xy = x * x, y * y, x * y
    r2 = xx + yy
    num, den = _radial(r2, k)
    icdist = 1 / num
    if den is not None:
        icdist = icdist * den
    xn = (x0 - 2 * p1 * xy - p2 * (r2 + 2 * xx)) * icdist
    yn = (y0 - 2 * p2 * xy - p1 * (r2 + 2 * yy)) * icdist
    return xn, yn


def undistort(u: np.ndarray, v: np.ndarray, fx, fy, cx, cy, k: np.ndarray,
              iterations: int = UNDISTORT_ITERATIONS, tol: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distorted pixels u, v (...) -> normalized undistorted x, y (...), numpy (cv2.undistortPoints).

    Computed in u's dtype (float32 or float64; intrinsics and ``k`` are cast to it). ``iterations``
    steps, or fewer once no point moved by more than ``tol`` in the last (NaN stops it too).
    ``k`` (D,) or (..., D) as ``distort``; coefficients zero everywhere are left out of the
    polynomials (the same values, fewer operations)."""
    dt = u.dtype
    x0 = (u - np.asarray(cx, dt)) / np.asarray(fx, dt)
    y0 = (v - np.asarray(cy, dt)) / np.asarray(fy, dt)
    k = np.asarray(k).astype(dt)
    if not np.any(k):
        return x0, y0
    if k.shape[-1] == 8 and not np.any(k[..., 5:]):
        k = k[..., :5]
    if k.shape[-1] == 5 and not np.any(k[..., 4]):
        k = k[..., :4]
    x, y = x0, y0
    for _ in range(iterations):
        xn, yn = undistort_step(x, y, x0, y0, k)
        step = None if tol is None else max(np.abs(xn - x).max(initial=0.0), np.abs(yn - y).max(initial=0.0))
        x, y = xn, yn
        if step is not None and not step > tol:
            break
    return x, y


def undistort_run(x0, y0, k, tol, max_iterations, x, y):
    """numba form of ``undistort`` for one camera's run of points (compile with ``compiled``):
    normalized distorted x0, y0 (m,) -> undistorted x, y (m,), written in place, in x0's dtype.
    ``k`` (8,) k1 k2 p1 p2 k3 k4 k5 k6; steps until no point moves by more than ``tol``, at most
    ``max_iterations``. The same operations, in the same order, as ``undistort_step``."""
    one = x0.dtype.type(1)
    two = one + one
    k1, k2, p1, p2, k3, k4, k5, k6 = k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]
    p1x2, p2x2 = two * p1, two * p2
    m = x0.shape[0]
    for j in range(m):
        x[j], y[j] = x0[j], y0[j]
    for _ in range(max_iterations):
        moving = False
        for j in range(m):
            xj, yj = x[j], y[j]
            xx, yy, xy = xj * xj, yj * yj, xj * yj
            r2 = xx + yy
            # a zero k3 or k4..k6 leaves the values of ``undistort_step``'s shorter polynomials
            icdist = one / (one + r2 * (k1 + r2 * (k2 + r2 * k3)))
            icdist *= one + r2 * (k4 + r2 * (k5 + r2 * k6))
            xn = (x0[j] - p1x2 * xy - p2 * (r2 + two * xx)) * icdist
            yn = (y0[j] - p2x2 * xy - p1 * (r2 + two * yy)) * icdist
            moving |= (abs(xn - xj) > tol) | (abs(yn - yj) > tol)  # NaN: not moving, as numpy's stops
            x[j], y[j] = xn, yn
        if not moving:
            break


@functools.cache
def compiled(form):
    """A numba form above, compiled (numba imported here, on first use): numpy's error model
    (1/0 = inf, no checks), machine code cached next to this file."""
    from numba import njit

    return njit(cache=True, error_model="numpy")(form)
