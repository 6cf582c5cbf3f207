import numpy as np
import pytest
import torch

from hand_model.model import HandModel
from generation.losses import (InteractionLossConfig, bone_lengths, contact_points, interaction_loss, potential,
                               shape_loss)


@pytest.fixture(scope="module")
def hands():
    """(1, 4, 42, 3): the hand model's left hand, and as the right hand the same skeleton 3, 2, 1 and
    30 cm above it (so the shortest joint distance is exactly that)."""
    model = HandModel()
    pose = torch.as_tensor(model.sample_poses(1, np.random.default_rng(0)), dtype=torch.float32)
    with torch.no_grad():
        left = model(torch.zeros(1, 2, 3), pose, None, torch.zeros(1, 2, 3)).joints[0, 0]  # (21, 3)
    gaps = torch.tensor([0.03, 0.02, 0.01, 0.30])
    right = left + gaps[:, None, None] * torch.tensor([0.0, 0.0, 1.0])  # (4, 21, 3)
    return torch.cat([left.expand(4, 21, 3), right], dim=1)[None]


def test_points_and_potential(hands):
    p = contact_points(hands)
    assert p.shape == (1, 4, 2, 25, 3)
    assert torch.allclose(p[..., 0, 24, :], hands[..., [0, 5, 17], :].mean(-2))  # the palm centre
    cfg = InteractionLossConfig(stiffness=2.0, reach=0.05)
    P, v = potential(hands, cfg)
    d = (p[..., 0, :, None, :] - p[..., 1, None, :, :]).norm(dim=-1)
    assert torch.allclose(P, torch.relu(0.05 - d) ** 2)  # 1/2 K with K = 2
    assert torch.allclose(v.norm(dim=-1), torch.ones_like(d), atol=1e-5)
    assert P[0, 3].max() == 0 and P[0, 2].sum() > P[0, 1].sum() > P[0, 0].sum() > 0  # closer: more


def test_interaction_loss(hands):
    assert interaction_loss(hands, hands) == 0
    closer = hands[:, [2]]
    farther = hands[:, [0]]
    loss = interaction_loss(closer, farther)
    assert loss > 0
    cfg = InteractionLossConfig(direction_weight=0.0)
    assert interaction_loss(closer, farther, cfg) < loss  # directions differ a little: weight > 1
    # the right hand passed through to below the left (1 cm under instead of 2 cm above): the
    # corresponding points' directions flip (weight 2 there), so the loss grows with the weight
    below = hands[:, [1]].clone()
    below[..., 21:, 2] -= 0.03
    _, v_above = potential(hands[:, [1]], InteractionLossConfig())
    _, v_below = potential(below, InteractionLossConfig())
    i = torch.arange(21)
    assert torch.allclose((v_above[..., i, i, :] * v_below[..., i, i, :]).sum(-1), -torch.ones(21), atol=1e-5)
    assert interaction_loss(below, hands[:, [1]]) > 1.05 * interaction_loss(below, hands[:, [1]], cfg)
    mask = torch.tensor([[True, False, False, False]])
    assert interaction_loss(hands, hands.flip(1), mask=mask) == interaction_loss(hands[:, :1], hands.flip(1)[:, :1])
    pred = hands[:, [1]].clone().requires_grad_(True)
    interaction_loss(pred, hands[:, [0]]).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_shape_loss(hands):
    assert bone_lengths(hands).shape == (1, 4, 2, 20)
    assert shape_loss(hands, hands) < 1e-6  # the right hand is the left one's skeleton: same bones
    longer = hands.clone()
    longer[..., 21:, :] = hands[..., 21:21 + 1, :] + 1.1 * (hands[..., 21:, :] - hands[..., 21:22, :])
    expect = 0.1 * bone_lengths(hands)[..., 1, :].mean()
    # left vs right: 0.1 of a bone; right vs truth: 0.1 of a bone over half of the (hand, bone) pairs
    assert abs(shape_loss(longer, hands) - 1.5 * expect) < 1e-5
