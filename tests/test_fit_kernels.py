"""The fit's compiled CPU paths (fitting/fit_kernels.py) against their torch statements in fitting/fit.py
and hand_model/joints_layer.py: values and gradients on seeded poses, the LM's result."""

import numpy as np
import pytest
import torch

from data_schemas.landmarks import DEFINITIONS_DIR, read_landmarks
from fitting import fit_kernels
from fitting.fit import FitOptions, TorchRig, _penetration_torch, _PoseLM, penetration_penalty
from hand_model.joints_layer import JointsLayer
from hand_model.model import HandModel


@pytest.fixture(scope="module")
def model():
    return HandModel()


def _pose(B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    go = (torch.randn(B, 2, 3, generator=g, dtype=torch.float64) * 0.8).requires_grad_(True)
    hp = (torch.randn(B, 2, 45, generator=g, dtype=torch.float64) * 0.4).requires_grad_(True)
    tr = (torch.randn(B, 2, 3, generator=g, dtype=torch.float64) * 0.1).requires_grad_(True)
    betas = torch.randn(2, 10, generator=g, dtype=torch.float64) * 0.5
    return go, hp, tr, betas


def _grads(out, weights, params):
    return torch.autograd.grad(sum((o * w).sum() for o, w in zip(out, weights)), params)


@pytest.mark.parametrize("definition", [None, "mediapipe"])
def test_points_and_exact_gradient_equal_the_layer(model, definition):
    landmarks = read_landmarks(DEFINITIONS_DIR / f"{definition}.h5") if definition else None
    layer = JointsLayer(model, surface_points=50, landmarks=landmarks).double()
    go, hp, tr, betas = _pose()
    cases = [(layer.landmarks(go, hp, betas, tr),), (layer(go, hp, betas, tr),), layer.surface(go, hp, betas, tr)]
    compiled = [(fit_kernels.points(fit_kernels.PointModel.of(layer, betas), go, hp, tr),),
                (fit_kernels.points(fit_kernels.PointModel.of(layer, betas, "joints"), go, hp, tr),),
                fit_kernels.surface(fit_kernels.PointModel.of(layer, betas, "surface"), go, hp, tr)]
    for ref, got in zip(cases, compiled):
        for a, b in zip(ref, got):
            assert torch.allclose(a, b, atol=1e-12)
        weights = [torch.randn_like(a) for a in ref]
        for a, b in zip(_grads(ref, weights, (go, hp, tr)), _grads(got, weights, (go, hp, tr))):
            assert torch.allclose(a, b, atol=1e-10), (a - b).abs().max()


def test_reprojection_equals_the_torch_term():
    from capture.studio.rig import DEMO, make_rig

    rig, _ = make_rig(DEMO, 0)
    trig = TorchRig.of(rig, torch.device("cpu"))
    trig.dist[:] = torch.tensor([0.05, -0.02, 0.001, -0.002, 0.01])  # every lens term at work
    g = torch.Generator().manual_seed(1)
    B, C = 3, len(rig)
    J = (torch.randn(B, 2, 21, 3, generator=g) * 0.05).requires_grad_(True)
    x2d = trig.project(J).detach() + torch.randn(C, B, 2, 21, 2, generator=g) * 30
    c2d = (torch.rand(C, B, 2, 21, generator=g) > 0.2).float()
    s2d = (0.01 * trig.height).reshape(-1, 1, 1, 1)
    idx = torch.tensor([0, 2])
    for frames in (None, idx):
        Js = J if frames is None else J[frames]
        xs, cs = (x2d, c2d) if frames is None else (x2d[:, frames], c2d[:, frames])
        r = ((trig.project(Js) - xs) ** 2).sum(-1) / s2d ** 2
        ref = (cs * r / (1 + r)).sum()
        got = fit_kernels.Reprojection(trig, x2d, c2d, s2d)(J if frames is None else J[frames], frames)
        assert torch.isclose(ref, got, rtol=1e-5)
        a, b = torch.autograd.grad(ref, J)[0], torch.autograd.grad(got, J)[0]
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-3 * a.abs().max().item())


