"""The dataset folder: sequence shards and their manifest, written and read here.

    <dataset>/
      shard-00000.h5 ...    data_schemas.shard: sequences of one fps each, up to ``shard_mb``
      manifest.parquet      data_schemas.manifest: one row per sequence -> its shard, split, provenance

Every side goes through this module. Writers: ``handdiffuse export`` (captured sequences),
``handdiffuse import`` (public datasets) and ``handdiffuse sample`` (generated sequences) all
call ``append_to_dataset``. Readers: training, sampling's references and evaluation read
fixed-length windows through ``Windows`` (numpy; ``generation.data.WindowDataset`` is its torch
face, for ``torch.utils.data.DataLoader``); ``dataset_hash`` names what a model trained on.

Writing (``append_to_dataset``), under the folder's lock (``data_schemas.lock``: one writer at
a time, a second waits, saying so):

1. the manifest (empty for a new folder) and the split options (``DatasetOptions``: the
   dataset's own where none are given; other ones are an error)
2. shard files no manifest row names (a killed run's) are deleted
3. a sequence whose fingerprint the manifest holds is skipped; the others, grouped by fps,
   fill shards up to ``shard_mb``; each shard is written under a temp name and renamed,
   then the manifest is rewritten atomically to point at it

The dataset only grows: a shard file, once written, is never rewritten. A sequence whose
content changed is written again into a new shard and its manifest row re-pointed there;
the old copy stays in its shard, unreferenced (readers go through the manifest), until no
row points to that shard any more: then the shard is deleted. A run killed at any moment
leaves the manifest of the last complete shard; the next run deletes shards the manifest
does not name (the killed run's), writes again a sequence whose shard is missing, skips
what the manifest holds and writes the rest.

The split (train / val / test) is by sequence, never by frame: a hash of (split seed,
sequence name) against the ratios (``assign_split``), so it is reproducible and a sequence
keeps its split when data is added. The manifest records the split options.

Reading (``Windows``): items are every start ``s = 0, stride, 2 stride, ...`` with
``s + window <= frames`` of every sequence of one split (the manifest's ``split`` column, so
no window mixes splits); sequences shorter than ``window`` are skipped and listed in
``short``. An item::

    {<field>:      (W, ...) float32 / bool   each requested field, e.g. "joints" (W, 42, 3) m
     "valid":      (W, 2)   bool             there is an estimate of the hand in this frame
     "confidence": (W, 2)   float32          how far it is trusted (data_schemas.shard)
     "sequence":   ()       int64            index into ``names``
     "start":      ()       int64            first frame of the window}

What a model learns from is ``complete_windows(min_confidence)``: the windows whose every frame
has both hands valid and trusted at least ``min_confidence`` (default ``MIN_CONFIDENCE``; 0: every
estimate, carried hands included).

HDF5 handles are opened lazily, per process (keyed by ``os.getpid()``): an h5py file must
not cross a fork, so each DataLoader worker opens the shards itself on its first item.
With ``preload`` a process reads each sequence it touches whole, once (the requested fields,
checksummed), into a least-recently-used cache capped in bytes; a window is then a numpy
slice, which keeps the loader far from being the bottleneck of training. Without it, each
window is read through ``ShardReader.read_window`` (its chunks decompressed per item).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from data_schemas import h5io
from data_schemas.errors import SchemaError
from data_schemas.lock import writing
from data_schemas.manifest import SPLITS, empty_manifest, manifest_path, read_manifest, shard_path, write_manifest
from data_schemas.shard import (FRAME_FIELDS, META_FIELDS, SHARD_NAME, ShardReader, ShardSequence, validated,
                                 write_shard)

MB = 2**20
GIB = 2**30
DEFAULT_SPLIT_SEED, DEFAULT_SPLIT_RATIOS = 0, (0.8, 0.1, 0.1)
MIN_CONFIDENCE = 0.5  # the windows a model learns from: both hands at least this trusted in every frame
FIELDS = FRAME_FIELDS + ("betas",)  # a sequence's arrays; betas: (2, 10), the sequence's, whatever the window
_SHARD_RE = re.compile(r"^shard-(\d+)\.h5$")
LOG = logging.getLogger("handdiffuse")


@dataclass
class DatasetOptions:
    """How sequences are stored in a dataset folder and split."""

    shard_mb: float = 1024.0
    """Target shard size in MB (2**20 bytes) of uncompressed arrays; a longer sequence gets a shard to itself."""
    split_seed: int | None = None
    """Seed of the train/val/test assignment (a hash of seed and sequence name, fixed per
    sequence). Default: the dataset's own; 0 for a new dataset."""
    split_ratios: tuple[float, float, float] | None = None
    """Shares of train, val and test sequences (sum 1). Default: the dataset's own; 0.8 0.1 0.1
    for a new dataset."""

    def validate(self, source: str | Path) -> None:
        if not (np.isfinite(self.shard_mb) and self.shard_mb > 0):
            raise SchemaError(source, f"shard_mb must be positive, got {self.shard_mb}")
        if self.split_ratios is None:
            return
        r = np.asarray(self.split_ratios, dtype=float)
        if r.shape != (3,) or not np.isfinite(r).all() or (r < 0).any() or abs(r.sum() - 1) > 1e-6:
            raise SchemaError(source, f"split_ratios must be 3 shares >= 0 (train, val, test) that sum to 1, "
                                      f"got {tuple(self.split_ratios)}")


