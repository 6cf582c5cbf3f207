"""Landmark definitions: the file format, the hand model's side (points, the fit layer), and the fit
comparing the detections with the model's landmarks."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from data_schemas.errors import SchemaError
from data_schemas.landmarks import (LandmarkDefinition, read_landmarks, shipped_definition, write_landmarks)
from hand_model.joints_layer import JointsLayer
from hand_model.landmarks import check_definition, landmark_points, model_fingerprint
from hand_model.model import HandModel


@pytest.fixture(scope="module")
def model():
    return HandModel()


def known_definition(model, seed: int = 0, k: int = 4) -> LandmarkDefinition:
    """Each landmark: k random vertices near a point 8-15 mm off its joint at rest, random weights; the
    same vertex ids on both hands (the left hand is the right's mirror image)."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        z = torch.zeros(1, 2, 3)
        out = model(z, torch.zeros(1, 2, 45), None, z)
    rest, joints = out.vertices[0, 1].numpy(), out.joints[0, 1].numpy()
    ids = np.zeros((21, k), np.int64)
    for j in range(21):
        d = rng.normal(size=3)
        target = joints[j] + d / np.linalg.norm(d) * rng.uniform(0.008, 0.015)
        near = np.argsort(np.linalg.norm(rest - target, axis=1))[:12]
        ids[j] = rng.choice(near, k, replace=False)
    w = rng.uniform(0.2, 1.0, (21, k))
    w /= w.sum(1, keepdims=True)
    return LandmarkDefinition("test-1", '{"a": 1}', model.name, model.n_vertices, model_fingerprint(model),
                              "drawn at random", "tests", np.stack([ids, ids]), np.stack([w, w]),
                              np.ones((2, 21)), np.full((2, 21), 7))


def test_round_trip_and_digest(tmp_path, model):
    d = known_definition(model)
    path = tmp_path / "x.h5"
    write_landmarks(path, d)
    back = read_landmarks(path)
    for k in ("vertex_ids", "weights", "residual_px", "n_observations"):
        np.testing.assert_allclose(getattr(back, k), getattr(d, k), atol=1e-6)
    for k in ("detector", "detector_config", "hand_model", "n_vertices", "model_fingerprint", "method", "made_from"):
        assert getattr(back, k) == getattr(d, k)
    assert back.digest == d.digest
    other = known_definition(model, seed=1)
    assert other.digest != d.digest


def test_bad_files_one_line(tmp_path, model):
    d = known_definition(model)
    path = tmp_path / "x.h5"
    w = d.weights.copy()
    w[1, 4] *= 1.1
    with pytest.raises(SchemaError) as e:
        write_landmarks(path, LandmarkDefinition(**{**d.__dict__, "weights": w}))
    assert str(e.value) == f"{path}: the weights of hand 1 landmark 4 sum to 1.100000, not 1"
    bad = LandmarkDefinition(**{**d.__dict__, "vertex_ids": d.vertex_ids + model.n_vertices})
    with pytest.raises(SchemaError, match=f"'vertex_ids' has values above {model.n_vertices - 1}"):
        write_landmarks(path, bad)
    write_landmarks(path, d)
    with h5py.File(path, "r+") as f:
        f.attrs["version"] = 2
    with pytest.raises(SchemaError) as e:
        read_landmarks(path)
    assert str(e.value).startswith(f"{path}: unknown handdiffuse.landmarks format version 2")
    write_landmarks(path, d)
    with h5py.File(path, "r+") as f:
        f["weights"][0, 0, 0] = 0.5
    with pytest.raises(SchemaError, match="dataset '/weights' fails its checksum"):
        read_landmarks(path)
    with pytest.raises(SchemaError) as e:
        read_landmarks(tmp_path / "none.h5")
    assert "\n" not in str(e.value)


def test_definition_belongs_to_its_model(model):
    d = known_definition(model)
    check_definition(d, model, "x.h5")
    moved = LandmarkDefinition(**{**d.__dict__, "model_fingerprint": "0" * 16})
    with pytest.raises(SchemaError, match="x.h5: landmarks defined on hand model"):
        check_definition(moved, model, "x.h5")


def test_shipped_definition_by_detector_family(tmp_path):
    (tmp_path / "mediapipe.h5").write_bytes(b"")
    assert shipped_definition("mediapipe-0.10.14", tmp_path) == tmp_path / "mediapipe.h5"
    assert shipped_definition("dwpose-onnx", tmp_path) is None


def test_layer_landmarks_equal_the_posed_surface(model):
    d = known_definition(model)
    rng = np.random.default_rng(4)
    go = torch.as_tensor(rng.normal(0, 1, (3, 2, 3)), dtype=torch.float32)
    hp = torch.as_tensor(model.sample_poses(3, rng), dtype=torch.float32)
    betas = torch.as_tensor(rng.normal(0, 1, (2, 10)), dtype=torch.float32)
    tr = torch.as_tensor(rng.normal(0, 0.1, (3, 2, 3)), dtype=torch.float32)
    with torch.no_grad():
        out = model(go, hp, betas, tr)
        layer = JointsLayer(model, landmarks=d)
        L, lever = layer.landmarks(go, hp, betas, tr, levers=True)
        np.testing.assert_allclose(L.numpy(), landmark_points(d, out.vertices.numpy()), atol=2e-6)
        np.testing.assert_allclose(layer(go, hp, betas, tr).numpy(), out.joints.numpy(), atol=2e-6)
        joints_only = JointsLayer(model)
        np.testing.assert_allclose(joints_only.landmarks(go, hp, betas, tr).numpy(), out.joints.numpy(), atol=2e-6)
    assert lever.shape == (3, 2, len(layer.pair_landmark), 3)


def test_levers_are_the_first_order_motion(model):
    """Turning joint k by a small world rotation a moves landmark l by a x lever (pose correctives off)."""
    from data_schemas.camera_model import matrix_to_rodrigues, rodrigues_to_matrix_torch
    from data_schemas.keypoints import MANO_PARENTS

    d = known_definition(model)
    layer = JointsLayer(model, landmarks=d)
    layer.l_posedirs.zero_()
    rng = np.random.default_rng(5)
    go = torch.as_tensor(rng.normal(0, 1, (1, 2, 3)), dtype=torch.float32)
    hp = torch.as_tensor(model.sample_poses(1, rng), dtype=torch.float32)
    tr = torch.zeros(1, 2, 3)
    with torch.no_grad():
        L, lever = layer.landmarks(go, hp, torch.zeros(2, 10), tr, levers=True)
        G = layer.last_rotations
        a = torch.tensor([0.3, -0.2, 0.5]) * 1e-3
        Ra = rodrigues_to_matrix_torch(a.expand(1, 2, 3))
        for p in range(0, len(layer.pair_landmark), 7):
            lm, k = int(layer.pair_landmark[p]), int(layer.pair_joint[p])
            pose = torch.cat([go, hp], -1).reshape(1, 2, 16, 3).clone()
            parent = torch.eye(3).expand(1, 2, 3, 3) if k == 0 else G[:, :, MANO_PARENTS[k]]
            R = parent.transpose(-1, -2) @ Ra @ G[:, :, k]
            pose[:, :, k] = torch.as_tensor(matrix_to_rodrigues(R.reshape(-1, 3, 3).double().numpy()).reshape(1, 2, 3))
            L2 = layer.landmarks(pose[:, :, 0], pose[:, :, 1:].reshape(1, 2, 45), torch.zeros(2, 10), tr)
            moved = (L2 - L)[:, :, lm]
            predicted = torch.cross(a.expand(1, 2, 3), lever[:, :, p], dim=-1)
            assert (moved - predicted).abs().max() < 2e-7 + 0.02 * predicted.abs().max()


@pytest.mark.xfail(strict=True, reason="known defect: on poses drawn from the model (and on the studio's "
                   "contact takes) the fit that knows the definition stops ~5 mm from exact landmark data")
def test_fit_compares_landmarks_and_returns_joints(model):
    """Detections made by a definition: a fit that knows it recovers the true joints; one that takes
    the points for joints does not. (Hands apart, poses drawn from the model: the test does not move
    with the studio's choreographies.)"""
    from capture.studio.rig import DEMO, make_rig
    from fitting.fit import FitInputs, fit_sequence
    from tests.factories import posed_sequence

    d = known_definition(model, seed=2)
    motion = posed_sequence("s", 16, seed=4, model=model)
    with torch.no_grad():
        out = model(*(torch.as_tensor(a, dtype=torch.float32) for a in (motion.global_orient, motion.hand_pose,
                                                                         motion.betas, motion.transl)))
    truth = out.joints.numpy()  # (F, 2, 21, 3)
    points = landmark_points(d, out.vertices.numpy()).reshape(16, 42, 3)
    rig, _ = make_rig(DEMO, 3)
    px = np.stack([c.project(points) for c in rig.cameras])  # (C, F, 42, 2)
    kp = np.concatenate([px, np.ones(px.shape[:-1] + (1,))], axis=-1).astype(np.float32)
    inputs = FitInputs(points, kp, rig)
    knows = fit_sequence(model, inputs, landmarks=d)
    blind = fit_sequence(model, inputs)
    e_knows = np.linalg.norm(knows.joints - truth, axis=-1).mean()
    e_blind = np.linalg.norm(blind.joints - truth, axis=-1).mean()
    print(f"joint error knowing the definition {1000 * e_knows:.2f} mm, blind {1000 * e_blind:.2f} mm")
    assert e_knows < 0.0015 and e_blind > 3 * e_knows, (e_knows, e_blind)
    np.testing.assert_allclose(knows.landmarks.reshape(16, 42, 3), points, atol=0.002)
