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
3. the others: joints as the fit computed them (mano.h5's ``joints``; its ``hand_model`` must
   load); every frame kept: valid = there is an estimate (every fitted frame: the fit carries a hand
   short of evidence from its neighbours), confidence = the fit's (low where it carried a hand or
   disagrees with its evidence: the flag readers choose frames by); fit_error = the fit's 3D residual
4. ``data_schemas.dataset.append_to_dataset`` (the one writer of a dataset folder, shared with
   import and sampling): sequences grouped by fps fill shards up to ``shard_mb``; each shard
   is written under a temp name and renamed, then the manifest is rewritten atomically

The dataset only grows, a killed run resumes, and the split is by sequence (a hash of split
seed and name): ``data_schemas.dataset`` says how. One export writes a dataset folder at a
time (a lock beside it, ``data_schemas.lock``): a second waits for the first, saying so. The
manifest records the split options: an export without split options keeps the dataset's, one
with others is an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import tyro

from data_schemas.dataset import (MB, AppendSummary, DatasetOptions, append_to_dataset, hash_arrays,
                                  known_fingerprints, open_manifest)
from data_schemas.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_USAGE, SchemaError
from data_schemas.keypoints import N_HAND_JOINTS, N_KEYPOINTS
from data_schemas.keypoints2d import Keypoints2D, read_keypoints2d
from data_schemas.lock import writing
from data_schemas.mano import ManoFit, read_mano
from data_schemas.session import KEYPOINTS2D_MANUAL, MANO, SESSION_TOML, Session
from data_schemas.shard import NAME_RE, ShardSequence

__all__ = ["ExportOptions", "ExportSummary", "ExportCommand", "export_sessions"]

# Bump when the export computes a sequence differently (joints, flags): every fingerprint changes.
EXPORT_VERSION = 2
LOG = logging.getLogger("handdiffuse")


@dataclass
class ExportOptions(DatasetOptions):
    mano_dir: Path | None = None
    """Folder with MANO_RIGHT.pkl and MANO_LEFT.pkl, for sequences fitted with MANO (default
    $HANDDIFFUSE_MANO_DIR): the export computes their joints with the model the fit used."""


@dataclass
class ExportSummary(AppendSummary):
    without_mano: list[str] = field(default_factory=list)  # "<session>/<seq>" skipped: no mano.h5


def _input_fingerprint(fit: ManoFit, manual: Keypoints2D | None, meta: dict, opts: ExportOptions) -> str:
    """Hash of what a captured sequence is made from: the fit's content, the manual annotation's,
    the provenance attributes and the hand model options. Shard size and split options are left
    out: they change where a sequence is stored or listed, not what is stored."""
    h = hashlib.sha256()
    hash_arrays(h, {k: getattr(fit, k) for k in ("frames", "global_orient", "hand_pose", "betas", "transl")})
    hash_arrays(h, {"failure": fit.quality.failure, "residual3d": fit.quality.residual3d,
                    "confidence": fit.quality.confidence})
    if manual is not None:
        hash_arrays(h, {"manual_frames": manual.frames, "manual_keypoints": manual.keypoints})
    h.update(json.dumps({"export_version": EXPORT_VERSION, "fps": fit.fps, "hand_model": fit.hand_model,
                         "flat_hand_mean": fit.flat_hand_mean, "meta": meta,
                         "mano_dir": str(opts.mano_dir) if fit.hand_model == "mano" else ""},
                        sort_keys=True).encode())
    return h.hexdigest()[:16]


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


def _check_hand_model(fit: ManoFit, path: Path, opts: ExportOptions) -> None:
    """The hand model ``fit`` was made with (mano.h5 ``hand_model``: the bundled open hand model's
    name, or "mano") loads, and is the one bundled now."""
    from hand_model.posing import hand_model_for

    kind = "mano" if fit.hand_model == "mano" else "open_hand"
    try:
        name = hand_model_for(kind, opts.mano_dir if kind == "mano" else None, path).name
    except SchemaError as e:
        raise SchemaError(path, f"fitted with hand model '{fit.hand_model}', which cannot be loaded: {e.cause}") from None
    if kind == "open_hand" and fit.hand_model != name:
        raise SchemaError(path, f"fitted with hand model '{fit.hand_model}', but the bundled model is '{name}' "
                                "(and 'mano' means your licensed MANO): re-run `handdiffuse fit`")


def _shard_sequence(item: _Input) -> ShardSequence:
    fit = item.fit
    return ShardSequence(
        name=item.name, fps=fit.fps, joints=fit.joints, global_orient=fit.global_orient,
        hand_pose=fit.hand_pose, betas=fit.betas, transl=fit.transl, valid=np.ones((len(fit.frames), 2), bool),
        manual=item.manual, fit_error=fit.quality.residual3d, confidence=fit.quality.confidence,
        hand_model=fit.hand_model,
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
        manifest, _ = open_manifest(out, opts)
        known = known_fingerprints(out, manifest)
        todo = [i for i in inputs if known.get(i.name) != i.fingerprint]
        for item in todo:  # the hand models load (or fail) before anything is written
            _check_hand_model(item.fit, item.mano_path, opts)

        # 3.
        def build() -> Iterator[ShardSequence]:
            from tqdm import tqdm

            for item in tqdm(todo, desc="export", unit="seq", disable=not sys.stderr.isatty()):
                yield _shard_sequence(item)

        # 4.
        summary = ExportSummary(**vars(append_to_dataset(out, build(), opts, {i.name: i.fingerprint for i in todo})))
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