@dataclass
class AppendSummary:
    """What one ``append_to_dataset`` did."""

    out: Path
    written: list[str] = field(default_factory=list)  # dataset names written by this run
    skipped_up_to_date: list[str] = field(default_factory=list)  # fingerprint already in the manifest
    stale: list[str] = field(default_factory=list)  # written again; the old copy stays, unreferenced
    shards_written: list[str] = field(default_factory=list)  # shard file names
    frames: int = 0  # frames written
    bytes_written: int = 0  # shard bytes on disk
    seconds: float = 0.0
    dataset_sequences: int = 0  # in the manifest after the run
    dataset_frames: int = 0

    @property
    def mb_per_s(self) -> float:
        return self.bytes_written / MB / max(self.seconds, 1e-9)


# ---- the split and fingerprints ------------------------------------------------------

def usable_frames(valid: np.ndarray, confidence: np.ndarray, min_confidence: float = MIN_CONFIDENCE) -> np.ndarray:
    """(F,) the frames a model learns from: both hands valid (F, 2) and of confidence (F, 2) at least
    ``min_confidence``."""
    return (valid & (confidence >= min_confidence)).all(-1)


def assign_split(name: str, seed: int, ratios: tuple[float, float, float]) -> str:
    """"train" | "val" | "test" for a sequence: u = hash(seed, name) in [0, 1) against the
    cumulative ratios. Depends on nothing else, so adding data never moves a sequence."""
    u = int(hashlib.sha256(f"{int(seed)}:{name}".encode()).hexdigest()[:16], 16) / 2.0**64
    edges = np.cumsum(ratios)
    for split, edge in zip(SPLITS, edges):
        if u < edge:
            return split
    return SPLITS[int(np.nonzero(np.asarray(ratios) > 0)[0][-1])]  # u above a rounded-down total


def hash_arrays(h: "hashlib._Hash", arrays: dict[str, np.ndarray]) -> None:
    """Feed each array's name, shape, dtype and content digest to ``h``."""
    for k, a in arrays.items():
        h.update(f"{k}{a.shape}{a.dtype}:{h5io.digest(a)};".encode())


def arrays_fingerprint(seq: ShardSequence) -> str:
    """Hash of a sequence's arrays and attributes: the fingerprint of data without input files."""
    h = hashlib.sha256()
    hash_arrays(h, {k: getattr(seq, k) for k in FIELDS})
    meta = {k: str(getattr(seq, k)) for k in META_FIELDS}
    h.update(json.dumps({"fps": float(seq.fps), "flat_hand_mean": bool(seq.flat_hand_mean), **meta},
                        sort_keys=True).encode())
    return h.hexdigest()[:16]


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


# ---- the writer ----------------------------------------------------------------------

def _nbytes(seq: ShardSequence) -> int:
    return sum(getattr(seq, k).nbytes for k in FIELDS)


def _manifest_row(seq: ShardSequence, shard_name: str, fingerprint: str, split: str) -> dict:
    err = seq.fit_error[seq.valid & np.isfinite(seq.fit_error)]
    return {
        "name": seq.name, "shard": shard_name, "group": f"sequences/{seq.name}", "frames": seq.n_frames,
        "fps": float(seq.fps), "category": seq.category, "subject": seq.subject, "session": seq.session,
        "source": seq.source, "capture_date": seq.capture_date, "split": split,
        "manual_frames": int(seq.manual.any(axis=1).sum()), "valid_fraction": float(seq.valid.mean()),
        "mean_fit_error_mm": float(1000 * err.mean()) if err.size else float("nan"), "fingerprint": fingerprint,
    }


