"""The landmark fit recovers a known definition from detections made by it (+ noise, + outliers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from capture.detect.landmark_fit import LandmarkSamples, SolveOptions, fit_definition
from capture.studio.rig import DEMO, make_rig
from hand_model.landmarks import landmark_points
from hand_model.model import HandModel
from tests.test_landmarks import known_definition


@pytest.fixture(scope="module")
def model():
    return HandModel()


def posed(model, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n random frames of both hands near the volume centre -> vertices (n, 2, V, 3), joints (n, 2, 21, 3)."""
    rng = np.random.default_rng(seed)
    go = torch.as_tensor(rng.normal(0, 1.0, (n, 2, 3)), dtype=torch.float32)
    hp = torch.as_tensor(model.sample_poses(n, rng), dtype=torch.float32)
    tr = torch.as_tensor(rng.normal(0, 0.03, (n, 2, 3)) + [[-0.08, 0, 0], [0.08, 0, 0]], dtype=torch.float32)
    with torch.no_grad():
        out = model(go, hp, None, tr)
    return out.vertices.numpy(), out.joints.numpy()


def test_fit_recovers_a_known_definition(model):
    truth = known_definition(model, seed=3)
    rig, _ = make_rig(DEMO, 7)
    vertices, _ = posed(model, 40, seed=1)  # (40, 2, V, 3)
    lm = landmark_points(truth, vertices)  # (40, 2, 21, 3)
    rng = np.random.default_rng(2)
    sample, camera, points = [], [], []
    for f in range(len(vertices)):
        for h in range(2):
            for c, cam in enumerate(rig.cameras):
                px = cam.project(lm[f, h]) + rng.normal(0, 1.0, (21, 2))  # 1 px detector noise
                if rng.random() < 0.03:  # a detection of something else
                    px += rng.uniform(-60, 60, 2)
                sample.append(2 * f + h)
                camera.append(c)
                points.append(px)
    samples = LandmarkSamples(vertices.reshape(-1, model.n_vertices, 3), list(rig.cameras), np.array(sample),
                              np.array(camera), np.array(points), np.ones((len(points), 21), bool))
    with torch.no_grad():
        z = torch.zeros(1, 2, 3)
        out = model(z, torch.zeros(1, 2, 45), None, z)
    ids, w, residual, count = fit_definition(samples, out.vertices[0, 1].numpy(), out.joints[0, 1].numpy(),
                                             SolveOptions(k=6))
    assert ids.shape == (21, 6) and np.allclose(w.sum(1), 1) and (w >= 0).all()
    assert (count == len(points)).all()
    assert np.median(residual) < 1.6  # px: the noise, not the outliers
    # held-out poses: the recovered landmarks where the true ones are
    fitted = truth.__class__(**{**truth.__dict__, "vertex_ids": np.stack([ids, ids]),
                                "weights": np.stack([w, w])})
    test_vertices, joints = posed(model, 30, seed=9)
    err = np.linalg.norm(landmark_points(fitted, test_vertices) - landmark_points(truth, test_vertices), axis=-1)
    off_joint = np.linalg.norm(landmark_points(truth, test_vertices) - joints, axis=-1)
    assert off_joint.mean() > 0.005  # the known landmarks are not the joints
    assert err.mean() < 0.0008 and np.percentile(err, 95) < 0.002, (err.mean(), np.percentile(err, 95))
