"""The generator on tiny configurations: training, resume, sampling, controls, saved models."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from data_schemas.dataset import DatasetOptions, append_to_dataset
from data_schemas.errors import SchemaError
from hand_model.model import HandModel
from generation.controls import InBetween, Keypoints2DGuidance, PinholeCamera, Reference, Trajectory
from generation.data import WindowDataset
from generation.model import PRESETS, HandDiffuse, HandDiffuseConfig
from generation.sample import sample
from generation.train import MODEL, TrainOptions, load_model, train
from tests.factories import posed_sequence

WINDOW = 16


def tiny(**kw) -> HandDiffuseConfig:
    return dataclasses.replace(HandDiffuseConfig(), size="tiny", window=WINDOW, **kw)


def opts(**kw) -> TrainOptions:
    base = dict(shde_steps=20, ihde_steps=20, batch_size=8, lr=1e-3, checkpoint_every=10, log_every=1,
                device="cpu", threads=1)
    base.update(kw)
    return TrainOptions(**base)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    model = HandModel()
    seqs = [posed_sequence(f"gen.s{i}", 40, seed=i, model=model) for i in range(4)]
    append_to_dataset(root, seqs, DatasetOptions(split_ratios=(1.0, 0.0, 0.0)))
    return root


@pytest.fixture(scope="module")
def trained(shards, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "tiny"
    summary = train(shards, run, tiny(), opts(shde_steps=40, ihde_steps=40))
    return run, summary


@pytest.fixture(scope="module")
def reference(shards):
    ds = WindowDataset(shards, window=WINDOW, split="train", fields=("joints", "global_orient", "hand_pose"))
    items = [ds[i] for i in (0, 30)]
    return Reference(*(torch.stack([it[f] for it in items]) for f in ("joints", "global_orient", "hand_pose")))


def test_a_few_training_steps_reduce_both_losses(trained):
    run, summary = trained
    rows = [json.loads(x) for x in (run / "loss.jsonl").read_text().splitlines()]
    for phase in ("shde", "ihde"):
        loss = [r["total"] for r in rows if r["phase"] == phase]
        assert len(loss) == 40
        assert np.mean(loss[-8:]) < 0.7 * np.mean(loss[:8]), phase
    assert {"contact", "shape"} <= set(rows[-1])
    assert (run / "loss.png").stat().st_size > 1000
    assert summary.steps == 80 and summary.resumed_from == 0


def test_saved_model_round_trip_and_refusals(trained, tmp_path):
    run, _ = trained
    model = load_model(run)
    again = load_model(run / MODEL)
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    assert model.stats.std.min() > 0 and model.data_hash
    with pytest.raises(SchemaError, match=r"no trained model \(train one with `handdiffuse train`\)"):
        load_model(tmp_path)
    bad = tmp_path / "model.pt"
    torch.save({"format": "handdiffuse.model", "version": 9}, bad)
    with pytest.raises(SchemaError, match="model format version 9 is not supported"):
        load_model(bad)


def test_continuing_a_run_equals_an_uninterrupted_one(shards, tmp_path):
    straight = train(shards, tmp_path / "a", tiny(), opts())
    train(shards, tmp_path / "b", tiny(), opts(ihde_steps=5))  # stops at step 25 (a checkpoint)
    resumed = train(shards, tmp_path / "b", tiny(), opts())
    assert resumed.resumed_from == 25 and straight.steps == resumed.steps == 40
    a, b = load_model(tmp_path / "a"), load_model(tmp_path / "b")
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), k
    rows = [json.loads(x)["step"] for x in (tmp_path / "b" / "loss.jsonl").read_text().splitlines()]
    assert rows == list(range(40))


def test_a_run_refuses_another_configuration(shards, tmp_path):
    train(shards, tmp_path / "r", tiny(), opts(shde_steps=2, ihde_steps=2, checkpoint_every=2))
    with pytest.raises(SchemaError, match="the run was started with another model configuration; use a new --run"):
        train(shards, tmp_path / "r", tiny(representation="global"), opts(shde_steps=2, ihde_steps=2))


def test_too_long_windows_are_refused(shards, tmp_path):
    with pytest.raises(SchemaError, match="no 64-frame window of the train split"):
        train(shards, tmp_path / "r", dataclasses.replace(tiny(), window=64), opts())


def test_training_takes_the_windows_above_min_confidence(tmp_path):
    """A dataset whose hands are carried (confidence 0.4) in frames 10-29 of every 40: the default
    threshold leaves no 16-frame window; --min-confidence 0.3 takes them all."""
    model = HandModel()
    seqs = [posed_sequence(f"gen.c{i}", 40, seed=i, model=model) for i in range(2)]
    for s in seqs:
        s.confidence[10:30] = 0.4
    append_to_dataset(tmp_path / "data", seqs, DatasetOptions(split_ratios=(1.0, 0.0, 0.0)))
    with pytest.raises(SchemaError, match="no 16-frame window of the train split has both hands valid and of "
                                          r"confidence >= 0.5 in every frame \(lower --window or --min-confidence"):
        train(tmp_path / "data", tmp_path / "r", tiny(), opts(shde_steps=1, ihde_steps=1))
    summary = train(tmp_path / "data", tmp_path / "r", tiny(), opts(shde_steps=1, ihde_steps=1, min_confidence=0.3))
    assert summary.windows == 2 * (40 - WINDOW + 1)


def test_sampling_shapes_and_determinism(trained):
    model = load_model(trained[0])
    a = sample(model, 3, steps=10, seed=1)
    b = sample(model, 3, steps=10, seed=1)
    c = sample(model, 3, steps=10, seed=2)
    assert a.joints.shape == (3, WINDOW, 42, 3) and a.global_orient.shape == (3, WINDOW, 2, 3)
    assert a.hand_pose.shape == (3, WINDOW, 2, 45)
    assert torch.isfinite(a.joints).all()
    assert torch.equal(a.joints, b.joints)
    assert not torch.allclose(a.joints, c.joints)
    longer = sample(model, 1, frames=24, steps=5)
    assert longer.joints.shape == (1, 24, 42, 3)


def _fresh(shards, **kw) -> HandDiffuse:
    """An untrained tiny model with statistics: the controls must hold whatever the network says."""
    from generation.train import FIELDS, fit_statistics

    torch.manual_seed(0)
    model = HandDiffuse(tiny(**kw))
    ds = WindowDataset(shards, window=WINDOW, split="train", fields=FIELDS)
    fit_statistics(model, ds, ds.complete_windows(), 64, 0, torch.device("cpu"))
    return model.eval()


@pytest.mark.parametrize("representation", ["local", "global"])
def test_inbetweening_reproduces_the_key_frames(shards, reference, representation):
    model = _fresh(shards, representation=representation)
    out = sample(model, 2, steps=10, seed=0, control=InBetween(model, reference, keyframes=5))
    err = (out.joints - reference.joints).norm(dim=-1)  # (2, T, 42)
    assert err[:, :5].max() < 1e-5 and err[:, -5:].max() < 1e-5
    assert err[:, 5:-5].max() > 1e-3  # the middle is generated, not copied
    go_err = (out.global_orient[:, :5] - reference.global_orient[:, :5]).abs().max()
    assert go_err < 1e-3


@pytest.mark.parametrize("representation", ["local", "global"])
def test_trajectory_control_follows_the_wrists_within_a_millimetre(shards, reference, representation):
    model = _fresh(shards, representation=representation)
    out = sample(model, 2, steps=10, seed=0, control=Trajectory(model, reference))
    wrists = [0, 21]
    err = (out.joints[:, :, wrists] - reference.joints[:, :, wrists]).norm(dim=-1)
    assert err.max() < 1e-3
    free = sample(model, 2, steps=10, seed=0, control=None)
    assert (free.joints[:, :, 1:21] - reference.joints[:, :, 1:21]).norm(dim=-1).mean() > 0.01


def test_keypoint_guidance_matches_the_projection(shards, reference):
    model = _fresh(shards)
    frame = model.encode(reference.joints, reference.global_orient, reference.hand_pose).frame
    # a camera 60 cm from the reference's first left wrist, looking along +y
    center = reference.joints[0, 0, 0] + torch.tensor([0.0, -0.6, 0.1])
    R = torch.tensor([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])  # world -> camera: x right, y down, z ahead
    K = torch.tensor([[800.0, 0, 320], [0, 800.0, 240], [0, 0, 1]])
    cam = PinholeCamera(K, R, -R @ center)
    targets = cam.project(reference.joints)
    visible = torch.ones(targets.shape[:-1], dtype=torch.bool)
    visible[:, :, 30:] = False
    guided = sample(model, 2, steps=10, seed=0, control=Keypoints2DGuidance(model, frame, cam, targets, visible))
    half = sample(model, 2, steps=10, seed=0,
                  control=Keypoints2DGuidance(model, frame, cam, targets, visible, strength=0.3))
    free = sample(model, 2, steps=10, seed=0,
                  control=Keypoints2DGuidance(model, frame, cam, targets, visible, strength=0))
    err = {k: (cam.project(m.joints) - targets).norm(dim=-1) for k, m in (("guided", guided), ("half", half),
                                                                        ("free", free))}
    assert err["guided"][visible].max() < 0.05  # px
    assert err["free"][visible].mean() > 20 and err["guided"][~visible].mean() > 1
    assert err["guided"][visible].mean() < err["half"][visible].mean() < err["free"][visible].mean()
    depth_guided = ((guided.joints - cam.center) ** 2).sum(-1).sqrt()
    assert torch.isfinite(depth_guided).all()


def test_presets_build_and_differ_as_documented():
    for name, cfg in PRESETS.items():
        m = HandDiffuse(dataclasses.replace(cfg, size="tiny"))
        assert (m.shde is None) == (not cfg.shde), name
    mdm = PRESETS["mdm"]
    assert mdm.representation == "global" and not mdm.shde and mdm.interaction_weight == mdm.shape_weight == 0


def test_a_loss_line_cut_short_by_a_kill_is_dropped_on_resume(shards, tmp_path):
    train(shards, tmp_path / "r", tiny(), opts(shde_steps=2, ihde_steps=2, checkpoint_every=2))
    with open(tmp_path / "r" / "loss.jsonl", "a") as f:
        f.write('{"step": 4, "pha')
    train(shards, tmp_path / "r", tiny(), opts(shde_steps=2, ihde_steps=4, checkpoint_every=2))
    steps = [json.loads(x)["step"] for x in (tmp_path / "r" / "loss.jsonl").read_text().splitlines()]
    assert steps == list(range(6))
