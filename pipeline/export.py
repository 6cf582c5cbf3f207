"""``handdiffuse export SESSION... --out DIR``: fitted sequences -> dataset shards + manifest.

The dataset folder (default ``<first session>/export``)::

    out/
      shard-00000.h5 ...    data_schemas.shard: sequences of one fps each, up to --shard-mb
      manifest.parquet      data_schemas.manifest: one row per sequence -> its shard, split, provenance

A sequence's dataset name is ``<session name>.<sequence folder>``. Per run:

1. read and check every input: each session's session.toml and, per sequence with
   mano.h5, the fit and its manual 2D annotation (keypoints2d_manual.h5, if any); their
   fingerprint. A bad file stops the export here, before anything is written.
2. a sequence whose fingerprint the manifest already holds is up to date: skipped
3. the others: joints from the fitted parameters through the hand model the fit used
   (mano.h5's ``hand_model``); valid = fit accepted; fit_error = the fit's 3D residual
4. ``append_to_dataset`` (the writer dataset importers share): sequences grouped by fps
   fill shards up to ``shard_mb``; each shard is written under a temp name and renamed,
   then the manifest is rewritten atomically to point at it

The dataset only grows: a shard file, once written, is never rewritten. A sequence whose
inputs changed is written again into a new shard and its manifest row re-pointed there;
the old copy stays in its shard, unreferenced (readers go through the manifest), until no
row points to that shard any more: then the shard is deleted. A run killed at any moment
leaves the manifest of the last complete shard; the next run deletes shards the manifest
does not name (the killed run's), exports again a sequence whose shard is missing, skips
what the manifest holds and writes the rest. One export writes a dataset folder at a time
(a lock beside it, ``data_schemas.lock``): a second waits for the first, saying so.

The split (train / val / test) is by sequence, never by frame: a hash of (split seed,
sequence name) against the ratios, so it is reproducible and a sequence keeps its split
when data is added. The manifest records the split options: an export without split options
keeps the dataset's, one with others is an error.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np
import tyro

from data_schemas import h5io
from data_schemas import shard as shard_format
from data_schemas.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_USAGE, SchemaError
from data_schemas.keypoints import N_HAND_JOINTS, N_KEYPOINTS
from data_schemas.keypoints2d import Keypoints2D, read_keypoints2d
from data_schemas.lock import writing
from data_schemas.manifest import SPLITS, empty_manifest, manifest_path, read_manifest, write_manifest
from data_schemas.mano import ManoFit, read_mano
from data_schemas.session import KEYPOINTS2D_MANUAL, MANO, SESSION_TOML, Session
from data_schemas.shard import NAME_RE, SHARD_NAME, ShardSequence, write_shard

if TYPE_CHECKING:
    import torch

__all__ = ["ExportOptions", "ExportSummary", "ExportCommand", "export_sessions", "append_to_dataset",
           "read_manifest", "assign_split", "arrays_fingerprint"]

# Bump when the export computes a sequence differently (joints, flags): every fingerprint changes.
EXPORT_VERSION = 1
MB = 2**20
FK_BATCH = 8192  # frames per hand-model call
_SHARD_RE = re.compile(r"^shard-(\d+)\.h5$")
_ARRAYS = shard_format.FRAME_FIELDS + ("betas",)
LOG = logging.getLogger("handdiffuse")


@dataclass
class ExportOptions:
    shard_mb: float = 1024.0
    """Target shard size in MB (2**20 bytes) of uncompressed arrays; a longer sequence gets a shard to itself."""
    split_seed: int | None = None
    """Seed of the train/val/test assignment (a hash of seed and sequence name, fixed per
    sequence). Default: the dataset's own; 0 for a new dataset."""
    split_ratios: tuple[float, float, float] | None = None
    """Shares of train, val and test sequences (sum 1). Default: the dataset's own; 0.8 0.1 0.1
    for a new dataset."""
    mano_dir: Path | None = None
    """Folder with MANO_RIGHT.pkl and MANO_LEFT.pkl, for sequences fitted with MANO (default
    $HANDDIFFUSE_MANO_DIR): the export computes their joints with the model the fit used."""

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
class ExportSummary:
    out: Path
    written: list[str] = field(default_factory=list)  # dataset names written by this run
    skipped_up_to_date: list[str] = field(default_factory=list)  # fingerprint already in the manifest
    stale: list[str] = field(default_factory=list)  # written again; the old copy stays, unreferenced
    shards_written: list[str] = field(default_factory=list)  # shard file names
    frames: int = 0  # frames written
    bytes_written: int = 0  # shard bytes on disk
    seconds: float = 0.0
    without_mano: list[str] = field(default_factory=list)  # "<session>/<seq>" skipped: no mano.h5
    dataset_sequences: int = 0  # in the manifest after the run
    dataset_frames: int = 0

    @property
    def mb_per_s(self) -> float:
        return self.bytes_written / MB / max(self.seconds, 1e-9)


