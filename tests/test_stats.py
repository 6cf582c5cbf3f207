import json
import shutil

import numpy as np
import pytest
import torch

from data_schemas import SchemaError
from data_schemas.dataset import DatasetOptions, append_to_dataset
from data_schemas.shard import ShardSequence
from hand_model import generate
from hand_model.contact_frames import contact_frames
from hand_model.model import AXIS_ANGLE_MIRROR, MANO_DIR_ENV, HandModel
from hand_model.posing import hands_mean
from pipeline.stats import PLOTS, StatsCommand, StatsOptions, _tsne, compute_stats, write_stats

MIRROR_ORIENT = np.array([1.0, -1.0, -1.0])  # an axis-angle vector under x -> -x
# Gaps between the two meshes (m) of the frames of each sequence; negative: overlapping.
GAPS = {"clasp.a": [0.001, 0.006, 0.1, 0.001, -0.008, 0.006], "tap.b": [0.006, 0.0005, 0.05, 0.006],
        "tap.c": [0.02, 0.001, 0.001, 0.2, 0.006]}
INVALID = ("tap.c", 3)  # the right hand of this frame is not valid: in neither paper number
CARRIED = ("clasp.a", 2)  # the left hand of this frame carried across missing evidence: confidence 0.3


@pytest.fixture(scope="module")
def model():
    return HandModel()


def pose(model, global_orient, hand_pose, transl=None):
    with torch.no_grad():
        out = model(*(torch.as_tensor(a, dtype=torch.float32) for a in (global_orient, hand_pose)), None,
                    None if transl is None else torch.as_tensor(transl, dtype=torch.float32))
    return out.vertices.numpy(), out.joints.numpy()


@pytest.fixture(scope="module")
def left_hand(model):
    """A left hand with its fingers towards -x, so that its +x end is the wrist (the joint of
    largest x sits ~2 cm inside the surface), and a function of the frame giving a slightly
    different finger pose for every frame (t-SNE needs distinct poses)."""
    go = np.array([0.0, 0.0, np.pi])
    base = model.sample_poses(1, np.random.default_rng(0))[0, 0]  # (45,)

    def hand_pose(name: str, frame: int) -> np.ndarray:
        rng = np.random.default_rng([frame, len(name), ord(name[-1])])
        return base + rng.normal(0, 0.05, 45)

    hp = hand_pose("x", 0)
    v, j = pose(model, np.stack([go, go * MIRROR_ORIENT])[None], np.stack([hp, hp * AXIS_ANGLE_MIRROR])[None])
    # the right hand with the mirrored parameters is the mirror image of the left (x -> -x)
    np.testing.assert_allclose(v[0, 1], v[0, 0] * [-1, 1, 1], atol=1e-6)
    assert v[0, 0, :, 0].max() - j[0, 0, :, 0].max() > 0.01  # room for an overlap that leaves the joints apart
    return go, hand_pose


def mirrored_sequence(name, gaps, left_hand, model):
    """Frames of two hands mirror images of each other across a plane x = c, placed so the meshes
    are ``gap`` apart: every vertex (joint) pair is at least 2 (c - largest x) apart, equality
    for the largest-x vertex (joint) and its own image. Returns the sequence and the per-frame
    shortest joint distance by construction."""
    go, hand_pose = left_hand
    F = len(gaps)
    left = np.stack([hand_pose(name, f) for f in range(F)])  # (F, 45)
    global_orient = np.tile(np.stack([go, go * MIRROR_ORIENT]), (F, 1, 1))
    hp = np.stack([left, left * AXIS_ANGLE_MIRROR], axis=1)  # (F, 2, 45)
    v, j = pose(model, global_orient, hp)  # both hands at x = 0
    xv, xj = v[:, 0, :, 0].max(1), j[:, 0, :, 0].max(1)  # (F,) the left hand's largest x
    c = xv + np.asarray(gaps) / 2  # (F,) mirror planes
    transl = np.zeros((F, 2, 3))
    transl[:, 1, 0] = 2 * c  # the right hand: the left's image in x = 0, moved to the image in x = c
    _, joints = pose(model, global_orient, hp, transl)
    manual = np.zeros((F, 2), bool)
    manual[0, 0] = True
    category, _ = name.split(".")
    seq = ShardSequence(
        name=name, fps=30.0, joints=joints.reshape(F, 42, 3), global_orient=global_orient, hand_pose=hp,
        betas=np.zeros((2, 10)), transl=transl, valid=np.ones((F, 2), bool), manual=manual,
        fit_error=np.full((F, 2), 0.002), confidence=np.ones((F, 2)), session="test", subject="mirror",
        category=category,
        capture_date="2026-11-26",
    )
    return seq, 2 * (c - xj)


