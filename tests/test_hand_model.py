import pickle

import numpy as np
import pytest
import torch
import trimesh

from data_schemas.errors import SchemaError
from data_schemas.keypoints import FINGERTIPS, bone_lengths
from hand_model import generate, pose_prior, shape_space
from hand_model.anatomy import documented_lengths, rest_keypoints
from hand_model.mesh_checks import self_intersections
from hand_model.model import AXIS_ANGLE_MIRROR, HandModel, HandModelConfig

MIRROR = np.array([-1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def model():
    return HandModel()


def load(name):
    with open(generate.DATA_DIR / name, "rb") as f:
        return pickle.load(f)


def test_smplx_loads_both_bundled_files_as_mano():
    import smplx

    for name, right in ((generate.RIGHT_FILE, True), (generate.LEFT_FILE, False)):
        layer = smplx.MANO(model_path=str(generate.DATA_DIR / name), use_pca=False, flat_hand_mean=True)
        assert layer.is_rhand == right
        out = layer(betas=torch.zeros(1, 10), global_orient=torch.zeros(1, 3), hand_pose=torch.zeros(1, 45))
        assert out.vertices.shape[1] == load(name)["v_template"].shape[0] > max(generate.TIP_VERTEX_IDS)
        assert out.joints.shape == (1, 16, 3)


def test_file_has_every_mano_key_with_mano_shapes():
    d = load(generate.RIGHT_FILE)
    V = d["v_template"].shape[0]
    shapes = {"v_template": (V, 3), "shapedirs": (V, 3, 10), "posedirs": (V, 3, 135), "J_regressor": (16, V),
              "weights": (V, 16), "kintree_table": (2, 16), "hands_components": (45, 45), "hands_mean": (45,)}
    for k, shape in shapes.items():
        assert d[k].shape == shape, k
    assert d["f"].shape[1] == 3 and d["f"].max() == V - 1
    assert np.allclose(d["weights"].sum(1), 1, atol=1e-5) and d["weights"].min() >= 0
    assert np.allclose(d["J_regressor"].sum(1), 1, atol=1e-5)
    assert list(d["kintree_table"][0, 1:]) == [0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]
    comps = d["hands_components"].astype(np.float64)
    assert np.allclose(comps @ comps.T, np.eye(45), atol=1e-5)


def test_forward_shapes_dtype_and_batch(model):
    B = 4
    rng = np.random.default_rng(0)
    pose = torch.as_tensor(model.sample_poses(B, rng), dtype=torch.float32)
    out = model(torch.zeros(B, 2, 3), pose, torch.zeros(2, 10), torch.zeros(B, 2, 3))
    assert out.joints.shape == (B, 2, 21, 3) and out.joints.dtype == torch.float32
    assert out.vertices.shape == (B, 2, model.n_vertices, 3)
    single = model(torch.zeros(1, 2, 3), pose[2:3], None, None)
    assert torch.allclose(single.joints[0], out.joints[2], atol=1e-6)


def test_rest_bone_lengths_match_the_documented_figures(model):
    want = documented_lengths()
    for hand in range(2):
        got = bone_lengths(model.rest_joints()[hand].numpy().astype(np.float64))
        rel = np.abs(got / want - 1)
        assert rel.max() < 0.05, (hand, rel.round(3))


def test_joints_are_mano_joints_plus_tip_vertices_in_our_order(model):
    out = model(torch.zeros(1, 2, 3), torch.zeros(1, 2, 45))
    v, j = out.vertices[0, 1], out.joints[0, 1]
    assert torch.equal(j[list(FINGERTIPS)], v[list(generate.TIP_VERTEX_IDS)])
    err = np.linalg.norm(j.numpy() - rest_keypoints(), axis=1)
    tips = list(FINGERTIPS)
    assert np.delete(err, tips).max() < 1e-5  # regressed joints sit on the skeleton
    assert err[tips].max() < 3e-3  # a tip is the skin vertex nearest the fingertip keypoint


def test_gradients_reach_pose_shape_and_translation(model):
    go = torch.zeros(2, 2, 3, requires_grad=True)
    pose = torch.full((2, 2, 45), 0.1, requires_grad=True)
    betas = torch.zeros(2, 2, 10, requires_grad=True)
    transl = torch.zeros(2, 2, 3, requires_grad=True)
    out = model(go, pose, betas, transl)
    (out.joints.square().sum() + out.vertices.square().sum()).backward()
    for name, t in (("global_orient", go), ("hand_pose", pose), ("betas", betas), ("transl", transl)):
        assert t.grad is not None and t.grad.abs().sum() > 0, name
        assert (t.grad.abs().reshape(2, 2, -1).sum(-1) > 0).all(), name  # every frame, both hands


def test_mesh_is_closed_manifold_outward_and_does_not_cross_itself():
    d = load(generate.RIGHT_FILE)
    v, f = d["v_template"].astype(np.float64), d["f"].astype(np.int64)
    mesh = trimesh.Trimesh(v, f, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.euler_number == 2  # one closed surface of genus 0
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    assert (np.unique(edges, axis=0, return_counts=True)[1] == 2).all()  # every edge in two faces
    assert mesh.volume > 0  # normals point outwards
    assert 2.0e-4 < mesh.volume < 4.5e-4  # an adult hand, m^3
    assert len(self_intersections(v, f)) == 0


def test_self_intersection_check_finds_a_crossing():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0.2, 0.2, -1], [0.2, 0.2, 1], [0.3, 0.5, 1]], float)
    assert len(self_intersections(v, np.array([[0, 1, 2], [3, 4, 5]]))) == 2
    v[3:, 2] += 2  # moved apart
    assert len(self_intersections(v, np.array([[0, 1, 2], [3, 4, 5]]))) == 0