# ---- the split and fingerprints ------------------------------------------------------

def assign_split(name: str, seed: int, ratios: tuple[float, float, float]) -> str:
    """"train" | "val" | "test" for a sequence: u = hash(seed, name) in [0, 1) against the
    cumulative ratios. Depends on nothing else, so adding data never moves a sequence."""
    u = int(hashlib.sha256(f"{int(seed)}:{name}".encode()).hexdigest()[:16], 16) / 2.0**64
    edges = np.cumsum(ratios)
    for split, edge in zip(SPLITS, edges):
        if u < edge:
            return split
    return SPLITS[int(np.nonzero(np.asarray(ratios) > 0)[0][-1])]  # u above a rounded-down total


def _hash_arrays(h: "hashlib._Hash", arrays: dict[str, np.ndarray]) -> None:
    for k, a in arrays.items():
        h.update(f"{k}{a.shape}{a.dtype}:{h5io.digest(a)};".encode())


def arrays_fingerprint(seq: ShardSequence) -> str:
    """Hash of a sequence's arrays and attributes: the fingerprint of data without input files."""
    h = hashlib.sha256()
    _hash_arrays(h, {k: getattr(seq, k) for k in _ARRAYS})
    meta = {k: str(getattr(seq, k)) for k in shard_format.META_FIELDS}
    h.update(json.dumps({"fps": float(seq.fps), "flat_hand_mean": bool(seq.flat_hand_mean), **meta},
                        sort_keys=True).encode())
    return h.hexdigest()[:16]


def _input_fingerprint(fit: ManoFit, manual: Keypoints2D | None, meta: dict, opts: ExportOptions) -> str:
    """Hash of what a captured sequence is made from: the fit's content, the manual annotation's,
    the provenance attributes and the hand model options. Shard size and split options are left
    out: they change where a sequence is stored or listed, not what is stored."""
    h = hashlib.sha256()
    _hash_arrays(h, {k: getattr(fit, k) for k in ("frames", "global_orient", "hand_pose", "betas", "transl")})
    _hash_arrays(h, {"failure": fit.quality.failure, "residual3d": fit.quality.residual3d})
    if manual is not None:
        _hash_arrays(h, {"manual_frames": manual.frames, "manual_keypoints": manual.keypoints})
    h.update(json.dumps({"export_version": EXPORT_VERSION, "fps": fit.fps, "hand_model": fit.hand_model,
                         "flat_hand_mean": fit.flat_hand_mean, "meta": meta,
                         "mano_dir": str(opts.mano_dir) if fit.hand_model == "mano" else ""},
                        sort_keys=True).encode())
    return h.hexdigest()[:16]


# ---- the shared writer ---------------------------------------------------------------

def _nbytes(seq: ShardSequence) -> int:
    return sum(getattr(seq, k).nbytes for k in _ARRAYS)