def open_manifest(out: Path, opts: DatasetOptions):
    """The dataset's manifest (empty for a new folder) and ``opts`` with its split options: the
    dataset's own where ``opts`` leaves them out; given ones must be the dataset's."""
    if not manifest_path(out).is_file():
        return empty_manifest(), dataclasses.replace(
            opts, split_seed=DEFAULT_SPLIT_SEED if opts.split_seed is None else opts.split_seed,
            split_ratios=DEFAULT_SPLIT_RATIOS if opts.split_ratios is None else tuple(opts.split_ratios))
    df = read_manifest(out)
    seed, ratios = df.attrs["split_seed"], df.attrs["split_ratios"]
    given_seed = seed if opts.split_seed is None else opts.split_seed
    given_ratios = ratios if opts.split_ratios is None else opts.split_ratios
    if seed != given_seed or not np.allclose(ratios, given_ratios, atol=1e-9):
        raise SchemaError(manifest_path(out), f"this dataset is split with split_seed {seed} and split_ratios "
                          f"{tuple(ratios)}, not {given_seed} and {tuple(given_ratios)}: export with "
                          "the same split options (or none), or into a new folder")
    return df, dataclasses.replace(opts, split_seed=seed, split_ratios=tuple(ratios))


def known_fingerprints(out: Path, manifest) -> dict[str, str]:
    """name -> fingerprint of the manifest's sequences whose shard file exists (a row whose
    shard is missing is written again)."""
    return {n: fp for n, fp, sh in zip(manifest["name"], manifest["fingerprint"], manifest["shard"])
            if (out / str(sh)).is_file()}


def _remove_orphans(out: Path, manifest) -> list[str]:
    """Delete the shard files no manifest row points to: written by a run killed before its
    manifest, or holding only copies re-exported since. Only under the dataset's lock."""
    listed = {str(s) for s in manifest["shard"]}
    orphans = sorted(p for p in out.glob("shard-*.h5") if _SHARD_RE.match(p.name) and p.name not in listed)
    for p in orphans:
        p.unlink()
    return [p.name for p in orphans]


def _next_shard_index(out: Path, manifest) -> int:
    """One past every shard index in the folder or the manifest: no file is ever written twice."""
    used = [int(m.group(1)) for p in out.glob("shard-*.h5") if (m := _SHARD_RE.match(p.name))]
    used += [int(m.group(1)) for s in manifest["shard"] if (m := _SHARD_RE.match(str(s)))]
    return max(used, default=-1) + 1


def _upsert(manifest, rows: list[dict]):
    """Manifest with ``rows`` replacing the rows of the same name in place, the others appended."""
    import pandas as pd

    by_name = {r["name"]: r for r in manifest.to_dict("records")}
    by_name.update({r["name"]: r for r in rows})
    df = pd.DataFrame(list(by_name.values()), columns=list(manifest.columns)) if by_name else manifest
    df.attrs = dict(manifest.attrs)
    return df


def append_to_dataset(out: Path, sequences: Iterable[ShardSequence], opts: DatasetOptions,
                      fingerprints: dict[str, str] | None = None) -> AppendSummary:
    """Add ``sequences`` to the dataset in ``out``: the one writer of export, import and sampling.

    A sequence whose fingerprint (``fingerprints[name]``, else ``arrays_fingerprint``) the
    manifest holds is skipped; a known name with another fingerprint is written again and
    re-pointed. Sequences stream through: at most ``shard_mb`` per fps is held in memory.
    Each finished shard is renamed into place, then the manifest rewritten atomically.
    """
    out = Path(out)
    opts.validate(out)
    with writing(out, "export"):  # one writer at a time; clears a killed run's temp files
        return _append(out, sequences, opts, fingerprints)


