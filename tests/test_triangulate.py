import dataclasses
import shutil

import numpy as np
import pytest

from capture.studio.build import StudioConfig, build_session
from data_schemas import SchemaError
from data_schemas.calibration import Camera, read_calibration, write_calibration
from data_schemas.joints3d import read_joints3d
from data_schemas.keypoints2d import read_keypoints2d, write_keypoints2d
from data_schemas.validate import validate_path
from fitting import triangulate as tri
from fitting import triangulate_numpy as ref
from fitting.triangulate import METHODS, ROBUST, camera_arrays, triangulate, triangulate_reference
from fitting.triangulate_numpy import undistort
from fitting.triangulate_kernels import lower_median, smallest_eigenvector, sorting_network
from fitting.triangulate_stage import TriangulateConfig, triangulate_session
from tests.factories import make_rig

SEQ = "seq000"


def two_hands(n_frames: int, seed: int = 0) -> np.ndarray:
    """(F, 42, 3) m: a left hand's 21 points around x = -8 cm, the right hand's around x = +8 cm."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-0.04, 0.04, (n_frames, 42, 3))
    X[:, :21, 0] -= 0.08
    X[:, 21:, 0] += 0.08
    return X


def keypoints_of(rig, X: np.ndarray) -> np.ndarray:
    """(C, F, 42, 3) [x, y, score = 1] exact projections, lens distortion included."""
    px = rig.project(X)  # (C, F, 42, 2)
    return np.concatenate([px, np.ones(px.shape[:-1] + (1,))], axis=-1)


@pytest.fixture(scope="module")
def scene():
    rig = make_rig(8, seed=1)
    X = two_hands(5)
    return rig, X, keypoints_of(rig, X)


def test_undistort_inverts_the_lens_model(scene):
    rig, _, _ = scene
    cams = camera_arrays(rig)
    px = np.random.default_rng(0).uniform([0, 0], [640, 480], (len(rig), 100, 2))  # corners included
    x, y = undistort(cams, px[..., 0], px[..., 1])
    for c, cam in enumerate(rig.cameras):
        np.testing.assert_allclose(np.stack([x[c], y[c]], axis=-1), cam.undistort_points(px[c]), atol=2e-7)


@pytest.mark.parametrize("method", METHODS)
def test_round_trip_without_noise(scene, method):
    rig, X, kp = scene
    r = triangulate(rig, kp, method)
    assert np.abs(r.joints - X).max() < 1e-6
    assert (r.n_cameras == 8).all() and r.inliers.all() and not r.swapped.any()
    assert r.reproj_error.max() < 1e-3
    assert r.method == (ROBUST if method == "robust" else method)


def test_weighted_dlt_ignores_zero_score_views(scene):
    rig, X, kp = scene
    kp = kp.copy()
    rng = np.random.default_rng(1)
    kp[:, 1:3] += rng.normal(0, 1.5, kp[:, 1:3].shape) * [1, 1, 0]  # noise, so that views matter
    kp[0, :, :, :2] = rng.uniform(0, 400, kp[0, :, :, :2].shape)  # garbage in camera 0 ...
    kp[0, :, :, 2] = 0.0  # ... which is not an observation
    kp[1, :, 5:9] = [np.nan, np.nan, 0.0]  # a detector's "not found"
    r = triangulate(rig, kp, "dlt", fix_swaps=False)
    keep = rig.subset(rig.names[1:])
    alone = triangulate(keep, kp[1:], "dlt", fix_swaps=False)
    np.testing.assert_allclose(r.joints, alone.joints, atol=1e-9)
    assert (r.n_cameras[:, 5:9] == 6).all() and (r.n_cameras[:, :5] == 7).all()
    assert not r.inliers[0].any()


def test_robust_modes_reject_outlier_views(scene):
    rig, X, kp = scene
    kp = kp.copy()
    rng = np.random.default_rng(2)
    bad = np.zeros(kp.shape[:3], bool)  # (C, F, 42): two random views of every point
    for f in range(kp.shape[1]):
        for j in range(42):
            bad[rng.choice(8, 2, replace=False), f, j] = True
    kp[..., :2] += bad[..., None] * rng.choice([-1, 1], kp[..., :2].shape) * rng.uniform(40, 200, kp[..., :2].shape)
    dlt = triangulate(rig, kp, "dlt", fix_swaps=False)
    assert np.nanmean(np.linalg.norm(dlt.joints - X, axis=-1)) > 5e-3  # 5 mm
    for method in ("robust", "irls", "ransac"):
        r = triangulate(rig, kp, method, fix_swaps=False)
        assert np.abs(r.joints - X).max() < 1e-6, method
        assert (r.inliers == ~bad).all() and (r.n_cameras == 6).all(), method


def test_swapped_hands_are_found_and_exchanged(scene):
    rig, X, kp = scene
    kp = kp.copy()
    for c, f in ((3, 1), (6, 2)):  # both hands in each other's slot
        kp[c, f] = np.concatenate([kp[c, f, 21:], kp[c, f, :21]])
    kp[1, 3, 21:] = kp[1, 3, :21]  # camera 1, frame 3: the left hand alone, in the right hand's slot
    kp[1, 3, :21] = [np.nan, np.nan, 0.0]
    expected = np.zeros((5, 8), bool)
    expected[[1, 2, 3], [3, 6, 1]] = True
    for method in ("robust", "ransac"):
        r = triangulate(rig, kp, method)
        assert (r.swapped == expected).all(), method
        assert np.abs(r.joints - X).max() < 1e-6
        assert r.inliers[3, 1].all() and r.inliers[6, 2].all()  # the exchanged views count again
        assert r.inliers[1, 3, :21].all() and not r.inliers[1, 3, 21:].any()
    # left alone, they are outliers for the robust mode, except where the other hand's joint happens to
    # project within the threshold of this one's (hence a tight one for this exact data)
    kept = triangulate(rig, kp, inlier_px=3.0, fix_swaps=False)
    assert not kept.swapped.any() and np.abs(kept.joints - X).max() < 1e-3
    assert kept.inliers[3, 1].mean() < 0.2 and kept.inliers[1, 3].mean() < 0.2


def test_fewer_than_two_cameras_give_nan(scene):
    rig, X, kp = scene
    kp = kp.copy()
    kp[1:, 0, 0] = [np.nan, np.nan, 0.0]  # frame 0, joint 0: camera 0 only
    kp[:, 0, 1, 2] = 0.0  # joint 1: no camera
    kp[2:, 0, 2, 2] = 0.0  # joint 2: cameras 0 and 1
    for method in METHODS:
        r = triangulate(rig, kp, method)
        assert np.isnan(r.joints[0, :2]).all() and np.isnan(r.reproj_error[0, :2]).all(), method
        assert (r.n_cameras[0, :2] < 2).all() and not r.inliers[:, 0, :2].any()
        assert r.n_cameras[0, 2] == 2 and np.abs(r.joints[0, 2] - X[0, 2]).max() < 1e-6
        assert np.isfinite(r.joints[1:]).all()


def test_nothing_detected_gives_nan_not_an_error(scene):
    rig, _, kp = scene
    r = triangulate(rig, np.where(np.arange(3) < 2, np.nan, 0.0) * np.ones_like(kp))
    assert np.isnan(r.joints).all() and (r.n_cameras == 0).all() and not r.swapped.any()


def test_bad_arguments(scene):
    rig, _, kp = scene
    with pytest.raises(ValueError, match="unknown triangulation method 'svd'"):
        triangulate(rig, kp, "svd")
    with pytest.raises(ValueError, match=r"keypoints have shape \(7, 5, 42, 3\), expected \(8, F, 42, 3\)"):
        triangulate(rig, kp[1:])


# --- the compiled kernels against the numpy statement ------------------------------------------

def messy_keypoints(rig, n_frames: int, seed: int) -> np.ndarray:
    """(C, F, 42, 3) float32: two hands seen with 0.5 px noise, scores 0.3-1, 10 % of detections missing,
    25 % moved 20-300 px, 5 % of the views with the hands exchanged."""
    rng = np.random.default_rng(seed)
    kp = keypoints_of(rig, two_hands(n_frames, seed))
    kp[..., :2] += rng.normal(0, 0.5, kp[..., :2].shape)
    kp[..., 2] = rng.uniform(0.3, 1.0, kp.shape[:3])
    moved = rng.random(kp.shape[:3]) < 0.25
    kp[..., :2] += moved[..., None] * rng.choice([-1, 1], kp[..., :2].shape) * rng.uniform(20, 300, kp[..., :2].shape)
    kp[rng.random(kp.shape[:3]) < 0.1] = [np.nan, np.nan, 0.0]
    swapped = rng.random(kp.shape[:2]) < 0.05  # (C, F)
    kp[swapped] = np.concatenate([kp[swapped][:, 21:], kp[swapped][:, :21]], axis=1)
    return kp.astype(np.float32)


def assert_same_fit(fast: tri.PointFit, ref: tri.PointFit) -> None:
    np.testing.assert_allclose(fast.points, ref.points, rtol=0, atol=1e-9)  # NaN where NaN
    assert (fast.inliers == ref.inliers).all()
    seen = np.isfinite(ref.error2)
    assert (np.isfinite(fast.error2) == seen).all()
    np.testing.assert_allclose(fast.error2[seen], ref.error2[seen], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("n_cameras, seed", [(8, 3), (16, 4)])
def test_compiled_triangulation_equals_the_numpy_reference(n_cameras, seed):
    rig = make_rig(n_cameras, seed=1)
    kp = messy_keypoints(rig, 6, seed)  # 6 frames: one block for both
    for method in METHODS:
        fast, ref = triangulate(rig, kp, method), triangulate_reference(rig, kp, method)
        # the undistortions differ by float32's resolution (stopped per chunk): < 0.1 um (DLT with outliers),
        # < 1e-5 px or 1e-6 of the error
        np.testing.assert_allclose(fast.joints, ref.joints, rtol=0, atol=1e-7, err_msg=method)
        assert (fast.inliers == ref.inliers).all() and (fast.n_cameras == ref.n_cameras).all(), method
        assert (fast.swapped == ref.swapped).all() and fast.method == ref.method, method
        np.testing.assert_allclose(fast.reproj_error, ref.reproj_error, rtol=1e-6, atol=1e-5, err_msg=method)
        if method != "dlt":  # the data exercise what they should
            assert ref.swapped.any() and (ref.n_cameras < n_cameras - 2).any() and np.isfinite(ref.joints).mean() > 0.9


def test_compiled_steps_equal_the_numpy_steps():
    rig = make_rig(12, seed=1)
    cams = camera_arrays(rig)
    kp = messy_keypoints(rig, 6, 5)
    obs = ref.observations(cams, kp)
    fast_obs = tri.observations_compiled(cams, kp)
    np.testing.assert_array_equal(fast_obs.score, obs.score)
    np.testing.assert_allclose(fast_obs.x, obs.x, rtol=0, atol=2e-7)  # float32 undistortion, stopped per chunk
    np.testing.assert_allclose(fast_obs.y, obs.y, rtol=0, atol=2e-7)
    assert_same_fit(tri.triangulate_dlt_compiled(cams, obs), ref.triangulate_dlt(cams, obs))
    assert_same_fit(tri.triangulate_ransac_compiled(cams, obs), ref.triangulate_ransac(cams, obs))
    assert_same_fit(tri.triangulate_ransac_compiled(cams, obs, n_pairs=48),  # disjoint pairs for none
                    ref.triangulate_ransac(cams, obs, n_pairs=48))
    fit = ref.triangulate_irls(cams, obs)
    assert_same_fit(tri.triangulate_irls_compiled(cams, obs), fit)
    start = fit.points + 0.01  # 1 cm off
    start[:5] = np.nan  # stay lost
    assert_same_fit(tri.triangulate_irls_compiled(cams, obs, start=start), ref.triangulate_irls(cams, obs, start=start))
    # a start that breaks down for a third of the points: the RANSAC rescue
    bad = fit.points.copy()
    bad[::3] += 0.5
    rescued = tri.triangulate_irls_compiled(cams, obs, iterations=1, start=bad)
    assert_same_fit(rescued, ref.triangulate_irls(cams, obs, iterations=1, start=bad))
    assert np.nanmax(np.abs(rescued.points - fit.points)) < 0.01
    swapped = ref.find_swaps(cams, obs, fit)
    assert swapped.any() and (tri.find_swaps_compiled(cams, obs, fit) == swapped).all()
    shifted = fit.points + np.random.default_rng(0).normal(0, 0.02, fit.points.shape)  # 2 cm off
    shifted_fit = tri.PointFit(shifted, fit.inliers, ref.errors_px(cams, obs, shifted)[0])
    for other in (ref.triangulate_dlt(cams, obs), shifted_fit):
        for px in (3.0, 10.0, 30.0, 100.0, 300.0):  # most views candidates, medians on either side of the threshold
            assert (tri.find_swaps_compiled(cams, obs, other, px) == ref.find_swaps(cams, obs, other, px)).all(), px
    fit.inliers[:, ::7] &= np.arange(12)[:, None] < 1  # a point with one inlier: dropped
    fast_fit = tri.PointFit(fit.points.copy(), fit.inliers.copy(), fit.error2.copy())
    (fast_error, fast_n), (error, n) = tri.inlier_summary_compiled(fast_fit), ref.inlier_summary(fit)
    assert (fast_n == n).all() and (n[::7] == 0).all() and np.isnan(fit.points[::7]).all()
    np.testing.assert_array_equal(fast_error, error)
    assert_same_fit(fast_fit, fit)


def test_compiled_swap_test_on_the_median_itself(scene):
    """A swapped view half of whose 42 detections are also far off: exactly half the exchanged errors
    are small, and the lower median is one of them."""
    rig, X, kp = scene
    kp = kp.copy()
    kp[3, 1] = np.concatenate([kp[3, 1, 21:], kp[3, 1, :21]])
    kp[3, 1, :21, :2] += 200
    cams = camera_arrays(rig)
    obs = ref.observations(cams, kp)
    fit = ref.triangulate_irls(cams, obs)
    swapped = ref.find_swaps(cams, obs, fit)
    assert swapped[1, 3] and swapped.sum() == 1
    assert (tri.find_swaps_compiled(cams, obs, fit) == swapped).all()


def test_compiled_blocks_equal_one_block():
    """A sequence longer than a block goes through in blocks; the result does not depend on them."""
    rig = make_rig(8, seed=1)
    kp = messy_keypoints(rig, 20, 6)
    whole = triangulate(rig, kp)
    engine = dataclasses.replace(tri.COMPILED, block_frames=3)
    blocks = tri.triangulate_with(engine, rig, kp)
    np.testing.assert_allclose(blocks.joints, whole.joints, rtol=0, atol=1e-9)
    assert (blocks.inliers == whole.inliers).all() and (blocks.swapped == whole.swapped).all()


def test_sorting_network_sorts():
    rng = np.random.default_rng(0)
    for n in range(1, 49):
        v = rng.integers(0, 4, (300, n)).astype(float)
        if n <= 16:  # 0-1 principle: a network that sorts every 0/1 input sorts every input
            v = np.concatenate([v, (np.arange(2 ** n)[:, None] >> np.arange(n)) & 1])
        for i, j in sorting_network(n):
            v[:, i], v[:, j] = np.minimum(v[:, i], v[:, j]), np.maximum(v[:, i], v[:, j])
        assert (np.diff(v, axis=1) >= 0).all(), n
    assert len(sorting_network(16)) == 63


def test_lower_median_is_nan_median():
    rng = np.random.default_rng(0)
    for t in range(2000):
        n = rng.integers(1, 45)
        v = rng.integers(0, 5, n).astype(float) if t % 2 else rng.normal(size=n)  # ties, or none
        v[rng.random(n) < 0.2] = np.nan
        expected = ref.nan_median(v[None], axis=1)[0]
        got = lower_median(v.copy(), n)
        assert got == expected or np.isnan(got) and np.isnan(expected), v


def test_smallest_eigenvector():
    rng = np.random.default_rng(0)
    for rank in (4, 3, 2):  # rank 3: the exact DLT of two views
        B = rng.normal(size=(4, rank))
        A = B @ B.T + (1e-9 * np.eye(4) if rank == 4 else 0)
        expected = np.linalg.eigh(A)[1][:, 0]
        v = smallest_eigenvector(A.copy(), np.empty((4, 4)))
        assert abs(np.linalg.norm(v) - 1) < 1e-12, rank
        if rank > 2:
            assert abs(abs(v @ expected) - 1) < 1e-12, rank
        else:  # any vector of the null space
            assert np.linalg.norm(A @ v) < 1e-12, rank


# --- the stage ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """A tiny studio session (8 cameras, one 4-frame sequence) with the ground truth's calibration and
    keypoints (exact projections, score 1 where visible) in place of calibrate's and detect's."""
    root = tmp_path_factory.mktemp("triangulate") / "studio"
    build_session(StudioConfig(out=root, sequences=1, frames=4, board_frames=1, workers=1))
    shutil.copy(root / "ground_truth" / "calibration.toml", root / "calibration" / "calibration.toml")
    shutil.copy(root / "ground_truth" / "sequences" / SEQ / "keypoints2d.h5", root / "sequences" / SEQ)
    return root


@pytest.fixture
def session(studio, tmp_path):
    root = tmp_path / "s"
    shutil.copytree(studio, root)
    return root


def test_stage_triangulates_the_studio_hands(session):
    [s] = triangulate_session(session)
    assert (s.name, s.frames, s.skipped, s.swapped_views) == (SEQ, 4, False, 0)
    out = session / "sequences" / SEQ / "joints3d.h5"
    j = read_joints3d(out)
    truth = read_joints3d(session / "ground_truth" / "sequences" / SEQ / "joints3d.h5")
    assert j.method == ROBUST and j.cameras == [f"cam{i:02d}" for i in range(8)] and j.swapped.shape == (4, 8)
    seen = (read_keypoints2d(session / "sequences" / SEQ / "keypoints2d.h5").keypoints[..., 2] > 0).sum(axis=0)
    assert (j.valid == (seen >= 2)).all() and (j.n_cameras == np.where(seen >= 2, seen, 0)).all()  # all views
    assert s.triangulated == j.valid.mean() > 0.8 and s.reproj_px < 0.01
    assert np.abs(j.joints - truth.joints)[j.valid].max() < 1e-3  # 1 mm
    assert all(v.ok for v in validate_path(out))
    [again] = triangulate_session(session)
    assert again.skipped and again.frames == 4 and again.triangulated == s.triangulated
    [dlt] = triangulate_session(session, TriangulateConfig(method="dlt"))  # other options: done again
    assert not dlt.skipped and read_joints3d(out).method == "dlt"


def test_stage_camera_missing_from_the_calibration(session):
    path = session / "calibration" / "calibration.toml"
    rig = read_calibration(path)
    write_calibration(path, rig.subset(rig.names[:-1]))
    with pytest.raises(SchemaError) as e:
        triangulate_session(session)
    assert str(e.value) == f"{path}: camera 'cam07' (in {SEQ}/keypoints2d.h5) is missing from the calibration"


def test_stage_image_size_differs_from_the_calibration(session):
    path = session / "calibration" / "calibration.toml"
    rig = read_calibration(path)
    c = rig.cameras[2]
    rig.cameras[2] = Camera(c.name, (1280, 1024), c.matrix, c.distortions, c.rotation, c.translation)
    write_calibration(path, rig)
    with pytest.raises(SchemaError) as e:
        triangulate_session(session)
    assert str(e.value) == (f"{path}: camera 'cam02' is calibrated at 1280x1024 px but {SEQ}/keypoints2d.h5 has "
                            "640x512 px images")


def test_stage_nothing_detected(session):
    path = session / "sequences" / SEQ / "keypoints2d.h5"
    kp = read_keypoints2d(path)
    kp.keypoints[:] = [np.nan, np.nan, 0.0]
    write_keypoints2d(path, kp)
    with pytest.raises(SchemaError) as e:
        triangulate_session(session)
    assert str(e.value) == f"{path}: no hand keypoints detected in any camera"


def test_stage_counts_and_leaves_out_keypoints_far_outside_the_image(session, capsys):
    from pipeline.cli import main

    path = session / "sequences" / SEQ / "keypoints2d.h5"
    kp = read_keypoints2d(path)
    kp.keypoints[0, ..., :2] *= 1000  # one camera's points in thousandths of a pixel
    write_keypoints2d(path, kp)
    far = int((kp.keypoints[0, ..., 2] > 0).sum())
    assert far > 0
    capsys.readouterr()
    assert main(["triangulate", str(session), "--method", "dlt"]) == 0
    out = capsys.readouterr().out
    assert f"0 views with the hands exchanged, {far} keypoints far outside the image left out, " in out
    j = read_joints3d(session / "sequences" / SEQ / "joints3d.h5")
    truth = read_joints3d(session / "ground_truth" / "sequences" / SEQ / "joints3d.h5")
    assert j.valid.mean() > 0.8 and np.abs(j.joints - truth.joints)[j.valid].max() < 1e-3  # 1 mm


def test_stage_every_keypoint_far_outside_the_image(session):
    path = session / "sequences" / SEQ / "keypoints2d.h5"
    kp = read_keypoints2d(path)
    kp.keypoints[..., :2] *= 1000
    write_keypoints2d(path, kp)
    with pytest.raises(SchemaError) as e:
        triangulate_session(session)
    n = int((kp.keypoints[..., 2] > 0).sum())
    assert str(e.value).startswith(f"{path}: {n} keypoints lie more than half the image size outside the image "
                                   f"(first: camera 'cam00', frame {kp.frames[0]}, keypoint ")
    assert not (session / "sequences" / SEQ / "joints3d.h5").exists()


def write_manual_point(session, frame: int, point: int, shift_px: float) -> None:
    """keypoints2d_manual.h5 with one point a person placed, in every camera that sees it, ``shift_px`` right
    of the detection (replacing any manual points before)."""
    from data_schemas.keypoints2d import Keypoints2D

    kp = read_keypoints2d(session / "sequences" / SEQ / "keypoints2d.h5")
    manual = np.full(kp.keypoints.shape, np.nan, np.float32)
    manual[..., 2] = 0.0
    seen = kp.keypoints[:, frame, point, 2] > 0
    assert seen.sum() >= 2
    manual[seen, frame, point] = kp.keypoints[seen, frame, point] + (shift_px, 0.0, 0.0)
    manual[seen, frame, point, 2] = 1.0
    who = np.where(manual[..., 2].max(-1) > 0, "ann", "").astype(object)
    write_keypoints2d(session / "sequences" / SEQ / "keypoints2d_manual.h5",
                      Keypoints2D(kp.cameras, kp.image_sizes, kp.frames, manual, "manual", kp.fps, annotators=who,
                                  annotated_at=np.where(who == "", "", "2026-11-26T00:00:00+00:00")))


def test_stage_writes_the_evidence_it_triangulated(session):
    """joints3d.h5 holds the 2D evidence once: the exchanged view's hands back on their sides, a
    person's points over the detections at MANUAL_WEIGHT."""
    from data_schemas.keypoints2d import MANUAL_WEIGHT

    path = session / "sequences" / SEQ / "keypoints2d.h5"
    kp = read_keypoints2d(path)
    truth = kp.keypoints.copy()
    kp.keypoints[3, 1] = np.concatenate([truth[3, 1, 21:], truth[3, 1, :21]])  # the detector's slots exchanged
    write_keypoints2d(path, kp)
    write_manual_point(session, 2, 37, 3.0)
    [s] = triangulate_session(session)
    j = read_joints3d(session / "sequences" / SEQ / "joints3d.h5")
    assert s.swapped_views == 1 and j.swapped[1, 3] and j.cameras == kp.cameras
    placed = j.keypoints[..., 2] == MANUAL_WEIGHT
    assert placed.any() and (np.argwhere(placed)[:, 1:] == (2, 37)).all()
    np.testing.assert_allclose(j.keypoints[placed][:, :2], truth[placed][:, :2] + (3.0, 0.0), atol=1e-3)
    np.testing.assert_array_equal(j.keypoints[~placed], truth[~placed])


