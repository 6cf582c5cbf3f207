"""The dataset's files: HDF5 sequence shards, format version 2 (``export/shard-00000.h5`` ...).

A shard holds many sequences of one frame rate. Everything is in metres and
seconds; hand axis 0 = left, 1 = right; joints in the 42-point order of
``data_schemas.keypoints``. A dataset folder (its shards and the manifest that lists
them) is written and read through ``data_schemas.dataset``; this module is one file.

HDF5 tree (format ``handdiffuse.shard``, version 2)::

    /  attrs: format = "handdiffuse.shard", version = 2, units = "m",
              fps, rotation = "axis_angle", created (ISO 8601 UTC),
              handdiffuse_version, n_sequences, n_frames
    sequences/
      <name>/                                   name: [A-Za-z0-9_.-]+, unique in the dataset
        attrs: fps, n_frames, source ("capture" | "generated" | "interhand2.6m" | "arctic" ...),
               session, subject, category, capture_date, hand_model, flat_hand_mean
        joints         (F, 42, 3)  float32  m; NaN only where the hand is not valid; by source: below
        global_orient  (F, 2, 3)   float32  axis-angle
        hand_pose      (F, 2, 45)  float32  axis-angle, MANO joint order
        betas          (2, 10)     float32
        transl         (F, 2, 3)   float32  m
        valid          (F, 2)      bool     there is an estimate of the hand in this frame
        manual         (F, 2)      bool     frame carries manual 2D annotation (provenance)
        fit_error      (F, 2)      float32  mean 3D residual of the fit, m; NaN if unknown
        confidence     (F, 2)      float32  in [0, 1], how far the estimate is trusted; 0 where not valid

Every frame of a sequence is kept: a captured hand with little evidence is carried by the fit
from its neighbours and comes with a low ``confidence`` (mano.h5's, ``fitting.confidence``),
which readers use to choose their frames (training: every frame of a window at least
``--min-confidence``). Imported sequences carry the source's own validity as confidence 1 or 0,
generated ones 1. Version 1 (no confidence, ``valid`` meaning "fit accepted") is refused: export
again.

What ``joints`` are depends on the sequence's ``source``; the MANO parameters beside them are
always parameters of the hand model ``hand_model`` names (posed relative to its mean or flat
hand as ``flat_hand_mean`` says):

- "capture" (``handdiffuse export``): the fitted hand model's joints, i.e. mano.h5's fitted
  parameters posed through the model the fit used; not the triangulated points.
- "generated" (``handdiffuse sample``): the generator's decoded joints, as sampled, not posed
  through the hand model; ``global_orient`` / ``hand_pose`` are its decoded rotations, ``betas``
  zero and ``transl`` puts each model wrist on the generated wrist (``generation.output``).
- imported (``handdiffuse import``): the source's. "interhand2.6m": its annotated 3D joints
  (``world_coord``), with its MANO fits beside them; "arctic": its MANO parameters posed through
  the user's MANO.

Each dataset is chunked along frames (256), gzip + shuffle compressed, with
HDF5's fletcher32 per chunk and a ``sha256`` attribute over its content.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import h5py
import numpy as np

from data_schemas import h5io
from data_schemas.checks import check_finite, check_range, check_shape
from data_schemas.errors import SchemaError
from data_schemas.keypoints import N_HAND_JOINTS, N_KEYPOINTS
from data_schemas.mano import N_BETAS, N_POSE

FORMAT = "handdiffuse.shard"
VERSION = 2
PRODUCED_BY = "handdiffuse export"
SHARD_NAME = "shard-{index:05d}.h5"
CHUNK_FRAMES = 256
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")

FRAME_FIELDS = ("joints", "global_orient", "hand_pose", "transl", "valid", "manual", "fit_error", "confidence")
META_FIELDS = ("source", "session", "subject", "category", "capture_date", "hand_model")


@dataclass
class ShardSequence:
    name: str
    fps: float
    joints: np.ndarray  # (F, 42, 3) m
    global_orient: np.ndarray  # (F, 2, 3)
    hand_pose: np.ndarray  # (F, 2, 45)
    betas: np.ndarray  # (2, 10)
    transl: np.ndarray  # (F, 2, 3) m
    valid: np.ndarray  # (F, 2) bool
    manual: np.ndarray  # (F, 2) bool
    fit_error: np.ndarray  # (F, 2) m
    confidence: np.ndarray  # (F, 2) in [0, 1]
    source: str = "capture"
    session: str = ""
    subject: str = ""
    category: str = ""
    capture_date: str = ""
    hand_model: str = "open_hand"
    flat_hand_mean: bool = True

    def __post_init__(self) -> None:
        for k in ("joints", "global_orient", "hand_pose", "betas", "transl", "fit_error", "confidence"):
            setattr(self, k, np.asarray(getattr(self, k), dtype=np.float32))
        self.valid = np.asarray(self.valid, dtype=bool)
        self.manual = np.asarray(self.manual, dtype=bool)

    @property
    def n_frames(self) -> int:
        return int(self.joints.shape[0])

    def validate(self, source: str | Path) -> None:
        where = f"sequence '{self.name}'"
        if not isinstance(self.name, str) or not NAME_RE.match(self.name):
            raise SchemaError(source, f"sequence name {self.name!r} must match [A-Za-z0-9_.-]+")
        if not (np.isfinite(self.fps) and self.fps > 0):
            raise SchemaError(source, f"{where}: 'fps' must be positive, got {self.fps}")
        dims: dict[str, int] = {}
        check_shape(source, f"{where} joints", self.joints, ("F", N_KEYPOINTS, 3), dims)
        check_shape(source, f"{where} global_orient", self.global_orient, ("F", 2, 3), dims)
        check_shape(source, f"{where} hand_pose", self.hand_pose, ("F", 2, N_POSE), dims)
        check_shape(source, f"{where} betas", self.betas, (2, N_BETAS), dims)
        check_shape(source, f"{where} transl", self.transl, ("F", 2, 3), dims)
        for k in ("valid", "manual", "fit_error", "confidence"):
            check_shape(source, f"{where} {k}", getattr(self, k), ("F", 2), dims)
        if dims["F"] == 0:
            raise SchemaError(source, f"{where} has no frames")
        # joints (F, 42, 3) -> (F, 2, 21, 3) so validity (F, 2) broadcasts per hand
        per_hand = self.joints.reshape(-1, 2, N_HAND_JOINTS, 3)
        check_finite(source, f"{where} joints", per_hand, where=self.valid, why="where the hand is valid")
        for k in ("global_orient", "hand_pose", "transl"):
            check_finite(source, f"{where} {k}", getattr(self, k), where=self.valid, why="where the hand is valid")
        check_finite(source, f"{where} betas", self.betas)
        check_finite(source, f"{where} confidence", self.confidence)
        check_range(source, f"{where} confidence", self.confidence, 0.0, 1.0)
        if (self.confidence[~self.valid] > 0).any():
            raise SchemaError(source, f"{where}: 'confidence' must be 0 where the hand is not valid")


@dataclass
class ShardInfo:
    """Root attributes of a shard."""

    fps: float
    n_sequences: int
    n_frames: int
    created: str
    handdiffuse_version: str
    names: list[str] = field(default_factory=list)


def validated(sequences: Iterable[ShardSequence], source: str | Path) -> Iterator[ShardSequence]:
    """The sequences one by one (a stream stays one), each valid (``ShardSequence.validate``) and its
    name given once; else one line."""
    names: set[str] = set()
    for s in sequences:
        s.validate(source)
        if s.name in names:
            raise SchemaError(source, f"sequence name '{s.name}' appears twice")
        names.add(s.name)
        yield s


def write_shard(path: str | Path, sequences: list[ShardSequence], fps: float | None = None) -> ShardInfo:
    """Write a complete shard atomically. All sequences must share one fps."""
    from data_schemas import __version__

    if not sequences:
        raise SchemaError(path, "no sequences to write")
    fps = float(sequences[0].fps if fps is None else fps)
    for s in validated(sequences, path):
        if abs(s.fps - fps) > 1e-9:
            raise SchemaError(path, f"sequence '{s.name}' has fps {s.fps}, the shard's is {fps}")
    info = ShardInfo(
        fps=fps, n_sequences=len(sequences), n_frames=sum(s.n_frames for s in sequences),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        handdiffuse_version=__version__, names=[s.name for s in sequences],
    )
    with h5io.create(
        path, FORMAT, VERSION, units="m", fps=fps, rotation="axis_angle", created=info.created,
        handdiffuse_version=info.handdiffuse_version, n_sequences=info.n_sequences, n_frames=info.n_frames,
    ) as f:
        root = f.create_group("sequences")
        for s in sequences:
            g = root.create_group(s.name)
            g.attrs["fps"] = float(s.fps)
            g.attrs["n_frames"] = s.n_frames
            g.attrs["flat_hand_mean"] = bool(s.flat_hand_mean)
            for k in META_FIELDS:
                g.attrs[k] = str(getattr(s, k))
            for k in FRAME_FIELDS:
                h5io.write_array(g, k, getattr(s, k), chunk_frames=CHUNK_FRAMES)
            h5io.write_array(g, "betas", s.betas, chunk_frames=None)
    return info


class ShardReader:
    """Open shard; reads whole sequences or windows of frames.

    >>> with ShardReader("export/shard-00000.h5") as r:
    ...     seq = r.read(r.names[0])
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._cm = h5io.open_checked(self.path, FORMAT, VERSION, PRODUCED_BY)
        self.file: h5py.File = self._cm.__enter__()
        if "sequences" not in self.file:
            self.close()
            raise SchemaError(self.path, "missing group '/sequences'")
        self.fps = h5io.attr_float(self.file, "fps", self.path)
        self.names: list[str] = list(self.file["sequences"].keys())

    def info(self) -> ShardInfo:
        a = self.file.attrs
        return ShardInfo(
            fps=self.fps, n_sequences=int(a.get("n_sequences", len(self.names))),
            n_frames=int(a.get("n_frames", 0)), created=h5io.attr_str(self.file, "created", self.path),
            handdiffuse_version=h5io.attr_str(self.file, "handdiffuse_version", self.path), names=list(self.names),
        )

    def _group(self, name: str) -> h5py.Group:
        if name not in self.names:
            raise SchemaError(self.path, f"no sequence '{name}'")
        return self.file["sequences"][name]

    def n_frames(self, name: str) -> int:
        return int(self._group(name)["joints"].shape[0])

    def read(self, name: str, verify: bool = True) -> ShardSequence:
        g = self._group(name)
        arrays = {k: h5io.read_array(g, k, self.path, verify=verify) for k in FRAME_FIELDS + ("betas",)}
        meta = {k: h5io.attr_str(g, k, self.path) for k in META_FIELDS}
        seq = ShardSequence(
            name=name, fps=h5io.attr_float(g, "fps", self.path), **arrays, **meta,
            flat_hand_mean=bool(g.attrs.get("flat_hand_mean", True)),
        )
        seq.validate(self.path)
        return seq

    def read_window(self, name: str, start: int, length: int, fields: tuple[str, ...] = ("joints",)) -> dict:
        """Frames [start, start + length) of ``fields``; no checksum (that needs the whole dataset)."""
        g = self._group(name)
        return {k: g[k][start:start + length] for k in fields}

    def verify(self) -> list[str]:
        """Every dataset's checksum and every sequence's contents; one line per problem."""
        problems = h5io.verify_checksums(self.file, self.path)
        if not problems:
            for n in self.names:
                try:
                    self.read(n, verify=False)
                except SchemaError as e:
                    problems.append(str(e))
        if int(self.file.attrs.get("n_sequences", -1)) != len(self.names):
            problems.append(f"{self.path}: root attribute n_sequences disagrees with the sequences stored")
        return problems

    def close(self) -> None:
        self._cm.__exit__(None, None, None)

    def __enter__(self) -> "ShardReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_shard(path: str | Path) -> list[ShardSequence]:
    with ShardReader(path) as r:
        return [r.read(n) for n in r.names]