def test_left_is_the_mirror_of_the_right(model):
    rng = np.random.default_rng(3)
    B = 3
    pose_r = model.sample_poses(B, rng)[:, 1]
    orient_r = rng.normal(0, 0.8, (B, 3))
    betas = rng.normal(0, 1, (B, 10))
    transl_r = rng.normal(0, 0.1, (B, 3))
    pose = np.stack([pose_r * AXIS_ANGLE_MIRROR, pose_r], 1)
    orient = np.stack([orient_r * -MIRROR, orient_r], 1)
    transl = np.stack([transl_r * MIRROR, transl_r], 1)
    f = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    model64 = model.double()
    try:
        out = model64(f(orient), f(pose), f(np.stack([betas, betas], 1)), f(transl))
    finally:
        model.float()
    left, right = out.vertices[:, 0].numpy(), out.vertices[:, 1].numpy()
    assert np.abs(left - right * MIRROR).max() < 1e-6
    assert np.abs(out.joints[:, 0].numpy() - out.joints[:, 1].numpy() * MIRROR).max() < 1e-6
    L, R = load(generate.LEFT_FILE), load(generate.RIGHT_FILE)
    assert np.array_equal(L["v_template"], R["v_template"] * MIRROR.astype(np.float32))
    assert np.array_equal(L["weights"], R["weights"]) and np.array_equal(L["J_regressor"], R["J_regressor"])
    mesh = trimesh.Trimesh(L["v_template"], L["f"], process=False)
    assert mesh.is_winding_consistent and mesh.volume > 0


def test_regenerating_gives_the_committed_files(tmp_path):
    paths = generate.write(tmp_path)
    for p in paths:
        with open(p, "rb") as fh:
            new = pickle.load(fh)
        old = load(p.name)
        assert sorted(new) == sorted(old)
        for k in new:
            if isinstance(new[k], np.ndarray):
                assert new[k].dtype == old[k].dtype and new[k].shape == old[k].shape, k
                assert np.allclose(new[k], old[k], rtol=0, atol=1e-6), k
            else:
                assert new[k] == old[k], k


