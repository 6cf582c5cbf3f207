"""Generated motion as shard sequences (generation.output) and its pictures (generation.render): a known
pose -> hand model joints -> sequences -> translation recovered, shard round trip, PNG and MP4 read back."""

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from PIL import Image

from data_schemas.video import read_frames
from data_schemas.errors import SchemaError
from data_schemas.shard import NAME_RE, ShardReader, read_shard, write_shard
from hand_model.draw import HAND_COLORS
from hand_model.posing import hand_model_for, pose_hands
from generation.output import motion_parameters, motions_to_sequences
from generation.render import VIDEO_SIZE, render_filmstrip, render_video

N, F = 2, 5  # samples, frames


@pytest.fixture(scope="module")
def motion():
    """A known motion: small random rotations, hands 15 cm apart drifting along x; joints from the model."""
    rng = np.random.default_rng(0)
    model = hand_model_for("open_hand")
    global_orient = rng.normal(0, 0.5, (N, F, 2, 3))
    hand_pose = rng.normal(0, 0.15, (N, F, 2, 45))
    transl = rng.normal(0, 0.01, (N, F, 2, 3))
    transl[:, :, 1, 1] += 0.15
    transl[..., 0] += np.linspace(0, 0.05, F)[None, :, None]
    posed = pose_hands(model, global_orient.reshape(-1, 2, 3), hand_pose.reshape(-1, 2, 45), np.zeros((2, 10)),
                       transl.reshape(-1, 2, 3), vertices=False)
    joints = posed.joints.reshape(N, F, 42, 3)  # (N * F, 2, 21, 3) -> (N, F, 42, 3)
    return joints, global_orient, hand_pose, transl


def test_translation_is_recovered_and_puts_the_wrists_on_the_generated_wrists(motion):
    joints, global_orient, hand_pose, transl = motion
    model = hand_model_for("open_hand")
    betas, t = motion_parameters(joints[0], global_orient[0], hand_pose[0], model)
    assert betas.shape == (2, 10) and not betas.any()
    assert np.abs(t - transl[0]).max() < 1e-5
    seqs = motions_to_sequences(joints, global_orient, hand_pose, fps=30.0, prefix="run.sample")
    for s, tr in zip(seqs, transl):
        assert np.abs(s.transl - tr).max() < 1e-5
        again = pose_hands(model, s.global_orient, s.hand_pose, s.betas, s.transl, vertices=False).joints
        assert np.abs(again[:, :, 0] - s.joints.reshape(F, 2, 21, 3)[:, :, 0]).max() < 1e-5


def test_sequences_round_trip_through_a_shard(motion, tmp_path):
    joints, global_orient, hand_pose, _ = motion
    seqs = motions_to_sequences(joints, global_orient, hand_pose, fps=30.0, prefix="run-1.sample", category="clasp")
    assert [s.name for s in seqs] == ["run-1.sample.0000", "run-1.sample.0001"]
    assert all(NAME_RE.match(s.name) for s in seqs)
    path = tmp_path / "shard-00000.h5"
    write_shard(path, seqs)
    back = read_shard(path)
    with ShardReader(path) as r:
        assert r.verify() == []
    assert [s.name for s in back] == [s.name for s in seqs]
    for s, b in zip(seqs, back):
        for k in ("joints", "global_orient", "hand_pose", "betas", "transl", "valid", "manual"):
            np.testing.assert_array_equal(getattr(b, k), getattr(s, k))
        np.testing.assert_allclose(b.joints, joints[seqs.index(s)], atol=1e-6)  # the generator's joints, as given
        assert b.valid.all() and not b.manual.any() and np.isnan(b.fit_error).all()
        assert (b.source, b.category, b.hand_model, b.flat_hand_mean, b.fps) == ("generated", "clasp", "open_hand",
                                                                                 True, 30.0)


def test_bad_prefix_and_mismatched_rotations_are_refused(motion):
    joints, global_orient, hand_pose, _ = motion
    with pytest.raises(SchemaError, match=r"sequence name 'my run.0000' must match \[A-Za-z0-9_.-\]\+"):
        motions_to_sequences(joints, global_orient, hand_pose, fps=30.0, prefix="my run")
    with pytest.raises(SchemaError, match=r"do not match joints"):
        motion_parameters(joints[0], global_orient[0, :3], hand_pose[0], hand_model_for("open_hand"))


def _near(rgb: np.ndarray, color: str) -> int:
    return int((np.abs(rgb - 255 * np.array(to_rgb(color))).max(-1) < 40).sum())


def test_filmstrip_draws_both_hands(motion, tmp_path):
    joints, global_orient, hand_pose, _ = motion
    out = render_filmstrip(joints, global_orient, hand_pose, tmp_path / "samples" / "strip.png", frames=3, title="t")
    rgb = np.asarray(Image.open(out).convert("RGB")).astype(int)  # (H, W, 3)
    for hand, color in zip(("left", "right"), HAND_COLORS):
        assert _near(rgb, color) > 200, f"the {hand} hand's colour {color} is nearly absent"
    assert [p.name for p in out.parent.iterdir()] == ["strip.png"]  # no temp file left


def test_video_has_every_frame(motion, tmp_path):
    joints, global_orient, hand_pose, _ = motion
    out = render_video(joints[0], global_orient[0], hand_pose[0], tmp_path / "sample.mp4", fps=30.0)
    frames = read_frames(out)
    assert len(frames) == F
    assert frames[0].shape == (VIDEO_SIZE[1], VIDEO_SIZE[0], 3)
    rgb = frames[-1][..., ::-1].astype(int)  # BGR -> RGB
    assert all(_near(rgb, c) > 50 for c in HAND_COLORS)  # lossy video: colours only roughly
    assert [p.name for p in tmp_path.iterdir()] == ["sample.mp4"]
