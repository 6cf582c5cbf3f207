"""Generator speed on this machine: one 200-frame two-hand sample at DDIM-50, and training steps.

    .venv/bin/python -m bench.generator [--size cpu] [--frames 200] [--ddim-steps 50] [--batch-size 16]

Prints, per denoiser size (the CLI's ``--size``; the target is for "cpu")::

    generation sample_seconds=<s> frames=200 ddim_steps=50 train_steps_per_s=<r> size=<size> batch=16 ...

``sample_seconds``: the best of 3 timed samples (after one untimed) of one two-hand motion:
SHDe's DDIM on both hands + IHDe's Interacting Hands DDIM + decoding (the complete model, local
rep). ``train_steps_per_s``: IHDe training steps (the heavier phase: reconstruction, contact and
shape losses) on ``--batch-size`` windows of ``--frames`` frames, from random motion features.
Weights are random: the cost does not depend on them. Target: sample_seconds < 1 at DDIM-50 on CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from generation.model import PRESETS, HandDiffuse
from generation.representation import HAND_DIM
from generation.sample import sample


def _timed_sample(model: HandDiffuse, frames: int, steps: int) -> float:
    sample(model, 1, frames, steps=steps, seed=0)  # warm-up
    best = float("inf")
    for seed in range(3):
        t0 = time.perf_counter()
        sample(model, 1, frames, steps=steps, seed=seed)
        best = min(best, time.perf_counter() - t0)
    return best


def _train_rate(model: HandDiffuse, frames: int, batch: int, seconds: float = 10.0) -> float:
    """IHDe steps per second on random (but valid) local-rep motion."""
    from generation.model import Encoded

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, frames, model.rep.dim, generator=g) * 0.1
    x[..., 0::HAND_DIM] += 1  # near-identity root rotations
    hands = torch.randn(batch, 2, frames, HAND_DIM, generator=g) * 0.1
    motion = model.rep.decode(x)
    enc = Encoded(x=x, hands=hands, joints=motion.joints, frame=None)
    model.ihde.train()
    opt = torch.optim.AdamW(model.ihde.parameters(), lr=1e-4)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or steps < 3:
        t = torch.randint(model.schedule.steps, (batch,), generator=g)
        losses = model.ihde_losses(enc, t, torch.randn(x.shape, generator=g),
                                   torch.randn(batch, frames, 2 * HAND_DIM, generator=g))
        opt.zero_grad()
        losses.total.backward()
        opt.step()
        steps += 1
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", nargs="+", default=["cpu", "paper"], choices=["tiny", "cpu", "paper"])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--ddim-steps", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--train-seconds", type=float, default=10.0)
    a = ap.parse_args()
    torch.manual_seed(0)
    for size in a.size:
        model = HandDiffuse(dataclasses.replace(PRESETS["handdiffuse"], size=size, window=a.frames)).eval()
        params = sum(p.numel() for p in model.parameters()) / 1e6
        sample_s = _timed_sample(model, a.frames, a.ddim_steps)
        rate = _train_rate(model, a.frames, a.batch_size, a.train_seconds)
        print(f"generation sample_seconds={sample_s:.3f} frames={a.frames} ddim_steps={a.ddim_steps} "
              f"train_steps_per_s={rate:.2f} size={size} batch={a.batch_size} params_M={params:.1f} "
              f"threads={torch.get_num_threads()} target_sample_seconds=1.0", flush=True)


if __name__ == "__main__":
    main()
