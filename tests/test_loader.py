import numpy as np
import pytest
import torch

from data_schemas import SchemaError
from data_schemas.dataset import DatasetOptions, append_to_dataset
from data_schemas.manifest import SPLITS, read_manifest
from data_schemas.shard import read_shard
from generation.data import StepBatches, WindowDataset, window_loader
from tests.factories import make_sequence

WINDOW = 50
LENGTHS = [120, 80, 50, 200, 95, 130, 61, 77, 150, 66, 90, 110, 140, 55, 70, 100, 30]  # the last is short


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """17 sequences in several shards, every split used; 'imp.s16' shorter than the window."""
    root = tmp_path_factory.mktemp("dataset")
    seqs = [make_sequence(f"imp.s{i:02d}", n, i) for i, n in enumerate(LENGTHS)]
    append_to_dataset(root, seqs, DatasetOptions(shard_mb=0.3, split_ratios=(0.5, 0.25, 0.25)))
    truth = {s.name: s for p in sorted(root.glob("shard-*.h5")) for s in read_shard(p)}
    assert len({*read_manifest(root)["shard"]}) > 2 and set(read_manifest(root)["split"]) == set(SPLITS)
    return root, truth


def windows(names, lengths, window, stride=1):
    return {(n, s) for n, f in zip(names, lengths) for s in range(0, f - window + 1, stride)}


@pytest.mark.parametrize("preload", [True, False])
def test_windows_equal_the_shard_data(dataset, preload):
    root, truth = dataset
    ds = WindowDataset(root, WINDOW, split=None, fields=("joints", "hand_pose", "manual", "betas"), preload=preload)
    assert ds.short == ["imp.s16"] and "imp.s16" not in ds.names
    assert len(ds) == sum(n - WINDOW + 1 for n in LENGTHS if n >= WINDOW)
    for i in [0, 1, 70, len(ds) // 2, len(ds) - 1, -1]:
        item = ds[i]
        name, start = ds.names[int(item["sequence"])], int(item["start"])
        s = truth[name]
        assert set(item) == {"joints", "hand_pose", "manual", "betas", "valid", "confidence", "sequence", "start"}
        assert item["joints"].dtype == torch.float32 and item["valid"].dtype == torch.bool
        assert item["joints"].shape == (WINDOW, 42, 3) and item["valid"].shape == (WINDOW, 2)
        np.testing.assert_array_equal(item["joints"].numpy(), s.joints[start:start + WINDOW])
        np.testing.assert_array_equal(item["hand_pose"].numpy(), s.hand_pose[start:start + WINDOW])
        np.testing.assert_array_equal(item["valid"].numpy(), s.valid[start:start + WINDOW])
        np.testing.assert_array_equal(item["confidence"].numpy(), s.confidence[start:start + WINDOW])
        np.testing.assert_array_equal(item["manual"].numpy(), s.manual[start:start + WINDOW])
        np.testing.assert_array_equal(item["betas"].numpy(), s.betas)
    last = ds[-1]
    assert ds.names[int(last["sequence"])] == ds.names[-1] and int(last["start"]) == ds.rows["frames"].iloc[-1] - WINDOW
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_stride_and_a_small_cache(dataset):
    root, truth = dataset
    ds = WindowDataset(root, WINDOW, split=None, stride=7, cache_bytes=40_000)
    lengths = ds.rows["frames"].tolist()
    assert len(ds) == len(windows(ds.names, lengths, WINDOW, 7))
    seen = set()
    for i in range(len(ds)):
        item = ds[i]
        name, start = ds.names[int(item["sequence"])], int(item["start"])
        seen.add((name, start))
        np.testing.assert_array_equal(item["joints"].numpy(), truth[name].joints[start:start + WINDOW])
    assert seen == windows(ds.names, lengths, WINDOW, 7)
    cache = ds._process_cache()
    assert cache.bytes <= 40_000 or len(cache.sequences) == 1


def test_splits_are_respected_and_disjoint(dataset):
    root, _ = dataset
    m = read_manifest(root)
    by_split = {s: WindowDataset(root, WINDOW, split=s) for s in SPLITS}
    for split, ds in by_split.items():
        expected = m[(m["split"] == split) & (m["frames"] >= WINDOW)]["name"]
        assert sorted(ds.names) == sorted(expected) and len(ds) > 0
    assert sum(len(ds) for ds in by_split.values()) == len(WindowDataset(root, WINDOW, split=None))
    with pytest.raises(SchemaError) as e:
        WindowDataset(root, WINDOW, split="training")
    assert str(e.value) == (f"{root / 'manifest.parquet'}: unknown split 'training' "
                            "(known: train, val, test, or None for all)")
    with pytest.raises(SchemaError) as e:
        WindowDataset(root, WINDOW, fields=("joint",))
    assert str(e.value).startswith(f"{root / 'manifest.parquet'}: unknown field 'joint' (known: joints, ")


def test_dataloader_with_two_workers(dataset):
    root, truth = dataset
    ds = WindowDataset(root, WINDOW, split="train")
    ds[0]  # the parent opens its own handles first: the forked workers must not use them
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, num_workers=2)
    seen = set()
    for batch in loader:
        assert batch["joints"].shape[1:] == (WINDOW, 42, 3) and batch["valid"].dtype == torch.bool
        for b in range(len(batch["sequence"])):
            name, start = ds.names[int(batch["sequence"][b])], int(batch["start"][b])
            assert (name, start) not in seen
            seen.add((name, start))
            np.testing.assert_array_equal(batch["joints"][b].numpy(), truth[name].joints[start:start + WINDOW])
    assert seen == windows(ds.names, ds.rows["frames"].tolist(), WINDOW)


