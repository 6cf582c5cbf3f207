import numpy as np

from data_schemas import keypoints as K


def test_order_and_names():
    assert len(K.KEYPOINT_NAMES) == 42
    assert K.KEYPOINT_NAMES[0] == "left_wrist" and K.KEYPOINT_NAMES[21] == "right_wrist"
    assert K.KEYPOINT_NAMES[4] == "left_thumb4" and K.KEYPOINT_NAMES[41] == "right_pinky4"
    assert K.HAND_PARENTS[:9] == (-1, 0, 1, 2, 3, 0, 5, 6, 7)
    assert len(K.HAND_BONES) == 20


def test_mano_table_maps_every_name_to_itself():
    assert sorted(K.MANO21_TO_OPENPOSE) == list(range(21))
    for ours, mano in enumerate(K.MANO21_TO_OPENPOSE):
        assert K.MANO21_NAMES[mano] == K.HAND_JOINT_NAMES[ours]
    # MANO's tree, seen through the table, is our tree (tips hang off each finger's last joint)
    for ours, parent in enumerate(K.HAND_PARENTS[1:], start=1):
        m = K.MANO21_TO_OPENPOSE[ours]
        if m < 16:
            assert K.MANO_PARENTS[m] == K.MANO21_TO_OPENPOSE[parent]


def test_reorder_and_bone_lengths():
    mano21 = np.arange(21 * 3, dtype=float).reshape(21, 3)
    ours = K.mano21_to_ours(mano21)
    assert np.array_equal(ours[1], mano21[13]) and np.array_equal(ours[4], mano21[16])
    lengths = K.bone_lengths(ours)
    assert lengths.shape == (20,)
    assert np.isclose(lengths[0], np.linalg.norm(mano21[13] - mano21[0]))
