"""A synthetic session's outputs against the studio's ground truth: the interaction figures.

    f = interaction_figures(Path("sessions/demo"))
    print(f.line())   # interaction mpjpe_mm=... contact_mpjpe_mm=... failed=... contact_truth=... ...

The dataset exists for the frames where the hands touch, so the figures compare what the
pipeline keeps of the interaction with the truth, frame by frame, over every sequence of the
session that has ground truth (``ground_truth/sequences/<seq>/``, written by ``handdiffuse studio``):

- ``mpjpe_mm``: mean distance of the fitted joints (``mano.h5``, brought into the truth's frame by
  the similarity between the calibrated and the true cameras) to the true joints, over every frame
  the fit has joints for; ``contact_mpjpe_mm``: the same over the frames whose true shortest
  left-right joint distance is under ``CLOSE`` (1 cm).
- ``failed``: the share of the truth's frames the dataset does not hand to training: not exported,
  or exported with a hand not valid or trusted under the training loader's default confidence
  (``data_schemas.dataset.MIN_CONFIDENCE``).
- ``contact_truth`` / ``contact_export``: the share of frames in contact by the stats rule
  (``hand_model.contact_frames``: meshes closer than 3 mm, or interpenetrating) on the true
  parameters (every frame) and on the exported ones (the frames handed to training).
- ``mindist_truth_cm`` / ``mindist_export_cm``: the mean shortest joint distance over the same frames.
- ``contact_precision`` / ``contact_recall``: per frame, the exported contact flag against the
  truth's; a frame not handed to training counts as "no contact" (so a dropped contact frame
  lowers the recall).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from data_schemas.calibration import read_calibration
from data_schemas.dataset import usable_frames
from data_schemas.errors import SchemaError
from data_schemas.joints3d import read_joints3d
from data_schemas.manifest import read_manifest, shard_path
from data_schemas.mano import read_mano
from data_schemas.session import CALIBRATION_TOML, MANO, SESSION_TOML, read_session_toml
from data_schemas.shard import ShardReader, ShardSequence
from hand_model.contact_frames import contact_frames, shortest_joint_distance
from hand_model.posing import hand_model_for

CLOSE = 0.01  # m: a frame whose true shortest joint distance is under this is a "hands touching" frame
TRUTH = "ground_truth"


@dataclass
class InteractionFigures:
    mpjpe_mm: float
    contact_mpjpe_mm: float
    failed: float
    contact_truth: float
    contact_export: float
    mindist_truth_cm: float
    mindist_export_cm: float
    contact_precision: float
    contact_recall: float
    frames: int
    close_frames: int

    def line(self, name: str = "interaction") -> str:
        """``name key=value ...`` with every figure (3 decimals; counts as integers)."""
        parts = [f"{f.name}={v}" if isinstance(v := getattr(self, f.name), int) else f"{f.name}={v:.3f}"
                 for f in fields(self)]
        return " ".join([name] + parts)


@dataclass
class _Sequence:
    """One sequence's per-frame arrays over the truth's frames."""

    errors: np.ndarray  # (F, 42) m, NaN where the fit has no joint
    true_mindist: np.ndarray  # (F,) m
    true_contact: np.ndarray  # (F,) bool
    kept: np.ndarray  # (F,) bool: handed to training
    export_mindist: np.ndarray  # (F,) m, NaN where not kept
    export_contact: np.ndarray  # (F,) bool, False where not kept


def _contact(seq_or_fit, model, valid: np.ndarray) -> np.ndarray:
    return contact_frames(model, seq_or_fit.global_orient, seq_or_fit.hand_pose, seq_or_fit.betas,
                          seq_or_fit.transl, valid, flat_hand_mean=seq_or_fit.flat_hand_mean).contact


def _exported(dataset: Path, names: list[str]) -> dict[str, ShardSequence]:
    """The sequences of ``names`` that the dataset in ``dataset`` holds."""
    manifest = read_manifest(dataset)
    out: dict[str, ShardSequence] = {}
    for row in manifest[manifest["name"].isin(names)].itertuples():
        with ShardReader(shard_path(dataset, row.shard)) as reader:
            out[str(row.name)] = reader.read(str(row.name))
    return out


def _sequence(root: Path, name: str, exported: ShardSequence | None, align) -> _Sequence:
    truth_dir = root / TRUTH / "sequences" / name
    truth_fit = read_mano(truth_dir / "mano.h5")
    truth = read_joints3d(truth_dir / "joints3d.h5")
    F = len(truth.frames)
    model = hand_model_for(truth_fit.hand_model, None, truth_dir / "mano.h5")
    true_contact = _contact(truth_fit, model, np.ones((F, 2), bool))
    errors = np.full((F, truth.joints.shape[1]), np.nan)
    kept = np.zeros(F, bool)
    export_mindist = np.full(F, np.nan)
    export_contact = np.zeros(F, bool)
    mano_path = root / MANO.format(seq=name)
    if mano_path.is_file():
        fit = read_mano(mano_path)
        _, i, j = np.intersect1d(fit.frames, truth.frames, return_indices=True)
        errors[j] = np.linalg.norm(align.apply(fit.joints[i]) - truth.joints[j], axis=-1)
        if exported is not None:
            if exported.n_frames != len(fit.frames):
                raise SchemaError(mano_path, f"has {len(fit.frames)} frames, its sequence in the dataset "
                                             f"{exported.n_frames}: export again")
            keep = usable_frames(exported.valid, exported.confidence)  # what the training loader takes
            contact = _contact(exported, hand_model_for(exported.hand_model, None, mano_path), exported.valid)
            kept[j] = keep[i]
            export_contact[j] = contact[i] & keep[i]
            export_mindist[j] = np.where(keep[i], shortest_joint_distance(exported.joints[i]), np.nan)
    return _Sequence(errors, shortest_joint_distance(truth.joints), true_contact, kept, export_mindist,
                     export_contact)


def _share(a: np.ndarray) -> float:
    return float(a.mean()) if a.size else float("nan")


def interaction_figures(root: str | Path, dataset: str | Path | None = None) -> InteractionFigures:
    """The figures of the session in ``root`` (its ``export/`` unless ``dataset``)."""
    from capture.calibration.evaluate import world_alignment

    root = Path(root)
    dataset = Path(dataset) if dataset is not None else root / "export"
    cfg = read_session_toml(root / SESSION_TOML)
    align = world_alignment(read_calibration(root / CALIBRATION_TOML),
                            read_calibration(root / TRUTH / "calibration.toml"))
    names = sorted(p.name for p in (root / TRUTH / "sequences").iterdir() if (p / "mano.h5").is_file())
    exported = _exported(dataset, [f"{cfg.name}.{n}" for n in names]) if dataset.is_dir() else {}
    seqs = [_sequence(root, n, exported.get(f"{cfg.name}.{n}"), align) for n in names]
    cat = {k: np.concatenate([getattr(s, k) for s in seqs]) for k in _Sequence.__dataclass_fields__}
    close = cat["true_mindist"] < CLOSE
    e = cat["errors"]
    rows = np.isfinite(e).all(axis=1)
    truth_c, export_c, kept = cat["true_contact"], cat["export_contact"], cat["kept"]
    tp = int((truth_c & export_c).sum())
    return InteractionFigures(
        mpjpe_mm=1000 * float(np.nanmean(e[rows])) if rows.any() else float("nan"),
        contact_mpjpe_mm=1000 * float(np.nanmean(e[rows & close])) if (rows & close).any() else float("nan"),
        failed=1 - _share(kept),
        contact_truth=_share(truth_c),
        contact_export=_share(export_c[kept]),
        mindist_truth_cm=100 * float(cat["true_mindist"].mean()),
        mindist_export_cm=100 * float(np.nanmean(cat["export_mindist"])) if kept.any() else float("nan"),
        contact_precision=tp / export_c.sum() if export_c.any() else float("nan"),
        contact_recall=tp / truth_c.sum() if truth_c.any() else float("nan"),
        frames=int(len(kept)), close_frames=int(close.sum()),
    )
