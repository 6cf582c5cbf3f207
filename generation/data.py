"""``WindowDataset``: fixed-length windows of an exported dataset, for training (torch map-style).

Items are every start ``s = 0, stride, 2 stride, ...`` with ``s + window <= frames`` of every
sequence of one split (the manifest's ``split`` column, so no window mixes splits); sequences
shorter than ``window`` are skipped and listed in ``short``. An item::

    {<field>:   (W, ...) float32 / bool   each requested field, e.g. "joints" (W, 42, 3) m
     "valid":   (W, 2)   bool             hand fitted and accepted in this frame
     "sequence": ()      int64            index into ``names``
     "start":   ()       int64            first frame of the window}

HDF5 handles are opened lazily, per process (keyed by ``os.getpid()``): an h5py file must
not cross a fork, so each DataLoader worker opens the shards itself on its first item.

With ``preload`` a process reads each sequence it touches whole, once (the requested fields,
checksummed), into a least-recently-used cache capped in bytes; a window is then a numpy
slice, which keeps the loader far from being the bottleneck of training. Without it, each
window is read through ``ShardReader.read_window`` (its chunks decompressed per item).
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from data_schemas import h5io
from data_schemas.errors import SchemaError
from data_schemas.manifest import SPLITS, manifest_path, read_manifest, shard_path
from data_schemas.shard import FRAME_FIELDS, ShardReader

FIELDS = FRAME_FIELDS + ("betas",)  # betas: (2, 10), the sequence's, whatever the window
GIB = 2**30


class _ProcessCache:
    """One process's open shards and preloaded sequences (LRU by bytes)."""

    def __init__(self, max_bytes: int):
        self.readers: dict[Path, ShardReader] = {}
        self.sequences: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self.bytes = 0
        self.max_bytes = max_bytes

    def reader(self, path: Path) -> ShardReader:
        if path not in self.readers:
            self.readers[path] = ShardReader(path)
        return self.readers[path]

    def put(self, key: int, arrays: dict[str, np.ndarray]) -> None:
        self.sequences[key] = arrays
        self.bytes += sum(a.nbytes for a in arrays.values())
        while self.bytes > self.max_bytes and len(self.sequences) > 1:  # the newest always stays
            _, old = self.sequences.popitem(last=False)
            self.bytes -= sum(a.nbytes for a in old.values())