def test_stage_splices_frames_into_a_current_file(session):
    """--frames: only those frames (and others whose manual points changed) again, the file current
    after; with other options, or inputs, the whole sequence."""
    out = session / "sequences" / SEQ / "joints3d.h5"
    triangulate_session(session)
    before = read_joints3d(out)
    write_manual_point(session, 2, 37, 3.0)
    [s] = triangulate_session(session, TriangulateConfig(frames=[1]))  # frame 2's manual point changed too
    j = read_joints3d(out)
    assert s.spliced == [1, 2] and list(j.spliced) == [1, 2] and j.spliced_from == before.inputs
    np.testing.assert_array_equal(np.delete(j.joints, [1, 2], 0), np.delete(before.joints, [1, 2], 0))
    assert not np.array_equal(j.joints[2, 37], before.joints[2, 37])
    np.testing.assert_array_equal(j.swapped, before.swapped)
    assert triangulate_session(session)[0].skipped  # current, manual points included
    write_manual_point(session, 3, 8, 2.0)
    [whole] = triangulate_session(session, TriangulateConfig(method="dlt", frames=[3]))
    assert whole.spliced is None and read_joints3d(out).spliced is None


def write_guided(session, keypoints: np.ndarray, redetected: np.ndarray, inputs: str | None = None) -> None:
    """keypoints2d_guided.h5 holding ``keypoints`` (C, F, 42, 3) for the (view, hand)s ``redetected`` (C, F, 2),
    made from the sequence's keypoints2d.h5 (or, with ``inputs``, from whatever those name)."""
    from data_schemas.keypoints2d import Keypoints2D, guided_inputs

    kp = read_keypoints2d(session / "sequences" / SEQ / "keypoints2d.h5")
    write_keypoints2d(session / "sequences" / SEQ / "keypoints2d_guided.h5",
                      Keypoints2D(kp.cameras, kp.image_sizes, kp.frames, keypoints, "guided", kp.fps,
                                  inputs=guided_inputs(kp, "test") if inputs is None else inputs,
                                  redetected=redetected))


