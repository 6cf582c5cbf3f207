"""The evaluation's feature extractor: training on tiny shards, the saved file, invariance."""

import dataclasses
import hashlib
import math

import numpy as np
import pytest
import torch

from data_schemas import SchemaError
from data_schemas.dataset import DatasetOptions, append_to_dataset
from data_schemas.manifest import read_manifest
from generation.motion_features import (EvaluatorConfig, load_evaluator, train_evaluator,
                                  training_data_hash)
from tests.factories import make_sequence

WINDOW = 16
LENGTHS = [60, 48, 40, 52]
TINY = EvaluatorConfig(window=WINDOW, width=32, layers=1, heads=2, feedforward=64, feature_dim=8, dropout=0.0,
                       steps=60, batch_size=8, lr=3e-3, seed=0, stride=2, stats_windows=64, device="cpu")
HINT = "`handdiffuse evaluate` without --evaluator trains one"


def smooth_sequence(name: str, n_frames: int, seed: int):
    """The factory's sequence (frame 10: right hand invalid, NaN joints; frames 40-44: the left hand's
    confidence 0.2) with joints that move
    smoothly: a random pose swaying and drifting, so windows have structure to reconstruct."""
    seq = make_sequence(name, n_frames, seed)
    rng = np.random.default_rng(100 + seed)
    t = np.arange(n_frames)[:, None, None]
    pose = rng.normal(0, 0.05, (1, 42, 3))
    joints = pose + 0.03 * np.sin(t / 5 + rng.uniform(0, 6, (1, 42, 3))) + 0.002 * t * rng.normal(0, 1, (1, 1, 3))
    joints[~seq.valid[:, 0], :21] = np.nan
    joints[~seq.valid[:, 1], 21:] = np.nan
    return dataclasses.replace(seq, joints=joints)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models train fastest on one thread (and other tests share the cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    seqs = [smooth_sequence(f"imp.s{i:02d}", n, i) for i, n in enumerate(LENGTHS)]
    append_to_dataset(root, seqs, DatasetOptions(shard_mb=0.05, split_ratios=(1.0, 0.0, 0.0)))
    return root


@pytest.fixture(scope="module")
def trained(shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluator") / "evaluator.pt"
    return train_evaluator(shards, out, TINY), out


def motion(n=3, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(WINDOW)[None, :, None, None]
    return rng.normal(0, 0.05, (n, 1, 42, 3)) + 0.03 * np.sin(t / 5 + rng.uniform(0, 6, (n, 1, 42, 3)))


def test_training_lowers_the_loss_and_the_file_holds_the_run(shards, trained):
    model, out = trained
    payload = torch.load(out, weights_only=True)
    assert payload["format"] == "handdiffuse.evaluator" and payload["version"] == 1
    assert payload["config"] == dataclasses.asdict(TINY)
    assert payload["data_hash"] == training_data_hash(shards) == model.data_hash
    loss = payload["loss"]
    assert len(loss) == TINY.steps and all(math.isfinite(v) for v in loss)
    assert np.mean(loss[-10:]) < 0.5 * np.mean(loss[:5])
    # windows (stride 2) that contain frame 10, where a hand is invalid, are left out
    # the factory's frame 10 (a hand not valid) and frames 40-44 (confidence 0.2) are in no window
    left_out = {10, 40, 41, 42, 43, 44}
    usable = sum(1 for n in LENGTHS for s in range(0, n - WINDOW + 1, TINY.stride)
                 if not left_out & set(range(s, s + WINDOW)))
    assert payload["windows"] == usable
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


def test_training_is_deterministic(shards, trained, tmp_path):
    _, out = trained
    cfg = dataclasses.replace(TINY, steps=5)
    again = []
    for i in range(2):
        train_evaluator(shards, tmp_path / f"e{i}.pt", cfg)
        again.append(torch.load(tmp_path / f"e{i}.pt", weights_only=True))
    assert again[0]["loss"] == again[1]["loss"] == torch.load(out, weights_only=True)["loss"][:5]
    for k, v in again[0]["state_dict"].items():
        torch.testing.assert_close(v, again[1]["state_dict"][k], rtol=0, atol=0)


def test_save_load_gives_identical_features(shards, trained):
    model, out = trained
    loaded = load_evaluator(out, expect_data_hash=training_data_hash(shards))
    x = motion()
    f = model.features(x)
    assert f.shape == (3, TINY.feature_dim) and f.dtype == np.float32
    np.testing.assert_allclose(loaded.features(x), f, atol=1e-6, rtol=0)
    np.testing.assert_allclose(loaded.features(torch.as_tensor(x)), f, atol=1e-6, rtol=0)
    np.testing.assert_allclose(loaded.features(x, batch=2), f, atol=1e-6, rtol=0)
    assert not np.allclose(f[0], f[1])  # different motions, different features


def test_features_are_invariant_to_a_rigid_motion_about_the_vertical(trained):
    model, _ = trained
    x = motion(seed=1)
    a = 1.1
    R = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    moved = x @ R.T + np.array([0.7, -1.3, 0.4])
    np.testing.assert_allclose(model.features(moved), model.features(x), atol=1e-4, rtol=0)
    # the heading frame keeps gravity: a tilt about a horizontal axis is a different motion
    tilt = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    assert np.abs(model.features(x @ tilt.T) - model.features(x)).max() > 1e-2
    with pytest.raises(ValueError, match="joints are not finite"):
        model.features(np.full((1, WINDOW, 42, 3), np.nan))


def test_training_data_hash_is_over_sorted_name_and_fingerprint(shards):
    rows = read_manifest(shards)
    lines = sorted(f"{n}\t{f}\n" for n, f in zip(rows["name"], rows["fingerprint"]))
    assert training_data_hash(shards) == hashlib.sha256("".join(lines).encode()).hexdigest()
    assert training_data_hash(shards, "test") == hashlib.sha256(b"").hexdigest()


def test_load_refuses_a_missing_file_another_version_or_other_data(shards, trained, tmp_path):
    _, out = trained
    missing = tmp_path / "none.pt"
    with pytest.raises(SchemaError) as e:
        load_evaluator(missing)
    assert str(e.value) == f"{missing}: file not found: {HINT}"

    payload = torch.load(out, weights_only=True)
    old = tmp_path / "old.pt"
    torch.save({**payload, "version": 2}, old)
    with pytest.raises(SchemaError) as e:
        load_evaluator(old)
    assert str(e.value) == (f"{old}: unknown handdiffuse.evaluator format version 2 (this handdiffuse reads "
                            f"version 1): {HINT}")

    other = tmp_path / "other.pt"
    torch.save({**payload, "format": "handdiffuse.denoiser"}, other)
    with pytest.raises(SchemaError) as e:
        load_evaluator(other)
    assert str(e.value) == (f"{other}: not a handdiffuse evaluator (format 'handdiffuse.denoiser', "
                            "expected 'handdiffuse.evaluator')")

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(SchemaError) as e:
        load_evaluator(garbage)
    assert str(e.value).startswith(f"{garbage}: not a readable evaluator file (")

    stored = payload["data_hash"]
    with pytest.raises(SchemaError) as e:
        load_evaluator(out, expect_data_hash="0" * 64)
    assert str(e.value) == (f"{out}: trained on other data (data hash {stored[:12]}, expected 000000000000): "
                            f"{HINT} on these shards")


def test_a_window_longer_than_every_sequence_is_refused(shards, tmp_path):
    cfg = dataclasses.replace(TINY, window=max(LENGTHS) + 1)
    with pytest.raises(SchemaError) as e:
        train_evaluator(shards, tmp_path / "e.pt", cfg)
    assert str(e.value) == (f"{shards}: no training window of {max(LENGTHS) + 1} frames (no train sequence is "
                            "that long): use a shorter window or more data")
    assert not (tmp_path / "e.pt").exists()
