"""Generated motion as dataset sequences: ``ShardSequence``s that the dataset's writer stores.

    seqs = motions_to_sequences(joints, global_orient, hand_pose, fps=30.0, prefix="run1.sample")
    append_to_dataset(out, seqs, DatasetOptions(split_ratios=(1.0, 0.0, 0.0)))  # data_schemas.dataset

What a generated sequence holds:

- ``joints`` are the generator's joints, as generated (not the hand model's joints);
- ``global_orient`` and ``hand_pose`` are its rotations (relative to the flat hand), ``betas`` zero;
- ``transl`` puts each posed hand's wrist (keypoint 0 of the hand) on the generated wrist.

The translation needs no fitting. In MANO the root joint turns about itself, so the posed wrist is
J0(betas) + transl whatever the rotations (checked in tests/test_generation_output.py):
transl = wrist - J0(betas), with J0 read from the flat hand.
"""

from __future__ import annotations

import numpy as np
import torch

from data_schemas.errors import SchemaError
from data_schemas.keypoints import N_HAND_JOINTS
from data_schemas.mano import N_BETAS
from data_schemas.shard import ShardSequence
from hand_model.model import HandModel
from hand_model.posing import hand_model_for

SOURCE = "generated"


def motion_parameters(joints: np.ndarray, global_orient: np.ndarray, hand_pose: np.ndarray,
                      model: HandModel) -> tuple[np.ndarray, np.ndarray]:
    """(F, 42, 3) joints, (F, 2, 3), (F, 2, 45) rotations -> betas (2, 10) zeros, transl (F, 2, 3) m.

    The rotations only set the shapes here: the wrist does not depend on them."""
    # 1. the generated wrists
    F = len(joints)
    if np.shape(global_orient) != (F, 2, 3) or np.shape(hand_pose) != (F, 2, 45):
        raise SchemaError("generated motion", f"rotations {np.shape(global_orient)}, {np.shape(hand_pose)} do not "
                                              f"match joints {np.shape(joints)}: expected (F, 2, 3), (F, 2, 45)")
    per_hand = np.asarray(joints, np.float64).reshape(F, 2, N_HAND_JOINTS, 3)  # (F, 42, 3) -> (F, 2, 21, 3)
    wrist = per_hand[:, :, 0]  # (F, 2, 3)
    # 2. J0(betas): the model's wrist at zero pose and zero translation
    betas = np.zeros((2, N_BETAS))
    with torch.no_grad():
        j0 = model.rest_joints(torch.as_tensor(betas, dtype=model.right.v_template.dtype))  # (2, 21, 3)
    j0 = j0[:, 0].double().cpu().numpy()  # (2, 3)
    # 3. wrist = J0 + transl
    return betas, wrist - j0[None]


def motions_to_sequences(joints: np.ndarray, global_orient: np.ndarray, hand_pose: np.ndarray, fps: float,
                         prefix: str, category: str = "", hand_model: str = "open_hand") -> list[ShardSequence]:
    """(N, F, 42, 3), (N, F, 2, 3), (N, F, 2, 45) -> N sequences named f"{prefix}.{i:04d}".

    Every hand is valid, of confidence 1, and none manual; ``fit_error`` is NaN (nothing was fitted)."""
    joints, global_orient, hand_pose = (np.asarray(x) for x in (joints, global_orient, hand_pose))
    if joints.ndim != 4 or len(global_orient) != len(joints) or len(hand_pose) != len(joints):
        raise SchemaError("generated motion", f"expected joints (N, F, 42, 3) and N rotations, got {joints.shape}, "
                                              f"{global_orient.shape}, {hand_pose.shape}")
    model = hand_model_for(hand_model, source="generated motion")
    out = []
    for i in range(len(joints)):
        betas, transl = motion_parameters(joints[i], global_orient[i], hand_pose[i], model)
        F = len(joints[i])
        seq = ShardSequence(
            name=f"{prefix}.{i:04d}", fps=float(fps), joints=joints[i], global_orient=global_orient[i],
            hand_pose=hand_pose[i], betas=betas, transl=transl, valid=np.ones((F, 2), bool),
            manual=np.zeros((F, 2), bool), fit_error=np.full((F, 2), np.nan), confidence=np.ones((F, 2), np.float32),
            source=SOURCE, category=category,
            hand_model=hand_model, flat_hand_mean=True,
        )
        seq.validate("generated motion")
        out.append(seq)
    return out
