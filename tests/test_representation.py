import numpy as np
import pytest
import torch

from data_schemas.camera_model import rodrigues_to_matrix_torch as rodrigues
from hand_model.model import AXIS_ANGLE_MIRROR, HandModel
from generation.representation import (
    HAND_DIM, GlobalRep, LocalRep, RepresentationConfig, RepStats, canonicalize, decode_hand, encode_hand,
    mirror_left_to_right, mirror_right_to_left, mirror_start, quat_conjugate, quat_cumprod, quat_from_axis_angle,
    quat_from_matrix, quat_multiply, quat_rotate, quat_to_axis_angle, quat_to_matrix, rotations_from_axis_angle,
    uncanonicalize, zero_global_motion,
)

B, T = 2, 200
MIRROR = torch.tensor([-1.0, 1.0, 1.0])
ORIENT_MIRROR = torch.tensor([1.0, -1.0, -1.0])  # an axis-angle vector under x -> -x


def smooth(rng, shape, scale, T=T):
    """(B, T, *shape) sums of three slow sinusoids per value, amplitude ~scale."""
    t = np.arange(T)[:, None]
    out = 0
    for _ in range(3):
        freq = rng.uniform(0.005, 0.05, (B, 1) + shape)
        phase = rng.uniform(0, 2 * np.pi, (B, 1) + shape)
        out = out + scale / 3 * np.sin(2 * np.pi * freq * t.reshape((1, T) + (1,) * len(shape)) + phase)
    return torch.as_tensor(out, dtype=torch.float32)


@pytest.fixture(scope="module")
def random_motion():
    """Smooth random joints (not a hand), orientations and poses: the reps need no consistency."""
    rng = np.random.default_rng(0)
    offsets = torch.as_tensor(rng.normal(0, 0.05, (B, 1, 42, 3)), dtype=torch.float32)
    joints = offsets + smooth(rng, (42, 3), 0.01) + smooth(rng, (1, 3), 0.3)  # (B, T, 42, 3)
    return joints, smooth(rng, (2, 3), 2.0), smooth(rng, (2, 45), 0.5)


@pytest.fixture(scope="module")
def model():
    return HandModel()


def pose(model, global_orient, hand_pose, transl):
    """(B, T, 2, ...) parameters -> (B, T, 42, 3) joints."""
    with torch.no_grad():
        out = model(global_orient.reshape(-1, 2, 3), hand_pose.reshape(-1, 2, 45), None, transl.reshape(-1, 2, 3))
    return out.joints.reshape(global_orient.shape[:2] + (42, 3))


@pytest.fixture(scope="module")
def posed_motion(model):
    """Both hands posed by the hand model: poses interpolated between sampled key poses every 40 frames."""
    rng = np.random.default_rng(1)
    keys = model.sample_poses(B * 6, rng).reshape(B, 6, 2, 45)
    t = np.linspace(0, 5, T)
    hand_pose = np.stack([[[np.interp(t, np.arange(6), keys[b, :, h, k]) for k in range(45)] for h in range(2)]
                          for b in range(B)])  # (B, 2, 45, T)
    hand_pose = torch.as_tensor(hand_pose.transpose(0, 3, 1, 2), dtype=torch.float32)
    global_orient = smooth(rng, (2, 3), 1.5)
    transl = smooth(rng, (2, 3), 0.1) + torch.tensor([[-0.1, 0, 0], [0.1, 0, 0]])
    return pose(model, global_orient, hand_pose, transl), global_orient, hand_pose, transl


# -- quaternions --------------------------------------------------------------------------------

