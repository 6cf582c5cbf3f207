import numpy as np

from capture.detect.base import HandCandidate, assign_sides, dedupe, to_rows
from capture.detect.mediapipe import chirality
from capture.detect.tracking import track_sides


def hand_at(x: float, y: float, scale: float = 60.0, seed: int = 0) -> np.ndarray:
    """A (21, 3) hand-like cloud of keypoints centred at (x, y), score 1."""
    offsets = np.random.default_rng(seed).uniform(-0.5, 0.5, (21, 2)) * scale
    return np.concatenate([offsets + (x, y), np.ones((21, 1))], axis=1)


def two_hands_moving(n: int = 30):
    """Left hand moving right from x=100, right hand from x=400; per frame (left, right) keypoints."""
    return [(hand_at(100 + 3 * i, 200, seed=1), hand_at(400 + 3 * i, 210, seed=2)) for i in range(n)]


def sides(rows: np.ndarray) -> list[tuple[float, float]]:
    """Mean x of the left and right rows of every frame."""
    return [(np.nanmean(r[:21, 0]), np.nanmean(r[21:, 0])) for r in rows]


def test_momentary_label_flip_does_not_split_a_hand():
    frames = []
    for i, (left, right) in enumerate(two_hands_moving()):
        flip = i in (10, 11, 20)  # the labels say the opposite for three frames
        frames.append([HandCandidate(right, 3.0 if flip else -3.0), HandCandidate(left, -3.0 if flip else 3.0)])
    per_image = sides(to_rows(frames))
    assert per_image[10][0] > 300, "the flipped frames really are flipped image by image"
    for i, (xl, xr) in enumerate(sides(track_sides(frames))):
        assert xl < xr and abs(xl - (100 + 3 * i)) < 30 and abs(xr - (400 + 3 * i)) < 30, i


def test_a_hand_alone_keeps_its_side_through_a_flip():
    frames = []
    for i, (left, _) in enumerate(two_hands_moving()):
        frames.append([HandCandidate(left, -2.0 if i == 15 else 2.0)])
    rows = track_sides(frames)
    assert (rows[:, :21, 2] > 0).all() and (rows[:, 21:, 2] == 0).all()
    assert np.isnan(rows[:, 21:, :2]).all()


def test_labels_that_hold_for_long_win_over_continuity():
    frames = []
    for i, (left, right) in enumerate(two_hands_moving(40)):
        # the first five frames' labels are wrong, the other 35 right: identity follows the majority
        s = -2.0 if i < 5 else 2.0
        frames.append([HandCandidate(left, s), HandCandidate(right, -s)])
    for xl, xr in sides(track_sides(frames)):
        assert xl < xr


def test_missing_frames_and_empty_input():
    frames = [[HandCandidate(hand_at(100, 100), 2.0)], [], [HandCandidate(hand_at(103, 100), 2.0)]]
    rows = track_sides(frames)
    assert rows.shape == (3, 42, 3)
    assert (rows[1, :, 2] == 0).all() and (rows[[0, 2], :21, 2] > 0).all()
    assert track_sides([]).shape == (0, 42, 3)


def test_two_left_votes_still_give_two_hands_and_duplicates_collapse():
    a, b = HandCandidate(hand_at(100, 100), 2.0), HandCandidate(hand_at(400, 100), 0.5)
    assert [(s, c is a) for s, c in assign_sides([a, b])] == [(0, True), (1, False)]
    twin = HandCandidate(a.keypoints - (1.0, 1.0, 0.1), 1.0)  # the same hand reported twice, less sure
    assert len(dedupe([a, twin, b])) == 2
    rows = to_rows([[a, twin, b]])
    assert np.allclose(rows[0, :21, :2], a.keypoints[:, :2]) and np.allclose(rows[0, 21:, :2], b.keypoints[:, :2])


def test_points_a_backend_did_not_find_are_nan_with_score_zero():
    kp = hand_at(100, 100)
    kp[3, 2] = 0.0
    rows = to_rows([[HandCandidate(kp, 1.0)]])
    assert np.isnan(rows[0, 3, :2]).all() and rows[0, 3, 2] == 0
    assert (rows[0, 21:, 2] == 0).all()


def test_chirality_tells_the_hand_models_hands_apart():
    import torch
    from scipy.spatial.transform import Rotation

    from hand_model.model import HandModel

    model = HandModel()
    n = 200
    pose = torch.tensor(model.sample_poses(n, np.random.default_rng(0)), dtype=torch.float32)
    orient = torch.tensor(Rotation.random(2 * n, random_state=1).as_rotvec().reshape(n, 2, 3), dtype=torch.float32)
    with torch.no_grad():
        joints = model.forward(orient, pose).joints.numpy()  # (n, 2, 21, 3)
    c = chirality(joints)
    assert (c[:, 0] < 0).mean() > 0.97 and (c[:, 1] > 0).mean() > 0.97
    mirrored = joints * np.array([-1.0, 1.0, 1.0])  # a mirror turns a left hand into a right one
    assert (chirality(mirrored)[:, 0] > 0).mean() > 0.97
