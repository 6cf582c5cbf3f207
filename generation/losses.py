"""HandDiffuse's interaction losses on predicted two-hand joints: contact potential and shape.

Points: per hand its 21 joints (``data_schemas.keypoints`` order) and 4 palm points, 25 in all;
the palm points (the paper does not list them; a config choice) are the centroids of the
palm's triangles wrist-index base-middle base, wrist-middle base-ring base, wrist-ring
base-pinky base, and of wrist-index base-pinky base (the palm's centre).

Contact potential (``interaction_loss``), for prediction and ground truth alike:

    1. D_ij = |p_i^L - p_j^R|, v_ij = (p_i^L - p_j^R) / D_ij        25 x 25 distances and directions
    2. P_ij = 1/2 K relu(tau - D_ij)^2                               a spring pushing apart below tau
    3. w_ij = 1 + (1 - cos(v_ij_pred, v_ij_gt)) / 2                  in [1, 2]: more where the relative
                                                                     direction is wrong (a hand on the
                                                                     wrong side of the other, passing
                                                                     through it)
    4. L_contact = mean_ij w_ij |P_ij_pred - P_ij_gt|

The paper weighs |P_pred - P_gt| by the agreement of the distance vectors without giving the
form; step 3 is the choice made here (``direction_weight`` scales the (1 - cos) / 2 term, 0
turns it off). K and tau (``stiffness``, ``reach``) are config fields.

Shape loss (``shape_loss``): bone lengths (``HAND_BONES``) of the predicted left and right hands
agree (one subject), and agree with the ground truth's:

    L_shape = mean_b |len_b(L_pred) - len_b(R_pred)| + mean_b,h |len_b,h(pred) - len_b,h(gt)|
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from data_schemas.keypoints import HAND_BONES, N_HAND_JOINTS

PALM_TRIANGLES = ((0, 5, 9), (0, 9, 13), (0, 13, 17), (0, 5, 17))  # wrist, finger bases (ours)
N_POINTS = N_HAND_JOINTS + len(PALM_TRIANGLES)  # 25


@dataclass
class InteractionLossConfig:
    stiffness: float = 1.0
    """K of the spring potential (per m^2; the potential is in units of K m^2)."""
    reach: float = 0.05
    """tau, metres: point pairs closer than this feel the spring."""
    direction_weight: float = 1.0
    """Scale of the direction disagreement term of w_ij (0: plain |P_pred - P_gt|)."""


def contact_points(joints: torch.Tensor) -> torch.Tensor:
    """(..., 42, 3) joints -> (..., 2, 25, 3): each hand's 21 joints and 4 palm points."""
    hands = joints.reshape(joints.shape[:-2] + (2, N_HAND_JOINTS, 3))  # (..., 2, 21, 3)
    palm = torch.stack([hands[..., list(tri), :].mean(-2) for tri in PALM_TRIANGLES], dim=-2)  # (..., 2, 4, 3)
    return torch.cat([hands, palm], dim=-2)


def potential(joints: torch.Tensor, cfg: InteractionLossConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., 42, 3) -> spring potential P (..., 25, 25) and unit directions v (..., 25, 25, 3), left to right."""
    p = contact_points(joints)
    diff = p[..., 0, :, None, :] - p[..., 1, None, :, :]  # (..., 25, 25, 3)
    dist = diff.norm(dim=-1).clamp(min=1e-9)  # (..., 25, 25)
    P = 0.5 * cfg.stiffness * torch.relu(cfg.reach - dist) ** 2
    return P, diff / dist[..., None]


def interaction_loss(pred: torch.Tensor, gt: torch.Tensor, cfg: InteractionLossConfig | None = None,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """Contact potential loss (module docstring) between joints (B, T, 42, 3); ``mask`` (B, T) frames to use."""
    cfg = cfg or InteractionLossConfig()
    # 1. + 2.
    P_pred, v_pred = potential(pred, cfg)
    P_gt, v_gt = potential(gt, cfg)
    # 3.
    w = 1 + cfg.direction_weight * (1 - (v_pred * v_gt).sum(-1)) / 2  # (B, T, 25, 25)
    # 4.
    per_frame = (w * (P_pred - P_gt).abs()).mean(dim=(-2, -1))  # (B, T)
    if mask is None:
        return per_frame.mean()
    m = mask.to(per_frame.dtype)
    return (per_frame * m).sum() / m.sum().clamp(min=1)


def bone_lengths(joints: torch.Tensor) -> torch.Tensor:
    """(..., 42, 3) -> (..., 2, 20) bone lengths per hand."""
    hands = joints.reshape(joints.shape[:-2] + (2, N_HAND_JOINTS, 3))
    parents, children = [p for p, _ in HAND_BONES], [c for _, c in HAND_BONES]
    return (hands[..., children, :] - hands[..., parents, :]).norm(dim=-1)


def shape_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Bone-length consistency (module docstring) between joints (B, T, 42, 3); ``mask`` (B, T)."""
    lp, lg = bone_lengths(pred), bone_lengths(gt)  # (B, T, 2, 20)
    per_frame = (lp[..., 0, :] - lp[..., 1, :]).abs().mean(-1) + (lp - lg).abs().mean(dim=(-2, -1))  # (B, T)
    if mask is None:
        return per_frame.mean()
    m = mask.to(per_frame.dtype)
    return (per_frame * m).sum() / m.sum().clamp(min=1)
