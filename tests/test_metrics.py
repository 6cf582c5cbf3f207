"""Evaluation statistics (FID, Diversity, mean ± interval) and the penetration metric."""

import math
import warnings

import numpy as np
import pytest

from hand_model.posing import hand_model_for
from generation.metrics import diversity, frechet_distance, mean_interval
from generation.penetration import PenetrationResult, penetration, penetration_depths

# -- FID -----------------------------------------------------------------------------------


def features(n=400, f=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (n, f)) @ rng.normal(0, 1, (f, f))  # correlated features


def test_fid_of_a_set_with_itself_is_zero():
    a = features()
    scale = np.trace(np.cov(a, rowvar=False))
    assert abs(frechet_distance(a, a)) < 1e-6 * scale


def test_fid_grows_with_a_shift_as_its_square():
    a = features()
    F = a.shape[1]
    values = [frechet_distance(a, a + s) for s in (0.5, 1.0, 2.0)]
    assert values[0] < values[1] < values[2]
    for s, v in zip((0.5, 1.0, 2.0), values):
        # shifting every feature by s moves the mean by s sqrt(F) and leaves the covariance
        assert v == pytest.approx(s * s * F, rel=1e-6, abs=1e-6)


def test_fid_of_degenerate_sets_is_finite():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, (5, 8)), rng.normal(0, 1, (6, 8))  # fewer samples than features: singular
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the singular product is regularised, not warned about
        assert np.isfinite(frechet_distance(a, b)) and frechet_distance(a, b) > 0
    with pytest.raises(ValueError, match="feature sizes differ: a has 8, b has 7"):
        frechet_distance(a, b[:, :7])
    with pytest.raises(ValueError, match="each set needs at least 2 samples, got 1 and 6"):
        frechet_distance(a[:1], b)


# -- Diversity -----------------------------------------------------------------------------


def test_diversity_of_identical_samples_is_zero():
    x = np.tile(np.array([[1.0, 2.0, 3.0]]), (50, 1))
    assert diversity(x, 20, rng=np.random.default_rng(0)) == 0.0


def test_diversity_matches_a_hand_computation_on_two_clusters():
    D = 3.0
    x = np.zeros((40, 2))
    x[20:, 0] = D  # two clusters of 20 points, D apart
    value = diversity(x, 30, rng=np.random.default_rng(7))
    rng = np.random.default_rng(7)
    first, second = rng.choice(40, 30, replace=False), rng.choice(40, 30, replace=False)
    total = 0.0
    for i, j in zip(first, second):
        total += D if (i < 20) != (j < 20) else 0.0
    assert value == pytest.approx(total / 30)
    # each pair is across the clusters with probability 1/2: over many seeds the mean is D / 2
    many = np.mean([diversity(x, 30, rng=np.random.default_rng(s)) for s in range(400)])
    assert many == pytest.approx(D / 2, abs=0.05)


def test_diversity_is_seeded_and_uses_n_pairs_for_a_small_set():
    x = features(10, 4)
    assert diversity(x, 300, rng=np.random.default_rng(3)) == diversity(x, 300, rng=np.random.default_rng(3))
    # N < pairs: N pairs, each draw covers the whole set
    rng = np.random.default_rng(3)
    first, second = rng.choice(10, 10, replace=False), rng.choice(10, 10, replace=False)
    assert sorted(first) == sorted(second) == list(range(10))
    expected = np.mean([np.linalg.norm(x[i] - x[j]) for i, j in zip(first, second)])
    assert diversity(x, 300, rng=np.random.default_rng(3)) == pytest.approx(expected)
    with pytest.raises(ValueError, match="diversity needs at least 2 samples, got 1"):
        diversity(x[:1], rng=np.random.default_rng(0))


