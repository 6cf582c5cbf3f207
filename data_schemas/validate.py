"""Check any file of the system (or a whole session folder) and say what is wrong.

Dispatch: a folder with ``session.toml`` -> the session, every stage output in it and the
ground truth of a synthetic session; a folder with ``manifest.parquet`` -> an exported
dataset: every shard, then the manifest against the shards; ``manifest.parquet`` -> the same
manifest check;
``session.toml``; any other ``.toml`` -> calibration (cross-checked against the
session's cameras when it lies in a session folder); ``.h5`` -> by its ``format``
attribute; ``.jsonl`` -> annotation queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py

from data_schemas import h5io, joints3d, keypoints2d, landmarks, mano, manifest, shard
from data_schemas.calibration import read_calibration
from data_schemas.dataset import MIN_CONFIDENCE
from data_schemas.errors import SchemaError
from data_schemas.queue import read_queue
from data_schemas.session import GROUND_TRUTH, SESSION_TOML, Session, read_session_toml


@dataclass
class ValidationResult:
    path: Path
    kind: str
    summary: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


_FORMAT_BY_NAME = {"keypoints2d.h5": keypoints2d.FORMAT, "joints3d.h5": joints3d.FORMAT, "mano.h5": mano.FORMAT}


def _h5_format(path: Path) -> str:
    """The file's format attribute; for a file HDF5 cannot open, the format its name implies
    (so the format's reader gives the precise message and names the stage to re-run)."""
    try:
        with h5py.File(path, "r") as f:
            v = f.attrs.get("format", "")
            return v.decode() if isinstance(v, bytes) else str(v)
    except OSError:
        return _FORMAT_BY_NAME.get(path.name, shard.FORMAT if path.name.startswith("shard-") else "")


def _check_h5(path: Path) -> tuple[str, str]:
    fmt = _h5_format(path)
    if fmt == keypoints2d.FORMAT:
        kp = keypoints2d.read_keypoints2d(path)
        kp.check_inside(path)
        found = kp.found.mean() if kp.keypoints.size else 0.0
        return "keypoints2d", (f"{len(kp.cameras)} cameras x {len(kp.frames)} frames, detector {kp.detector}, "
                               f"{found:.1%} of points found")
    if fmt == joints3d.FORMAT:
        j = joints3d.read_joints3d(path)
        return "joints3d", f"{len(j.frames)} frames, {j.valid.mean():.1%} of joints triangulated ({j.method})"
    if fmt == mano.FORMAT:
        m = mano.read_mano(path)
        return "mano", (f"{len(m.frames)} frames, hand model {m.hand_model}, "
                        f"{m.quality.inconsistent.any(axis=1).sum()} frames inconsistent, "
                        f"{(m.quality.confidence < MIN_CONFIDENCE).any(axis=1).sum()} of confidence under "
                        f"{MIN_CONFIDENCE}")
    if fmt == landmarks.FORMAT:
        d = landmarks.read_landmarks(path)
        return "landmarks", (f"detector {d.detector} on hand model {d.hand_model}, {d.weights.shape[-1]} vertices "
                             f"per landmark, residual {float(d.residual_px.mean()):.2f} px (mean over landmarks "
                             "of the median)")
    if fmt == shard.FORMAT:
        with shard.ShardReader(path) as r:
            problems = r.verify()
            if problems:
                raise _Problems(problems)
            info = r.info()
        return "shard", f"{info.n_sequences} sequences, {info.n_frames} frames at {info.fps:g} fps, checksums ok"
    if fmt == "":
        with h5io.open_checked(path, "", 0, "the stage that wrote it"):
            pass  # raises the precise reason HDF5 cannot read it
        raise SchemaError(path, "not a handdiffuse file (no 'format' attribute)")
    raise SchemaError(path, f"unknown HDF5 format '{fmt}'")


class _Problems(Exception):
    def __init__(self, problems: list[str], kind: str = "shard"):
        self.problems = problems
        self.kind = kind


def _check_file(path: Path) -> tuple[str, str]:
    if path.name == SESSION_TOML:
        cfg = read_session_toml(path)
        return "session", f"session '{cfg.name}': {len(cfg.cameras)} cameras at {cfg.fps:g} fps"
    if path.suffix == ".toml":
        root = Session.find_root(path.parent)
        if root is not None and path.resolve() == (root / "calibration" / "calibration.toml").resolve():
            rig = Session.open(root).load_calibration()
        else:
            rig = read_calibration(path)
        err = rig.metadata.get("error")
        tail = f", mean reprojection error {err:.3f} px" if isinstance(err, (int, float)) else ""
        return "calibration", f"{len(rig)} cameras{tail}"
    if path.suffix in (".h5", ".hdf5"):
        return _check_h5(path)
    if path.suffix == ".jsonl":
        items = read_queue(path)
        return "queue", f"{len(items)} queued views of {len({(i.sequence, i.frame) for i in items})} frames"
    if path.name == manifest.MANIFEST_NAME:
        return _check_manifest(path)
    raise SchemaError(path, "unknown file type (expected a session or dataset folder, .toml, .h5, .jsonl "
                            f"or {manifest.MANIFEST_NAME})")


def _check_manifest(path: Path) -> tuple[str, str]:
    """The manifest against the shards beside it: each row's shard and group exist, and agree on
    frames and fps; every shard file is in it. A shard that does not open is left to its own
    check, which says why."""
    df = manifest.read_manifest(path)
    problems: list[str] = []
    for name, rows in df.groupby("shard", sort=True):
        shard_path = manifest.shard_path(path, name)
        if not shard_path.is_file():
            problems.append(str(SchemaError(path, f"sequence '{rows['name'].iloc[0]}' is in shard '{name}', "
                                                  "which does not exist")))
            continue
        try:
            reader = shard.ShardReader(shard_path)
        except SchemaError:
            continue
        with reader:
            for row in rows.itertuples():
                where = f"sequence '{row.name}' ({name})"
                if row.group not in reader.file:
                    problems.append(str(SchemaError(path, f"{where}: no group '{row.group}' in the shard")))
                elif (n := reader.n_frames(row.group.rsplit("/", 1)[-1])) != row.frames:
                    problems.append(str(SchemaError(path, f"{where}: {row.frames} frames, the shard holds {n}")))
                elif abs(reader.fps - row.fps) > 1e-9:
                    problems.append(str(SchemaError(path, f"{where}: fps {row.fps:g}, the shard's is {reader.fps:g}")))
    listed = {str(n) for n in df["shard"]}
    for orphan in sorted(p.name for p in path.parent.glob("shard-*.h5") if p.name not in listed):
        problems.append(str(SchemaError(path.parent / orphan, "shard not in the manifest (left by an interrupted "
                                                              "export): run `handdiffuse export` again to remove it")))
    if problems:
        raise _Problems(problems, "manifest")
    counts = df["split"].value_counts()
    splits = ", ".join(f"{s} {int(counts.get(s, 0))}" for s in manifest.SPLITS)
    return "manifest", (f"{len(df)} sequences in {df['shard'].nunique()} shards, {int(df['frames'].sum())} frames; "
                        f"{splits}; shards agree")


def ground_truth_files(root: Path) -> list[Path]:
    """A synthetic session's ground truth in the stages' formats: calibration and per-sequence files."""
    gt = root / GROUND_TRUTH
    files = [gt / "calibration.toml"] if (gt / "calibration.toml").is_file() else []
    for seq in sorted(p for p in (gt / "sequences").glob("*") if p.is_dir()):
        files += [seq / name for name in _FORMAT_BY_NAME if (seq / name).is_file()]
    return files


def validate_path(path: str | Path) -> list[ValidationResult]:
    """Validate a file, or a session folder and every stage output in it."""
    path = Path(path)
    if not path.exists():
        return [ValidationResult(path, "missing", problems=[str(SchemaError(path, "file not found"))])]
    if path.is_dir():
        if (path / manifest.MANIFEST_NAME).is_file() and not (path / SESSION_TOML).is_file():
            return validate_export(path)
        if not (path / SESSION_TOML).is_file():
            return [ValidationResult(path, "folder", problems=[str(SchemaError(path, f"no {SESSION_TOML} in this folder"))])]
        files = [path / SESSION_TOML]
        try:
            session = Session.open(path)
        except SchemaError:
            session = None
        if session is not None:
            outputs = session.stage_outputs()
            if outputs["calibration"]:
                files.append(path / "calibration" / "calibration.toml")
            for seq, have in outputs["sequences"].items():
                files += [path / "sequences" / seq / f"{k}.h5" for k, ok in have.items() if ok]
            if outputs["queue"]:
                files.append(path / "annotation" / "queue.jsonl")
            files += [path / "export" / n for n in outputs["export"]]
            if (path / "export" / manifest.MANIFEST_NAME).is_file():
                files.append(path / "export" / manifest.MANIFEST_NAME)
            files += ground_truth_files(path)
        return [r for f in files for r in validate_path(f)]
    result = ValidationResult(path, "file")
    try:
        result.kind, result.summary = _check_file(path)
    except SchemaError as e:
        result.problems.append(str(e))
    except _Problems as p:
        result.kind = p.kind
        result.problems.extend(p.problems)
    return [result]


def validate_export(folder: Path) -> list[ValidationResult]:
    """An exported dataset: every shard (checksums and contents), then the manifest against them."""
    shards = sorted(folder.glob("shard-*.h5"))
    return [r for p in shards + [folder / manifest.MANIFEST_NAME] for r in validate_path(p)]
