import numpy as np
import pytest
import torch

from capture.studio.motion import make_motion
from data_schemas.mano import FailureReason
from fitting.fit import (FitInputs, FitOptions, fill_between, fit_sequence, fit_shape, kabsch, penetration_penalty,
                         right_jacobian)
from data_schemas.camera_model import rodrigues_to_matrix_torch as rodrigues
from hand_model.joints_layer import JointsLayer
from hand_model.model import HandModel
from fitting.quality import QualityRule, choose_views, measure
from tests.factories import make_rig


@pytest.fixture(scope="module")
def model():
    return HandModel()


@pytest.fixture(scope="module")
def motion(model):
    """20 frames of two interacting hands, their joints (F, 42, 3) and a 12-camera rig's views of them."""
    m = make_motion("communication", 20, 30.0, 4, model)
    with torch.no_grad():
        out = model(*(torch.as_tensor(a) for a in (m.global_orient, m.hand_pose, m.betas, m.transl)))
    joints = out.joints.numpy()  # (F, 2, 21, 3)
    rig = make_rig(12, seed=1)
    px = np.stack([c.project(joints.reshape(-1, 42, 3)) for c in rig.cameras])  # (C, F, 42, 2)
    kp = np.concatenate([px, np.ones(px.shape[:-1] + (1,))], -1).astype(np.float32)
    return m, joints, rig, kp


def test_joints_layer_is_the_hand_model(model):
    rng = np.random.default_rng(0)
    B = 16
    pose = torch.as_tensor(model.sample_poses(B, rng), dtype=torch.float32)
    orient = torch.as_tensor(rng.normal(0, 1, (B, 2, 3)), dtype=torch.float32)
    betas = torch.as_tensor(rng.normal(0, 1, (2, 10)), dtype=torch.float32)
    transl = torch.as_tensor(rng.normal(0, 0.1, (B, 2, 3)), dtype=torch.float32)
    layer = JointsLayer(model)
    with torch.no_grad():
        full = model(orient, pose, betas, transl).joints
        fast = layer(orient, pose, betas, transl)
        right = layer(orient[:, 1:], pose[:, 1:], betas[1:], transl[:, 1:], hands=slice(1, 2))
    assert (full - fast).abs().max() < 1e-5
    assert (full[:, 1:] - right).abs().max() < 1e-5


def test_right_jacobian_and_kabsch():
    rng = np.random.default_rng(1)
    theta = torch.as_tensor(rng.normal(0, 1, (5, 3)))
    d = torch.as_tensor(rng.normal(0, 1e-4, (5, 3)))
    lhs = rodrigues(theta + d)
    rhs = rodrigues(theta) @ rodrigues(torch.einsum("nab,nb->na", right_jacobian(theta), d))
    assert (lhs - rhs).abs().max() < 1e-7
    R = rodrigues(torch.as_tensor(rng.normal(0, 1, (4, 3)))).numpy()
    src = rng.normal(0, 0.05, (4, 6, 3))
    dst = np.einsum("nab,npb->npa", R, src) + [0.1, 0.2, 0.3]
    R2, t2 = kabsch(src, dst, np.ones((4, 6)))
    assert np.allclose(R2, R, atol=1e-9) and np.allclose(t2, [0.1, 0.2, 0.3], atol=1e-9)


def test_shape_from_bone_lengths(model, motion):
    m, joints, _, _ = motion
    betas = fit_shape(JointsLayer(model), joints.reshape(len(joints), 42, 3))
    with torch.no_grad():
        z = torch.zeros(1, 2, 3)
        fitted = model(z, torch.zeros(1, 2, 45), torch.as_tensor(betas), z).joints[0].numpy()
        true = model(z, torch.zeros(1, 2, 45), torch.as_tensor(m.betas), z).joints[0].numpy()
    from data_schemas.keypoints import bone_lengths

    assert np.abs(bone_lengths(fitted) / bone_lengths(true) - 1).max() < 0.01  # every bone within 1%


