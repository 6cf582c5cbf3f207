import json
import pickle
import shutil

import numpy as np
import pytest
import torch

from data_schemas import SchemaError
from data_schemas.keypoints import FINGERS
from data_schemas.manifest import read_manifest
from data_schemas.shard import read_shard
from hand_model import generate
from hand_model.model import MANO_DIR_ENV, HandModel
from pipeline.importers import (ImportCommand, find_interhand, read_arctic, read_dataset, read_interhand)
from hand_model.posing import hand_model_for, pose_hands

PREFIX = "InterHand2.6M_train"
# capture -> its frame indices: capture 0 has a gap (two takes), capture 7 one take
CAPTURES = {"0": [0, 3, 6, 9, 12, 30, 33, 36], "7": [100, 103, 106]}


def interhand_order_of_ours():
    """For each of InterHand2.6M's 42 points, our index: right hand then left, each finger tip ->
    base (thumb4 thumb3 thumb2 thumb1, index4 ...), the wrist last; ours: left then right, wrist
    first, each finger base -> tip (1 + 4 finger + k - 1 for joint k = 1..4)."""
    out = []
    for hand_offset in (21, 0):  # right, then left
        out += [hand_offset + 1 + 4 * f + k - 1 for f in range(len(FINGERS)) for k in (4, 3, 2, 1)]
        out.append(hand_offset)
    return out


@pytest.fixture(scope="module")
def model():
    return HandModel()


@pytest.fixture(scope="module")
def means():
    """MANO's mean hand pose of the bundled model, (2, 45) left, right, read from its files."""
    rows = []
    for name in (generate.LEFT_FILE, generate.RIGHT_FILE):
        with open(generate.DATA_DIR / name, "rb") as f:
            rows.append(np.asarray(pickle.load(f)["hands_mean"], np.float64))
    return np.stack(rows)


def posed_frames(model, n, seed):
    """n frames of two hands from the bundled model: flat-relative params and joints (n, 2, 21, 3) m."""
    rng = np.random.default_rng(seed)
    go = rng.normal(0, 0.5, (n, 2, 3))
    hp = model.sample_poses(n, rng)
    betas = rng.normal(0, 0.5, (2, 10))
    transl = rng.normal(0, 0.2, (n, 2, 3)) + [[-0.1, 0, 0.9], [0.1, 0, 0.9]]
    with torch.no_grad():
        out = model(*(torch.as_tensor(a, dtype=torch.float32) for a in (go, hp, betas, transl)))
    return go, hp, betas, transl, out.joints.numpy().astype(np.float64)


@pytest.fixture(scope="module")
def interhand(tmp_path_factory, model, means):
    """InterHand2.6M's three annotation files for CAPTURES, and the truth they were written from:
    capture 0 frame 6 has the left hand's index tip invalid, frame 9 no right-hand fit."""
    root = tmp_path_factory.mktemp("interhand") / "annotations" / "train"
    root.mkdir(parents=True)
    order = interhand_order_of_ours()
    joints_json, mano_json, cams_json, truth = {}, {}, {}, {}
    for seed, (cap, frames) in enumerate(CAPTURES.items()):
        go, hp, betas, transl, joints = posed_frames(model, len(frames), seed)
        ours = joints.reshape(len(frames), 42, 3)
        joints_json[cap], mano_json[cap] = {}, {}
        for i, frame in enumerate(frames):
            valid = np.ones(42, int)
            if (cap, frame) == ("0", 6):
                valid[order.index(8)] = 0  # left index tip
            joints_json[cap][str(frame)] = {
                "world_coord": (1000 * ours[i, order]).tolist(), "joint_valid": valid[:, None].tolist(),
                "hand_type": "interacting", "hand_type_valid": 1,
            }
            fit = {}
            for h, hand in enumerate(("left", "right")):
                pose = np.concatenate([go[i, h], hp[i, h] - means[h]])  # MANO's mean-relative pose
                fit[hand] = {"pose": pose.tolist(), "shape": betas[h].tolist(), "trans": transl[i, h].tolist()}
            if (cap, frame) == ("0", 9):
                fit["right"] = None
            mano_json[cap][str(frame)] = fit
        cams_json[cap] = {"campos": {c: [0.0, 100.0 * k, 2000.0] for k, c in enumerate(("400262", "400263"))},
                          "camrot": {c: np.eye(3).tolist() for c in ("400262", "400263")},
                          "focal": {c: [1200.0, 1200.0] for c in ("400262", "400263")},
                          "princpt": {c: [256.0, 167.0] for c in ("400262", "400263")}}
        truth[cap] = dict(go=go, hp=hp, betas=betas, transl=transl, joints=ours)
    paths = {}
    for suffix, data in (("_joint_3d.json", joints_json), ("_MANO_NeuralAnnot.json", mano_json),
                         ("_camera.json", cams_json)):
        paths[suffix] = root / f"{PREFIX}{suffix}"
        paths[suffix].write_text(json.dumps(data))
    return root.parent, paths, (joints_json, mano_json, cams_json), truth


