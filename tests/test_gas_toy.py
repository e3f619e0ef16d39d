"""The 2-D GAS toy behind the GLASS Fig. 3 schematic."""

import pytest
import torch

from adlib.synthesis.toy import gas_toy


@pytest.mark.parametrize("hypothesis", ["manifold", "hypersphere"])
def test_toy_moves_toward_normal_and_projects_into_the_interval(hypothesis):
    t = gas_toy(hypothesis, n=80, seed=2)
    lo, hi = t.radii
    d = t.distances(t.projected)
    assert d.min() >= lo - 1e-5 and d.max() <= hi + 1e-5
    # gradient ascent on BCE(p, 1) lowers p(anomalous): toward the normal region
    assert t.scorer(t.ascended).mean() < t.scorer(t.noisy).mean() - 0.1
    # the noise is the same draw for every variant
    noise = t.noisy - t.normal
    assert noise.std() == pytest.approx(0.6, rel=0.25)
    again = gas_toy(hypothesis, n=80, seed=2)
    assert torch.equal(again.projected, t.projected)


def test_hypersphere_radius_is_the_quantile():
    t = gas_toy("hypersphere", n=101, seed=0)
    r = torch.quantile((t.normal - t.center).norm(dim=1), 0.75)
    assert t.radii == pytest.approx((float(r), 2 * float(r)), rel=1e-5)
    with pytest.raises(ValueError, match="hypothesis"):
        gas_toy("cube")
