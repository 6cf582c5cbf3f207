import math

import pytest
import torch

from generation.diffusion import CosineSchedule, DiffusionConfig, ddim_sample, inpaint


@pytest.fixture(scope="module")
def schedule():
    return CosineSchedule()


def test_cosine_schedule(schedule):
    a = schedule.alpha_bar
    assert a.shape == (1000,) and (a[1:] < a[:-1]).all()
    assert 0.999 < a[0] < 1 and a[-1] < 1e-4
    assert (schedule.betas <= 0.999).all() and (schedule.betas > 0).all()
    # the closed form before the clip: alpha_bar(t) = f(t + 1) / f(0)
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert abs(float(a[499]) - f(500 / 1000) / f(0)) < 1e-9
    assert schedule.timesteps(4) == [999, 666, 333, 0]
    with pytest.raises(ValueError):
        CosineSchedule(DiffusionConfig(steps=1))


def test_q_sample_moments(schedule):
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000, 1), 2.0)
    t = torch.full((len(x0),), 300)
    xt = schedule.q_sample(x0, t, torch.randn(x0.shape, generator=g))
    a = float(schedule.alpha_bar[300])
    assert abs(xt.mean().item() - math.sqrt(a) * 2.0) < 0.01
    assert abs(xt.std().item() - math.sqrt(1 - a)) < 0.01


def test_ddim_with_the_true_x0_returns_it(schedule):
    x0 = torch.randn(3, 20, 7, generator=torch.Generator().manual_seed(1))
    out = ddim_sample(lambda x, t: x0, schedule, x0.shape, steps=10, eta=0.5,
                      generator=torch.Generator().manual_seed(2))
    assert torch.allclose(out, x0, atol=1e-6)


def test_ddim_samples_the_data_distribution(schedule):
    """With the exact posterior mean of Gaussian data N(mu, s^2) as the denoiser, DDIM (eta 0,
    deterministic, 100 of the 1000 steps) and ancestral sampling (eta 1, every step: with the
    posterior mean for x_0, large strides shrink the variance) both draw from N(mu, s^2)."""
    mu, s = 1.5, 0.3
    ab = schedule.alpha_bar.float()

    def denoiser(x, t):
        a = ab[t].reshape(-1, 1)
        return mu + a.sqrt() * s ** 2 / (a * s ** 2 + 1 - a) * (x - a.sqrt() * mu)

    for eta, steps in ((0.0, 100), (1.0, 1000)):
        out = ddim_sample(denoiser, schedule, (20_000, 1), steps=steps, eta=eta,
                          generator=torch.Generator().manual_seed(3))
        assert abs(out.mean().item() - mu) < 0.02 and abs(out.std().item() / s - 1) < 0.05, (eta, out.std())
    a = ddim_sample(denoiser, schedule, (4, 1), steps=20, generator=torch.Generator().manual_seed(4))
    b = ddim_sample(denoiser, schedule, (4, 1), steps=20, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)


def test_inpainting_reproduces_the_given_frames(schedule):
    shape = (2, 30, 5)
    known = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    mask = torch.zeros(1, 30, 1, dtype=torch.bool)
    mask[:, :5] = mask[:, -5:] = True  # first and last 5 frames given
    out = ddim_sample(lambda x, t: torch.zeros_like(x), schedule, shape, steps=8, eta=1.0,
                      control=inpaint(known, mask), generator=torch.Generator().manual_seed(6))
    assert torch.equal(out[:, :5], known[:, :5]) and torch.equal(out[:, -5:], known[:, -5:])
    assert torch.equal(out[:, 5:-5], torch.zeros_like(out[:, 5:-5]))
