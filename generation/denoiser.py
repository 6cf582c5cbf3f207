"""The denoising network of both HandDiffuse denoisers (SHDe, IHDe): an encoder-only transformer.

Input: the noised motion x_t (B, T, D) of a representation (``generation.representation``),
the diffusion step t (B,), an optional per-frame condition f (B, T, C_f) concatenated to x_t
frame by frame (IHDe: the two generated single-hand motions, 2 x 187 features), and optional
condition tokens c (B, K, C) (a condition that is not per frame). Output: x0_hat (B, T, D), the
network's estimate of the clean motion (the paper's denoisers predict x_0, as MDM does).

    1. h_frames = W_in [x_t; f] + P      P: sinusoidal positions of the T frames       (B, T, d)
    2. h_step   = MLP(sinusoid(t))        one token for the step                        (B, 1, d)
    3. h_cond   = W_c c + P_c             one token per condition, own positions        (B, K, d)
    4. h        = Encoder([h_step; h_cond; h_frames])   L layers, H heads, feed-forward F (B, 1+K+T, d)
    5. x0_hat   = W_out h[:, 1 + K:]                                                    (B, T, D)

Paper sizes (``DenoiserConfig`` defaults): L = 8 layers, H = 4 heads, F = 1024; the model width
d (512) and dropout (0.1) are not given there and are config fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn


@dataclass
class DenoiserConfig:
    """Transformer sizes."""

    layers: int = 8
    """Encoder layers (paper: 8)."""
    heads: int = 4
    """Attention heads (paper: 4)."""
    feedforward: int = 1024
    """Feed-forward width (paper: 1024)."""
    width: int = 512
    """Model width d."""
    dropout: float = 0.1
    """Dropout in the encoder layers."""
    max_frames: int = 1024
    """Longest motion (frames) the positional table covers."""


SIZES = {
    "paper": DenoiserConfig(),
    # The paper's heads and feed-forward with half the layers and a quarter of the width: one
    # 200-frame two-hand sample (SHDe on both hands + IHDe) at DDIM-50 in < 1 s on 2 CPU cores.
    "cpu": DenoiserConfig(layers=4, width=128),
    # For tests and the demo's minutes-long training.
    "tiny": DenoiserConfig(layers=2, heads=4, feedforward=128, width=64, dropout=0.0),
}
"""Named denoiser sizes (``HandDiffuseConfig.size``)."""
Size = Literal[tuple(SIZES)]  # type: ignore[valid-type]  # their names, for configs and the CLI


def sinusoid(positions: torch.Tensor, width: int) -> torch.Tensor:
    """(...,) positions -> (..., width) sin/cos features at geometric frequencies (1 ... 1/10000)."""
    half = width // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=positions.device) / half)
    angle = positions.float()[..., None] * freq  # (..., half)
    return torch.cat([angle.sin(), angle.cos()], dim=-1)


class MotionDenoiser(nn.Module):
    """x0_hat = MotionDenoiser(features, condition_features, cfg)(x_t, t, c) (module docstring)."""

    def __init__(self, features: int, condition_features: int = 0, cfg: DenoiserConfig | None = None,
                 frame_condition_features: int = 0):
        super().__init__()
        self.cfg = cfg = cfg or DenoiserConfig()
        if cfg.width % 2 or cfg.width % cfg.heads:
            raise ValueError(f"width {cfg.width} must be even and divisible by heads {cfg.heads}")
        self.features, self.condition_features = features, condition_features
        self.frame_condition_features = frame_condition_features
        d = cfg.width
        self.w_in = nn.Linear(features + frame_condition_features, d)
        self.step_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.w_cond = nn.Linear(condition_features, d) if condition_features else None
        layer = nn.TransformerEncoderLayer(d, cfg.heads, cfg.feedforward, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.w_out = nn.Linear(d, features)
        self.register_buffer("positions", sinusoid(torch.arange(cfg.max_frames), d), persistent=False)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor | None = None,
                frame_condition: torch.Tensor | None = None) -> torch.Tensor:
        B, T, _ = x_t.shape
        if T > self.cfg.max_frames:
            raise ValueError(f"{T} frames: the denoiser covers at most {self.cfg.max_frames} (max_frames)")
        # 1.
        if self.frame_condition_features:
            if frame_condition is None:
                raise ValueError("this denoiser takes a per-frame condition (frame_condition_features > 0)")
            x_t = torch.cat([x_t, frame_condition.to(x_t.dtype)], dim=-1)  # (B, T, D + C_f)
        h = self.w_in(x_t) + self.positions[:T]  # (B, T, d)
        # 2.
        tokens = [self.step_mlp(sinusoid(t, self.cfg.width))[:, None]]  # (B, 1, d)
        # 3.
        if self.w_cond is not None:
            if condition is None:
                raise ValueError("this denoiser takes condition tokens (condition_features > 0)")
            K = condition.shape[1]
            tokens.append(self.w_cond(condition) + self.positions[:K])  # (B, K, d)
        n_prefix = sum(x.shape[1] for x in tokens)
        # 4.
        h = self.encoder(torch.cat(tokens + [h], dim=1))  # (B, n_prefix + T, d)
        # 5.
        return self.w_out(self.norm(h[:, n_prefix:]))  # (B, T, D)
