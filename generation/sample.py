"""Sampling two-hand motion: SHDe's DDIM for both hands, then the Interacting Hands DDIM of IHDe.

    1. h ~ DDIM(SHDe) of shape (2n, T, 187)        both hands of n samples (right ones mirrored),
                                                    under the control's SHDe part
    2. c = [h_L; h_R] per frame                     (n, T, 374): IHDe's condition, fixed from here
    3. z ~ DDIM(IHDe(., t | c)) of shape (n, T, D)  each IHDe step predicts the whole interaction
                                                    x0_hat, the control acts on it, and DDIM
                                                    re-noises it to the next (lower) step t - 1
                                                    ("Interacting Hands DDIM")
    4. motion = decode(denormalise(z)), in the control's world frame (else the sequence frame)

Without SHDe (the ablation, the MDM-style baseline) steps 1-2 are skipped. Both loops are
``generation.diffusion.ddim_sample``; with ``eta = 0`` a seed fixes the sample.
"""

from __future__ import annotations

import torch

from generation.controls import Control
from generation.diffusion import ddim_sample
from generation.model import HandDiffuse
from generation.representation import HAND_DIM, DecodedMotion


@torch.inference_mode()
def sample(model: HandDiffuse, n: int, frames: int | None = None, steps: int = 50, eta: float = 0.0,
           seed: int = 0, control: Control | None = None) -> DecodedMotion:
    """``n`` motions of ``frames`` frames (default: the model's window); no autograd (the controls
    replace and project, they need no gradient), so the returned tensors are inference tensors."""
    model.eval()
    device = next(model.parameters()).device
    T = frames or model.cfg.window
    if n < 1:
        raise ValueError(f"need at least one sample, got {n}")
    control = control or Control()
    g = torch.Generator(device=device).manual_seed(seed)
    cond = None
    if model.shde is not None:
        # 1.
        shde = model.shde
        h = ddim_sample(lambda x, t: shde(x, t), model.schedule, (2 * n, T, HAND_DIM), steps, eta,
                        control=control.shde, generator=g, device=device)
        # 2.
        cond = model.condition(h.reshape(n, 2, T, HAND_DIM))  # (n, T, 374)
    # 3.
    ihde = model.ihde
    z = ddim_sample(lambda x, t: ihde(x, t, frame_condition=cond), model.schedule, (n, T, model.rep.dim), steps,
                    eta, control=control.ihde, generator=g, device=device)
    # 4.
    return model.rep.decode(model.stats.denormalize(z), control.frame)