def test_penetration_equals_the_torch_term():
    g = torch.Generator().manual_seed(2)
    p = (torch.randn(4, 2, 100, 3, generator=g, dtype=torch.float64) * 0.02).requires_grad_(True)
    n = torch.nn.functional.normalize(torch.randn(4, 2, 100, 3, generator=g, dtype=torch.float64), dim=-1)
    n.requires_grad_(True)
    ref = _penetration_torch(p, n, 0.01, 0.001, per_frame=True)
    got = penetration_penalty(p, n, allowance=0.001, per_frame=True)
    assert ref.sum() > 0 and torch.allclose(ref, got, atol=1e-15)
    w = torch.rand(4, generator=g, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad((ref * w).sum(), (p, n)), torch.autograd.grad((got * w).sum(), (p, n))):
        assert torch.allclose(a, b, atol=1e-14)


@pytest.mark.parametrize("definition", [None, "mediapipe"])
def test_compiled_lm_reaches_the_torch_lm(model, definition):
    """The same problems from the same start: the compiled LM (float64) ends where the torch LM does."""
    landmarks = read_landmarks(DEFINITIONS_DIR / f"{definition}.h5") if definition else None
    layer = JointsLayer(model, landmarks=landmarks)
    rng = np.random.default_rng(3)
    B = 6
    pose = torch.as_tensor(model.sample_poses(B, rng), dtype=torch.float32)  # (B, 2, 45)
    orient = torch.as_tensor(rng.normal(0, 0.5, (B, 2, 3)), dtype=torch.float32)
    transl = torch.as_tensor(rng.normal(0, 0.05, (B, 2, 3)), dtype=torch.float32)
    betas = torch.zeros(2, 10)
    with torch.no_grad():
        X = layer.landmarks(orient, pose, betas, transl) + torch.randn(B, 2, 21, 3) * 0.002
    v = torch.ones(B, 2, 21)
    v[0, 1, 3:7] = 0  # a few joints not triangulated
    opts = FitOptions()
    start = torch.cat([orient + 0.1, pose * 0.5, transl + 0.01], dim=2)
    sel, moving = torch.arange(B), torch.ones(B, 2, dtype=torch.bool)
    moving[2, 0] = False
    lm = _PoseLM(model, layer, betas, X, v, opts)
    ref_theta, ref_cost = lm.solve(start.clone(), sel, moving)
    limits = (lm.L.numpy(), lm.lo.numpy(), lm.hi.numpy(), lm.w_lim)
    theta, cost = fit_kernels.pose_lm(fit_kernels.PointModel.of(layer, betas), start.numpy(), X.numpy(),
                                      lm.wm[..., 0].numpy(), moving.numpy(), limits, opts.lm_iterations,
                                      opts.lm_tolerance)
    assert np.allclose(theta[2, 0], start[2, 0].numpy())  # not moving: left as it was
    assert np.allclose(cost[2, 0], ref_cost[2, 0].item(), rtol=1e-4)
    # both end near the noise floor (2 mm noise / 5 mm sigma over 63 coordinates: ~10), the compiled no worse
    assert (cost[moving.numpy()] <= ref_cost[moving].numpy() * 1.05 + 0.5).all()
    with torch.no_grad():
        got = layer.landmarks(*(torch.as_tensor(theta, dtype=torch.float32)[..., s] for s in
                                (slice(0, 3), slice(3, 48))), betas, torch.as_tensor(theta[..., 48:], dtype=torch.float32))
        ref = layer.landmarks(ref_theta[..., :3], ref_theta[..., 3:48], betas, ref_theta[..., 48:])
    assert (got - ref)[moving].norm(dim=-1).max() < 2e-3