def test_interhand_comes_back_in_our_order_and_units(interhand, means, model):
    src, paths, _, truth = interhand
    seqs = {s.name: s for s in read_dataset("interhand", src)}
    assert list(seqs) == ["ih26m.train.cap0.0", "ih26m.train.cap0.1", "ih26m.train.cap7.0"]
    # capture 0 splits where the step of 3 frames jumps (12 -> 30)
    spans = {"ih26m.train.cap0.0": ("0", slice(0, 5)), "ih26m.train.cap0.1": ("0", slice(5, 8)),
             "ih26m.train.cap7.0": ("7", slice(0, 3))}
    for name, (cap, frames) in spans.items():
        s, t = seqs[name], truth[cap]
        F = s.n_frames
        assert F == frames.stop - frames.start and s.fps == 30.0
        assert (s.source, s.hand_model, s.flat_hand_mean, s.category) == ("interhand2.6m", "mano", False,
                                                                         "interacting")
        ok = np.isfinite(s.joints)
        assert np.abs(s.joints[ok] - t["joints"][frames][ok]).max() < 1e-6
        np.testing.assert_allclose(s.global_orient[s.valid], t["go"][frames][s.valid], atol=1e-6)
        np.testing.assert_allclose(s.hand_pose[s.valid], (t["hp"][frames] - means[None])[s.valid], atol=1e-6)
        np.testing.assert_allclose(s.transl[s.valid], t["transl"][frames][s.valid], atol=1e-6)
        np.testing.assert_allclose(s.betas, t["betas"], atol=1e-6)
        assert not s.manual.any() and np.isnan(s.fit_error).all()
        # the imported (mean-relative) parameters pose the same joints
        posed = pose_hands(model, s.global_orient, s.hand_pose, s.betas, s.transl, flat_hand_mean=False,
                           vertices=False).joints.reshape(F, 42, 3)
        v = np.repeat(s.valid, 21, axis=1)  # (F, 42)
        assert np.abs(posed[v] - s.joints[v]).max() < 1e-5
    s = seqs["ih26m.train.cap0.0"]
    np.testing.assert_array_equal(s.valid, [[1, 1], [1, 1], [0, 1], [1, 0], [1, 1]])
    assert np.isnan(s.joints[2, 8]).all() and np.isfinite(np.delete(s.joints[2], 8, axis=0)).all()
    assert np.isnan(s.hand_pose[3, 1]).all() and np.isfinite(s.joints[3]).all()


def test_interhand_fps_option_and_single_file(interhand):
    _, paths, _, _ = interhand
    (files,) = find_interhand(paths["_joint_3d.json"])
    assert files.split == "train" and files.mano == paths["_MANO_NeuralAnnot.json"]
    assert {s.fps for s in read_interhand(files, fps=5.0)} == {5.0}


