"""The HandDiffuse generator: SHDe (single-hand denoiser) and IHDe (interacting-hands denoiser).

    SHDe   x0_hat_h = S(h_t, t)            h: one hand's local block (187), root motion zeroed, a
                                           right hand mirrored to a left one: one model, both hands
    IHDe   x0_hat   = I(x_t, t | h_L, h_R)  x: the two-hand motion in the chosen representation
                                           (local 385 or global 380); h_L, h_R: the two single-hand
                                           motions, concatenated to x_t frame by frame (374)

Both predict x_0 of features normalised by ``RepStats`` (``stats`` for x, ``hand_stats`` for h),
computed from the training windows and kept in the model's state_dict. Training
(``generation.train``): SHDe first, then SHDe frozen and IHDe trained with the ground truth's
single-hand motions as its condition (with ``condition_noise`` added, since at sampling time the
condition is SHDe's output, not the truth). Sampling (``generation.sample``): SHDe's DDIM for
both hands, then the Interacting Hands DDIM of IHDe conditioned on them.

Losses of a batch (``losses``), B windows of T frames, features normalised:

    1. L_rec     = mean |x0_hat - x0|^2                           (SHDe: over hand blocks)
    2. joints    J_pred = decode(x0_hat), J_gt = decode(x0)       sequence frame, (B, T, 42, 3) m
    3. L_contact = interaction_loss(J_pred, J_gt)                 ``generation.losses``
    4. L_shape   = shape_loss(J_pred, J_gt)
    5. L_IHDe    = L_rec + interaction_weight L_contact + shape_weight L_shape

Named configurations (``PRESETS``) cover the complete model, the ablations of the paper's
Table 3, and the MDM-style baseline (one denoiser over the global rep, no SHDe, no interaction
or shape loss).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from generation.denoiser import SIZES, DenoiserConfig, MotionDenoiser, Size
from generation.diffusion import CosineSchedule, DiffusionConfig
from generation.losses import InteractionLossConfig, interaction_loss, shape_loss
from generation.representation import (
    HAND_DIM, GlobalRep, LocalRep, RepresentationConfig, RepStats, SequenceFrame, mirror_right_to_left,
    rotations_from_axis_angle, canonicalize, zero_global_motion,
)


@dataclass
class HandDiffuseConfig:
    """What the generator is: representation, denoisers, losses."""

    representation: Literal["local", "global"] = "local"
    """Two-hand representation IHDe denoises: "local" (per-hand root velocities and root-frame
    joints, D = 385) or "global" (sequence-frame positions, velocities, rotations, D = 380)."""
    canonical: Literal["heading", "full"] = "heading"
    """Sequence frame: rotate about the vertical only, or fully (generation.representation)."""
    up_axis: Literal["y", "z"] = "z"
    """The data's vertical axis."""
    window: int = 200
    """Frames of a training window and of a sample."""
    shde: bool = True
    """Use SHDe (single-hand denoiser) and condition IHDe on its motions; False: one denoiser
    over the two-hand representation (the "w/o SHDe" ablation, the MDM-style baseline)."""
    size: Size = "paper"
    """Denoiser size (generation.denoiser.SIZES): "paper" 8 layers, 4 heads, FF 1024, width 512;
    "cpu" 4 layers, width 128 (samples in < 1 s on a CPU); "tiny" for tests and the demo."""
    interaction_weight: float = 1.0
    """Weight of the contact potential loss (0: the "w/o potential loss" ablation)."""
    shape_weight: float = 100.0
    """Weight of the bone-length shape loss, per metre (0: "w/o shape loss")."""
    interaction: InteractionLossConfig = field(default_factory=lambda: InteractionLossConfig(stiffness=800.0))
    """Contact potential; stiffness 800 / m^2 makes a touching pair's potential 1 at reach 5 cm."""
    condition_noise: float = 0.1
    """Std of the Gaussian noise added to IHDe's ground-truth single-hand condition in training
    (normalised units), so IHDe tolerates SHDe's imperfect motions at sampling time."""
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)

    def denoiser(self) -> DenoiserConfig:
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r} (one of {', '.join(SIZES)})")
        return dataclasses.replace(SIZES[self.size], max_frames=max(SIZES[self.size].max_frames, self.window))


PRESETS: dict[str, HandDiffuseConfig] = {
    "handdiffuse": HandDiffuseConfig(),
    "global-rep": HandDiffuseConfig(representation="global"),
    "no-shde": HandDiffuseConfig(shde=False),
    "no-potential": HandDiffuseConfig(interaction_weight=0.0),
    "no-shape": HandDiffuseConfig(shape_weight=0.0),
    "mdm": HandDiffuseConfig(representation="global", shde=False, interaction_weight=0.0, shape_weight=0.0),
}
"""The complete model, Table 3's ablations, and the MDM-style baseline (same sizes)."""
Preset = Literal[tuple(PRESETS)]  # type: ignore[valid-type]  # their names, for the CLI


@dataclass
class Encoded:
    """A batch in the model's feature spaces (not normalised)."""

    x: torch.Tensor  # (B, T, D) two-hand representation, sequence frame
    hands: torch.Tensor  # (B, 2, T, 187) left, mirrored right; root motion zeroed
    joints: torch.Tensor  # (B, T, 42, 3) m, sequence frame
    frame: SequenceFrame | None  # world -> sequence frame
    rotations: torch.Tensor | None = None  # (B, T, 2, 16, 4), sequence frame


