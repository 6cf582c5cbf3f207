"""Gaussian diffusion over motion features: the cosine noise schedule, noising, and DDIM sampling.

Symbols (the HandDiffuse paper follows DDPM / DDIM; the network predicts x_0):

    T                 diffusion steps (1000)
    alpha_bar_t       cumulative signal share at step t: q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
    x_t               the noised motion at step t = 0 ... T - 1 (t = 0: the least noise)
    x0_hat            the network's estimate of x_0 from (x_t, t, condition)

Cosine schedule (improved DDPM): alpha_bar(t) = f(t) / f(0), f(t) = cos^2(((t + 1) / T + s) / (1 + s) pi / 2),
s = 0.008, with the per-step beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} clipped at 0.999.

DDIM (``ddim_sample``), over a sub-sequence tau_1 > ... > tau_S of the T steps, from
x_{tau_1} ~ N(0, I); at each step, with t = tau_i and t' = tau_{i+1} (alpha_bar_{t'} = 1 after
the last step):

    1. x0_hat = denoiser(x_t, t)
    2. (controls) replace the known entries of x0_hat (in-painting: key frames, trajectories)
    3. eps_hat = (x_t - sqrt(alpha_bar_t) x0_hat) / sqrt(1 - alpha_bar_t)
    4. sigma_t = eta sqrt((1 - alpha_bar_t') / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_t')
    5. x_t' = sqrt(alpha_bar_t') x0_hat + sqrt(1 - alpha_bar_t' - sigma_t^2) eps_hat + sigma_t z

eta = 0 is deterministic DDIM; eta = 1 is DDPM-like ancestral sampling. The loop is written
out in ``ddim_sample`` (one function), which the generator's samplers call with their
denoisers and controls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t (B, ...), t (B,)) -> x0_hat (B, ...)
ControlFn = Callable[[torch.Tensor, int], torch.Tensor]  # (x0_hat, t) -> x0_hat with the known parts put in


@dataclass
class DiffusionConfig:
    """The noise schedule."""

    steps: int = 1000
    """T, diffusion steps of training."""
    cosine_s: float = 0.008
    """Offset s of the cosine schedule (keeps beta_0 from being tiny)."""
    max_beta: float = 0.999
    """Clip of the per-step beta_t (the last steps of the cosine schedule)."""


class CosineSchedule:
    """alpha_bar_t of the cosine schedule, t = 0 ... T - 1, as a (T,) float64 tensor."""

    def __init__(self, cfg: DiffusionConfig | None = None):
        self.cfg = cfg = cfg or DiffusionConfig()
        if cfg.steps < 2:
            raise ValueError(f"the schedule needs at least 2 steps, got {cfg.steps}")
        T, s = cfg.steps, cfg.cosine_s

        def f(u: torch.Tensor) -> torch.Tensor:  # u in [0, 1]
            return torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2

        u = torch.arange(T + 1, dtype=torch.float64) / T
        ratio = f(u[1:]) / f(u[:-1])  # alpha_t = 1 - beta_t before the clip
        betas = (1 - ratio).clamp(max=cfg.max_beta)  # (T,)
        self.betas = betas
        self.alpha_bar = torch.cumprod(1 - betas, dim=0)  # (T,)

    @property
    def steps(self) -> int:
        return self.cfg.steps

    def _at(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """alpha_bar at steps t (B,), shaped to broadcast over ``like`` (B, ...)."""
        a = self.alpha_bar.to(like.device)[t.long()].to(like.dtype)
        return a.reshape(a.shape + (1,) * (like.dim() - 1))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """x_t ~ q(x_t | x_0) for each batch element's step t (B,)."""
        noise = torch.randn_like(x0) if noise is None else noise
        a = self._at(t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def timesteps(self, n: int) -> list[int]:
        """DDIM's sub-sequence tau of ``n`` steps, from T - 1 down to 0, evenly spaced."""
        if not 1 <= n <= self.steps:
            raise ValueError(f"DDIM steps must be in 1 ... {self.steps}, got {n}")
        return sorted({int(round(x)) for x in torch.linspace(0, self.steps - 1, n).tolist()}, reverse=True)


def ddim_sample(denoiser: Denoiser, schedule: CosineSchedule, shape: tuple[int, ...], steps: int = 50,
                eta: float = 0.0, control: ControlFn | None = None, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu", x_T: torch.Tensor | None = None) -> torch.Tensor:
    """Sample x_0 of ``shape`` (B, ...) with ``steps`` DDIM steps (module docstring, steps 1-5)."""
    x = torch.randn(shape, generator=generator, device=device) if x_T is None else x_T.to(device)
    taus = schedule.timesteps(steps)
    alpha_bar = schedule.alpha_bar.to(device)
    for i, t in enumerate(taus):
        a_t = alpha_bar[t].float()
        a_next = alpha_bar[taus[i + 1]].float() if i + 1 < len(taus) else torch.ones((), device=device)
        # 1.
        with torch.no_grad():
            x0_hat = denoiser(x, torch.full((shape[0],), t, device=device, dtype=torch.long))
        # 2.
        if control is not None:
            x0_hat = control(x0_hat, t)
        # 3.
        eps_hat = (x - a_t.sqrt() * x0_hat) / (1 - a_t).sqrt()
        # 4.
        sigma = eta * ((1 - a_next) / (1 - a_t)).sqrt() * (1 - a_t / a_next).clamp(min=0).sqrt()
        # 5.
        noise = torch.randn(shape, generator=generator, device=device) if eta > 0 else torch.zeros_like(x)
        x = a_next.sqrt() * x0_hat + (1 - a_next - sigma ** 2).clamp(min=0).sqrt() * eps_hat + sigma * noise
    return x


def inpaint(known: torch.Tensor, mask: torch.Tensor) -> ControlFn:
    """A control that puts ``known`` (B, ...) into x0_hat where ``mask`` (broadcastable, bool) is set:
    key frames, or given trajectory features, reproduced exactly by the final sample."""
    def control(x0_hat: torch.Tensor, t: int) -> torch.Tensor:
        return torch.where(mask, known.to(x0_hat.dtype), x0_hat)

    return control
