"""``HandModel``: both hands through ``smplx.MANO``, joints in our 21-per-hand order.

    model = HandModel()                                    # the bundled open hand model
    model = HandModel(HandModelConfig(kind="mano", mano_dir=Path("~/mano")))  # licensed MANO
    out = model(global_orient, hand_pose, betas, transl)   # (B, 2, 3), (B, 2, 45), (B|-, 2, 10), (B, 2, 3)
    out.joints    # (B, 2, 21, 3) metres, data_schemas.keypoints order per hand
    out.vertices  # (B, 2, V, 3)

Hand axis 0 = left, 1 = right. ``hand_pose`` is 15 joints x axis-angle in MANO's
joint order, relative to the flat hand (smplx ``flat_hand_mean=True``), no PCA. The
21 joints are MANO's 16 plus 5 fingertip vertices (ids ``TIP_VERTEX_IDS``, MANO's own;
the open hand model puts its tips at the same ids), reordered by
``data_schemas.keypoints.MANO21_TO_OPENPOSE``. Differentiable, float32, any device.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from data_schemas.errors import SchemaError
from data_schemas.keypoints import MANO21_TO_OPENPOSE, OURS_OF_MANO21
from hand_model import mano_io, pose_prior
from hand_model.generate import DATA_DIR, LEFT_FILE, RIGHT_FILE, TIP_VERTEX_IDS

MANO_DIR_ENV = "HANDDIFFUSE_MANO_DIR"
AXIS_ANGLE_MIRROR = np.tile([1.0, -1.0, -1.0], 15)  # right <-> left hand pose


@dataclass
class HandModelConfig:
    kind: Literal["open_hand", "mano"] = "open_hand"
    """Hand model: the bundled open hand model, or a licensed MANO (its files are never shipped)."""
    mano_dir: Path | None = None
    """Folder with MANO_RIGHT.pkl and MANO_LEFT.pkl (kind=mano); default: $HANDDIFFUSE_MANO_DIR."""

    def files(self) -> tuple[Path, Path]:
        """(right, left) model files."""
        if self.kind == "open_hand":
            return DATA_DIR / RIGHT_FILE, DATA_DIR / LEFT_FILE
        if self.kind != "mano":
            raise SchemaError("hand model config", f"unknown kind {self.kind!r} (open_hand or mano)")
        folder = self.mano_dir or (Path(os.environ[MANO_DIR_ENV]) if os.environ.get(MANO_DIR_ENV) else None)
        if folder is None:
            raise SchemaError("hand model config", f"kind=mano needs mano_dir or ${MANO_DIR_ENV}: the folder "
                              "with your licensed MANO_RIGHT.pkl and MANO_LEFT.pkl")
        folder = Path(folder).expanduser()
        return folder / mano_io.RIGHT_FILE, folder / mano_io.LEFT_FILE


@dataclass
class HandOutput:
    vertices: torch.Tensor  # (B, 2, V, 3) m
    joints: torch.Tensor  # (B, 2, 21, 3) m, our order


def _load_pair(config: HandModelConfig) -> tuple[dict, dict]:
    right_path, left_path = config.files()
    right, left = mano_io.load_model_pickle(right_path), mano_io.load_model_pickle(left_path)
    mano_io.fix_left_shapedirs(left, right)
    return right, left


def _mano_layer(data: dict, path: Path, is_rhand: bool):
    import smplx
    from smplx.utils import Struct

    with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a warning about 10 betas
        return smplx.MANO(
            model_path=str(path), data_struct=Struct(**data), is_rhand=is_rhand, use_pca=False,
            flat_hand_mean=True, create_global_orient=False, create_hand_pose=False, create_betas=False,
            create_transl=False,
        )


class HandModel(torch.nn.Module):
    """Left and right hand layers; ``forward`` poses both at once."""

    def __init__(self, config: HandModelConfig | None = None):
        super().__init__()
        self.config = config or HandModelConfig()
        right_path, left_path = self.config.files()
        right, left = _load_pair(self.config)
        self.name = str(right.get("model_name", self.config.kind))
        self.left = _mano_layer(left, left_path, is_rhand=False)
        self.right = _mano_layer(right, right_path, is_rhand=True)
        tips = np.asarray(right.get("tip_vertex_ids", TIP_VERTEX_IDS), dtype=np.int64)
        self.register_buffer("tip_ids", torch.as_tensor(tips))
        self.register_buffer("reorder", torch.as_tensor(MANO21_TO_OPENPOSE, dtype=torch.long))
        self.faces = (np.asarray(left["f"], np.int64), np.asarray(right["f"], np.int64))
        # anatomical frames of the right hand's joints (the left's are their mirror image)
        rest = self.rest_joints().detach().cpu().numpy()[1]  # (21, 3) right, ours
        joints16 = rest[list(OURS_OF_MANO21[:16])]
        self.frames = pose_prior.anatomical_frames(joints16, pose_prior.bone_children(rest))  # (15, 3, 3)

    @property
    def n_vertices(self) -> int:
        return int(self.right.v_template.shape[0])

    def forward(self, global_orient: torch.Tensor, hand_pose: torch.Tensor, betas: torch.Tensor | None = None,
                transl: torch.Tensor | None = None) -> HandOutput:
        B = global_orient.shape[0]
        dev, dt = self.right.v_template.device, self.right.v_template.dtype
        if betas is None:
            betas = torch.zeros(B, 2, 10, device=dev, dtype=dt)
        elif betas.dim() == 2:  # (2, 10): one shape per hand for every frame
            betas = betas.unsqueeze(0).expand(B, -1, -1)
        if transl is None:
            transl = torch.zeros(B, 2, 3, device=dev, dtype=dt)
        verts, joints = [], []
        for h, layer in enumerate((self.left, self.right)):
            out = layer(betas=betas[:, h], global_orient=global_orient[:, h], hand_pose=hand_pose[:, h],
                        transl=transl[:, h])
            tips = out.vertices[:, self.tip_ids]  # (B, 5, 3)
            mano21 = torch.cat([out.joints, tips], dim=1)  # (B, 21, 3) MANO-21 order
            joints.append(mano21[:, self.reorder])
            verts.append(out.vertices)
        return HandOutput(vertices=torch.stack(verts, 1), joints=torch.stack(joints, 1))

    def rest_joints(self, betas: torch.Tensor | None = None) -> torch.Tensor:
        """(2, 21, 3) joints of the flat hands (zero pose, zero translation)."""
        dev = self.right.v_template.device
        z = torch.zeros(1, 2, 3, device=dev)
        out = self(z, torch.zeros(1, 2, 45, device=dev), None if betas is None else betas, z)
        return out.joints[0]

    # -- pose prior: joint limits in each joint's anatomical frame (hand_model.pose_prior) --

    def sample_poses(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, 2, 45) plausible hand poses, both hands drawn independently."""
        right = pose_prior.to_axis_angle(pose_prior.sample_angles(2 * n, rng), self.frames).reshape(n, 2, 45)
        right[:, 0] *= AXIS_ANGLE_MIRROR  # the left hand's pose is the mirror of a right-hand pose
        return right

    def limit_violation(self, hand_pose: torch.Tensor) -> torch.Tensor:
        """(..., 2, 45) pose -> (..., 2, 15, 3) radians outside the joint limits (0 inside); differentiable."""
        mirror = torch.as_tensor(np.stack([AXIS_ANGLE_MIRROR, np.ones(45)]), dtype=hand_pose.dtype,
                                 device=hand_pose.device)
        as_right = (hand_pose * mirror).reshape(hand_pose.shape[:-1] + (15, 3))
        frames = torch.as_tensor(self.frames, dtype=hand_pose.dtype, device=hand_pose.device)
        angles = torch.einsum("jba,...jb->...ja", frames, as_right)  # (twist, abduction, flexion)
        lo, hi = (torch.as_tensor(x * pose_prior.DEG, dtype=hand_pose.dtype, device=hand_pose.device)
                  for x in pose_prior.limits_deg())
        return torch.relu(angles - hi) + torch.relu(lo - angles)
