"""A 2-D toy of GLASS's Global Anomaly Synthesis, for the schematic of GLASS Fig. 3.

Two normal distributions stand for the two hypotheses:

- **manifold** (GLASS-m): normal points on a curve ``y = sin(x)``; each Gaussian-noise point is
  paired with the normal point it came from and truncated to ``[r1, r2]`` around it (Eq. 2).
- **hypersphere** (GLASS-h): normal points in an isotropic Gaussian cluster; the centre ``c`` is
  their mean and ``r`` the 0.75-quantile of their distances to it; noise points are truncated to
  ``[r, 2r]`` around ``c``.

The scorer is a fixed "discriminator" ``p(anomalous) = sigmoid(k (d - d0))`` of the distance
``d`` to the normal set (to the curve for the manifold toy, to ``c`` for the hypersphere toy).
GAS ascends ``BCE(p, 1)``, which lowers ``p``: points move *toward* the normal region, giving
near-in-distribution anomalies, as the paper intends.

Scale: GLASS works on 1536-D features with per-element noise ``0.015`` (norm about 0.6) and step
``eta = 0.001``. In 2-D the toy uses noise ``0.6`` per element and ``eta = 0.05`` so that the
motion is visible; steps (20) and projection every 5 steps are the released ones. Everything else
goes through :func:`adlib.synthesis.gas.gas` and its projections unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from .gas import gas, hypersphere_radius, truncated_projection_hypersphere, truncated_projection_manifold


@dataclass
class GasToy:
    hypothesis: str
    normal: torch.Tensor  # N x 2, the normal points u
    noisy: torch.Tensor  # N x 2, u + Gaussian noise (what SimpleNet-style synthesis uses)
    ascended: torch.Tensor  # N x 2, after gradient ascent without projection
    projected: torch.Tensor  # N x 2, after gradient ascent with truncated projection (GAS)
    radii: tuple[float, float]  # [r1, r2] (manifold) or [r, 2r] (hypersphere)
    center: torch.Tensor | None  # hypersphere centre, None for the manifold toy
    curve: torch.Tensor | None  # dense samples of the normal manifold, None for the hypersphere toy
    scorer: object  # the fixed toy discriminator, points -> p(anomalous)

    def distances(self, points: torch.Tensor) -> torch.Tensor:
        """Distance of each point to its reference: its paired normal point, or the centre."""
        ref = self.normal if self.center is None else self.center
        return (points - ref).norm(dim=-1)


def _curve_scorer(curve: torch.Tensor, k: float, d0: float):
    def score(x: torch.Tensor) -> torch.Tensor:
        d = torch.cdist(x, curve).min(dim=1).values
        return torch.sigmoid(k * (d - d0))

    return score


def _center_scorer(c: torch.Tensor, k: float, d0: float):
    def score(x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(k * ((x - c).norm(dim=-1) - d0))

    return score


def gas_toy(
    hypothesis: str = "manifold",
    n: int = 60,
    seed: int = 0,
    noise_std: float = 0.6,
    eta: float = 0.05,
    steps: int = 20,
    radii: tuple[float, float] = (0.5, 1.0),
) -> GasToy:
    """Run GAS on a 2-D toy (see the module docstring). ``radii`` is ``[r1, r2]`` for the manifold."""
    g = torch.Generator().manual_seed(seed)
    if hypothesis == "manifold":
        xs = torch.rand(n, generator=g) * 6 - 3
        normal = torch.stack([xs, torch.sin(xs)], dim=1)
        grid = torch.linspace(-3.5, 3.5, 400)
        curve = torch.stack([grid, torch.sin(grid)], dim=1)
        scorer = _curve_scorer(curve, k=4.0, d0=0.3)
        proj = partial(truncated_projection_manifold, r1=radii[0], r2=radii[1])
        center, out_radii = None, (float(radii[0]), float(radii[1]))
    elif hypothesis == "hypersphere":
        normal = torch.randn(n, 2, generator=g) * 0.5
        center = normal.mean(dim=0)
        r = float(hypersphere_radius((normal - center).norm(dim=1), 0.75))
        scorer = _center_scorer(center, k=4.0, d0=r)
        proj = lambda x, u: truncated_projection_hypersphere(x, center, r)  # noqa: E731
        curve, out_radii = None, (r, 2 * r)
    else:
        raise ValueError(f"hypothesis must be 'manifold' or 'hypersphere', got {hypothesis!r}")

    def run(projection, n_steps=steps):
        gen = torch.Generator().manual_seed(seed + 1)  # the same noise draw for every variant
        out = gas(
            normal,
            scorer,
            steps=n_steps,
            eta=eta,
            noise_std=noise_std,
            projection=projection,
            generator=gen,
            joint_forward=False,
        )
        return out.detach()

    noisy = run(None, n_steps=0)
    return GasToy(hypothesis, normal, noisy, run(None), run(proj), out_radii, center, curve, scorer)