def _append(out: Path, sequences: Iterable[ShardSequence], opts: DatasetOptions,
            fingerprints: dict[str, str] | None) -> AppendSummary:
    t0 = time.perf_counter()
    # 1.
    manifest, opts = open_manifest(out, opts)
    # 2.
    if out.is_dir() and (orphans := _remove_orphans(out, manifest)):
        LOG.info("export: removed %s, not in the manifest (an interrupted run's)", ", ".join(orphans))
    # 3.
    known = known_fingerprints(out, manifest)
    splits = dict(zip(manifest["name"], manifest["split"]))
    summary = AppendSummary(out)
    next_index = _next_shard_index(out, manifest)
    pending: dict[float, list[tuple[ShardSequence, str]]] = {}  # fps -> sequences of the next shard
    pending_bytes: dict[float, int] = {}
    limit = opts.shard_mb * MB

    def flush(fps: float) -> None:
        nonlocal manifest, next_index
        batch = pending.pop(fps)
        pending_bytes.pop(fps)
        name = SHARD_NAME.format(index=next_index)
        next_index += 1
        write_shard(out / name, [s for s, _ in batch], fps=fps)
        rows = [_manifest_row(s, name, fp, splits.get(s.name) or assign_split(s.name, opts.split_seed,
                                                                              opts.split_ratios))
                for s, fp in batch]
        manifest = _upsert(manifest, rows)
        write_manifest(out, manifest, opts.split_seed, opts.split_ratios)
        summary.shards_written.append(name)
        summary.written += [s.name for s, _ in batch]
        summary.frames += sum(s.n_frames for s, _ in batch)
        summary.bytes_written += (out / name).stat().st_size

    for seq in validated(sequences, out):
        fp = (fingerprints or {}).get(seq.name) or arrays_fingerprint(seq)
        if known.get(seq.name) == fp:
            summary.skipped_up_to_date.append(seq.name)
            continue
        if seq.name in known:
            summary.stale.append(seq.name)
        fps, size = float(seq.fps), _nbytes(seq)
        if pending.get(fps) and pending_bytes[fps] + size > limit:
            flush(fps)
        pending.setdefault(fps, []).append((seq, fp))
        pending_bytes[fps] = pending_bytes.get(fps, 0) + size
    for fps in sorted(pending):
        flush(fps)
    if summary.stale:  # shards whose every sequence was written again are no longer part of the dataset
        _remove_orphans(out, manifest)
    summary.dataset_sequences = len(manifest)
    summary.dataset_frames = int(manifest["frames"].sum())
    summary.seconds = time.perf_counter() - t0
    return summary


# ---- the reader ----------------------------------------------------------------------

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


class Windows:
    """Windows of ``window`` frames of the ``split`` sequences of the dataset in ``root``, as numpy
    arrays (module docstring).

    >>> ds = Windows("sessions/demo/export", window=200, split="train")
    >>> item = ds[ds.complete_windows()[0]]  # {"joints": (200, 42, 3), "valid": (200, 2), ...}
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
        self._read = tuple(dict.fromkeys(self.fields + ("valid", "confidence")))  # what each item carries
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

    def complete_windows(self, min_confidence: float = MIN_CONFIDENCE) -> np.ndarray:
        """Item indices (int64) of the windows whose frames all have both hands valid and of confidence
        at least ``min_confidence`` (the ones a generator trains on: invalid frames carry NaN joints, and
        a hand of low confidence was carried across missing evidence or disagrees with it). Reads
        ``valid`` and ``confidence`` only."""
        if not 0.0 <= min_confidence <= 1.0:
            raise SchemaError(manifest_path(self.root), f"min_confidence must be in [0, 1], got {min_confidence}")
        cache = self._process_cache()
        out = []
        for k in range(len(self.names)):
            if self.preload:
                valid, conf = (self._sequence(k)[f] for f in ("valid", "confidence"))
            else:
                group = cache.reader(self._shards[k]).file[self._groups[k]]
                valid, conf = (h5io.read_array(group, f, self._shards[k]) for f in ("valid", "confidence"))
            usable = usable_frames(valid, conf, min_confidence)
            bad = np.concatenate([[0], np.cumsum(~usable)])  # (F + 1,) unusable frames before each
            starts = np.arange(0, self._frames[k] - self.window + 1, self.stride)
            ok = bad[starts + self.window] == bad[starts]
            out.append(self._first[k] + np.flatnonzero(ok))
        return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        k, start = self.locate(index)
        stop = start + self.window
        if self.preload:
            seq = self._sequence(k)
            # copies: a caller writing into an item must not write into the cache
            out = {f: seq[f].copy() if f == "betas" else seq[f][start:stop].copy() for f in self._read}
        else:
            reader = self._process_cache().reader(self._shards[k])
            frame_fields = tuple(f for f in self._read if f != "betas")
            out = reader.read_window(self.names[k], start, self.window, frame_fields)
            if "betas" in self._read:
                out["betas"] = reader.file[self._groups[k]]["betas"][()]
        out["sequence"] = np.array(k, dtype=np.int64)
        out["start"] = np.array(start, dtype=np.int64)
        return out