def brute_force_gap(model, seq):
    """(F,) smallest vertex-to-vertex distance between the two posed meshes, all pairs."""
    with torch.no_grad():
        v = model(*(torch.as_tensor(a) for a in (seq.global_orient, seq.hand_pose, seq.betas,
                                                 seq.transl))).vertices.numpy().astype(np.float64)
    return np.array([np.sqrt(((f[0][:, None] - f[1][None]) ** 2).sum(-1)).min() for f in v])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, model, left_hand):
    """An export folder of the three sequences of GAPS, and what the statistics must say."""
    out = tmp_path_factory.mktemp("session") / "export"
    seqs, shortest, contact = [], [], []
    for name, gaps in GAPS.items():
        seq, joint_gap = mirrored_sequence(name, gaps, left_hand, model)
        gap = brute_force_gap(model, seq)
        # the construction holds: the meshes are as far apart as asked, overlapping frames overlap
        sep = np.asarray(gaps) > 0
        np.testing.assert_allclose(gap[sep], np.asarray(gaps)[sep], atol=2e-6)
        both = np.ones(len(gaps), bool)
        if name == INVALID[0]:
            seq.valid[INVALID[1], 1] = False
            seq.joints[INVALID[1], 21:] = np.nan
            seq.hand_pose[INVALID[1], 1] = np.nan
            seq.confidence[INVALID[1], 1] = 0.0
            both[INVALID[1]] = False
        if name == CARRIED[0]:
            seq.confidence[CARRIED[1], 0] = 0.3
        shortest.append(joint_gap[both])
        contact.append((gap < 0.003)[both])
        seqs.append(seq)
    append_to_dataset(out, seqs, DatasetOptions())
    expect = {"shortest": np.concatenate(shortest), "contact": np.concatenate(contact), "seqs": seqs}
    return out, expect


def test_contact_decision_equals_brute_force_all_pairs(model, left_hand):
    for name, gaps in GAPS.items():
        seq, _ = mirrored_sequence(name, gaps, left_hand, model)
        c = contact_frames(model, seq.global_orient, seq.hand_pose, seq.betas, seq.transl, seq.valid)
        np.testing.assert_array_equal(c.contact, brute_force_gap(model, seq) < 0.003)
        assert not c.candidates[np.asarray(gaps) >= 0.05].any()  # bounding boxes apart: nothing to pose


def test_interpenetrating_frames_count_as_contacting(model, left_hand):
    """With a threshold no vertex pair beats, only the inside test can find the overlapping frame."""
    seq, _ = mirrored_sequence("clasp.a", GAPS["clasp.a"], left_hand, model)
    tiny = 1e-7
    assert brute_force_gap(model, seq).min() > tiny
    c = contact_frames(model, seq.global_orient, seq.hand_pose, seq.betas, seq.transl, seq.valid, threshold=tiny)
    np.testing.assert_array_equal(c.contact, np.asarray(GAPS["clasp.a"]) < 0)
    assert c.penetrating[4] and not c.by_distance.any()


def test_mean_relative_poses_are_posed_with_the_models_mean(model, left_hand):
    seq, _ = mirrored_sequence("tap.b", GAPS["tap.b"], left_hand, model)
    flat = contact_frames(model, seq.global_orient, seq.hand_pose, seq.betas, seq.transl, seq.valid)
    mean_relative = contact_frames(model, seq.global_orient, seq.hand_pose - hands_mean(model), seq.betas,
                                   seq.transl, seq.valid, flat_hand_mean=False)
    np.testing.assert_array_equal(flat.contact, mean_relative.contact)
    assert flat.contact.any() and not flat.contact.all()


def test_paper_numbers_and_counts(dataset):
    out, expect = dataset
    s = compute_stats(out, StatsOptions(tsne_frames=100))
    n_both = len(expect["shortest"])
    assert s["frames"] == 15 and s["sequences"] == 3 and s["frames_both_hands_valid"] == n_both == 14
    assert s["mean_shortest_joint_distance_m"] == pytest.approx(expect["shortest"].mean(), abs=1e-6)
    assert s["mean_shortest_joint_distance_cm"] == pytest.approx(100 * expect["shortest"].mean(), abs=1e-4)
    assert s["contact_frames"] == expect["contact"].sum() == 6  # 5 under 3 mm + 1 overlapping
    assert s["contact_ratio"] == pytest.approx(6 / 14)
    assert s["categories"] == {"clasp": {"sequences": 1, "frames": 6}, "tap": {"sequences": 2, "frames": 9}}
    assert sum(v["sequences"] for v in s["splits"].values()) == 3
    assert s["frames_per_sequence"]["min"] == 4 and s["frames_per_sequence"]["max"] == 6
    fq = s["fit_quality"]
    assert fq["fit_error_mm"]["mean"] == pytest.approx(2.0) and fq["fit_error_mm"]["count"] == 29
    assert fq["manual_share"]["manual_frames"] == 3 and fq["manual_share"]["share"] == pytest.approx(3 / 15)
    conf = fq["confidence"]  # per frame, the lower hand's: 0 (not valid), 0.3 (carried), 13 x 1
    assert conf["min_confidence"] == 0.5 and conf["frames_at_least"] == 13 and conf["share_at_least"] == 13 / 15
    assert conf["count"] == 15 and conf["mean"] == pytest.approx(13.3 / 15) and conf["min"] == 0
    assert conf["histogram"]["counts"][0] == 1 and conf["histogram"]["counts"][6] == 1
    assert conf["histogram"]["counts"][-1] == 13 and len(conf["histogram"]["edges"]) == 21
    assert s["tsne"]["frames"] == 14 and s["tsne"]["perplexity"] == pytest.approx(13 / 3)


