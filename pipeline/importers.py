"""``handdiffuse import {interhand,arctic} SRC --out DIR``: public two-hand datasets -> our shards.

So that people can train on two-hand data they already have, each reader turns a public
release into ``ShardSequence``s (metres, left hand then right, our 42-point order) and the
command appends them to a dataset folder with the dataset's one writer
(``data_schemas.dataset.append_to_dataset``).
Every input file is read and checked before anything is written; a bad one stops the import
with one line naming it.

InterHand2.6M (``SRC``: its annotation folder, searched for ``<prefix>_joint_3d.json`` with
``<prefix>_MANO_NeuralAnnot.json`` and ``<prefix>_camera.json`` beside it; or one joint_3d file)::

    <prefix>_joint_3d.json          {capture: {frame: {"world_coord": 42 x [x, y, z] mm,
                                     "joint_valid": 42 x 0/1, "hand_type": "right" | "left" |
                                     "interacting", "hand_type_valid": 0/1}}}
    <prefix>_MANO_NeuralAnnot.json  {capture: {frame: {"right": {"pose": 48, "shape": 10,
                                     "trans": 3 (m)} | null, "left": ... | null}}}
    <prefix>_camera.json            {capture: {"campos": {cam: 3 mm}, "camrot": {cam: 3 x 3},
                                     "focal": {cam: 2}, "princpt": {cam: 2}}}

Its 42 joints are the right hand (0-20) then the left (21-41); within a hand each finger
runs tip to base, the wrist last. ``IH26M_TO_OURS`` reorders a hand (``ours[i] = ih[t[i]]``)::

    ours:   0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15 16 17 18 19 20
    IH:    20  3  2  1  0  7  6  5  4 11 10  9  8 15 14 13 12 19 18 17 16
           wrist, then thumb / index / middle / ring / pinky base -> tip

- A capture's frame indices split into sequences wherever the step from one index to the
  next differs from the capture's most common step (the release's frame spacing), so a gap
  (a new take, dropped frames) starts a new sequence ``ih26m[.<split>].cap<capture>.<k>``,
  k = 0, 1, ... in frame order. ``fps`` is the release's: 30, or 5 for the 5 fps one.
- A hand is valid in a frame when all its 21 joints are valid and it has a MANO fit. Joints
  are kept where valid (mm -> m), NaN elsewhere. MANO's pose is 3 global orientation + 45
  hand pose, relative to MANO's mean pose (``flat_hand_mean=False``, as the release fits it);
  ``betas`` (one per hand and sequence) are the mean of the frames' shapes.
- category = the most frequent valid ``hand_type`` of the sequence; the camera file is only
  checked (every capture present, well formed): the data stays in the world frame.

ARCTIC (``SRC``: its ``raw_seqs`` folder, ``<subject>/<sequence>.mano.npy``)::

    np.save'd dict {"right": {"rot": (F, 3), "pose": (F, 45), "trans": (F, 3) m, "shape": (10,),
                              "fitting_err": (F,) optional}, "left": the same}

- MANO parameters relative to MANO's mean pose (``flat_hand_mean=False``); every frame is
  fitted, so every hand is valid and a NaN is an error. Joints are the MANO model's (the
  user's licensed files, ``--mano-dir``), posed from the parameters.
- name ``arctic.<subject>.<sequence>``; category = the sequence name without its take number
  ("box_grab_01" -> "box_grab"); fit_error = ``fitting_err`` (taken to be metres, like
  the rest of the file), NaN when absent.
- The .npy files hold a pickled dict. ``load_npy`` reads it with an unpickler that builds
  numpy arrays and nothing else callable (dicts, lists, strings and numbers need no call); any
  other class or function the file names is refused with one line before it could run, so a
  crafted file cannot run code.
"""

from __future__ import annotations

import json
import pickle
import re
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import tyro

from data_schemas.dataset import AppendSummary, append_to_dataset
from data_schemas.errors import EXIT_BAD_INPUT, EXIT_OK, SchemaError
from data_schemas.keypoints import HAND_JOINT_NAMES, HANDS, N_HAND_JOINTS, N_KEYPOINTS
from data_schemas.mano import N_BETAS, N_POSE
from data_schemas.shard import ShardSequence
from pipeline.export import ExportOptions
from hand_model.posing import hand_model_for, pose_hands