def write_interhand(tmp_path, data, change):
    """The three files of ``data`` with ``change(joints, mano, cameras)`` applied, in tmp_path."""
    joints, mano, cams = json.loads(json.dumps(data))
    change(joints, mano, cams)
    for suffix, d in (("_joint_3d.json", joints), ("_MANO_NeuralAnnot.json", mano), ("_camera.json", cams)):
        (tmp_path / f"{PREFIX}{suffix}").write_text(json.dumps(d))
    return tmp_path / f"{PREFIX}_joint_3d.json", tmp_path / f"{PREFIX}_MANO_NeuralAnnot.json", \
        tmp_path / f"{PREFIX}_camera.json"


def _set(d, keys, value):
    for k in keys[:-1]:
        d = d[k]
    d[keys[-1]] = value


@pytest.mark.parametrize("change, which, cause", [
    (lambda j, m, c: j["0"]["3"]["world_coord"].pop(), 0,
     "capture '0' frame '3' 'world_coord' has shape (41, 3), expected (42, 3)"),
    (lambda j, m, c: _set(j, ["0", "3", "world_coord", 5, 1], float("nan")), 0,
     "capture '0' frame '3' 'world_coord' has NaN/inf values at valid joints"),
    (lambda j, m, c: j["0"]["6"].pop("joint_valid"), 0, "capture '0' frame '6' has no 'joint_valid'"),
    (lambda j, m, c: _set(j, ["0", "x1"], {}), 0, "capture '0' has frame key 'x1', not a frame index"),
    (lambda j, m, c: m["7"]["103"]["left"]["pose"].pop(), 1, "capture '7' frame '103' 'left' 'pose' has shape "
                                                             "(47,), expected (48,)"),
    (lambda j, m, c: m["0"]["0"]["right"].pop("trans"), 1, "capture '0' frame '0' 'right' has no 'trans'"),
    (lambda j, m, c: m.pop("7"), 1, "capture '7' of InterHand2.6M_train_joint_3d.json is not in this file"),
    (lambda j, m, c: c.pop("7"), 2, "capture '7' of InterHand2.6M_train_joint_3d.json is not in this file"),
    (lambda j, m, c: c["0"]["camrot"].pop("400263"), 2, "capture '0': 'camrot' names other cameras than 'campos'"),
])
def test_malformed_interhand_is_refused_with_one_line_and_nothing_written(interhand, tmp_path, change, which,
                                                                          cause, capsys):
    _, _, data, _ = interhand
    (tmp_path / "src").mkdir()
    files = write_interhand(tmp_path / "src", data, change)
    with pytest.raises(SchemaError) as e:
        read_dataset("interhand", tmp_path / "src")
    assert str(e.value) == f"{files[which]}: {cause}"
    assert ImportCommand(dataset="interhand", src=tmp_path / "src", out=tmp_path / "out").run() == 1
    assert capsys.readouterr().err == f"error: {files[which]}: {cause}\n"
    assert not (tmp_path / "out").exists()


def test_interhand_round_trip_through_the_dataset(interhand, tmp_path, capsys):
    src, _, _, _ = interhand
    out = tmp_path / "dataset"
    assert ImportCommand(dataset="interhand", src=src, out=out).run() == 0
    assert capsys.readouterr().out.startswith(f"imported interhand {src} -> {out}: 3 sequences, 11 frames written, "
                                              "0 up to date, 0 re-imported; dataset 3 sequences, 11 frames;")
    manifest = read_manifest(out)
    assert sorted(manifest["name"]) == ["ih26m.train.cap0.0", "ih26m.train.cap0.1", "ih26m.train.cap7.0"]
    assert set(manifest["source"]) == {"interhand2.6m"} and set(manifest["category"]) == {"interacting"}
    stored = {s.name: s for shard in sorted(set(manifest["shard"])) for s in read_shard(out / shard)}
    for s in read_dataset("interhand", src):
        r = stored[s.name]
        for k in ("joints", "global_orient", "hand_pose", "betas", "transl", "valid", "manual", "fit_error"):
            np.testing.assert_array_equal(getattr(r, k), getattr(s, k), err_msg=k)
        assert (r.hand_model, r.flat_hand_mean, r.fps) == ("mano", False, 30.0)
    assert ImportCommand(dataset="interhand", src=src, out=out).run() == 0  # again: nothing new
    assert ": 0 sequences, 0 frames written, 3 up to date," in capsys.readouterr().out