def test_write_stats_writes_json_and_plots_atomically(dataset, tmp_path):
    out, _ = dataset
    s = write_stats(out, tmp_path / "stats", StatsOptions(tsne_frames=8, seed=3))
    on_disk = json.loads((tmp_path / "stats" / "stats.json").read_text())
    assert on_disk == s
    for key in ("format", "version", "sequences", "frames", "frames_both_hands_valid",
                "mean_shortest_joint_distance_m", "mean_shortest_joint_distance_cm", "contact_ratio",
                "contact_frames", "contact_threshold_m", "frames_per_sequence", "categories", "splits",
                "fit_quality", "tsne", "plots"):
        assert key in s, key
    assert s["tsne"] == {"frames": 8, "distinct_poses": 8, "random_state": 3, "perplexity": pytest.approx(7 / 3)}
    for name in PLOTS:
        assert (tmp_path / "stats" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert sorted(p.name for p in (tmp_path / "stats").iterdir()) == sorted(PLOTS + ("stats.json",))


def test_command_on_a_session_folder_prints_the_paper_numbers(dataset, capsys):
    out, expect = dataset
    assert StatsCommand(path=out.parent, tsne_frames=0).run() == 0
    line = capsys.readouterr().out.strip()
    cm = 100 * expect["shortest"].mean()
    assert line == (f"stats {out}: 3 sequences, 15 frames (14 with both hands valid); mean shortest joint "
                    f"distance {cm:.2f} cm; contacting frames 42.9% (< 3 mm); 86.7% of frames of confidence >= 0.5 "
                    f"-> {out / 'stats' / 'stats.json'}")
    s = json.loads((out / "stats" / "stats.json").read_text())
    assert s["tsne"]["frames"] == 0 and s["tsne"]["skipped"] == "tsne_frames is 0"
    assert (out / "stats" / "tsne.png").is_file()


def test_repeated_poses_share_one_tsne_point():
    rng = np.random.default_rng(0)
    poses = np.repeat(rng.normal(0, 0.3, (6, 90)), [3, 1, 1, 2, 1, 1], axis=0)  # (9, 90), 6 distinct
    emb, perplexity = _tsne(poses, 0)
    assert emb.shape == (9, 2) and np.isfinite(emb).all() and perplexity == pytest.approx(5 / 3)
    np.testing.assert_array_equal(emb[0], emb[2])
    assert len(np.unique(emb, axis=0)) == 6


def test_folder_without_manifest_is_one_line_error(tmp_path, capsys):
    with pytest.raises(SchemaError) as e:
        compute_stats(tmp_path)
    assert str(e.value) == f"{tmp_path / 'manifest.parquet'}: file not found: run `handdiffuse export` first"
    assert StatsCommand(path=tmp_path).run() == 1
    err = capsys.readouterr().err
    assert err == (f"error: {tmp_path}: no manifest.parquet here or in export/: not an export folder (run "
                   "`handdiffuse export`, or pass the folder it wrote)\n")
    assert not (tmp_path / "stats").exists()


def test_mano_sequences_need_the_mano_folder(tmp_path, model, left_hand, monkeypatch):
    monkeypatch.delenv(MANO_DIR_ENV, raising=False)
    seq, _ = mirrored_sequence("clasp.a", GAPS["clasp.a"], left_hand, model)
    seq.hand_model = "mano"
    append_to_dataset(tmp_path / "export", [seq], DatasetOptions())
    with pytest.raises(SchemaError) as e:
        compute_stats(tmp_path / "export", StatsOptions(tsne_frames=0))
    assert str(e.value) == (f"{tmp_path / 'export' / 'shard-00000.h5'}: MANO parameters need your licensed MANO "
                            "model: pass --mano-dir (the folder with MANO_RIGHT.pkl and MANO_LEFT.pkl) or set "
                            f"${MANO_DIR_ENV}")
    mano = tmp_path / "mano"  # the bundled model in MANO's file names stands in for MANO here
    mano.mkdir()
    shutil.copy(generate.DATA_DIR / generate.RIGHT_FILE, mano / "MANO_RIGHT.pkl")
    shutil.copy(generate.DATA_DIR / generate.LEFT_FILE, mano / "MANO_LEFT.pkl")
    s = compute_stats(tmp_path / "export", StatsOptions(mano_dir=mano, tsne_frames=0))
    assert s["contact_frames"] == 3 and s["hand_models"] == {"mano": {"sequences": 1, "frames": 6}}