def test_fit_recovers_the_motion(model, motion):
    m, joints, rig, kp = motion
    rng = np.random.default_rng(2)
    noisy = joints.reshape(-1, 42, 3) + rng.normal(0, 0.0003, (len(joints), 42, 3))
    res = fit_sequence(model, FitInputs(noisy, kp, rig), FitOptions())
    err = np.linalg.norm(res.joints - joints, axis=-1)
    assert err.mean() < 0.001 and err.max() < 0.005
    # 3D only, and with joints missing in some frames: the missing ones are still placed well
    holes = noisy.copy()
    holes[5:8, 3:9] = np.nan
    res = fit_sequence(model, FitInputs(holes, None, None), FitOptions())
    assert np.linalg.norm(res.joints - joints, axis=-1).mean() < 0.0015


def test_surface_subset_and_penetration_penalty(model):
    rng = np.random.default_rng(5)
    pose = torch.as_tensor(model.sample_poses(2, rng), dtype=torch.float32)
    z = torch.zeros(2, 2, 3)
    transl = torch.zeros(2, 2, 3)
    transl[0, 1, 1] = 1.0  # frame 0: a metre apart; frame 1: the same place
    layer = JointsLayer(model, surface_points=300)
    with torch.no_grad():
        verts = model(z, pose, None, transl).vertices
        points, normals = layer.surface(z, pose, torch.zeros(2, 10), transl)
    ids = np.arange(0, model.n_vertices, model.n_vertices // 300)[:300]
    assert points.shape == (2, 2, 300, 3) and (points - verts[:, :, ids]).abs().max() < 1e-5
    assert torch.allclose(normals.norm(dim=-1), torch.ones(2, 2, 300), atol=1e-5)
    assert penetration_penalty(points[:1], normals[:1]) == 0
    per_frame = penetration_penalty(points, normals, per_frame=True)
    assert per_frame.shape == (2,) and per_frame[0] == 0 and per_frame[1] > 0
    assert torch.isclose(per_frame.sum(), penetration_penalty(points, normals))
    # the allowance lets shallow overlap pass: less penalty, none once it exceeds every depth
    assert 0 < penetration_penalty(points[1:], normals[1:], allowance=0.002) < per_frame[1]
    assert penetration_penalty(points[1:], normals[1:], allowance=1.0) == 0


def test_hand_without_palm_is_held_between_its_neighbours(model, motion):
    """A hand with no triangulated palm (seen by too few cameras) is carried across from the frames
    either side (the cubic Hermite curve through frames 7 and 11 with the velocities 7 - 6 and 12 - 11,
    limited against overshoot) and stays there: its bounded 2D and temporal terms must not carry it off."""
    m, joints, rig, kp = motion
    X = joints.reshape(-1, 42, 3).copy()
    X[8:11, 21:] = np.nan  # right hand lost for 3 frames
    kp = kp.copy()
    kp[2:, 8:11, 21:] = (np.nan, np.nan, 0.0)  # ... seen by 2 cameras only
    kp[:2, 8:11, 21:, :2] += 150.0  # and wrongly there
    res = fit_sequence(model, FitInputs(X, kp, rig), FitOptions())
    t = res.transl[:, 1].astype(np.float64)  # (F, 3)
    secant = (t[11] - t[7]) / 4
    va, vb = ((np.where(v * secant > 0, np.sign(secant) * np.minimum(np.abs(v), 3 * np.abs(secant)), 0))
              for v in (t[7] - t[6], t[12] - t[11]))  # per frame, limited: same sign as the secant, at most 3x it
    for f, u in zip(range(8, 11), (0.25, 0.5, 0.75)):
        expect = ((2 * u ** 3 - 3 * u ** 2 + 1) * t[7] + (u ** 3 - 2 * u ** 2 + u) * 4 * va
                  + (-2 * u ** 3 + 3 * u ** 2) * t[11] + (u ** 3 - u ** 2) * 4 * vb)
        assert np.abs(t[f] - expect).max() < 1e-5
    assert np.linalg.norm(res.joints[8:11, 1] - joints[8:11, 1], axis=-1).mean() < 0.02


@pytest.mark.xfail(strict=True, reason="known defect: on the studio's contact takes (a fingertip resting on a palm) "
                   "the contact stage leaves the 8 mm penetration as deep as the fit without it")
def test_contact_stage_resolves_deep_penetration(model):
    """Triangulated joints that drive the hands 8 mm into each other: the contact stage pushes
    them back to about the allowance, where the fit without it leaves them deep."""
    from hand_model.contact import hand_contact

    m = make_motion("communication", 20, 30.0, 4, model)
    args = [torch.as_tensor(a) for a in (m.global_orient, m.hand_pose, m.betas, m.transl)]
    with torch.no_grad():
        verts = model(*args).vertices.numpy()
    c = hand_contact(verts, model.faces)
    f = int(np.argmin(np.where(c.depth > 0, -c.depth, c.distance)))  # the closest (or deepest) frame
    direction = verts[f, 0].mean(0) - verts[f, 1].mean(0)
    direction /= np.linalg.norm(direction)
    push = (c.distance[f] if c.depth[f] == 0 else -c.depth[f]) + 0.008  # to 8 mm deep
    transl = m.transl.copy()
    transl[:, 1] += push * direction
    args[3] = torch.as_tensor(transl)
    with torch.no_grad():
        target = model(*args)
    X = target.joints.numpy().reshape(-1, 42, 3)
    deep = hand_contact(target.vertices.numpy()[f:f + 1], model.faces).depth[0]
    assert deep > 0.006
    depths = {}
    for iterations in (0, 10):
        res = fit_sequence(model, FitInputs(X, None, None), FitOptions(contact_iterations=iterations))
        with torch.no_grad():
            v = model(*(torch.as_tensor(a[f:f + 1]) for a in (res.global_orient, res.hand_pose)),
                      torch.as_tensor(res.betas), torch.as_tensor(res.transl[f:f + 1])).vertices.numpy()
        depths[iterations] = hand_contact(v, model.faces).depth[0]
    assert depths[0] > 0.005 and depths[10] < depths[0] - 0.002, depths


def test_quality_rule_flags_broken_frames_and_queues_the_inconsistent(model, motion):
    m, joints, rig, kp = motion
    F = len(joints)
    flat = joints.reshape(F, 42, 3)
    kp = kp.copy()
    kp[2:, 4, :21] = (np.nan, np.nan, 0)  # frame 4: the left hand seen by 2 cameras only
    rng = np.random.default_rng(3)
    kp[:9, 9, 21:, :2] = rng.uniform(0, 480, (9, 21, 2))  # frame 9: the right hand wrong in 9 of 12 views
    fit = joints.copy()
    fit[14] += 0.03  # frame 14: a one-frame jump of both hands
    rule = QualityRule()
    q = measure(fit, flat, kp, rig, rule)
    f = q.quality.failure
    assert f[4, 0] & FailureReason.FEW_CAMERAS and not f[4, 1]
    assert f[9, 1] & FailureReason.REPROJECTION and not f[9, 0]
    assert f[14, 0] & FailureReason.TEMPORAL_JUMP and f[14, 1] & FailureReason.TEMPORAL_JUMP
    assert f[14, 0] & FailureReason.RESIDUAL_3D
    failed = set(np.nonzero((f != 0).any(1))[0])
    assert failed == {4, 9, 14}, failed
    c = q.quality.confidence  # (F, 2)
    assert 0.5 < c[4, 0] < 0.9  # its own two views half support it; its neighbours carry it further
    assert c[9, 1] < 0.2 and (c[14] < 0.2).all()
    assert (np.delete(c, [4, 9, 14], axis=0) > 0.95).all()
    items = choose_views(q, rig, rule, "s", np.arange(F), fit)
    assert {i.frame for i in items} == {9, 14}  # frame 4 has few views but agrees with them: not queued
    nine = [i for i in items if i.frame == 9]
    assert len(nine) == 3 and all(i.hand == "right" and i.reason == "reprojection" for i in nine)
    centre = fit[9, 1, 0]
    dirs = [rig[i.camera].center - centre for i in nine]
    dirs = [d / np.linalg.norm(d) for d in dirs]
    assert all(np.degrees(np.arccos(np.clip(a @ b, -1, 1))) >= 30 for k, a in enumerate(dirs) for b in dirs[k + 1:])


def test_a_gap_without_evidence_is_carried_smoothly_with_lower_confidence(model, motion):
    """The left hand unseen in frames 7-12 (no view, no triangulated joint): the fit carries it across
    from its neighbours (no NaN, near the truth, smooth), its confidence falls with the distance to the
    nearest seen frame, and it is not queued (nothing disagrees)."""
    m, joints, rig, kp = motion
    F = len(joints)
    X = joints.reshape(F, 42, 3).copy()
    gap = np.arange(7, 13)
    X[gap, :21] = np.nan
    kp = kp.copy()
    kp[:, gap, :21] = (np.nan, np.nan, 0)
    res = fit_sequence(model, FitInputs(X, None, None), FitOptions(device="cpu"))
    for a in (res.global_orient, res.hand_pose, res.transl, res.joints):
        assert np.isfinite(a).all()
    err = np.linalg.norm(res.joints - joints, axis=-1).mean(-1)  # (F, 2)
    assert err[gap, 0].max() < 0.001, err[:, 0]  # linear interpolation of the parameters: 2.2 mm
    accel = np.linalg.norm(res.joints[2:] - 2 * res.joints[1:-1] + res.joints[:-2], axis=-1).mean(-1)  # (F-2, 2)
    true_accel = np.linalg.norm(joints[2:] - 2 * joints[1:-1] + joints[:-2], axis=-1).mean(-1)
    assert (accel[5:13, 0] < true_accel[5:13, 0] + 0.0005).all()  # no kink where the gap starts or ends (linear: 1 mm)
    q = measure(res.joints, X, kp, rig, QualityRule(), fps=30.0)
    c = q.quality.confidence[:, 0]
    assert (q.quality.failure[gap, 0] == FailureReason.NO_DATA).all() and not q.quality.inconsistent.any()
    assert (np.delete(c, gap) > 0.95).all() and (c[gap] < 0.95).all()
    assert c[7] > c[8] > c[9] and c[12] > c[11] > c[10]  # lower further from the seen frames
    assert choose_views(q, rig, QualityRule(), "s", np.arange(F), res.joints) == []


def test_a_gap_is_carried_between_its_ends_even_after_a_jumpy_edge_frame():
    """Frames 3-6 unknown between 2 (reached by a jump of 1 from frame 1) and 7: the curve keeps to
    [theta_2, theta_7] and rises monotonically (an unlimited curve would take the jump's speed and
    overshoot 1.2); a smooth run is continued with its own speed; past the ends, the end's value."""
    theta = torch.zeros(10, 2, 1, dtype=torch.float64)
    theta[:, 0, 0] = torch.tensor([0, 0, 1, 0, 0, 0, 0, 1.2, 1.2, 0], dtype=torch.float64)
    theta[:, 1, 0] = torch.arange(10, dtype=torch.float64) * 0.1  # a steady motion
    known = torch.zeros(10, 2, dtype=torch.bool)
    known[[0, 1, 2, 7, 8], 0] = True
    known[[1, 2, 6, 7], 1] = True
    truth = theta[:, 1, 0].clone()
    fill_between(theta, known)
    gap = theta[3:7, 0, 0]
    assert (gap >= 1.0).all() and (gap <= 1.2).all() and (gap[1:] >= gap[:-1]).all(), gap
    assert theta[9, 0, 0] == 1.2
    assert torch.allclose(theta[3:6, 1, 0], truth[3:6]) and (theta[[0, 8, 9], 1, 0] == truth[[1, 7, 7]]).all()