@dataclass
class Losses:
    total: torch.Tensor
    terms: dict[str, float]


class HandDiffuse(nn.Module):
    """SHDe + IHDe with their normalisation statistics; ``HandDiffuse(cfg)``."""

    def __init__(self, cfg: HandDiffuseConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or HandDiffuseConfig()
        if cfg.representation not in ("local", "global"):
            raise ValueError(f"unknown representation {cfg.representation!r} (local or global)")
        rep_cfg = RepresentationConfig(canonical=cfg.canonical, up_axis=cfg.up_axis)
        self.rep = LocalRep(rep_cfg) if cfg.representation == "local" else GlobalRep(rep_cfg)
        self.local = LocalRep(rep_cfg)
        den = cfg.denoiser()
        self.shde = MotionDenoiser(HAND_DIM, cfg=den) if cfg.shde else None
        self.ihde = MotionDenoiser(self.rep.dim, cfg=den, frame_condition_features=2 * HAND_DIM if cfg.shde else 0)
        self.stats = RepStats(self.rep.dim)
        self.hand_stats = RepStats(HAND_DIM)
        self.schedule = CosineSchedule(cfg.diffusion)

    # -- features ---------------------------------------------------------------------------

    def encode(self, joints: torch.Tensor, global_orient: torch.Tensor, hand_pose: torch.Tensor) -> Encoded:
        """World motion (B, T, 42, 3), (B, T, 2, 3), (B, T, 2, 45) -> the model's features."""
        p, rot, frame = canonicalize(joints, rotations_from_axis_angle(global_orient, hand_pose), self.rep.config)
        return self.encode_canonical(p, rot, frame)

    def encode_canonical(self, p: torch.Tensor, rot: torch.Tensor, frame: SequenceFrame | None = None) -> Encoded:
        """Sequence-frame joints (B, T, 42, 3), rotations (B, T, 2, 16, 4) -> features."""
        x = self.rep.encode_canonical(p, rot)
        local = x if isinstance(self.rep, LocalRep) else self.local.encode_canonical(p, rot)
        hands = torch.stack([zero_global_motion(local[..., LocalRep.LEFT]),
                             mirror_right_to_left(zero_global_motion(local[..., LocalRep.RIGHT]))], dim=1)
        return Encoded(x=x, hands=hands, joints=p, frame=frame, rotations=rot)

    def condition(self, hands_z: torch.Tensor) -> torch.Tensor:
        """Normalised hand blocks (B, 2, T, 187) -> IHDe's per-frame condition (B, T, 374)."""
        return hands_z.permute(0, 2, 1, 3).flatten(2)  # (B, T, 2 x 187)

    def joints(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised two-hand features (B, T, D) -> joints (B, T, 42, 3) in the sequence frame."""
        return self.rep.decode(self.stats.denormalize(z)).joints

    # -- losses (module docstring) ----------------------------------------------------------

    def shde_losses(self, enc: Encoded, t: torch.Tensor, noise: torch.Tensor, net: nn.Module | None = None
                    ) -> Losses:
        """SHDe on both hands of each window: t (2B,), noise (2B, T, 187). ``net``: SHDe itself or
        its DistributedDataParallel wrapper."""
        h0 = self.hand_stats.normalize(enc.hands.flatten(0, 1))  # (2B, T, 187)
        h_t = self.schedule.q_sample(h0, t, noise)
        rec = (((net or self.shde)(h_t, t) - h0) ** 2).mean()  # 1.
        return Losses(rec, {"rec": rec.item()})

    def ihde_losses(self, enc: Encoded, t: torch.Tensor, noise: torch.Tensor,
                    condition_noise: torch.Tensor | None = None, net: nn.Module | None = None) -> Losses:
        """IHDe on the two-hand windows: t (B,), noise (B, T, D), condition_noise (B, T, 374);
        ``net``: IHDe itself or its DistributedDataParallel wrapper."""
        cfg = self.cfg
        x0 = self.stats.normalize(enc.x)
        x_t = self.schedule.q_sample(x0, t, noise)
        cond = None
        if self.shde is not None:
            cond = self.condition(self.hand_stats.normalize(enc.hands))
            if condition_noise is not None:
                cond = cond + cfg.condition_noise * condition_noise
        x0_hat = (net or self.ihde)(x_t, t, frame_condition=cond)
        # 1.
        rec = ((x0_hat - x0) ** 2).mean()
        total, terms = rec, {"rec": rec.item()}
        if cfg.interaction_weight or cfg.shape_weight:
            # 2.
            pred = self.joints(x0_hat)
            gt = enc.joints
            # 3. + 4.
            if cfg.interaction_weight:
                contact = interaction_loss(pred, gt, cfg.interaction)
                total = total + cfg.interaction_weight * contact
                terms["contact"] = contact.item()
            if cfg.shape_weight:
                shape = shape_loss(pred, gt)
                total = total + cfg.shape_weight * shape
                terms["shape"] = shape.item()
        # 5.
        terms["total"] = total.item()
        return Losses(total, terms)


def config_from_dict(d: dict) -> HandDiffuseConfig:
    """The inverse of ``dataclasses.asdict`` for a saved configuration."""
    d = dict(d)
    d["interaction"] = InteractionLossConfig(**d.get("interaction", {}))
    d["diffusion"] = DiffusionConfig(**d.get("diffusion", {}))
    return HandDiffuseConfig(**d)