def _manifest_row(seq: ShardSequence, shard_name: str, fingerprint: str, split: str) -> dict:
    err = seq.fit_error[seq.valid & np.isfinite(seq.fit_error)]
    return {
        "name": seq.name, "shard": shard_name, "group": f"sequences/{seq.name}", "frames": seq.n_frames,
        "fps": float(seq.fps), "category": seq.category, "subject": seq.subject, "session": seq.session,
        "source": seq.source, "capture_date": seq.capture_date, "split": split,
        "manual_frames": int(seq.manual.any(axis=1).sum()), "valid_fraction": float(seq.valid.mean()),
        "mean_fit_error_mm": float(1000 * err.mean()) if err.size else float("nan"), "fingerprint": fingerprint,
    }


DEFAULT_SPLIT_SEED, DEFAULT_SPLIT_RATIOS = 0, (0.8, 0.1, 0.1)


def _open_manifest(out: Path, opts: ExportOptions):
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


def _known(out: Path, manifest) -> dict[str, str]:
    """name -> fingerprint of the manifest's sequences whose shard file exists (a row whose
    shard is missing is exported again)."""
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


def append_to_dataset(out: Path, sequences: Iterable[ShardSequence], opts: ExportOptions,
                      fingerprints: dict[str, str] | None = None) -> ExportSummary:
    """Add ``sequences`` to the dataset in ``out``; the writer of the export and of dataset importers.

    A sequence whose fingerprint (``fingerprints[name]``, else ``arrays_fingerprint``) the
    manifest holds is skipped; a known name with another fingerprint is written again and
    re-pointed. Sequences stream through: at most ``shard_mb`` per fps is held in memory.
    Each finished shard is renamed into place, then the manifest rewritten atomically.
    """
    out = Path(out)
    opts.validate(out)
    with writing(out, "export"):  # one writer at a time; clears a killed run's temp files
        return _append(out, sequences, opts, fingerprints)


def _append(out: Path, sequences: Iterable[ShardSequence], opts: ExportOptions,
            fingerprints: dict[str, str] | None) -> ExportSummary:
    t0 = time.perf_counter()
    manifest, opts = _open_manifest(out, opts)
    if out.is_dir() and (orphans := _remove_orphans(out, manifest)):
        LOG.info("export: removed %s, not in the manifest (an interrupted run's)", ", ".join(orphans))
    known = _known(out, manifest)
    splits = dict(zip(manifest["name"], manifest["split"]))
    summary = ExportSummary(out)
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

    seen: set[str] = set()
    for seq in sequences:
        seq.validate(out)
        if seq.name in seen:
            raise SchemaError(out, f"sequence '{seq.name}' is given twice")
        seen.add(seq.name)
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


# ---- sessions -> sequences -----------------------------------------------------------

@dataclass
class _Input:
    """One fitted sequence of a session, read and checked (step 1)."""

    name: str  # dataset name
    mano_path: Path
    fit: ManoFit
    manual: np.ndarray  # (F, 2) bool
    meta: dict  # provenance attributes
    fingerprint: str


def manual_flags(kp: Keypoints2D, frames: np.ndarray) -> np.ndarray:
    """(F, 2) bool for the fit's ``frames``: the hand has a manual point (score > 0) in any camera."""
    C, Fm = kp.keypoints.shape[:2]
    marked = (kp.keypoints[..., 2] > 0).reshape(C, Fm, 2, N_HAND_JOINTS).any(axis=(0, 3))  # (Fm, 2)
    out = np.zeros((len(frames), 2), dtype=bool)
    if Fm == 0:
        return out
    order = np.argsort(kp.frames)
    sorted_frames = kp.frames[order]
    at = np.minimum(np.searchsorted(sorted_frames, frames), Fm - 1)  # row of each fit frame, if any
    hit = sorted_frames[at] == frames
    out[hit] = marked[order[at[hit]]]
    return out


