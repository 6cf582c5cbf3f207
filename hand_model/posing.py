"""Both hands posed from stored MANO parameters, whichever hand model and pose convention they use.

    model = hand_model_for("open_hand")                  # or "mano" with the user's MANO folder
    posed = pose_hands(model, seq.global_orient, seq.hand_pose, seq.betas, seq.transl,
                       flat_hand_mean=seq.flat_hand_mean)
    posed.vertices  # (F, 2, V, 3) m      posed.joints  # (F, 2, 21, 3) m, data_schemas.keypoints order

A shard says which model its parameters belong to (``hand_model``: "open_hand", the bundled
model; "mano", the user's licensed MANO, whose files the project never holds) and whether
``hand_pose`` is relative to the flat hand (``flat_hand_mean=True``, our fits) or to the
model's mean pose (``False``: InterHand2.6M's and ARCTIC's MANO parameters).
``HandModel`` poses relative to the flat hand, so a mean-relative pose gets the model's
``hands_mean`` (its own for each hand, from the model file) added first.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data_schemas.errors import SchemaError
from hand_model import mano_io
from hand_model.model import MANO_DIR_ENV, HandModel, HandModelConfig

HAND_MODELS = ("open_hand", "mano")
BATCH = 256  # frames per forward pass: the (B, 2, V, 3) output of 256 frames is ~11 MB


@dataclass
class PosedHands:
    vertices: np.ndarray | None  # (F, 2, V, 3) m, None when only joints were asked for
    joints: np.ndarray  # (F, 2, 21, 3) m, our order per hand


@functools.lru_cache(maxsize=4)
def _model(kind: str, mano_dir: Path | None) -> HandModel:
    return HandModel(HandModelConfig(kind=kind, mano_dir=mano_dir)).eval()


def hand_model_for(kind: str, mano_dir: Path | None = None, source: str | Path = "hand model") -> HandModel:
    """The hand model a shard's ``hand_model`` attribute names (loaded once per process).

    "mano" needs the folder with the user's MANO_RIGHT.pkl / MANO_LEFT.pkl (``mano_dir`` or
    $HANDDIFFUSE_MANO_DIR); errors name ``source``, the file whose parameters need the model."""
    if kind not in HAND_MODELS:
        raise SchemaError(source, f"unknown hand_model {kind!r} (expected one of {', '.join(HAND_MODELS)})")
    try:
        return _model(kind, None if kind == "open_hand" else (Path(mano_dir) if mano_dir else None))
    except SchemaError as e:
        if kind == "mano" and e.source == "hand model config":
            raise SchemaError(source, "MANO parameters need your licensed MANO model: pass --mano-dir (the "
                                      f"folder with MANO_RIGHT.pkl and MANO_LEFT.pkl) or set ${MANO_DIR_ENV}") from None
        raise


@functools.lru_cache(maxsize=4)
def _hands_mean(right: Path, left: Path) -> np.ndarray:
    return np.stack([mano_io.load_model_pickle(left)["hands_mean"],
                     mano_io.load_model_pickle(right)["hands_mean"]]).astype(np.float64)  # (2, 45) left, right


def hands_mean(model: HandModel) -> np.ndarray:
    """(2, 45) the model's mean hand pose, left then right (what smplx adds when flat_hand_mean=False)."""
    right, left = model.config.files()
    return _hands_mean(Path(right), Path(left))


def flat_hand_pose(model: HandModel, hand_pose: np.ndarray, flat_hand_mean: bool) -> np.ndarray:
    """(..., 2, 45) pose in the shard's convention -> relative to the flat hand (HandModel's)."""
    pose = np.asarray(hand_pose, np.float64)
    return pose if flat_hand_mean else pose + hands_mean(model)


def pose_hands(model: HandModel, global_orient: np.ndarray, hand_pose: np.ndarray, betas: np.ndarray,
               transl: np.ndarray, flat_hand_mean: bool = True, vertices: bool = True,
               batch: int = BATCH) -> PosedHands:
    """(F, 2, 3), (F, 2, 45), (2, 10), (F, 2, 3) -> both hands posed, ``batch`` frames at a time.

    NaN parameters (hands that are not valid) give NaN outputs for that hand and frame only."""
    pose = flat_hand_pose(model, hand_pose, flat_hand_mean)
    F = len(pose)
    dt = model.right.v_template.dtype
    tensor = lambda a: torch.as_tensor(np.asarray(a), dtype=dt)  # noqa: E731
    b = tensor(betas)  # (2, 10)
    outs_v, outs_j = [], []
    with torch.no_grad():
        for start in range(0, F, batch):
            s = slice(start, start + batch)
            out = model(tensor(global_orient[s]), tensor(pose[s]), b, tensor(transl[s]))
            outs_j.append(out.joints.numpy())
            if vertices:
                outs_v.append(out.vertices.numpy())
    V = model.n_vertices
    return PosedHands(
        vertices=(np.concatenate(outs_v) if outs_v else np.zeros((0, 2, V, 3), np.float32)) if vertices else None,
        joints=np.concatenate(outs_j) if outs_j else np.zeros((0, 2, 21, 3), np.float32),
    )
