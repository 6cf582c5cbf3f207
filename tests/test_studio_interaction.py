"""The studio's motion at the paper's interaction level (issue 20), measured by the dataset
statistics' own rule (hand_model.contact_frames): for one 10-second take per family, at least half
the frames in contact, a mean shortest joint distance of at most 3.8 cm, and no frame with one hand
more than 2 mm inside the other. bench/studio_interaction.py measures more seeds."""

import numpy as np
import pytest

from capture.studio.motion import FAMILIES, make_motion, pose_motion
from data_schemas.keypoints import N_KEYPOINTS
from hand_model.contact import hand_contact
from hand_model.contact_frames import contact_frames, shortest_joint_distance
from hand_model.model import HandModel

FPS = 30.0
N_FRAMES = 300


@pytest.fixture(scope="module")
def model():
    return HandModel()


@pytest.mark.slow  # about 10 s a family
@pytest.mark.parametrize("family", FAMILIES)
def test_a_take_at_the_papers_interaction_level(model, family):
    m = make_motion(family, N_FRAMES, FPS, seed=0, model=model)
    v, j = pose_motion(m, model)
    c = contact_frames(model, m.global_orient, m.hand_pose, m.betas, m.transl, np.ones((N_FRAMES, 2), bool))
    assert c.contact.mean() >= 0.5
    assert shortest_joint_distance(j.reshape(N_FRAMES, N_KEYPOINTS, 3)).mean() <= 0.038
    assert hand_contact(v, model.faces, with_distance=False).depth.max() <= 0.002