def _session_inputs(root: Path, opts: ExportOptions) -> tuple[list[_Input], list[str]]:
    """Every fitted sequence of a session, checked; and the sequences without mano.h5."""
    session = Session.open(root)
    cfg = session.config
    fitted = [s for s in session.sequences if session.path(MANO, seq=s).is_file()]
    if not fitted:
        raise SchemaError(root / "sequences", "no sequence has mano.h5: run `handdiffuse fit` first")
    inputs = []
    for seq in fitted:
        name = f"{cfg.name}.{seq}"
        if not NAME_RE.match(name):
            raise SchemaError(root / SESSION_TOML, f"dataset sequence name '{name}' (session name.sequence) "
                                                   "must match [A-Za-z0-9_.-]+: rename the session")
        mano_path = session.path(MANO, seq=seq)
        fit = read_mano(mano_path)
        manual_path = session.path(KEYPOINTS2D_MANUAL, seq=seq)
        kp = read_keypoints2d(manual_path) if manual_path.is_file() else None
        if kp is not None and kp.keypoints.shape[2] != N_KEYPOINTS:
            raise SchemaError(manual_path, f"expected {N_KEYPOINTS} keypoints per frame")
        category = cfg.sequences.get(seq, {}).get("category", "")
        meta = {"source": "capture", "session": cfg.name, "subject": cfg.subject,
                "capture_date": cfg.capture_date, "category": str(category)}
        manual = manual_flags(kp, fit.frames) if kp is not None else np.zeros((len(fit.frames), 2), bool)
        inputs.append(_Input(name, mano_path, fit, manual, meta, _input_fingerprint(fit, kp, meta, opts)))
    without = [f"{cfg.name}/{s}" for s in session.sequences if s not in fitted]
    return inputs, without


@functools.lru_cache(maxsize=4)
def _load_joints_layer(kind: str, mano_dir: Path | None) -> tuple[str, "torch.nn.Module"]:
    """(model name, its joints-only forward pass); equal to ``HandModel.forward``'s joints, without
    skinning the whole surface."""
    from hand_model.joints_layer import JointsLayer
    from hand_model.model import HandModel, HandModelConfig

    model = HandModel(HandModelConfig(kind=kind, mano_dir=mano_dir))  # type: ignore[arg-type]
    return model.name, JointsLayer(model)


def _joints_layer(fit: ManoFit, path: Path, opts: ExportOptions):
    """The joints of the hand model ``fit`` was made with (mano.h5 ``hand_model``: the bundled
    open hand model's name, or "mano")."""
    kind = "mano" if fit.hand_model == "mano" else "open_hand"
    try:
        name, layer = _load_joints_layer(kind, opts.mano_dir if kind == "mano" else None)
    except SchemaError as e:
        raise SchemaError(path, f"fitted with hand model '{fit.hand_model}', which cannot be loaded: {e}")
    if kind == "open_hand" and fit.hand_model != name:
        raise SchemaError(path, f"fitted with hand model '{fit.hand_model}', but the bundled model is '{name}' "
                                "(and 'mano' means your licensed MANO): re-run `handdiffuse fit`")
    return layer


def fitted_joints(layer, fit: ManoFit) -> np.ndarray:
    """(F, 42, 3) joints of the fitted parameters, in batches of ``FK_BATCH`` frames."""
    import torch

    out = np.empty((len(fit.frames), N_KEYPOINTS, 3), dtype=np.float32)
    betas = torch.as_tensor(fit.betas)
    with torch.no_grad():
        for i in range(0, len(fit.frames), FK_BATCH):
            j = slice(i, i + FK_BATCH)
            joints = layer(torch.as_tensor(fit.global_orient[j]), torch.as_tensor(fit.hand_pose[j]), betas,
                           torch.as_tensor(fit.transl[j]))  # (B, 2, 21, 3)
            out[j] = joints.reshape(-1, N_KEYPOINTS, 3).numpy()  # (B, 42, 3), left 21 then right 21
    return out


