"""GLASS Global Anomaly Synthesis (Eq. 1-2, Alg. 1) on a 2-D toy problem."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adlib.synthesis.gas import (
    MANIFOLD_RADII,
    gas,
    gas_loss,
    gaussian_noise,
    gradient_ascent_step,
    hypersphere_center,
    hypersphere_radius,
    truncated_projection_hypersphere,
    truncated_projection_manifold,
    zero_distance_guard,
)

A, B = 4.0, 1.0  # toy discriminator: P(anomalous | x) = sigmoid(A * (||x|| - B)); normal region near 0


def scorer(x):
    return torch.sigmoid(A * (x.norm(dim=-1) - B))


def logit_scorer(x):
    return A * (x.norm(dim=-1) - B)


def _points(n=64, lo=1.5, hi=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    ang = torch.rand(n, generator=g, dtype=torch.float64) * 2 * np.pi
    rad = lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)
    return torch.stack([rad * torch.cos(ang), rad * torch.sin(ang)], dim=1)


def test_manifold_radii_presets():
    assert MANIFOLD_RADII == {"paper": (1, 2), "released": (0.5, 1.0)}


def test_gradient_ascent_raises_loss_and_moves_toward_normal_region():
    x = _points()
    before = F.binary_cross_entropy(scorer(x), torch.ones(len(x), dtype=x.dtype))
    y = gradient_ascent_step(x, scorer, eta=0.01)
    after = F.binary_cross_entropy(scorer(y), torch.ones(len(y), dtype=y.dtype))
    assert after > before
    # toward the normal region (origin): every outside point gets closer to it
    assert torch.all(y.norm(dim=1) < x.norm(dim=1))
    # in fact radially: the toy's gradient is along -x
    cos = F.cosine_similarity(y - x, -x, dim=1)
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-9)


def test_gradient_step_length_is_eta_per_vector():
    x = _points(n=32) * torch.linspace(0.5, 2.0, 32, dtype=torch.float64)[:, None]
    for eta in (0.001, 0.05):
        y = gradient_ascent_step(x, scorer, eta=eta, eps=0.0)
        assert torch.allclose((y - x).norm(dim=1), torch.full((32,), eta, dtype=x.dtype), rtol=1e-12, atol=0)
        # released eps = 1e-10 shortens the step by the relative factor eps / ||grad||: invisible where
        # the discriminator is not saturated ...
        y_rel = gradient_ascent_step(x, scorer, eta=eta)
        ok = x.norm(dim=1) < 2.5
        assert ok.sum() > 10
        assert torch.allclose((y_rel - x).norm(dim=1)[ok], torch.full((int(ok.sum()),), eta, dtype=x.dtype), rtol=1e-5)
    # ... but a saturated point (P(anomalous) ~ 1 - 1e-13, gradient ~ 1e-12) barely moves under the released guard
    far = torch.tensor([[8.5, 0.0]], dtype=torch.float64)
    assert (gradient_ascent_step(far, scorer, eps=0.0) - far).norm() == pytest.approx(0.001, rel=1e-9)
    assert (gradient_ascent_step(far, scorer) - far).norm() < 0.0005


def test_logits_option_matches_probabilities():
    x = _points(n=16)
    y_p = gradient_ascent_step(x, scorer, eta=0.01, eps=0.0)
    y_l = gradient_ascent_step(x, logit_scorer, eta=0.01, eps=0.0, scorer_output="logits")
    assert torch.allclose(y_p, y_l, atol=1e-9)
    with pytest.raises(ValueError, match="scorer_output"):
        gradient_ascent_step(x, scorer, scorer_output="prob")


def test_zero_gradient_does_not_move_and_no_param_grads():
    lin = torch.nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.zero_()
    x = _points(n=4).float()
    y = gradient_ascent_step(x, lambda f: torch.sigmoid(lin(f)), eta=0.1)
    assert torch.equal(x, y)
    assert lin.weight.grad is None


def test_manifold_projection_interval_and_inside_unchanged():
    g = torch.Generator().manual_seed(1)
    normal = torch.randn(200, 8, generator=g, dtype=torch.float64)
    scale = torch.logspace(-3, 1, 200, dtype=torch.float64)[:, None]
    off = torch.randn(200, 8, generator=g, dtype=torch.float64)
    x = normal + off / off.norm(dim=1, keepdim=True) * scale
    for name, (r1, r2) in MANIFOLD_RADII.items():
        v = truncated_projection_manifold(x, normal, radii=name)
        d = (v - normal).norm(dim=1)
        assert torch.all(d >= r1 - 1e-5) and torch.all(d <= r2 + 1e-5)
        inside = ((x - normal).norm(dim=1) >= r1) & ((x - normal).norm(dim=1) <= r2)
        assert inside.sum() > 10
        assert torch.allclose(v[inside], x[inside], atol=1e-9)
        # direction kept
        cos = F.cosine_similarity(v - normal, x - normal, dim=1)
        assert torch.allclose(cos, torch.ones_like(cos))
    # default preset is the released one; explicit r1/r2 override
    default = truncated_projection_manifold(x, normal)
    assert torch.equal(default, truncated_projection_manifold(x, normal, radii="released"))
    d = (truncated_projection_manifold(x, normal, 3.0, 4.0) - normal).norm(dim=1)
    assert torch.all(d >= 3 - 1e-5) and torch.all(d <= 4 + 1e-5)


def test_zero_offset_guard():
    normal = torch.zeros(3, 4)
    v = truncated_projection_manifold(normal.clone(), normal, radii="paper")
    assert torch.allclose(v.norm(dim=1), torch.ones(3))
    assert torch.allclose(v, torch.full((3, 4), 0.5))  # (1,...,1)/sqrt(C) without a generator
    g = torch.Generator().manual_seed(0)
    d = zero_distance_guard(torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]), generator=g)
    assert torch.isclose(d[0].norm(), torch.tensor(1.0)) and torch.equal(d[1], torch.tensor([1.0, 2.0, 3.0]))


def test_hypersphere_projection_gas_and_las_bounds():
    g = torch.Generator().manual_seed(2)
    c = torch.tensor([0.3, -0.2], dtype=torch.float64)
    spread = torch.logspace(-2, 1, 500, dtype=torch.float64)[:, None]
    x = c + torch.randn(500, 2, generator=g, dtype=torch.float64) * spread
    r = float(hypersphere_radius((x - c).norm(dim=1)))
    v = truncated_projection_hypersphere(x, c, r)
    d = (v - c).norm(dim=1)
    assert torch.all(d >= r - 1e-5) and torch.all(d <= 2 * r + 1e-5)
    d0 = (x - c).norm(dim=1)
    inside = (d0 >= r) & (d0 <= 2 * r)
    assert inside.sum() > 10 and torch.allclose(v[inside], x[inside], atol=1e-9)
    w = truncated_projection_hypersphere(x, c, r, low=2, high=4)  # LAS features
    d = (w - c).norm(dim=1)
    assert torch.all(d >= 2 * r - 1e-5) and torch.all(d <= 4 * r + 1e-5)


def test_hypersphere_radius_is_numpy_quantile():
    rng = np.random.default_rng(0)
    d = rng.gamma(2.0, size=1001)
    for q in (0.0, 0.25, 0.75, 0.9, 1.0):
        assert float(hypersphere_radius(d, q)) == pytest.approx(np.quantile(d, q), rel=1e-12)
        small = torch.from_numpy(d[:10])
        assert float(hypersphere_radius(small, q)) == pytest.approx(np.quantile(d[:10], q), rel=1e-12)
    assert float(hypersphere_radius(torch.from_numpy(d).float())) == pytest.approx(np.quantile(d, 0.75), rel=1e-6)
    with pytest.raises(ValueError):
        hypersphere_radius(d, 1.5)


def test_hypersphere_center_modes():
    f = torch.arange(2 * 3 * 2, dtype=torch.float64).reshape(2, 3, 2)
    assert torch.equal(hypersphere_center(f), f.mean(0))
    assert torch.equal(hypersphere_center(f, mode="paper"), f.reshape(-1, 2).mean(0))


def test_gaussian_noise_std_and_seed():
    u = torch.zeros(20000, 8)
    g1 = gaussian_noise(u, generator=torch.Generator().manual_seed(3))
    g2 = gaussian_noise(u, generator=torch.Generator().manual_seed(3))
    assert torch.equal(g1, g2)
    assert g1.std().item() == pytest.approx(0.015, rel=0.02)


def test_gas_algorithm1_deterministic_and_projected():
    u = _points(n=128, lo=0.0, hi=0.8, seed=4)  # normal features inside the toy's normal region

    def run(seed, **kw):
        return gas(u, scorer, generator=torch.Generator().manual_seed(seed), **kw)

    v1, v2, v3 = run(0), run(0), run(1)
    assert torch.equal(v1, v2) and not torch.equal(v1, v3)
    d = (v1 - u).norm(dim=1)  # 20 steps: last projection after step 20, released radii
    assert torch.all(d >= 0.5 - 1e-5) and torch.all(d <= 1.0 + 1e-5)
    v_paper = run(0, projection=lambda x, n: truncated_projection_manifold(x, n, radii="paper"))
    d = (v_paper - u).norm(dim=1)
    assert torch.all(d >= 1 - 1e-5) and torch.all(d <= 2 + 1e-5)
    # steps=0: Gaussian noise only (the GN ablation)
    g0 = run(0, steps=0)
    assert torch.equal(g0, gaussian_noise(u, generator=torch.Generator().manual_seed(0)))
    # no projection: noise + 20 ascent steps of length eta each -> moved at most 20 * eta from the noisy start
    v_np = run(0, projection=None)
    assert torch.all((v_np - g0).norm(dim=1) <= 20 * 0.001 + 1e-9)


def test_gas_projection_schedule_every_fifth_step():
    calls = []

    def proj(x, n):
        calls.append(1)
        return x

    gas(_points(n=4), scorer, steps=12, projection=proj, generator=torch.Generator().manual_seed(0))
    assert len(calls) == 2  # after steps 5 and 10; steps 11-12 stay unprojected


def test_gas_joint_forward_scores_normal_and_synthetic_together():
    sizes = []

    def s(x):
        sizes.append(x.shape[0])
        return scorer(x)

    u = _points(n=6)
    gas(u, s, steps=2, generator=torch.Generator().manual_seed(0))
    assert sizes == [12, 12]
    sizes.clear()
    gas(u, s, steps=2, generator=torch.Generator().manual_seed(0), joint_forward=False)
    assert sizes == [6, 6]


def test_gas_gradient_to_features_is_identity_for_manifold():
    u = _points(n=8).requires_grad_(True)
    v = gas(u, scorer, generator=torch.Generator().manual_seed(0))
    v.sum().backward()
    assert torch.allclose(u.grad, torch.ones_like(u))


def test_gas_loss_context_excluded():
    u = _points(n=5)
    assert torch.isclose(gas_loss(u, scorer, context=torch.zeros(3, 2, dtype=u.dtype)), gas_loss(u, scorer))


def test_hypersphere_per_position_center_tiles_batch_major():
    g = torch.Generator().manual_seed(5)
    feats = torch.randn(3, 4, 6, generator=g, dtype=torch.float64)  # B x P x C
    c = hypersphere_center(feats)  # P x C (released)
    x = feats.reshape(-1, 6) * 3
    v_flat = truncated_projection_hypersphere(x, c, 0.5)
    v_3d = truncated_projection_hypersphere(feats * 3, c, 0.5)
    assert torch.allclose(v_flat, v_3d.reshape(-1, 6))
    d = (v_3d - c).norm(dim=-1)
    assert torch.all(d >= 0.5 - 1e-9) and torch.all(d <= 1.0 + 1e-9)