def test_quaternion_helpers_agree_with_rodrigues():
    rng = np.random.default_rng(2)
    axis = rng.normal(size=(500, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    angle = np.concatenate([rng.uniform(0, np.pi - 1e-3, 495), [0.0, 1e-7, 1e-4, 3.1, np.pi - 1e-3]])
    a = torch.as_tensor(axis * angle[:, None], dtype=torch.float64)
    b = torch.as_tensor(rng.normal(0, 1.5, (500, 3)), dtype=torch.float64)
    v = torch.as_tensor(rng.normal(size=(500, 3)), dtype=torch.float64)
    qa, qb = quat_from_axis_angle(a), quat_from_axis_angle(b)
    assert torch.allclose(qa.norm(dim=-1), torch.ones(500, dtype=torch.float64)) and (qa[:, 0] >= 0).all()
    assert torch.allclose(quat_to_matrix(qa), rodrigues(a), atol=1e-7)
    assert torch.allclose(quat_rotate(qa, v), (rodrigues(a) @ v[..., None])[..., 0], atol=1e-7)
    assert torch.allclose(quat_to_matrix(quat_multiply(qa, qb)), rodrigues(a) @ rodrigues(b), atol=1e-7)
    assert torch.allclose(quat_rotate(quat_conjugate(qa), quat_rotate(qa, v)), v, atol=1e-9)
    assert torch.allclose(quat_to_axis_angle(qa), a, atol=1e-7)
    assert torch.allclose(quat_from_matrix(rodrigues(b)), qb, atol=1e-7)
    # near a half turn the sign of w is ambiguous: compare rotations
    assert torch.allclose(quat_to_matrix(quat_from_matrix(rodrigues(a))), rodrigues(a), atol=1e-7)
    # float32 at zero: finite values and gradients
    z = torch.zeros(3, 3, requires_grad=True)
    quat_to_axis_angle(quat_from_axis_angle(z)).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_cumulative_product_is_the_sequential_product():
    rng = np.random.default_rng(3)
    q = quat_from_axis_angle(torch.as_tensor(rng.normal(0, 0.5, (B, 37, 4, 3)), dtype=torch.float64))
    scan = quat_cumprod(q, dim=1)
    run = q[:, 0]
    for t in range(1, 37):
        run = quat_multiply(run, q[:, t])
        assert torch.allclose(quat_to_matrix(scan[:, t]), quat_to_matrix(run), atol=1e-10)


# -- the sequence frame -------------------------------------------------------------------------

@pytest.mark.parametrize("canonical", ["heading", "full"])
def test_canonicalize_puts_the_first_left_wrist_at_the_origin_and_its_axis_along_x(posed_motion, canonical):
    joints, go, hp, _ = posed_motion
    rot = rotations_from_axis_angle(go, hp)
    cfg = RepresentationConfig(canonical=canonical)
    c, crot, frame = canonicalize(joints, rot, cfg)
    assert c[:, 0, 0].abs().max() < 1e-6
    axis = c[:, 0, 9]  # left middle1
    if canonical == "heading":
        assert axis[:, 1].abs().max() < 1e-6 and (axis[:, 0] > 0).all()
        assert torch.allclose(axis[:, 2], joints[:, 0, 9, 2] - joints[:, 0, 0, 2], atol=1e-6)  # height kept
        assert torch.allclose(c[..., 2], joints[..., 2] - joints[:, :1, :1, 2], atol=1e-5)
    else:
        assert axis[:, 1:].abs().max() < 1e-6 and (axis[:, 0] > 0).all()
        normal = torch.linalg.cross(c[:, 0, 5], c[:, 0, 17])  # palm normal of the first left hand
        assert normal[:, 1].abs().max() < 1e-6 and (normal[:, 2] > 0).all()
    # the root rotations turned with the joints: the hand model poses the canonical joints from them
    back, back_rot = uncanonicalize(c, crot, frame)
    assert (back - joints).abs().max() < 1e-6
    assert (quat_to_matrix(back_rot) - quat_to_matrix(rot)).abs().max() < 1e-6


def test_unknown_canonical_mode_is_refused(random_motion):
    with pytest.raises(ValueError, match=r"unknown canonical 'yaw' \(heading or full\)"):
        GlobalRep(RepresentationConfig(canonical="yaw")).encode(*random_motion)


def test_canonical_orientations_pose_the_canonical_joints(model, posed_motion):
    joints, go, hp, transl = posed_motion
    c, crot, frame = canonicalize(joints, rotations_from_axis_angle(go, hp))
    # the turned orientations pose the turned hands (each moved so its wrist is where the joints say)
    go_c = quat_to_axis_angle(crot[..., 0, :])
    zero = pose(model, go_c, hp, torch.zeros_like(transl))
    moved = zero + (c[:, :, [0, 21]] - zero[:, :, [0, 21]]).repeat_interleave(21, 2)
    assert (moved - c).abs().max() < 1e-5


# -- global rep -------------------------------------------------------------------------------

@pytest.mark.parametrize("canonical", ["heading", "full"])
@pytest.mark.parametrize("motion", ["random_motion", "posed_motion"])
def test_global_rep_round_trip(request, motion, canonical):
    joints, go, hp = request.getfixturevalue(motion)[:3]
    rep = GlobalRep(RepresentationConfig(canonical=canonical))
    x = rep.encode(joints, go, hp)
    assert x.shape == (B, T, rep.dim) and x.dtype == torch.float32
    assert (x[:, 0, rep.VELOCITIES] == 0).all()
    assert torch.allclose(x[:, 1:, rep.VELOCITIES], x[:, 1:, rep.POSITIONS] - x[:, :-1, rep.POSITIONS])
    world = rep.decode(x, rep.frame(joints))
    assert (world.joints - joints).abs().max() < 1e-6
    assert (quat_to_matrix(world.rotations) - quat_to_matrix(rotations_from_axis_angle(go, hp))).abs().max() < 1e-5
    assert (rodrigues(world.hand_pose.unflatten(-1, (15, 3))) - rodrigues(hp.unflatten(-1, (15, 3)))).abs().max() < 1e-5
    assert (rodrigues(world.global_orient) - rodrigues(go)).abs().max() < 1e-5
    canonical_joints = rep.decode(x).joints
    assert canonical_joints[:, 0, 0].abs().max() < 1e-6


# -- local rep --------------------------------------------------------------------------------

@pytest.mark.parametrize("canonical", ["heading", "full"])
@pytest.mark.parametrize("motion", ["random_motion", "posed_motion"])
def test_local_rep_round_trip_over_200_frames(request, motion, canonical):
    joints, go, hp = request.getfixturevalue(motion)[:3]
    rep = LocalRep(RepresentationConfig(canonical=canonical))
    x = rep.encode(joints, go, hp)
    assert x.shape == (B, T, rep.dim) == (B, T, 385) and x.dtype == torch.float32
    world = rep.decode(x, rep.frame(joints))
    assert (world.joints - joints).abs().max() < 1e-4
    assert (quat_to_matrix(world.rotations) - quat_to_matrix(rotations_from_axis_angle(go, hp))).abs().max() < 1e-4
    # the right hand's placement relative to the left, every frame
    rel, rel_back = joints[:, :, 21:] - joints[:, :, :1], world.joints[:, :, 21:] - world.joints[:, :, :1]
    assert (rel - rel_back).abs().max() < 1e-4
    # in the sequence frame: the first left wrist at the origin
    assert rep.decode(x).joints[:, 0, 0].abs().max() < 1e-6


def rigid(joints, go, angle_axis, shift):
    """The whole sequence turned by ``angle_axis`` about the world origin and moved by ``shift``."""
    q = quat_from_axis_angle(torch.as_tensor(angle_axis, dtype=torch.float32))
    moved = quat_rotate(q, joints) + torch.as_tensor(shift, dtype=torch.float32)
    return moved, quat_to_axis_angle(quat_multiply(q, quat_from_axis_angle(go)))


def test_local_rep_is_invariant_to_a_rigid_motion_of_the_sequence(posed_motion):
    joints, go, hp, _ = posed_motion
    heading, full = LocalRep(), LocalRep(RepresentationConfig(canonical="full"))
    x, xf = heading.encode(joints, go, hp), full.encode(joints, go, hp)
    # 1. about the vertical + a shift: the whole heading rep is unchanged
    j2, go2 = rigid(joints, go, [0, 0, 2.5], [0.4, -1.0, 0.3])
    assert (heading.encode(j2, go2, hp) - x).abs().max() < 1e-4
    # 2. any rotation: the "full" rep is unchanged; the heading rep's per-frame blocks too
    j3, go3 = rigid(joints, go, [1.0, -0.7, 2.0], [-0.2, 0.5, 1.0])
    assert (full.encode(j3, go3, hp) - xf).abs().max() < 1e-4
    x3 = heading.encode(j3, go3, hp)
    assert (x3[..., : 2 * HAND_DIM] - x[..., : 2 * HAND_DIM]).abs().max() < 1e-4
    assert (x3[..., heading.RIGHT_RELATIVE_ROTATION] - x[..., heading.RIGHT_RELATIVE_ROTATION]).abs().max() < 1e-4
    assert (x3[..., heading.RIGHT_RELATIVE_POSITION] - x[..., heading.RIGHT_RELATIVE_POSITION]).abs().max() < 1e-4
    # and decoding the moved one with its own frame gives the moved joints
    assert (heading.decode(x3, heading.frame(j3)).joints - j3).abs().max() < 1e-4


def test_decode_uses_the_mean_of_the_sequence_block(random_motion):
    rep = LocalRep()
    x = rep.encode(*random_motion)
    noisy = x.clone()
    noisy[..., rep.SEQUENCE] += torch.randn(B, T, 11, generator=torch.Generator().manual_seed(0)) * 1e-3
    ref = rep.decode(x).joints
    assert (rep.decode(noisy).joints - ref).abs().max() < 2e-3  # noise averaged over 200 frames


# -- single hand --------------------------------------------------------------------------------

def test_mirror_twice_is_the_identity(random_motion):
    x = LocalRep().encode(*random_motion)[..., LocalRep.RIGHT]
    assert torch.equal(mirror_left_to_right(mirror_right_to_left(x)), x)
    assert not torch.allclose(mirror_right_to_left(x), x)


def test_a_mirrored_right_hand_is_the_mirror_image(model, posed_motion):
    joints, go, hp, transl = posed_motion
    right_joints, right_rot = joints[:, :, 21:], rotations_from_axis_angle(go, hp)[:, :, 1]
    block, start = encode_hand(right_joints, right_rot)
    left_joints, left_rot = decode_hand(mirror_right_to_left(block), mirror_start(start))
    assert (left_joints - right_joints * MIRROR).abs().max() < 1e-4
    # the hand model's left hand posed with the mirrored parameters is that hand
    mirrored_go = torch.stack([go[:, :, 1] * ORIENT_MIRROR, go[:, :, 1]], 2)
    mirrored_hp = torch.stack([hp[:, :, 1] * torch.as_tensor(AXIS_ANGLE_MIRROR, dtype=torch.float32), hp[:, :, 1]], 2)
    mirrored_tr = torch.stack([transl[:, :, 1] * MIRROR, transl[:, :, 1]], 2)
    model_left = pose(model, mirrored_go, mirrored_hp, mirrored_tr)[:, :, :21]
    assert (left_joints - model_left).abs().max() < 1e-4
    model_rot = rotations_from_axis_angle(mirrored_go, mirrored_hp)[:, :, 0]  # (B, T, 16, 4)
    assert (quat_to_matrix(left_rot) - quat_to_matrix(model_rot)).abs().max() < 1e-4
    # and the left block of the model's left hand is the mirrored block
    left_block, _ = encode_hand(model_left, model_rot)
    assert (left_block - mirror_right_to_left(block)).abs().max() < 1e-4


def test_zero_global_motion_keeps_the_articulation_in_place(model, posed_motion):
    joints, go, hp, transl = posed_motion
    x = LocalRep().encode(joints, go, hp)
    left, rot = decode_hand(zero_global_motion(x[..., LocalRep.LEFT]))
    assert left[:, :, 0].abs().max() == 0
    assert (quat_to_matrix(rot[:, :, 0]) - torch.eye(3)).abs().max() < 1e-6
    # = the hand model's hand with no global rotation, its wrist moved to the origin
    still = pose(model, torch.zeros_like(go), hp, torch.zeros_like(transl))[:, :, :21]
    assert (left - (still - still[:, :, :1])).abs().max() < 1e-5


# -- statistics ---------------------------------------------------------------------------------

def test_stats_round_trip_and_state_dict(random_motion):
    rep = LocalRep()
    x = rep.encode(*random_motion)  # (B, T, 385)
    stats = RepStats.fit(x)
    streamed = RepStats.fit(iter([x[:1], x[1:]]))
    assert torch.allclose(stats.mean, streamed.mean) and torch.allclose(stats.std, streamed.std)
    z = stats.normalize(x)
    assert z.dtype == torch.float32
    assert (stats.denormalize(z) - x).abs().max() < 1e-5
    varying = x.reshape(-1, rep.dim).std(0) > 1e-3
    assert z.reshape(-1, rep.dim).mean(0).abs().max() < 1e-3
    assert torch.allclose(z.reshape(-1, rep.dim).std(0, unbiased=False)[varying], torch.ones(int(varying.sum())),
                          atol=1e-3)
    constant = RepStats.fit(torch.cat([x, torch.full((B, T, 1), 0.3)], dim=-1), min_std=1e-4)
    assert constant.std[-1] == 1e-4 and torch.allclose(constant.mean[-1].float(), torch.tensor(0.3))
    fresh = RepStats(rep.dim)
    fresh.load_state_dict(stats.state_dict())
    assert torch.equal(fresh.normalize(x), z)
    holder = torch.nn.Module()
    holder.stats = stats
    assert {"stats.mean", "stats.std"} <= set(holder.state_dict())
    with pytest.raises(ValueError, match="RepStats.fit: no frames"):
        RepStats.fit(iter([]))