DEFAULT_FPS = 30.0

# ---- InterHand2.6M ---------------------------------------------------------------------

IH26M_SOURCE = "interhand2.6m"
IH26M_JOINTS = "_joint_3d.json"
IH26M_MANO = "_MANO_NeuralAnnot.json"
IH26M_CAMERAS = "_camera.json"
IH26M_SPLITS = ("train", "val", "test")
# One hand in InterHand2.6M's order: each finger tip -> base (4 = tip, 1 = base), the wrist last.
IH26M_HAND_NAMES: tuple[str, ...] = tuple(
    f"{finger}{k}" for finger in ("thumb", "index", "middle", "ring", "pinky") for k in (4, 3, 2, 1)
) + ("wrist",)
IH26M_TO_OURS: tuple[int, ...] = tuple(IH26M_HAND_NAMES.index(n) for n in HAND_JOINT_NAMES)
# 42 points: ours (left 0-20, right 21-41) from theirs (right 0-20, left 21-41)
IH26M42_TO_OURS: tuple[int, ...] = tuple(N_HAND_JOINTS + i for i in IH26M_TO_OURS) + IH26M_TO_OURS
IH26M_HAND_KEYS = HANDS  # MANO_NeuralAnnot's per-hand keys, in our hand order ("left", "right")
_MM = 1e-3


@dataclass
class InterHandFiles:
    """One InterHand2.6M annotation set (a split of the release)."""

    joints: Path
    mano: Path
    cameras: Path
    split: str = ""  # "train" | "val" | "test" when the file names say it


def interhand_files(joints: Path) -> InterHandFiles:
    """The set a ``<prefix>_joint_3d.json`` belongs to: its MANO and camera files beside it."""
    joints = Path(joints)
    if not joints.name.endswith(IH26M_JOINTS):
        raise SchemaError(joints, f"not an InterHand2.6M joint file (its name should end in {IH26M_JOINTS})")
    prefix = joints.name[:-len(IH26M_JOINTS)]
    split = prefix.rsplit("_", 1)[-1]
    files = InterHandFiles(joints, joints.with_name(prefix + IH26M_MANO), joints.with_name(prefix + IH26M_CAMERAS),
                           split if split in IH26M_SPLITS else "")
    for p in (files.joints, files.mano, files.cameras):
        if not p.is_file():
            raise SchemaError(p, f"file not found (InterHand2.6M's {p.name[len(prefix):]} beside {joints.name})")
    return files


def find_interhand(src: Path) -> list[InterHandFiles]:
    """Every annotation set under ``src`` (a folder, searched recursively), or the one ``src`` names."""
    src = Path(src)
    if src.is_file():
        return [interhand_files(src)]
    if not src.is_dir():
        raise SchemaError(src, "not found")
    found = sorted(src.rglob(f"*{IH26M_JOINTS}"))
    if not found:
        raise SchemaError(src, f"no InterHand2.6M *{IH26M_JOINTS} file in this folder")
    return [interhand_files(p) for p in found]


