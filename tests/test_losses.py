"""Shared losses against hand-computed values: BCE, focal (GLASS Eq. 7), OHEM (Eq. 8), truncated L1 (SimpleNet)."""

import math

import pytest
import torch

from adlib.losses import bce, focal_loss, focal_loss_ohem, ohem_mask, truncated_l1


def t(*v):
    return torch.tensor(v, dtype=torch.float64)


def test_bce_by_hand_and_constant_targets():
    assert bce(t(0.8), 1.0).item() == pytest.approx(-math.log(0.8), rel=1e-12)
    assert bce(t(0.8), 0.0).item() == pytest.approx(-math.log(0.2), rel=1e-12)
    p = t(0.8, 0.3)
    assert bce(p, t(1, 0)).item() == pytest.approx((-math.log(0.8) - math.log(0.7)) / 2, rel=1e-12)
    assert bce(p, 0.0, reduction="sum").item() == pytest.approx(-math.log(0.2) - math.log(0.7), rel=1e-12)


def test_focal_loss_textbook_values_without_smoothing():
    # p_t = 0.5: -(1 - 0.5)^2 ln 0.5
    assert focal_loss(t(0.5), 1.0, smoothing=0).item() == pytest.approx(0.25 * math.log(2), rel=1e-12)
    # confident and wrong: p = 0.9 for a normal point, p_t = 0.1: -(0.9)^2 ln 0.1
    assert focal_loss(t(0.9), 0.0, smoothing=0).item() == pytest.approx(0.81 * math.log(10), rel=1e-12)
    # confident and right costs (almost) nothing: -(0.1)^2 ln 0.9
    assert focal_loss(t(0.9), 1.0, smoothing=0).item() == pytest.approx(0.01 * -math.log(0.9), rel=1e-12)
    # gamma = 0 is the BCE; alpha is a constant weight
    p, y = t(0.2, 0.7, 0.95), t(1, 0, 1)
    assert torch.allclose(focal_loss(p, y, gamma=0, smoothing=0), bce(p, y), rtol=1e-12)
    assert torch.allclose(focal_loss(p, y, alpha=0.25, smoothing=0), 0.25 * focal_loss(p, y, smoothing=0), rtol=1e-12)


def test_focal_loss_label_smoothing_as_released():
    s = 1e-5
    # t' = clamp(t, s, 1 - s); p_t = t' p + (1 - t')(1 - p) + s
    pt = (1 - s) * 0.5 + s * 0.5 + s
    assert focal_loss(t(0.5), 1.0).item() == pytest.approx(-((1 - pt) ** 2) * math.log(pt), rel=1e-12)
    # a certain, wrong prediction stays finite: p_t = s + s
    wrong = focal_loss(t(1.0), 0.0).item()
    assert wrong == pytest.approx(-((1 - 2 * s) ** 2) * math.log(2 * s), rel=1e-12)
    assert math.isfinite(wrong)
    # a certain, right one costs exactly 0 (p_t = 1 - s + s = 1)
    assert focal_loss(t(1.0), 1.0).item() == 0.0
    assert focal_loss(t(0.3, 0.6), t(0, 1), reduction="none").shape == (2,)


def test_ohem_keeps_the_hardest_half():
    # even count: median 0.25 (linear interpolation) -> the two largest
    assert ohem_mask(t(0.1, 0.4, 0.2, 0.3)).tolist() == [False, True, False, True]
    # odd count: the median itself is kept ("at or above")
    assert ohem_mask(t(5, 1, 4, 2, 3)).tolist() == [True, False, True, False, True]
    # ties at the median are all kept; quantile 0 keeps everything
    assert ohem_mask(t(1, 1, 1, 1)).all()
    assert ohem_mask(t(3, 1, 2), quantile=0.0).all()
    assert ohem_mask(t(3, 1, 2), quantile=1.0).tolist() == [True, False, False]


def test_focal_loss_ohem_by_hand():
    p, y = t(0.1, 0.9, 0.4, 0.6), t(0, 0, 1, 1)
    # squared errors 0.01, 0.81, 0.36, 0.16 -> median 0.26 -> points 1 (p=0.9, t=0) and 2 (p=0.4, t=1)
    want = (0.81 * math.log(10) + 0.36 * -math.log(0.4)) / 2
    assert focal_loss_ohem(p, y, smoothing=0).item() == pytest.approx(want, rel=1e-12)
    # no OHEM: the mean over all points
    assert torch.allclose(focal_loss_ohem(p, y, quantile=None, smoothing=0), focal_loss(p, y, smoothing=0), rtol=1e-12)
    # gradients reach only the kept points
    q = p.clone().requires_grad_(True)
    focal_loss_ohem(q, y).backward()
    assert (q.grad != 0).tolist() == [False, True, True, False]


def test_truncated_l1_by_hand():
    normal, anomalous = t(1.0, 0.2, 0.5), t(-1.0, 0.0, 0.5)
    # normal: max(0, 0.5 - s) = 0, 0.3, 0 -> 0.1; anomalous: max(0, s + 0.5) = 0, 0.5, 1.0 -> 0.5
    assert truncated_l1(normal, anomalous).item() == pytest.approx(0.6, rel=1e-12)
    # beyond the thresholds nothing is learned (the truncation)
    assert truncated_l1(t(0.5, 3.0), t(-0.5, -4.0)).item() == 0.0
    # th = +-1: normal 0, 0.8, 0.5 -> 1.3 / 3; anomalous 0, 1, 1.5 -> 2.5 / 3
    assert truncated_l1(normal, anomalous, th_pos=1.0, th_neg=-1.0).item() == pytest.approx(3.8 / 3, rel=1e-12)
