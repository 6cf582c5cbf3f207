"""`handdiffuse evaluate`: Tables 2 and 3 end to end on a tiny dataset and tiny runs."""

import dataclasses
import json

import pytest

from data_schemas.dataset import DatasetOptions, append_to_dataset
from data_schemas.errors import SchemaError
from data_schemas.manifest import read_manifest
from hand_model.model import HandModel
from generation.evaluate import EvaluateOptions, evaluate, preset_of
from generation.model import PRESETS
from generation.train import TrainOptions, load_model, train
from pipeline.cli import main
from tests.factories import posed_sequence

WINDOW = 16


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    shards = root / "shards"
    model = HandModel()
    append_to_dataset(shards, [posed_sequence(f"ev.s{i}", 40, seed=20 + i, model=model) for i in range(5)],
                      DatasetOptions(split_ratios=(0.6, 0.0, 0.4)))
    assert set(read_manifest(shards)["split"]) == {"train", "test"}
    opts = TrainOptions(shde_steps=10, ihde_steps=10, batch_size=4, lr=1e-3, threads=1, device="cpu",
                        checkpoint_every=10)
    runs = []
    for preset in ("handdiffuse", "mdm", "no-shape"):
        run = root / "runs" / preset
        train(shards, run, dataclasses.replace(PRESETS[preset], size="tiny", window=WINDOW), opts)
        runs.append(run)
    return shards, runs, root


def test_presets_are_recognised(setup):
    _, runs, _ = setup
    assert [preset_of(load_model(r)) for r in runs] == ["handdiffuse", "mdm", "no-shape"]


def test_evaluate_writes_both_tables_and_the_metrics(setup, capsys):
    shards, runs, root = setup
    out = root / "evaluation"
    args = ["evaluate", "--runs", *map(str, runs), "--shards", str(shards), "--out", str(out), "--samples", "4",
            "--repetitions", "2", "--ddim-steps", "4", "--evaluator-steps", "20", "--device", "cpu"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "metrics.json").read_text())
    tables = (out / "tables.md").read_text()
    assert tables in printed
    assert summary["real_windows"] >= 2 and summary["window"] == WINDOW
    labels = [r["label"] for r in summary["runs"]]
    assert labels == ["HandDiffuse (complete, local rep)", "MDM-style baseline", "w/o shape loss"]
    for r in summary["runs"]:
        for cond in ("unconditioned", "inbetween", "trajectory"):
            c = r["conditions"][cond]
            assert len(c["fid"]["values"]) == 2 and c["fid"]["mean"] >= 0 and c["diversity"]["mean"] > 0
            assert 0 <= c["penetrating_frames"]["mean"] <= 1
    t2, t3 = tables.split("## Table 3")
    assert "| Real |" in t2 and "| HandDiffuse (complete, local rep) |" in t2 and "| MDM-style baseline |" in t2
    assert "w/o shape loss" not in t2  # an ablation: Table 3 only
    assert "| w/o shape loss | " in t3 and "| w/o SHDe | (no run) |" in t3 and "| global rep | (no run) |" in t3
    hd = summary["runs"][0]["conditions"]["unconditioned"]
    assert f"{hd['fid']['mean']:.3f} ± {hd['fid']['interval']:.3f}" in t3.split("| HandDiffuse")[1].splitlines()[0]
    per_run = json.loads((runs[0] / "metrics.json").read_text())
    assert per_run["fid_unconditioned"] == hd["fid"]["mean"]
    # the feature extractor is kept and reused (same data), not retrained
    stamp = (out / "evaluator.pt").stat().st_mtime_ns
    assert main(args[:3] + args[4:]) == 0  # one run only
    assert (out / "evaluator.pt").stat().st_mtime_ns == stamp


def test_a_given_feature_extractor_of_other_data_is_refused_not_overwritten(setup, tmp_path):
    shards, runs, root = setup
    other = tmp_path / "other"
    append_to_dataset(other, [posed_sequence(f"o.s{i}", 40, seed=40 + i) for i in range(3)],
                      DatasetOptions(split_ratios=(1.0, 0.0, 0.0)))
    from generation.motion_features import EvaluatorConfig, train_evaluator
    train_evaluator(other, tmp_path / "ev.pt", EvaluatorConfig(window=WINDOW, steps=2, width=32, feedforward=64))
    stamp = (tmp_path / "ev.pt").stat().st_mtime_ns
    with pytest.raises(SchemaError, match="ev.pt: trained on other data"):
        evaluate(runs[:1], shards, tmp_path / "e", EvaluateOptions(evaluator=tmp_path / "ev.pt", device="cpu"))
    assert (tmp_path / "ev.pt").stat().st_mtime_ns == stamp


def test_runs_of_different_windows_are_refused(setup, tmp_path):
    shards, runs, _ = setup
    other = tmp_path / "long"
    train(shards, other, dataclasses.replace(PRESETS["mdm"], size="tiny", window=20),
          TrainOptions(shde_steps=0, ihde_steps=2, batch_size=2, threads=1, device="cpu"))
    with pytest.raises(SchemaError, match=r"the runs have different windows \(\[16, 20\]\)"):
        evaluate([runs[0], other], shards, tmp_path / "e", EvaluateOptions(device="cpu"))


def test_no_held_out_window_is_one_line(setup, tmp_path):
    shards, runs, _ = setup
    with pytest.raises(SchemaError, match="no complete 16-frame window in the val split to evaluate on; it takes two"):
        evaluate(runs[:1], shards, tmp_path / "e", EvaluateOptions(split="val", device="cpu"))