def test_stage_takes_the_guided_redetection_over_the_first_detection(session):
    """The hands keypoints2d_guided.h5 re-detected replace the first detection's (its hidden joints, score 0,
    leave the evidence); elsewhere the first detection stands; a person's points still win; a guided file
    from another keypoints2d.h5 is not used."""
    from data_schemas.keypoints2d import MANUAL_WEIGHT

    path = session / "sequences" / SEQ / "keypoints2d.h5"
    kp = read_keypoints2d(path)
    truth = kp.keypoints.copy()
    seen = truth[..., 2] > 0
    clicked = int(np.argmax(seen[2:5, 1, :21].sum(axis=0) >= 2))  # a left joint of frame 1 two guided views see
    write_manual_point(session, 1, clicked, 2.0)
    kp.keypoints[2:, :, :21] = [np.nan, np.nan, 0.0]  # the first detection missed the left hand in 6 of 8 cameras
    write_keypoints2d(path, kp)
    [before] = triangulate_session(session)
    j0 = read_joints3d(session / "sequences" / SEQ / "joints3d.h5")
    guided = np.full(truth.shape, np.nan, np.float32)
    guided[..., 2] = 0.0
    guided[2:5, :, :21] = truth[2:5, :, :21]  # re-detected in three of them
    guided[2, :, 8] = [np.nan, np.nan, 0.0]  # the index tip hidden by the other hand there
    redetected = np.zeros(truth.shape[:2] + (2,), bool)
    redetected[2:5, :, 0] = True
    write_guided(session, guided, redetected)
    [after] = triangulate_session(session)
    j = read_joints3d(session / "sequences" / SEQ / "joints3d.h5")
    assert not after.skipped and after.guided == 12 and before.guided == 0
    left = seen[:2, :, :21].sum(axis=0) + seen[2:5, :, :21].sum(axis=0) - seen[2, :, 8][:, None] * np.eye(21)[8]
    left[1, clicked] = seen[:, 1, clicked].sum()  # the person clicked it wherever it shows
    assert (j.n_cameras[:, :21] == np.where(left >= 2, left, 0)).all()
    assert (j.n_cameras[:, :21] > j0.n_cameras[:, :21]).any()
    assert j.keypoints[2, :, 8, 2].max() == 0  # hidden by the other hand
    assert np.isin(j.keypoints[5:, :, :21, 2], (0.0, MANUAL_WEIGHT)).all()  # not re-detected: a person's point only
    placed = j.keypoints[..., 2] == MANUAL_WEIGHT
    ok = ~placed[3:5, :, :21]
    np.testing.assert_array_equal(j.keypoints[3:5, :, :21][ok], truth[3:5, :, :21][ok])
    assert (np.argwhere(placed)[:, 1:] == (1, clicked)).all() and placed[2:5].any()  # a person's point wins
    assert triangulate_session(session)[0].skipped
    write_guided(session, guided, redetected, inputs="another detection>test")
    [stale] = triangulate_session(session)
    assert not stale.skipped and stale.guided == 0
    first = seen[:2, :, :21].sum(axis=0)
    first[1, clicked] = seen[:, 1, clicked].sum()
    np.testing.assert_array_equal(read_joints3d(session / "sequences" / SEQ / "joints3d.h5").n_cameras[:, :21],
                                  np.where(first >= 2, first, 0))
