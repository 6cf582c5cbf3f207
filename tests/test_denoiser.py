import pytest
import torch

from generation.denoiser import DenoiserConfig, MotionDenoiser
from generation.diffusion import CosineSchedule

SMALL = DenoiserConfig(layers=2, heads=2, feedforward=64, width=32, dropout=0.0, max_frames=64)


def test_shapes_and_paper_sizes():
    net = MotionDenoiser(12, cfg=SMALL)
    out = net(torch.randn(3, 20, 12), torch.tensor([0, 500, 999]))
    assert out.shape == (3, 20, 12)
    cond = MotionDenoiser(12, condition_features=7, cfg=SMALL)
    assert cond(torch.randn(2, 20, 12), torch.tensor([1, 2]), torch.randn(2, 20, 7)).shape == (2, 20, 12)
    with pytest.raises(ValueError, match="condition tokens"):
        cond(torch.randn(2, 20, 12), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="at most 64"):
        net(torch.randn(1, 65, 12), torch.tensor([0]))
    paper = MotionDenoiser(12)
    assert len(paper.encoder.layers) == 8 and paper.encoder.layers[0].self_attn.num_heads == 4
    assert paper.encoder.layers[0].linear1.out_features == 1024


def test_the_step_and_the_condition_change_the_output():
    torch.manual_seed(0)
    net = MotionDenoiser(6, condition_features=3, cfg=SMALL).eval()
    x, c = torch.randn(1, 10, 6), torch.randn(1, 10, 3)
    a = net(x, torch.tensor([10]), c)
    assert not torch.allclose(a, net(x, torch.tensor([900]), c))
    assert not torch.allclose(a, net(x, torch.tensor([10]), c + 1))


def test_learns_to_denoise_a_fixed_motion():
    """x0 prediction on one smooth motion: the loss falls by an order of magnitude in a few hundred steps."""
    torch.manual_seed(1)
    schedule = CosineSchedule()
    x0 = torch.sin(torch.linspace(0, 6, 16))[None, :, None] * torch.linspace(0.5, 1.5, 4)  # (1, 16, 4)
    net = MotionDenoiser(4, cfg=SMALL)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(300):
        t = torch.randint(0, 1000, (32,))
        xt = schedule.q_sample(x0.expand(32, -1, -1), t)
        loss = ((net(xt, t) - x0) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.1 * first, (first, last)
