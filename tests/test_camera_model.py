"""The camera model's forms (numpy, torch, numba) against each other and against OpenCV."""

import cv2
import numpy as np
import pytest
import torch

from data_schemas import camera_model as cm


def random_camera(rng: np.random.Generator, n_coefficients: int):
    """A 4K-like camera with a real lens's distortion: K (3, 3), k (D,), r (3,), t (3,)."""
    f = rng.uniform(1500, 3000)
    K = np.array([[f, 0, rng.uniform(1800, 2000)], [0, f * rng.uniform(0.99, 1.01), rng.uniform(1000, 1150)],
                  [0, 0, 1]])
    k = np.array([rng.normal(-0.1, 0.05), rng.normal(0.05, 0.02), rng.normal(0, 1e-3), rng.normal(0, 1e-3),
                  rng.normal(0, 0.01), rng.normal(0, 0.02), rng.normal(0, 0.01), rng.normal(0, 0.005)])
    return K, k[:n_coefficients], rng.normal(0, 1, 3), rng.normal(0, 0.2, 3)


def points_in_view(rng, r, t, n=300):
    """(n, 3) world points whose normalized coordinates are within the image (|x|, |y| < 0.6)."""
    pc = np.stack([rng.uniform(-0.6, 0.6, n), rng.uniform(-0.6, 0.6, n), np.ones(n)], -1) * rng.uniform(0.5, 3, (n, 1))
    R = cm.rodrigues_to_matrix(r)
    return (pc - t) @ R  # R^T (pc - t)


CASES = [(seed, d) for d in (4, 5, 8) for seed in range(4)]


@pytest.mark.parametrize("seed,d", CASES)
def test_projection_equals_opencv_and_the_torch_form(seed, d):
    rng = np.random.default_rng(seed)
    K, k, r, t = random_camera(rng, d)
    X = points_in_view(rng, r, t)
    ref, _ = cv2.projectPoints(X, r, t, K, k)
    pc = X @ cm.rodrigues_to_matrix(r).T + t
    ours = cm.to_pixels(pc, K[0, 0], K[1, 1], K[0, 2], K[1, 2], k)
    assert np.abs(ours - ref.reshape(-1, 2)).max() < 1e-8
    T = torch.as_tensor
    pc_t = T(X) @ cm.rodrigues_to_matrix_torch(T(r)).T + T(t)
    theirs = cm.to_pixels_torch(pc_t, *(T(K[i, j]) for i, j in ((0, 0), (1, 1), (0, 2), (1, 2))), T(k))
    assert np.abs(theirs.numpy() - ours).max() < 1e-9


@pytest.mark.parametrize("seed,d", CASES)
def test_undistortion_equals_opencv_and_the_other_forms(seed, d):
    rng = np.random.default_rng(100 + seed)
    K, k, r, t = random_camera(rng, d)
    X = points_in_view(rng, r, t)
    px = cv2.projectPoints(X, r, t, K, k)[0].reshape(-1, 2)
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-15)
    ref = cv2.undistortPointsIter(px.reshape(-1, 1, 2), K, k, None, None, crit).reshape(-1, 2)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    x, y = cm.undistort(px[:, 0], px[:, 1], fx, fy, cx, cy, k, iterations=100, tol=1e-15)
    assert np.abs(np.stack([x, y], -1) - ref).max() < 1e-9
    pc = X @ cm.rodrigues_to_matrix(r).T + t
    assert np.abs(np.stack([x, y], -1) - pc[:, :2] / pc[:, 2:]).max() < 1e-9  # the round trip
    # numba's form: the same operations, so the same numbers
    k8 = np.zeros(8)
    k8[:d] = k
    x0, y0 = (px[:, 0] - cx) / fx, (px[:, 1] - cy) / fy
    xn, yn = np.empty_like(x0), np.empty_like(y0)
    cm.compiled(cm.undistort_run)(x0, y0, k8, 1e-15, 100, xn, yn)
    assert np.abs(xn - x).max() < 1e-12 and np.abs(yn - y).max() < 1e-12
    # torch runs numpy's step
    T = torch.as_tensor
    xt, yt = T(x0), T(y0)
    for _ in range(30):
        xt, yt = cm.undistort_step(xt, yt, T(x0), T(y0), T(k))
    assert np.abs(xt.numpy() - x).max() < 1e-12 and np.abs(yt.numpy() - y).max() < 1e-12