def _shard_sequence(item: _Input, layer) -> ShardSequence:
    fit = item.fit
    return ShardSequence(
        name=item.name, fps=fit.fps, joints=fitted_joints(layer, fit), global_orient=fit.global_orient,
        hand_pose=fit.hand_pose, betas=fit.betas, transl=fit.transl, valid=fit.quality.failure == 0,
        manual=item.manual, fit_error=fit.quality.residual3d, hand_model=fit.hand_model,
        flat_hand_mean=fit.flat_hand_mean, **item.meta,
    )


def export_sessions(sessions: list[Path], out: Path, opts: ExportOptions | None = None) -> ExportSummary:
    """Export every fitted sequence of ``sessions`` into the dataset in ``out`` (steps 1-4)."""
    t0 = time.perf_counter()
    opts = opts or ExportOptions()
    out = Path(out)
    opts.validate(out)
    if not sessions:
        raise SchemaError(out, "no session to export")
    # 1.
    inputs: list[_Input] = []
    without: list[str] = []
    origin: dict[str, Path] = {}
    for root in sessions:
        got, missing = _session_inputs(Path(root), opts)
        for item in got:
            if item.name in origin:
                raise SchemaError(Path(root) / SESSION_TOML, f"sequence '{item.name}' is also exported from "
                                                             f"{origin[item.name]}: session names must differ")
            origin[item.name] = Path(root)
        inputs += got
        without += missing
    with writing(out, "export"):  # the manifest read in 2. is the one 4. extends
        # 2.
        manifest, _ = _open_manifest(out, opts)
        known = _known(out, manifest)
        todo = [i for i in inputs if known.get(i.name) != i.fingerprint]
        for item in todo:  # the hand models load (or fail) before anything is written
            _joints_layer(item.fit, item.mano_path, opts)

        # 3.
        def build() -> Iterator[ShardSequence]:
            from tqdm import tqdm

            for item in tqdm(todo, desc="export", unit="seq", disable=not sys.stderr.isatty()):
                yield _shard_sequence(item, _joints_layer(item.fit, item.mano_path, opts))

        # 4.
        summary = append_to_dataset(out, build(), opts, {i.name: i.fingerprint for i in todo})
    summary.skipped_up_to_date = [i.name for i in inputs if known.get(i.name) == i.fingerprint]
    summary.without_mano = without
    summary.seconds = time.perf_counter() - t0
    return summary


# ---- the command ---------------------------------------------------------------------

@dataclass
class ExportCommand(ExportOptions):
    """Export the fitted sequences of sessions as HDF5 shards with a manifest -> OUT/shard-*.h5,
    OUT/manifest.parquet; exporting into the same folder again adds only what is new or changed."""

    sessions: tyro.conf.Positional[list[Path]] = field(default_factory=list)
    """Session folders to export (their sequences with mano.h5)."""
    out: Path | None = None
    """Dataset folder (default: <first session>/export)."""

    def run(self) -> int:
        from pipeline.log import LOG

        if not self.sessions:
            print("error: export needs at least one SESSION", file=sys.stderr)
            return EXIT_USAGE
        out = self.out or Path(self.sessions[0]) / "export"
        try:
            s = export_sessions(self.sessions, out, self)
        except SchemaError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if s.without_mano:
            LOG.info("export: without mano.h5 (run `handdiffuse fit`): %s", ", ".join(s.without_mano))
        tail = (f"{len(s.skipped_up_to_date)} up to date, {len(s.without_mano)} without mano.h5; dataset "
                f"{s.dataset_sequences} sequences, {s.dataset_frames} frames; {s.seconds:.1f} s")
        if not s.written:
            print(f"{out}: up to date, nothing to do ({tail})")
        else:
            print(f"exported {len(s.written)} sequences, {s.frames} frames -> {out}: {len(s.shards_written)} "
                  f"shards, {s.bytes_written / MB:.1f} MB at {s.mb_per_s:.1f} MB/s, {len(s.stale)} re-exported "
                  f"(old copies left unreferenced), {tail}")
        LOG.info("export: done in %.1f s", s.seconds)
        return EXIT_OK
