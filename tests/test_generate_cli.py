"""`handdiffuse train` / `handdiffuse sample` through the CLI: outputs, controls, kill and resume, errors."""

import json
import os
import signal
import subprocess
import sys
import time

import cv2
import pytest
import torch

from data_schemas.dataset import DatasetOptions, append_to_dataset
from data_schemas.manifest import read_manifest
from data_schemas.shard import read_shard
from hand_model.model import HandModel
from generation.model import PRESETS
from generation.train import TrainOptions, train
from pipeline.cli import main
from tests.factories import posed_sequence

TINY = ["--size", "tiny", "--window", "16", "--batch-size", "4", "--threads", "1", "--device", "cpu"]


def hd(*args, **kw):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.getcwd()}, **kw)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    model = HandModel()
    seqs = [posed_sequence(f"cli.s{i}", 40, seed=10 + i, model=model) for i in range(5)]
    append_to_dataset(root, seqs, DatasetOptions(split_ratios=(0.6, 0.0, 0.4)))
    assert set(read_manifest(root)["split"]) == {"train", "test"}
    return root


@pytest.fixture(scope="module")
def run(shards, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "cli"
    assert main(["train", "--shards", str(shards), "--run", str(run), *TINY, "--shde-steps", "6",
                 "--ihde-steps", "6", "--checkpoint-every", "4", "--log-every", "2"]) == 0
    return run


def test_train_writes_the_run_folder(run, capsys):
    for name in ("model.pt", "checkpoint.pt", "run.json", "loss.jsonl", "loss.png"):
        assert (run / name).is_file(), name
    info = json.loads((run / "run.json").read_text())
    assert info["model"]["size"] == "tiny" and info["shde_steps"] == 6 and info["train"]["ihde_steps"] == 6
    assert info["fps"] == 30.0
    assert main(["train", "--shards", info["shards"], "--run", str(run), *TINY, "--shde-steps", "6",
                 "--ihde-steps", "6"]) == 0
    assert "trained to step 12 already; nothing to do" in capsys.readouterr().out


@pytest.mark.parametrize("control", ["none", "inbetween", "trajectory", "keypoints2d"])
def test_sample_writes_shards_pictures_and_the_control_check(run, control, capsys):
    assert main(["sample", "--run", str(run), "--control", control, "--n", "3", "--ddim-steps", "5",
                 "--device", "cpu"]) == 0
    out = run / "samples"
    summary = json.loads((out / f"{control}.json").read_text())
    assert summary["n"] == 3 and summary["frames"] == 16
    seqs = [s for p in sorted((out / "dataset").glob("shard-*.h5")) for s in read_shard(p)]
    names = sorted(s.name for s in seqs if s.category == control)
    assert names == [f"cli.{control}.s0.{i:04d}" for i in range(3)]
    assert all(s.source == "generated" and s.n_frames == 16 for s in seqs)
    assert set(read_manifest(out / "dataset")["split"]) == {"train"}
    assert (out / f"{control}.png").stat().st_size > 5000
    video = cv2.VideoCapture(str(out / f"{control}-s0.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 16
    err = summary["control_error"]
    if control == "inbetween":
        assert err["keyframe_error_mm"] < 0.01
        assert all(r.startswith("cli.s") for r in summary["references"])
    elif control == "trajectory":
        assert err["wrist_error_mm"] < 1.0
    elif control == "keypoints2d":
        assert err["keypoint_error_px"] < 0.1
    else:
        assert err == {}
    assert f"sampled 3 x 16 frames ({control})" in capsys.readouterr().out


def test_sampling_again_with_the_same_seed_adds_nothing(run):
    args = ["sample", "--run", str(run), "--n", "2", "--ddim-steps", "3", "--device", "cpu", "--no-video",
            "--out", str(run / "again"), "--seed", "4"]
    assert main(args) == 0
    before = sorted(p.name for p in (run / "again" / "dataset").glob("shard-*.h5"))
    assert main(args) == 0
    assert sorted(p.name for p in (run / "again" / "dataset").glob("shard-*.h5")) == before


def test_train_on_a_missing_dataset_is_one_line(tmp_path):
    r = hd("train", "--shards", tmp_path / "nowhere", "--run", tmp_path / "r", *TINY)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (f"error: {tmp_path / 'nowhere' / 'manifest.parquet'}: "
                                                 "file not found: run `handdiffuse export` first")
    assert not (tmp_path / "r").exists()


def test_sample_without_a_model_is_one_line(tmp_path):
    r = hd("sample", "--run", tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (f"error: {tmp_path / 'model.pt'}: no trained model (train one "
                                                 "with `handdiffuse train`)")


def test_a_killed_training_resumes_to_the_same_model(shards, tmp_path):
    args = ["train", "--shards", shards, "--run", tmp_path / "killed", *TINY, "--shde-steps", "150",
            "--ihde-steps", "150", "--checkpoint-every", "20", "--log-every", "10"]
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": os.getcwd()})
    ckpt = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.time() + 120
    while time.time() < deadline and not ckpt.is_file():
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.is_file() and not (tmp_path / "killed" / "model.pt").is_file(), "killed too late"
    r = hd(*args)
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stdout and "(resumed from 0)" not in r.stdout
    opts = TrainOptions(shde_steps=150, ihde_steps=150, batch_size=4, threads=1, device="cpu",
                        checkpoint_every=20, log_every=10)
    import dataclasses
    train(shards, tmp_path / "straight", dataclasses.replace(PRESETS["handdiffuse"], size="tiny", window=16), opts)
    a = torch.load(tmp_path / "killed" / "model.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "straight" / "model.pt", weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(x)["step"] for x in (tmp_path / "killed" / "loss.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 299


@pytest.mark.parametrize("option, value, old", [("--lr", "0.001", "0.0001"), ("--seed", "3", "0"),
                                                ("--batch-size", "8", "4")])
def test_resuming_with_other_training_options_is_refused(run, tmp_path, option, value, old, capsys):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)

    def files():
        return {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()}

    before = files()
    capsys.readouterr()
    assert main(["train", "--shards", json.loads((run / "run.json").read_text())["shards"], "--run", str(copy),
                 *TINY, option, value, "--shde-steps", "6", "--ihde-steps", "8"]) == 1  # the last one given counts
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {copy / 'checkpoint.pt'}: the run was started with {option} {old}, not {value}: resume it with "
        "the same option, or use a new --run")
    assert files() == before