class WindowDataset(torch.utils.data.Dataset):
    """Windows of ``window`` frames of the ``split`` sequences of the dataset in ``root``.

    >>> ds = WindowDataset("sessions/demo/export", window=200, split="train")
    >>> loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, num_workers=2)
    """

    def __init__(self, root: str | Path, window: int = 200, split: str | None = "train",
                 fields: tuple[str, ...] = ("joints",), stride: int = 1, preload: bool = True,
                 cache_bytes: int = 2 * GIB):
        self.root = Path(root)
        where = manifest_path(self.root)
        if window < 1 or stride < 1:
            raise SchemaError(where, f"window and stride must be >= 1, got {window} and {stride}")
        unknown = [f for f in fields if f not in FIELDS]
        if unknown:
            raise SchemaError(where, f"unknown field '{unknown[0]}' (known: {', '.join(FIELDS)})")
        if split is not None and split not in SPLITS:
            raise SchemaError(where, f"unknown split {split!r} (known: {', '.join(SPLITS)}, or None for all)")
        self.window, self.stride, self.preload, self.cache_bytes = int(window), int(stride), preload, cache_bytes
        self.fields = tuple(dict.fromkeys(fields))
        self._read = tuple(dict.fromkeys(self.fields + ("valid",)))  # what each item carries
        rows = read_manifest(self.root)
        if split is not None:
            rows = rows[rows["split"] == split]
        long_enough = rows["frames"].to_numpy() >= self.window
        self.short: list[str] = rows["name"][~long_enough].tolist()
        self.rows = rows[long_enough].reset_index(drop=True)
        self.names: list[str] = self.rows["name"].tolist()
        self._shards = [shard_path(self.root, s) for s in self.rows["shard"]]
        self._groups: list[str] = self.rows["group"].tolist()
        self._frames = self.rows["frames"].to_numpy(dtype=np.int64)
        per_sequence = (self._frames - self.window) // self.stride + 1  # (S,) windows of each sequence
        self._first = np.concatenate([[0], np.cumsum(per_sequence)])  # (S + 1,) first item of each
        self._pid: int | None = None
        self._cache: _ProcessCache | None = None

    def __len__(self) -> int:
        return int(self._first[-1])

    def __getstate__(self) -> dict:  # to spawned workers: the index, never open files
        state = dict(self.__dict__)
        state["_pid"], state["_cache"] = None, None
        return state

    def _process_cache(self) -> _ProcessCache:
        """This process's handles and cache; a forked worker starts its own (the parent's stay
        untouched: closing them from the child would act on the parent's HDF5 state)."""
        if self._pid != os.getpid():
            self._pid, self._cache = os.getpid(), _ProcessCache(self.cache_bytes)
        return self._cache

    def locate(self, index: int) -> tuple[int, int]:
        """Item ``index`` -> (sequence index, start frame)."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range ({len(self)} windows)")
        k = int(np.searchsorted(self._first, index, side="right")) - 1
        return k, int(index - self._first[k]) * self.stride

    def _sequence(self, k: int) -> dict[str, np.ndarray]:
        """Sequence ``k``'s fields, whole, from this process's cache (read and checked once)."""
        cache = self._process_cache()
        arrays = cache.sequences.get(k)
        if arrays is not None:
            cache.sequences.move_to_end(k)
            return arrays
        reader = cache.reader(self._shards[k])
        if self._groups[k] not in reader.file:
            raise SchemaError(reader.path, f"no group '{self._groups[k]}' (the manifest lists it here)")
        group = reader.file[self._groups[k]]
        arrays = {f: h5io.read_array(group, f, reader.path) for f in self._read}
        if len(arrays["valid"]) != self._frames[k]:
            raise SchemaError(reader.path, f"'{self._groups[k]}' has {len(arrays['valid'])} frames, the manifest "
                                           f"says {self._frames[k]}: re-run `handdiffuse export`")
        cache.put(k, arrays)
        return arrays

    def complete_windows(self) -> np.ndarray:
        """Item indices (int64) of the windows whose frames are all valid on both hands (the
        ones a generator trains on: invalid frames carry NaN joints). Reads ``valid`` only."""
        cache = self._process_cache()
        out = []
        for k in range(len(self.names)):
            if self.preload:
                valid = self._sequence(k)["valid"]
            else:
                group = cache.reader(self._shards[k]).file[self._groups[k]]
                valid = h5io.read_array(group, "valid", self._shards[k])
            bad = np.concatenate([[0], np.cumsum(~valid.all(-1))])  # (F + 1,) invalid frames before each
            starts = np.arange(0, self._frames[k] - self.window + 1, self.stride)
            ok = bad[starts + self.window] == bad[starts]
            out.append(self._first[k] + np.flatnonzero(ok))
        return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        k, start = self.locate(index)
        stop = start + self.window
        if self.preload:
            seq = self._sequence(k)
            # copies: a caller writing into an item must not write into the cache
            out = {f: torch.from_numpy(seq[f].copy() if f == "betas" else seq[f][start:stop].copy())
                   for f in self._read}
        else:
            reader = self._process_cache().reader(self._shards[k])
            frame_fields = tuple(f for f in self._read if f != "betas")
            arrays = reader.read_window(self.names[k], start, self.window, frame_fields)
            out = {f: torch.from_numpy(a) for f, a in arrays.items()}
            if "betas" in self._read:
                out["betas"] = torch.from_numpy(reader.file[self._groups[k]]["betas"][()])
        out["sequence"] = torch.tensor(k, dtype=torch.int64)
        out["start"] = torch.tensor(start, dtype=torch.int64)
        return out


def dataset_hash(root: str | Path, split: str | None = "train") -> str:
    """sha256 over the manifest's sorted (name, fingerprint) rows of ``split`` (None: all): what a
    model was trained on, so a model and its evaluator can be checked against a dataset."""
    rows = read_manifest(root)
    if split is not None:
        rows = rows[rows["split"] == split]
    h = hashlib.sha256()
    for name, fp in sorted(zip(rows["name"], rows["fingerprint"])):
        h.update(f"{name}\t{fp}\n".encode())
    return h.hexdigest()