# ---- ARCTIC ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mano_dir(tmp_path_factory):
    """The bundled model under MANO's file names: a stand-in for the user's licensed MANO folder."""
    folder = tmp_path_factory.mktemp("mano")
    shutil.copy(generate.DATA_DIR / generate.RIGHT_FILE, folder / "MANO_RIGHT.pkl")
    shutil.copy(generate.DATA_DIR / generate.LEFT_FILE, folder / "MANO_LEFT.pkl")
    return folder


def arctic_dict(model, means, n, seed, fitting_err=True):
    go, hp, betas, transl, joints = posed_frames(model, n, seed)
    d = {}
    for h, hand in enumerate(("left", "right")):
        d[hand] = {"rot": go[:, h], "pose": hp[:, h] - means[h], "trans": transl[:, h], "shape": betas[h]}
        if fitting_err and hand == "right":
            d[hand]["fitting_err"] = np.linspace(0.001, 0.002, n)
    return d, joints.reshape(n, 42, 3)


@pytest.fixture(scope="module")
def arctic(tmp_path_factory, model, means):
    root = tmp_path_factory.mktemp("arctic") / "raw_seqs"
    truth = {}
    for seed, (subject, seq, n) in enumerate((("s01", "box_grab_01", 6), ("s02", "ketchup_use_02", 4))):
        (root / subject).mkdir(parents=True)
        d, joints = arctic_dict(model, means, n, 10 + seed)
        np.save(root / subject / f"{seq}.mano.npy", d)
        truth[f"arctic.{subject}.{seq}"] = (d, joints)
    return root, truth


def test_arctic_joints_are_the_models_forward_of_the_params(arctic, mano_dir):
    root, truth = arctic
    seqs = {s.name: s for s in read_dataset("arctic", root, mano_dir=mano_dir)}
    assert list(seqs) == ["arctic.s01.box_grab_01", "arctic.s02.ketchup_use_02"]
    for name, (d, joints) in truth.items():
        s = seqs[name]
        assert np.abs(s.joints - joints).max() < 1e-6
        np.testing.assert_allclose(s.hand_pose, np.stack([d["left"]["pose"], d["right"]["pose"]], 1), atol=1e-6)
        np.testing.assert_allclose(s.transl, np.stack([d["left"]["trans"], d["right"]["trans"]], 1), atol=1e-6)
        np.testing.assert_allclose(s.fit_error[:, 1], d["right"]["fitting_err"], atol=1e-9)
        assert np.isnan(s.fit_error[:, 0]).all() and s.valid.all() and s.fps == 30.0
        assert (s.source, s.hand_model, s.flat_hand_mean) == ("arctic", "mano", False)
    assert (seqs["arctic.s01.box_grab_01"].subject, seqs["arctic.s01.box_grab_01"].category) == ("s01", "box_grab")
    assert seqs["arctic.s02.ketchup_use_02"].category == "ketchup_use"


def test_arctic_without_mano_folder_is_refused(arctic, monkeypatch):
    monkeypatch.delenv(MANO_DIR_ENV, raising=False)
    root, _ = arctic
    with pytest.raises(SchemaError) as e:
        read_dataset("arctic", root)
    assert str(e.value) == (f"{root / 's01' / 'box_grab_01.mano.npy'}: MANO parameters need your licensed MANO "
                            f"model: pass --mano-dir (the folder with MANO_RIGHT.pkl and MANO_LEFT.pkl) or set "
                            f"${MANO_DIR_ENV}")


