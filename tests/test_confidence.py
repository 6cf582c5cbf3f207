import numpy as np

from fitting.confidence import carried, confidence, consistency, support


def test_support_counts_agreeing_views_and_triangulated_joints():
    s = support(np.array([[0, 1, 2, 3, 8]]), np.array([[21, 21, 21, 21, 7]]), np.array([[True] * 5]), 3)
    np.testing.assert_allclose(s, [[0, 0, 0.5, 1, 1 / 3]])
    assert support(np.array([[8]]), np.array([[21]]), np.array([[False]]), 3)[0, 0] == 0  # no palm: not fitted


def test_consistency_halves_at_a_threshold_and_ignores_what_was_not_measured():
    c = consistency([np.array([[0.0, 1.0, 2.0, np.nan]]), np.array([[0.5, 0.0, 0.0, 0.0]])])
    np.testing.assert_allclose(c, [[1 / (1 + 0.5 ** 4), 0.5, 1 / 17, 1.0]])


def test_carried_frames_take_their_nearest_trusted_frame_decayed_but_never_beyond_their_consistency():
    own = np.array([0.9, 0.0, 0.0, 0.0, 0.6, 0.2])[:, None]
    cap = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.1])[:, None]
    c = carried(own, cap, 0.5)[:, 0]
    np.testing.assert_allclose(c, [0.9, 0.45, 0.225, 0.3, 0.6, 0.2])  # frame 5: its own, not 0.3


def test_confidence_reach_is_in_seconds():
    own_views, joints, palm = np.array([[3], [0], [0]]), np.array([[21], [0], [0]]), np.array([[True], [False],
                                                                                                [False]])
    at30 = confidence(own_views, joints, palm, [np.zeros((3, 1))], 3, 0.1, 30.0)[:, 0]
    at60 = confidence(own_views, joints, palm, [np.zeros((3, 1))], 3, 0.1, 60.0)[:, 0]
    np.testing.assert_allclose(at30, [1, np.exp(-1 / 3), np.exp(-2 / 3)], rtol=1e-6)
    np.testing.assert_allclose(at60, [1, np.exp(-1 / 6), np.exp(-2 / 6)], rtol=1e-6)
    assert at30.dtype == np.float32
