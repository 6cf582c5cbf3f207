"""Procedural two-hand motion for the studio (capture.studio.motion) and the contact measure it
relies on (hand_model.contact), checked against brute-force and closed-form answers."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch
import trimesh

from capture.studio.motion import FAMILIES, HandMotion, make_motion, pose_motion
from capture.studio.motion.forearm import FOREARM_MIN_GAP, forearm_directions, forearm_gap
from hand_model.contact import HandContact, hand_contact, inside_mesh, mesh_topology, signed_distance
from hand_model.model import HandModel

FPS = 30.0
N_FRAMES = 90


@pytest.fixture(scope="module")
def model():
    return HandModel()


@dataclass
class Posed:
    motion: HandMotion
    vertices: np.ndarray  # (F, 2, V, 3)
    joints: np.ndarray  # (F, 2, 21, 3)
    contact: HandContact


@pytest.fixture(scope="module")
def sequences(model) -> dict[str, Posed]:
    out = {}
    for family in FAMILIES:
        motion = make_motion(family, N_FRAMES, FPS, seed=0, model=model)
        v, j = pose_motion(motion, model)
        out[family] = Posed(motion, v, j, hand_contact(v, model.faces))
    return out


# -- brute-force references -------------------------------------------------------------------


def winding_numbers(points, V, F, chunk=64):
    """Sum of the faces' solid angles / 4 pi (van Oosterom & Strackee), every face for every point."""
    a, b, c = V[F[:, 0]], V[F[:, 1]], V[F[:, 2]]
    out = []
    for s in range(0, len(points), chunk):
        p = points[s:s + chunk, None]
        A, B, C = a - p, b - p, c - p
        la, lb, lc = (np.linalg.norm(x, axis=-1) for x in (A, B, C))
        dot = lambda x, y: (x * y).sum(-1)  # noqa: E731
        det = dot(A, np.cross(B, C))
        den = la * lb * lc + dot(A, B) * lc + dot(B, C) * la + dot(C, A) * lb
        out.append(np.arctan2(det, den).sum(1) / (2 * np.pi))
    return np.concatenate(out)


def _segment_distance(p, a, b):
    d = b - a
    t = np.clip(((p - a) * d).sum(-1) / np.maximum((d * d).sum(-1), 1e-300), 0, 1)
    return np.linalg.norm(p - a - t[..., None] * d, axis=-1)


def brute_distance(points, V, F, chunk=32):
    """Distance to the mesh: the face plane where the foot falls inside the face, else the nearest edge."""
    a, b, c = V[F[:, 0]], V[F[:, 1]], V[F[:, 2]]
    n = np.cross(b - a, c - a)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    out = []
    for s in range(0, len(points), chunk):
        p = points[s:s + chunk, None]
        h = ((p - a) * n).sum(-1)
        q = p - h[..., None] * n
        inside = np.ones(h.shape, bool)
        for x, y in ((a, b), (b, c), (c, a)):
            inside &= (np.cross(y - x, q - x) * n).sum(-1) >= 0
        d = np.minimum.reduce([_segment_distance(p, a, b), _segment_distance(p, b, c), _segment_distance(p, c, a)])
        out.append(np.where(inside, np.abs(h), d).min(1))
    return np.concatenate(out)


def posed_hand(model, seed):
    rng = np.random.default_rng(seed)
    pose = torch.as_tensor(model.sample_poses(1, rng), dtype=torch.float32)
    with torch.no_grad():
        return model(torch.zeros(1, 2, 3), pose).vertices[0, 1].numpy().astype(np.float64)


# -- contact measure --------------------------------------------------------------------------


def test_two_unit_cubes_at_a_known_overlap_and_gap():
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    V, F = np.asarray(box.vertices), np.asarray(box.faces)
    for shift, depth, distance in (((0.95, 0.2, 0.3), 0.05, 0.0), ((0.9, 0.2, 0.3), 0.1, 0.0),
                                   ((1.01, 0.2, 0.3), 0.0, 0.01), ((1.5, 0.2, 0.3), 0.0, 0.5)):
        c = hand_contact(np.stack([V, V + shift])[None], (F, F), exact_within=1.0)
        assert c.depth[0] == pytest.approx(depth, abs=1e-12), shift
        assert c.distance[0] == pytest.approx(distance, abs=1e-12), shift
    far = hand_contact(np.stack([V, V + (1.5, 0.2, 0.3)])[None], (F, F))  # beyond exact_within: a lower bound
    assert far.depth[0] == 0 and 0.02 <= far.distance[0] <= 0.5


def test_two_spheres_at_a_known_overlap_and_gap():
    r = 0.05
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=r)
    V, F = np.asarray(sphere.vertices), np.asarray(sphere.faces)
    u = V[0] / np.linalg.norm(V[0])  # a vertex direction: the spheres meet vertex to vertex along u
    for overlap in (0.001, 0.004):
        c = hand_contact(np.stack([V, V + (2 * r - overlap) * u])[None], (F, F))
        assert c.depth[0] == pytest.approx(overlap, abs=1e-4) and c.distance[0] == 0
    c = hand_contact(np.stack([V, V + (2 * r + 0.004) * u])[None], (F, F))
    assert c.depth[0] == 0 and c.distance[0] == pytest.approx(0.004, abs=1e-9)