def test_shape_components_are_orthogonal_and_scaled_like_a_population(model):
    d = load(generate.RIGHT_FILE)
    S = d["shapedirs"].astype(np.float64).reshape(-1, 10)
    cos = (S.T @ S) / np.outer(np.linalg.norm(S, axis=0), np.linalg.norm(S, axis=0))
    assert np.abs(cos - np.eye(10)).max() < 1e-4
    assert len(shape_space.COMPONENT_NAMES) == 10
    rng = np.random.default_rng(0)
    betas = torch.as_tensor(rng.normal(0, 1, (400, 2, 10)), dtype=torch.float32)
    z = torch.zeros(400, 2, 3)
    with torch.no_grad():
        j = model(z, torch.zeros(400, 2, 45), betas, z).joints[:, 1].numpy()
    length = np.linalg.norm(j[:, 12] - j[:, 0], axis=1)  # wrist to middle fingertip
    breadth = np.linalg.norm(j[:, 5] - j[:, 17], axis=1)  # index to pinky knuckle
    assert 0.04 < length.std() / length.mean() < 0.09
    assert 0.04 < breadth.std() / breadth.mean() < 0.10
    assert 0.16 < length.mean() < 0.20  # adult hand length, m
    bones = bone_lengths(j)
    assert (bones > 0.005).all()  # no component drives a bone to nothing within 3 SD


def test_joints_follow_the_skeleton_under_shape_changes():
    rest = rest_keypoints()
    d = load(generate.RIGHT_FILE)
    v, W, R = (d[k].astype(np.float64) for k in ("v_template", "weights", "J_regressor"))
    for i in range(10):
        e = np.zeros(10)
        e[i] = 2.0
        skel = shape_space.shaped_skeleton(rest, e)
        regressed = R @ shape_space.deform(v, W, rest, skel)
        assert np.abs(regressed - skel.keypoints[list(shape_space.MANO_TO_OURS)]).max() < 2.5e-3, \
            shape_space.COMPONENT_NAMES[i]


def test_pose_prior_samples_inside_the_limits_and_round_trips(model):
    rng = np.random.default_rng(0)
    angles = pose_prior.sample_angles(500, rng)
    pose = pose_prior.to_axis_angle(angles, model.frames)
    assert np.allclose(pose_prior.to_anatomical(pose, model.frames), angles, atol=1e-9)
    assert pose_prior.limit_violation(angles).max() == 0
    poses = torch.as_tensor(model.sample_poses(200, rng), dtype=torch.float32)
    assert model.limit_violation(poses).max() < 1e-5  # both hands, the left through the mirror
    bent = poses.clone()
    bent[:, :, 5] -= 2.5  # index PIP bent backwards far outside its range
    assert (model.limit_violation(bent).amax(dim=(-1, -2)) > 0.5).all()


def test_pose_prior_curls_fingers_towards_the_palm(model):
    pose = np.zeros((1, 2, 45))
    angles = np.zeros((15, 3))
    angles[:, 2] = np.deg2rad(60)  # flex every joint
    pose[0, 1] = pose_prior.to_axis_angle(angles, model.frames)
    out = model(torch.zeros(1, 2, 3), torch.as_tensor(pose, dtype=torch.float32))
    tips = out.joints[0, 1, [8, 12, 16, 20]].numpy()
    assert (tips[:, 1] < -0.03).all()  # palm faces -y: flexed fingertips end up well on the palm side


def test_mano_kind_needs_a_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("HANDDIFFUSE_MANO_DIR", raising=False)
    with pytest.raises(SchemaError, match=r"kind=mano needs mano_dir or \$HANDDIFFUSE_MANO_DIR"):
        HandModel(HandModelConfig(kind="mano"))
    with pytest.raises(SchemaError) as e:
        HandModel(HandModelConfig(kind="mano", mano_dir=tmp_path))
    assert str(e.value) == f"{tmp_path / 'MANO_RIGHT.pkl'}: file not found"


def test_mano_kind_loads_mano_format_files_through_the_same_path(monkeypatch, tmp_path):
    for src, dst in ((generate.RIGHT_FILE, "MANO_RIGHT.pkl"), (generate.LEFT_FILE, "MANO_LEFT.pkl")):
        (tmp_path / dst).write_bytes((generate.DATA_DIR / src).read_bytes())
    monkeypatch.setenv("HANDDIFFUSE_MANO_DIR", str(tmp_path))
    a, b = HandModel(HandModelConfig(kind="mano")), HandModel()
    pose = torch.as_tensor(b.sample_poses(2, np.random.default_rng(0)), dtype=torch.float32)
    z = torch.zeros(2, 2, 3)
    assert torch.equal(a(z, pose).vertices, b(z, pose).vertices)