def test_float32_forms_agree_and_stop_on_the_tolerance():
    """The triangulation's use: float32, iterations until a step is under the tolerance."""
    rng = np.random.default_rng(7)
    K, k, r, t = random_camera(rng, 5)
    px = cv2.projectPoints(points_in_view(rng, r, t, 128), r, t, K, k)[0].reshape(-1, 2).astype(np.float32)
    fx, fy, cx, cy = (np.float32(v) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))
    x, y = cm.undistort(px[:, 0], px[:, 1], fx, fy, cx, cy, k, iterations=20, tol=1e-6)
    assert x.dtype == np.float32
    x0, y0 = (px[:, 0] - cx) / fx, (px[:, 1] - cy) / fy
    xn, yn = np.empty_like(x0), np.empty_like(y0)
    k8 = np.zeros(8, np.float32)
    k8[:5] = k
    cm.compiled(cm.undistort_run)(x0, y0, k8, np.float32(1e-6), 20, xn, yn)
    assert np.array_equal(xn, x) and np.array_equal(yn, y)  # one run of points: the same steps, bit for bit
    px64 = px.astype(np.float64)
    exact = cm.undistort(px64[:, 0], px64[:, 1], K[0, 0], K[1, 1], K[0, 2], K[1, 2], k)
    assert np.abs(x - exact[0]).max() < 1e-6 and np.abs(y - exact[1]).max() < 1e-6


def test_no_lens_and_zero_coefficients_change_nothing():
    rng = np.random.default_rng(3)
    xy = rng.uniform(-0.5, 0.5, (50, 2))
    assert np.array_equal(cm.distort(xy, np.zeros(5)), xy)
    k5 = np.array([-0.1, 0.03, 1e-3, -1e-3, 0.01])
    assert np.array_equal(cm.distort(xy, np.concatenate([k5, np.zeros(3)])), cm.distort(xy, k5))
    assert np.array_equal(cm.distort(xy, np.concatenate([k5[:4], [0.0]])), cm.distort(xy, k5[:4]))
    x, y = cm.undistort(xy[:, 0], xy[:, 1], 1.0, 1.0, 0.0, 0.0, np.zeros(8))
    assert np.array_equal(x, xy[:, 0]) and np.array_equal(y, xy[:, 1])


def test_rodrigues_equals_opencv_both_ways():
    rng = np.random.default_rng(0)
    axes = rng.normal(size=(200, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.concatenate([[0.0, 1e-14, 1e-9, 1e-6], rng.uniform(0, np.pi - 1e-3, 196)])
    rvecs = axes * angles[:, None]
    R = cm.rodrigues_to_matrix(rvecs)
    for r, Ri in zip(rvecs, R):
        assert np.abs(Ri - cv2.Rodrigues(r)[0]).max() < 1e-12
        if np.linalg.norm(r) > 1e-5:  # below, OpenCV's matrix -> vector rounds to 0; ours stays exact (below)
            assert np.abs(cm.matrix_to_rodrigues(Ri) - cv2.Rodrigues(Ri)[0].ravel()).max() < 1e-9
    assert np.abs(cm.matrix_to_rodrigues(R) - rvecs).max() < 1e-9  # the round trip, batched
    Rt = cm.rodrigues_to_matrix_torch(torch.as_tensor(rvecs)).numpy()
    assert np.abs(Rt - R).max() < 1e-12
    R32 = cm.rodrigues_to_matrix_torch(torch.as_tensor(rvecs, dtype=torch.float32)).double().numpy()
    assert np.abs(R32 - R).max() < 1e-6


def test_torch_gradients_are_finite_and_exact():
    """At the identity (a flat hand's pose, the world board) too, in float32 as the fit runs."""
    for dtype in (torch.float32, torch.float64):
        r = torch.zeros(5, 3, dtype=dtype, requires_grad=True)
        g = torch.randn(5, 3, 3, dtype=dtype)
        (cm.rodrigues_to_matrix_torch(r) * g).sum().backward()
        assert torch.isfinite(r.grad).all()
        # dR/dr at 0 is [e]x: d/dr_i sum(g * R) = the matching entries of g
        expect = torch.stack([g[:, 2, 1] - g[:, 1, 2], g[:, 0, 2] - g[:, 2, 0], g[:, 1, 0] - g[:, 0, 1]], -1)
        assert torch.allclose(r.grad, expect, atol=1e-6)
    rng = np.random.default_rng(1)
    K, k, r, t = random_camera(rng, 8)
    X = torch.as_tensor(points_in_view(rng, r, t, 5), dtype=torch.float64)

    def pixels(rvec, tvec, intrinsics, k):
        return cm.to_pixels_torch(X @ cm.rodrigues_to_matrix_torch(rvec).T + tvec, *intrinsics.unbind(), k)

    args = (torch.as_tensor(r), torch.as_tensor(t), torch.as_tensor(K[[0, 1, 0, 1], [0, 1, 2, 2]]), torch.as_tensor(k))
    args = tuple(a.clone().requires_grad_(True) for a in args)
    assert torch.autograd.gradcheck(pixels, args)
    zero = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(cm.rodrigues_to_matrix_torch, (zero,))
