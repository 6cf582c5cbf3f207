"""Training under torchrun with two processes (DDP, gloo on the CPU) equals one process."""

import dataclasses
import os
import subprocess
import sys

import pytest
import torch

from data_schemas.dataset import DatasetOptions, append_to_dataset
from hand_model.model import HandModel
from generation.model import PRESETS
from generation.train import TrainOptions, train
from tests.factories import posed_sequence


@pytest.mark.slow
def test_two_processes_train_the_same_model_as_one(tmp_path):
    shards = tmp_path / "shards"
    model = HandModel()
    append_to_dataset(shards, [posed_sequence(f"ddp.s{i}", 40, seed=i, model=model) for i in range(3)],
                      DatasetOptions(split_ratios=(1.0, 0.0, 0.0)))
    args = ["--size", "tiny", "--window", "16", "--batch-size", "8", "--shde-steps", "6", "--ihde-steps", "6",
            "--threads", "1", "--device", "cpu", "--lr", "1e-3"]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                        "29533", "-m", "--", "pipeline.cli", "train", "--shards", str(shards), "--run",
                        str(tmp_path / "ddp"), *args], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("train, resolved config") == 1  # rank 0 only
    one = TrainOptions(shde_steps=6, ihde_steps=6, batch_size=8, threads=1, device="cpu", lr=1e-3)
    train(shards, tmp_path / "one", dataclasses.replace(PRESETS["handdiffuse"], size="tiny", window=16), one)
    a = torch.load(tmp_path / "ddp" / "model.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "one" / "model.pt", weights_only=False)["model"]
    moved = max(float((b[k] - a[k]).abs().max()) for k in a)
    assert moved < 1e-4, moved  # float sums in another order only
    start = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=False)  # sanity: training moved the weights
    assert start["step"] == 12