def test_mean_interval():
    mean, half = mean_interval([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert half == pytest.approx(1.96 * math.sqrt(5 / 3) / 2)  # std(ddof=1) = sqrt(5/3)
    assert mean_interval([0.7]) == (0.7, 0.0)
    assert mean_interval([2.0, 2.0, 2.0]) == (2.0, 0.0)
    with pytest.raises(ValueError):
        mean_interval([])


# -- penetration ---------------------------------------------------------------------------


def icosphere(subdivisions: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Unit icosphere: (V, 3) vertices on the sphere, (T, 3) faces counter-clockwise from outside."""
    t = (1 + 5 ** 0.5) / 2
    v = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
         (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    f = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2),
         (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5),
         (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    verts = [np.array(p, float) / np.linalg.norm(p) for p in v]
    faces = f
    for _ in range(subdivisions):
        middle: dict[tuple[int, int], int] = {}

        def mid(a, b):
            key = (min(a, b), max(a, b))
            if key not in middle:
                m = verts[a] + verts[b]
                verts.append(m / np.linalg.norm(m))
                middle[key] = len(verts) - 1
            return middle[key]

        new = []
        for a, b, c in faces:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            new += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new
    V, T = np.array(verts), np.array(faces, np.int64)
    normals = np.cross(V[T[:, 1]] - V[T[:, 0]], V[T[:, 2]] - V[T[:, 0]])
    assert (np.einsum("ti,ti->t", normals, V[T].mean(1)) > 0).all()  # outward
    return V, T


def two_spheres(r: float, distances: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames of two spheres of radius r, centres ``distances`` apart along a vertex direction."""
    V, T = icosphere(3)
    u = V[0]  # along a vertex: the first sphere's deepest vertex is the one at r u
    frames = np.stack([np.stack([r * V, r * V + d * u]) for d in distances])  # (F, 2, V, 3)
    return frames, T, V


def test_separated_meshes_do_not_penetrate():
    r = 0.05
    frames, T, V = two_spheres(r, [0.5, 2.02 * r])  # far, and just apart
    diagonal = np.stack([r * V, r * V + 2.02 * r * np.ones(3) / np.sqrt(3)])  # boxes overlap, spheres do not
    vertices = np.concatenate([frames, diagonal[None]])
    np.testing.assert_array_equal(penetration_depths(vertices, (T, T)), 0.0)


def test_overlapping_spheres_penetrate_2r_minus_d():
    r, d = 0.05, 0.075
    frames, T, V = two_spheres(r, [d])
    # tolerance: the other mesh lies between its inscribed sphere (radius h_min, the nearest face
    # plane) and the sphere of radius r, so the deepest vertex (at d - r from the other centre) is
    # between h_min - (d - r) and r - (d - r) = 2r - d deep
    n = np.cross(V[T[:, 1]] - V[T[:, 0]], V[T[:, 2]] - V[T[:, 0]])
    h_min = r * np.min(np.einsum("ti,ti->t", n / np.linalg.norm(n, axis=1, keepdims=True), V[T[:, 0]]))
    assert r - h_min < 0.005 * r  # subdivision 3: the faces are within 0.5% of the sphere
    depth = penetration_depths(frames, (T, T))[0]
    assert 2 * r - d - (r - h_min) - 1e-9 <= depth <= 2 * r - d + 1e-9


def test_fraction_and_mean_over_a_mix_of_frames():
    r = 0.05
    frames, T, _ = two_spheres(r, [0.5, 0.075, 0.3, 0.09, 0.2])
    depths = penetration_depths(frames, (T, T))
    assert (depths[[0, 2, 4]] == 0).all() and (depths[[1, 3]] > 0).all()
    res = PenetrationResult.of(depths)
    assert res.fraction == pytest.approx(0.4)
    assert res.mean_depth == pytest.approx((depths[1] + depths[3]) / 2)
    assert res.mean_depth == pytest.approx(((2 * r - 0.075) + (2 * r - 0.09)) / 2, abs=0.005 * r)
    none = PenetrationResult.of(np.zeros(3))
    assert none.fraction == 0.0 and none.mean_depth == 0.0


def test_bundled_hands_far_apart_and_pushed_together():
    F = 4
    rng = np.random.default_rng(0)
    go = np.zeros((F, 2, 3))
    hp = rng.normal(0, 0.05, (F, 2, 45))
    betas = np.zeros((2, 10))
    transl = np.zeros((F, 2, 3))
    # flat hands at the origin overlap; the right hand 0.6 m along x is far from the left
    transl[:2, 1, 0] = 0.6
    transl[2:, 1, 0] = 0.2
    res = penetration(go, hp, betas, transl)
    assert res.depth_per_frame.shape == (F,)
    assert (res.depth_per_frame[:2] == 0).all() and (res.depth_per_frame[2:] > 0).all()
    assert res.fraction == 0.5 and res.mean_depth > 0
    model = hand_model_for("open_hand")
    assert penetration(go, hp, betas, transl, model=model).depth_per_frame.tolist() == res.depth_per_frame.tolist()
    with pytest.raises(ValueError, match=r"vertices must be \(F, 2, V, 3\)"):
        penetration_depths(np.zeros((3, 1, 5, 3)), (np.zeros((1, 3)), np.zeros((1, 3))))