def _load_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise SchemaError(path, f"not valid JSON ({e})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SchemaError(path, f"cannot read ({e})") from None
    if not isinstance(data, dict):
        raise SchemaError(path, f"expected a JSON object keyed by capture id, got a {type(data).__name__}")
    return data


def _numbers(path: Path, where: str, value: object, shape: tuple[int, ...]) -> np.ndarray:
    """``value`` as a float64 array of exactly ``shape``; SchemaError naming ``where`` otherwise."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise SchemaError(path, f"{where} is not an array of numbers") from None
    if a.shape != shape:
        raise SchemaError(path, f"{where} has shape {a.shape}, expected {shape}")
    return a


def _check_cameras(files: InterHandFiles, cameras: dict, captures: list[str]) -> None:
    """Every capture of the joint file has well-formed cameras (the data stays in the world frame)."""
    path = files.cameras
    for cap in captures:
        if cap not in cameras:
            raise SchemaError(path, f"capture '{cap}' of {files.joints.name} is not in this file")
        c = cameras[cap]
        if not isinstance(c, dict):
            raise SchemaError(path, f"capture '{cap}' is not an object")
        names = None
        for key, shape in (("campos", (3,)), ("camrot", (3, 3)), ("focal", (2,)), ("princpt", (2,))):
            if not isinstance(c.get(key), dict) or not c[key]:
                raise SchemaError(path, f"capture '{cap}' has no '{key}' (an object keyed by camera)")
            if names is None:
                names = set(c[key])
            elif set(c[key]) != names:
                raise SchemaError(path, f"capture '{cap}': '{key}' names other cameras than 'campos'")
            for cam, value in c[key].items():
                a = _numbers(path, f"capture '{cap}' camera '{cam}' '{key}'", value, shape)
                if not np.isfinite(a).all():
                    raise SchemaError(path, f"capture '{cap}' camera '{cam}' '{key}' has NaN/inf values")


def _frame_runs(frames: list[int]) -> list[list[int]]:
    """Sorted frame indices -> runs split wherever the step differs from the most common step."""
    if len(frames) < 2:
        return [frames]
    steps = np.diff(frames)
    values, counts = np.unique(steps, return_counts=True)
    step = values[np.argmax(counts)]  # the smallest of the most common, on a tie
    cuts = np.flatnonzero(steps != step) + 1
    return [list(r) for r in np.split(np.asarray(frames), cuts)]


def _mano_hand(path: Path, where: str, value: object) -> np.ndarray | None:
    """One hand's NeuralAnnot fit -> (3 + 45 + 10 + 3,) = pose, shape, trans; None if not fitted."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SchemaError(path, f"{where} is not an object or null")
    parts = []
    for key, n in (("pose", 3 + N_POSE), ("shape", N_BETAS), ("trans", 3)):
        if key not in value:
            raise SchemaError(path, f"{where} has no '{key}'")
        a = _numbers(path, f"{where} '{key}'", value[key], (n,))
        if not np.isfinite(a).all():
            raise SchemaError(path, f"{where} '{key}' has NaN/inf values")
        parts.append(a)
    return np.concatenate(parts)


def _interhand_run(files: InterHandFiles, cap: str, k: int, frames: list[int], joints_cap: dict,
                   mano_cap: dict, keys: dict[int, str], fps: float) -> ShardSequence:
    F = len(frames)
    joints = np.full((F, N_KEYPOINTS, 3), np.nan)
    joint_valid = np.zeros((F, N_KEYPOINTS), bool)
    params = np.full((F, 2, 3 + N_POSE + N_BETAS + 3), np.nan)  # pose 48, shape 10, trans 3
    hand_types: list[str] = []
    for i, frame in enumerate(frames):
        key = keys[frame]
        where = f"capture '{cap}' frame '{key}'"
        entry = joints_cap[key]
        if not isinstance(entry, dict):
            raise SchemaError(files.joints, f"{where} is not an object")
        for name in ("world_coord", "joint_valid"):
            if name not in entry:
                raise SchemaError(files.joints, f"{where} has no '{name}'")
        xyz = _numbers(files.joints, f"{where} 'world_coord'", entry["world_coord"], (N_KEYPOINTS, 3))
        ok = _numbers(files.joints, f"{where} 'joint_valid'", np.ravel(np.asarray(entry["joint_valid"], object)),
                      (N_KEYPOINTS,)) > 0
        if not np.isfinite(xyz[ok]).all():
            raise SchemaError(files.joints, f"{where} 'world_coord' has NaN/inf values at valid joints")
        ours = list(IH26M42_TO_OURS)
        joint_valid[i] = ok[ours]
        joints[i] = np.where(joint_valid[i][:, None], xyz[ours] * _MM, np.nan)
        if entry.get("hand_type_valid") and isinstance(entry.get("hand_type"), str):
            hand_types.append(entry["hand_type"])
        fit = mano_cap.get(key)
        if fit is not None and not isinstance(fit, dict):
            raise SchemaError(files.mano, f"{where} is not an object")
        for h, hand in enumerate(IH26M_HAND_KEYS):
            p = _mano_hand(files.mano, f"{where} '{hand}'", (fit or {}).get(hand))
            if p is not None:
                params[i, h] = p
    fitted = np.isfinite(params[..., 0])  # (F, 2)
    valid = fitted & joint_valid.reshape(F, 2, N_HAND_JOINTS).all(axis=2)
    betas = np.zeros((2, N_BETAS))
    for h in range(2):
        if fitted[:, h].any():
            betas[h] = params[fitted[:, h], h, 3 + N_POSE:3 + N_POSE + N_BETAS].mean(axis=0)
    split = f"{files.split}." if files.split else ""
    return ShardSequence(
        name=f"ih26m.{split}cap{cap}.{k}", fps=fps, joints=joints, global_orient=params[..., :3],
        hand_pose=params[..., 3:3 + N_POSE], betas=betas, transl=params[..., -3:], valid=valid,
        manual=np.zeros((F, 2), bool), fit_error=np.full((F, 2), np.nan), confidence=valid.astype(np.float32),
        source=IH26M_SOURCE,
        category=Counter(hand_types).most_common(1)[0][0] if hand_types else "",
        hand_model="mano", flat_hand_mean=False,
    )


def read_interhand(files: InterHandFiles, fps: float = DEFAULT_FPS) -> list[ShardSequence]:
    """One InterHand2.6M annotation set -> its sequences, each checked (module docstring)."""
    joints, mano, cameras = _load_json(files.joints), _load_json(files.mano), _load_json(files.cameras)
    captures = sorted(joints, key=lambda c: (len(c), c))  # "2" before "10"
    _check_cameras(files, cameras, captures)
    sequences = []
    for cap in captures:
        if cap not in mano:
            raise SchemaError(files.mano, f"capture '{cap}' of {files.joints.name} is not in this file")
        joints_cap, mano_cap = joints[cap], mano[cap]
        for path, value in ((files.joints, joints_cap), (files.mano, mano_cap)):
            if not isinstance(value, dict):
                raise SchemaError(path, f"capture '{cap}' is not an object keyed by frame index")
        keys: dict[int, str] = {}
        for key in joints_cap:
            try:
                keys[int(key)] = key
            except ValueError:
                raise SchemaError(files.joints, f"capture '{cap}' has frame key {key!r}, not a frame index") from None
        for k, run in enumerate(_frame_runs(sorted(keys))):
            seq = _interhand_run(files, cap, k, run, joints_cap, mano_cap, keys, fps)
            seq.validate(files.joints)
            sequences.append(seq)
    return sequences


# ---- ARCTIC --------------------------------------------------------------------------------

ARCTIC_SOURCE = "arctic"
ARCTIC_SUFFIX = ".mano.npy"
ARCTIC_HAND_KEYS = HANDS  # the file's per-hand keys, in our hand order
_TAKE_RE = re.compile(r"_\d+$")


def find_arctic(src: Path) -> list[Path]:
    """``src/<subject>/<sequence>.mano.npy``, sorted."""
    src = Path(src)
    if not src.is_dir():
        raise SchemaError(src, "not a folder (ARCTIC's raw_seqs: <subject>/<sequence>.mano.npy)")
    found = sorted(src.glob(f"*/*{ARCTIC_SUFFIX}"))
    if not found:
        raise SchemaError(src, f"no <subject>/<sequence>{ARCTIC_SUFFIX} file in this folder (ARCTIC's raw_seqs)")
    return found


# what np.save writes for a dict of arrays and numbers (numpy 1 and numpy 2 module names)
_NPY_GLOBALS = frozenset(
    [(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")]
    + [(m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")]
    + [("numpy", "ndarray"), ("numpy", "dtype")])


class _Refused(pickle.UnpicklingError):
    pass


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that builds numpy arrays from the stream and nothing callable: any other
    global is refused when the stream names it, before anything could call it."""

    def find_class(self, module: str, name: str):
        if (module, name) in _NPY_GLOBALS:
            return super().find_class(module, name)
        raise _Refused(f"{module}.{name}")


def load_npy(path: Path):
    """A .npy file's array; an object array (np.save of a dict) built by ``_ArraysOnly``, never by
    pickle's own loader. SchemaError naming ``path`` on anything else."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            version = fmt.read_magic(f)
            header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            _, _, dtype = header(f)
            if not dtype.hasobject:
                f.seek(0)
                return np.load(f, allow_pickle=False)
            return _ArraysOnly(f).load()
    except _Refused as e:
        raise SchemaError(path, f"holds a pickled '{e}', which is not data: only dicts, lists, strings, numbers "
                                "and numpy arrays are read, and nothing in the file is run") from None
    except (OSError, ValueError, EOFError, TypeError, KeyError, IndexError, AttributeError, struct.error,
            pickle.UnpicklingError) as e:
        raise SchemaError(path, f"not a readable .npy file ({e})") from None


def _arctic_hand(path: Path, data: dict, hand: str, F: int | None) -> dict[str, np.ndarray]:
    """One hand's arrays, checked: rot (F, 3), pose (F, 45), trans (F, 3), shape (10,), fitting_err (F,)."""
    d = data.get(hand)
    if not isinstance(d, dict):
        raise SchemaError(path, f"no '{hand}' hand (expected a dict with rot, pose, trans, shape)")
    out = {}
    for key, tail in (("rot", (3,)), ("pose", (N_POSE,)), ("trans", (3,)), ("shape", None), ("fitting_err", ())):
        if key not in d:
            if key == "fitting_err":
                continue
            raise SchemaError(path, f"'{hand}' has no '{key}'")
        try:
            a = np.asarray(d[key], dtype=np.float64)
        except (TypeError, ValueError):
            raise SchemaError(path, f"'{hand}' '{key}' is not an array of numbers") from None
        if key == "shape":
            a = a.reshape(-1) if a.size == N_BETAS else a
            if a.shape != (N_BETAS,):
                raise SchemaError(path, f"'{hand}' 'shape' has shape {a.shape}, expected ({N_BETAS},)")
        else:
            want = "(" + ", ".join(["F"] + [str(t) for t in tail]) + ")"
            if a.ndim != 1 + len(tail) or a.shape[1:] != tail:
                raise SchemaError(path, f"'{hand}' '{key}' has shape {a.shape}, expected {want}")
            if F is not None and a.shape[0] != F:
                raise SchemaError(path, f"'{hand}' '{key}' has shape {a.shape}, expected {want} with F={F}")
            F = a.shape[0]
        if key != "fitting_err" and not np.isfinite(a).all():
            bad = ~np.isfinite(a)
            raise SchemaError(path, f"'{hand}' '{key}' has {int(bad.sum())} NaN/inf values (first at index "
                                    f"{tuple(int(i) for i in np.argwhere(bad)[0])}); ARCTIC fits every frame")
        out[key] = a
    return out


def read_arctic(path: Path, mano_dir: Path | None = None, fps: float = DEFAULT_FPS) -> ShardSequence:
    """One ``<subject>/<sequence>.mano.npy`` -> a sequence; joints from the MANO model in ``mano_dir``."""
    path = Path(path)
    raw = load_npy(path)
    data = raw.item() if isinstance(raw, np.ndarray) and raw.dtype == object and raw.shape == () else raw
    if not isinstance(data, dict):
        raise SchemaError(path, f"expected a saved dict with 'right' and 'left', got {type(data).__name__}")
    hands, F = [], None
    for hand in ARCTIC_HAND_KEYS:
        hands.append(_arctic_hand(path, data, hand, F))
        F = len(hands[-1]["rot"])
    if F == 0:
        raise SchemaError(path, "has no frames")
    stack = lambda key: np.stack([h[key] for h in hands], axis=1)  # noqa: E731  (F, 2, ...)
    global_orient, hand_pose, transl = stack("rot"), stack("pose"), stack("trans")
    betas = np.stack([h["shape"] for h in hands])  # (2, 10)
    model = hand_model_for("mano", mano_dir, source=path)
    joints = pose_hands(model, global_orient, hand_pose, betas, transl, flat_hand_mean=False,
                        vertices=False).joints.reshape(F, N_KEYPOINTS, 3)  # (F, 2, 21, 3) -> (F, 42, 3)
    fit_error = np.stack([h.get("fitting_err", np.full(F, np.nan)) for h in hands], axis=1)
    subject, name = path.parent.name, path.name[:-len(ARCTIC_SUFFIX)]
    seq = ShardSequence(
        name=f"arctic.{subject}.{name}", fps=fps, joints=joints, global_orient=global_orient, hand_pose=hand_pose,
        betas=betas, transl=transl, valid=np.ones((F, 2), bool), manual=np.zeros((F, 2), bool),
        fit_error=fit_error, confidence=np.ones((F, 2), np.float32), source=ARCTIC_SOURCE, subject=subject,
        category=_TAKE_RE.sub("", name), hand_model="mano", flat_hand_mean=False,
    )
    seq.validate(path)
    return seq


# ---- the command ---------------------------------------------------------------------------

DATASETS = ("interhand", "arctic")


def read_dataset(dataset: str, src: Path, fps: float = DEFAULT_FPS, mano_dir: Path | None = None
                 ) -> list[ShardSequence]:
    """Every sequence of ``src`` in ``dataset``'s layout, all read and checked."""
    if not (np.isfinite(fps) and fps > 0):
        raise SchemaError(src, f"fps must be positive, got {fps}")
    if dataset == "interhand":
        seqs = [s for files in find_interhand(src) for s in read_interhand(files, fps)]
    elif dataset == "arctic":
        seqs = [read_arctic(p, mano_dir, fps) for p in find_arctic(src)]
    else:
        raise SchemaError(src, f"unknown dataset {dataset!r} (expected one of {', '.join(DATASETS)})")
    names = Counter(s.name for s in seqs)
    twice = [n for n, c in names.items() if c > 1]
    if twice:
        raise SchemaError(src, f"sequence name '{twice[0]}' comes from two files")
    return seqs


def import_dataset(dataset: str, src: Path, out: Path, opts: ExportOptions | None = None,
                   fps: float = DEFAULT_FPS) -> AppendSummary:
    """Read and check all of ``src`` first, then append it to the dataset in ``out``."""
    t0 = time.perf_counter()
    opts = opts or ExportOptions()
    opts.validate(out)
    seqs = read_dataset(dataset, Path(src), fps, opts.mano_dir)
    summary = append_to_dataset(Path(out), seqs, opts)
    summary.seconds = time.perf_counter() - t0
    return summary


@dataclass
class ImportCommand(ExportOptions):
    """Import a public two-hand dataset into a dataset folder (shards + manifest.parquet, appended to):
    InterHand2.6M (joint_3d, MANO_NeuralAnnot and camera json) or ARCTIC (<subject>/<sequence>.mano.npy)."""

    dataset: tyro.conf.Positional[Literal["interhand", "arctic"]] = field(kw_only=True)
    """Which dataset SRC holds."""
    src: tyro.conf.Positional[Path] = field(kw_only=True)
    """InterHand2.6M: its annotation folder (or one *_joint_3d.json); ARCTIC: its raw_seqs folder."""
    out: Path = field(kw_only=True)
    """Dataset folder to add the sequences to (created if missing)."""
    fps: float = DEFAULT_FPS
    """Frame rate of the source: 30 (5 for InterHand2.6M's 5 fps release)."""
    mano_dir: Path | None = None
    """Folder with your licensed MANO_RIGHT.pkl and MANO_LEFT.pkl (default $HANDDIFFUSE_MANO_DIR):
    ARCTIC's joints are posed with it."""

    def run(self) -> int:
        from pipeline.log import LOG

        try:
            s = import_dataset(self.dataset, self.src, self.out, self, self.fps)
        except SchemaError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(f"imported {self.dataset} {self.src} -> {self.out}: {len(s.written)} sequences, {s.frames} frames "
              f"written, {len(s.skipped_up_to_date)} up to date, {len(s.stale)} re-imported; dataset "
              f"{s.dataset_sequences} sequences, {s.dataset_frames} frames; {s.seconds:.1f} s")
        LOG.info("import: done in %.1f s", s.seconds)
        return EXIT_OK