def test_signed_distance_on_a_hand_matches_brute_force(model):
    V, F = posed_hand(model, 1), model.faces[1]
    rng = np.random.default_rng(0)
    points = V[rng.integers(len(V), size=250)] + rng.normal(0, 0.01, (250, 3))
    sd = signed_distance(points, V, F)
    assert np.abs(np.abs(sd) - brute_distance(points, V, F)).max() < 1e-12
    inside = winding_numbers(points, V, F) > 0.5
    assert 20 < inside.sum() < 230
    assert np.array_equal(sd < 0, inside)
    assert np.array_equal(inside_mesh(points, V, mesh_topology(F)), inside)


def test_a_hand_against_itself_shifted(model):
    V, F = posed_hand(model, 2), model.faces[1]
    t = np.array([0.6, -1.0, 0.3])
    t = 0.003 * t / np.linalg.norm(t)
    c = hand_contact(np.stack([V, V + t])[None], (F, F))
    # a surface point moved by t into the mesh is at most |t| deep; flat patches facing t make it ~|t|
    assert 0.8 * 0.003 < c.depth[0] <= 0.003 + 1e-12 and c.distance[0] == 0
    sd = signed_distance(V + t, V, F)  # every shifted vertex, the same measure one point at a time
    assert c.depth_in[0, 1] == pytest.approx(-sd.min(), abs=1e-12)
    some = np.random.default_rng(0).choice(len(V), 200, replace=False)
    assert np.array_equal(sd[some] < 0, winding_numbers((V + t)[some], V, F) > 0.5)
    assert np.abs(np.abs(sd[some]) - brute_distance((V + t)[some], V, F)).max() < 1e-12
    apart = hand_contact(np.stack([V, V + (0.0, 0.0, 0.3)])[None], (F, F))
    assert apart.depth[0] == 0 and apart.distance[0] >= 0.02


def test_a_mesh_with_a_hole_is_refused():
    box = trimesh.creation.box()
    with pytest.raises(ValueError, match="^mesh is not closed and consistently oriented: every directed edge "
                                         "must appear once and its reverse once$"):
        mesh_topology(np.asarray(box.faces)[1:])


# -- motion -----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_shapes_and_dtypes(sequences, family):
    m = sequences[family].motion
    assert m.category == family and m.fps == FPS and m.n_frames == N_FRAMES
    for name, shape in (("global_orient", (N_FRAMES, 2, 3)), ("hand_pose", (N_FRAMES, 2, 45)),
                        ("betas", (2, 10)), ("transl", (N_FRAMES, 2, 3))):
        a = getattr(m, name)
        assert a.shape == shape and a.dtype == np.float32 and np.isfinite(a).all(), name
    assert np.array_equal(m.betas[0], m.betas[1])  # one person


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_motion_other_seed_other_motion(model, sequences, family):
    a, b = (make_motion(family, 20, FPS, 5, model) for _ in range(2))
    for name in ("global_orient", "hand_pose", "betas", "transl"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    c = sequences[family].motion  # seed 0
    assert np.abs(a.hand_pose - c.hand_pose[:20]).max() > 0.05 and np.abs(a.transl - c.transl[:20]).max() > 0.005
    assert not np.array_equal(a.betas, c.betas)


@pytest.mark.parametrize("family", FAMILIES)
def test_smooth_in_time_at_the_speeds_of_real_hands(sequences, family):
    j = sequences[family].joints
    step = np.linalg.norm(np.diff(j, axis=0), axis=-1)  # (F-1, 2, 21) m per frame
    assert step.max() < 0.03
    acc = np.linalg.norm(np.diff(j, 2, axis=0), axis=-1) * FPS ** 2
    assert acc.max() < 15.0  # m/s^2: no jumps, no jerks
    wrist_speed = step[:, :, 0] * FPS
    assert np.percentile(wrist_speed, 95) < 1.0 and wrist_speed.max() < 1.5


@pytest.mark.parametrize("family", FAMILIES)
def test_poses_inside_the_joint_limits(model, sequences, family):
    assert model.limit_violation(torch.as_tensor(sequences[family].motion.hand_pose)).max() <= 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_forearms_point_back_to_the_subject_and_do_not_cross(sequences, family):
    s = sequences[family]
    f = forearm_directions(s.motion.global_orient)  # (F, 2, 3)
    assert (f @ np.array([0.0, -1.0, 0.0]) >= 0.2).all() and (f[..., 2] <= 0.5).all()
    assert forearm_gap(f, s.joints[:, :, 0]).min() >= FOREARM_MIN_GAP
    # the forearm leaves the wrist away from the fingers, on the mirrored left hand too
    fingers = s.joints[:, :, 12] - s.joints[:, :, 0]  # wrist to middle fingertip
    assert ((fingers * f).sum(-1) < 0).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_no_deep_interpenetration(sequences, family):
    assert sequences[family].contact.depth.max() <= 0.002


@pytest.mark.parametrize("family", FAMILIES)
def test_the_hands_really_touch(sequences, family):
    c = sequences[family].contact
    touching = c.distance <= 0.002
    assert touching.mean() >= 0.3  # a take starts just before the first touch (10 s takes: test_studio_interaction)
    assert c.depth[touching].max() > 0.0005  # a light press, not a near miss


@pytest.mark.parametrize("family", FAMILIES)
def test_hands_stay_inside_the_capture_volume(sequences, family):
    assert np.abs(sequences[family].vertices).max() <= 0.25


def test_unknown_family_is_refused(model):
    with pytest.raises(ValueError) as e:
        make_motion("juggling", 10, FPS, 0, model)
    assert str(e.value) == ("unknown motion family 'juggling'; expected one of random_interaction, communication, "
                            "tutting, sign")