@pytest.mark.parametrize("change, cause", [
    (lambda d: d.pop("left"), "no 'left' hand (expected a dict with rot, pose, trans, shape)"),
    (lambda d: d["right"].pop("shape"), "'right' has no 'shape'"),
    (lambda d: d["right"].update(pose=d["right"]["pose"][:, :44]), "'right' 'pose' has shape (6, 44), expected "
                                                                   "(F, 45)"),
    (lambda d: d["right"].update(rot=d["right"]["rot"][:5]), "'right' 'rot' has shape (5, 3), expected (F, 3) "
                                                             "with F=6"),
    (lambda d: d["left"]["trans"].__setitem__((2, 0), np.nan), "'left' 'trans' has 1 NaN/inf values (first at "
                                                               "index (2, 0)); ARCTIC fits every frame"),
])
def test_malformed_arctic_is_refused_with_one_line_and_nothing_written(model, means, mano_dir, tmp_path, change,
                                                                       cause, capsys):
    d, _ = arctic_dict(model, means, 6, 0)
    change(d)
    (tmp_path / "src" / "s01").mkdir(parents=True)
    path = tmp_path / "src" / "s01" / "box_grab_01.mano.npy"
    np.save(path, d)
    with pytest.raises(SchemaError) as e:
        read_arctic(path, mano_dir)
    assert str(e.value) == f"{path}: {cause}"
    assert ImportCommand(dataset="arctic", src=tmp_path / "src", out=tmp_path / "out", mano_dir=mano_dir).run() == 1
    assert capsys.readouterr().err == f"error: {path}: {cause}\n"
    assert not (tmp_path / "out").exists()


class RunsCode:
    """What a crafted .npy can hold: unpickling it calls exec, which writes ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def test_a_crafted_arctic_file_is_refused_before_it_runs_code(mano_dir, tmp_path, capsys):
    marker = tmp_path / "ran"
    (tmp_path / "src" / "s01").mkdir(parents=True)
    path = tmp_path / "src" / "s01" / "box_grab_01.mano.npy"
    np.save(path, {"right": RunsCode(marker), "left": {}})
    cause = ("holds a pickled 'builtins.exec', which is not data: only dicts, lists, strings, numbers and numpy "
             "arrays are read, and nothing in the file is run")
    with pytest.raises(SchemaError) as e:
        read_arctic(path, mano_dir)
    assert str(e.value) == f"{path}: {cause}"
    assert ImportCommand(dataset="arctic", src=tmp_path / "src", out=tmp_path / "out", mano_dir=mano_dir).run() == 1
    assert capsys.readouterr().err == f"error: {path}: {cause}\n"
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_arctic_round_trip_through_the_dataset(arctic, mano_dir, tmp_path, capsys):
    root, truth = arctic
    out = tmp_path / "dataset"
    assert ImportCommand(dataset="arctic", src=root, out=out, mano_dir=mano_dir, fps=60.0).run() == 0
    assert "2 sequences, 10 frames written" in capsys.readouterr().out
    manifest = read_manifest(out).set_index("name")
    assert list(manifest.loc[list(truth), "subject"]) == ["s01", "s02"]
    assert set(manifest["fps"]) == {60.0} and set(manifest["source"]) == {"arctic"}
    assert manifest.loc["arctic.s01.box_grab_01", "mean_fit_error_mm"] == pytest.approx(1.5)
    for shard in sorted(set(manifest["shard"])):
        for s in read_shard(out / shard):
            assert np.abs(s.joints - truth[s.name][1]).max() < 1e-6


def test_empty_or_unknown_source_is_refused(tmp_path):
    with pytest.raises(SchemaError) as e:
        read_dataset("arctic", tmp_path)
    assert str(e.value) == (f"{tmp_path}: no <subject>/<sequence>.mano.npy file in this folder (ARCTIC's "
                            "raw_seqs)")
    with pytest.raises(SchemaError) as e:
        read_dataset("interhand", tmp_path)
    assert str(e.value) == f"{tmp_path}: no InterHand2.6M *_joint_3d.json file in this folder"
    with pytest.raises(SchemaError) as e:
        read_dataset("interhand", tmp_path, fps=0)
    assert str(e.value) == f"{tmp_path}: fps must be positive, got 0"


def test_hand_model_for_names_unknown_models():
    with pytest.raises(SchemaError) as e:
        hand_model_for("smplh", source="x.h5")
    assert str(e.value) == "x.h5: unknown hand_model 'smplh' (expected one of open_hand, mano)"