@pytest.mark.parametrize("preload", [True, False])
def test_complete_windows_take_the_frames_of_both_hands_valid_and_trusted(dataset, preload):
    """Every sequence has frame 10's right hand not valid and frames 40-44's left hand of confidence 0.2."""
    root, truth = dataset
    ds = WindowDataset(root, WINDOW, split=None, preload=preload)
    for threshold in (0.0, 0.2, 0.5):
        expected = set()
        for k, name in enumerate(ds.names):
            s = truth[name]
            usable = (s.valid & (s.confidence >= threshold)).all(1)
            expected |= {(k, t) for t in range(s.n_frames - WINDOW + 1) if usable[t:t + WINDOW].all()}
        got = {ds.locate(int(i)) for i in ds.complete_windows(threshold)}
        assert got == expected and len(got) > 0
    assert len(ds.complete_windows(0.2)) == len(ds.complete_windows(0.0)) > len(ds.complete_windows())  # 0.2 >= 0.2
    with pytest.raises(SchemaError) as e:
        ds.complete_windows(1.5)
    assert str(e.value) == f"{root / 'manifest.parquet'}: min_confidence must be in [0, 1], got 1.5"


def test_missing_manifest(tmp_path):
    with pytest.raises(SchemaError) as e:
        WindowDataset(tmp_path)
    assert str(e.value) == f"{tmp_path / 'manifest.parquet'}: file not found: run `handdiffuse export` first"


def test_training_batches_come_through_the_loader_seeded_per_step(dataset):
    root, truth = dataset
    ds = WindowDataset(root, WINDOW, split="train", fields=("joints", "hand_pose"))
    windows = ds.complete_windows()
    whole = StepBatches(windows, 8, seed=3, start=5, stop=9)
    halves = [StepBatches(windows, 8, seed=3, start=5, stop=9, rank=r, world=2) for r in (0, 1)]
    got = list(window_loader(ds, whole))
    assert len(got) == len(whole) == 4
    for step, batch, *shares in zip(range(5, 9), got, *(window_loader(ds, h) for h in halves)):
        g = torch.Generator().manual_seed(3 * 1_000_003 + step)  # the step's draw, made by hand
        pick = windows[torch.randint(len(windows), (8,), generator=g).numpy()]
        items = [ds[int(i)] for i in pick]
        for f in ("joints", "hand_pose", "valid"):
            assert torch.equal(batch[f], torch.stack([it[f] for it in items]))
            assert torch.equal(torch.cat([s[f] for s in shares]), batch[f])  # two ranks' shares make the batch
        _, after = whole.draw(step)  # the generator goes on where the batch's draw left it
        assert torch.equal(torch.randn(4, generator=after), torch.randn(4, generator=g))
    state = torch.get_rng_state()
    next(iter(window_loader(ds, whole)))
    assert torch.equal(torch.get_rng_state(), state)  # the loader leaves torch's global generator alone
