"""adlib.complexity against hand-computed values: FLOPs of single layers, parameter counts, timing calls."""

import math

import pytest
import torch
from torch import nn

from adlib.complexity import (
    count_flops,
    count_parameters,
    flops_by_operator,
    flops_to_macs,
    time_batches,
    time_inference,
)


def test_linear_flops_by_hand():
    lin = nn.Linear(7, 5)  # the bias is not counted
    x = torch.randn(3, 7)
    assert count_flops(lin, x) == 2 * 3 * 7 * 5
    assert flops_to_macs(count_flops(lin, x)) == 3 * 7 * 5
    # no bias: the same count
    assert count_flops(nn.Linear(7, 5, bias=False), x) == 2 * 3 * 7 * 5


@pytest.mark.parametrize("stride,padding,groups", [(1, 1, 1), (2, 0, 1), (1, 1, 2)])
def test_conv2d_flops_by_hand(stride, padding, groups):
    b, cin, cout, k, h, w = 2, 4, 6, 3, 11, 9
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, groups=groups)
    x = torch.randn(b, cin, h, w)
    ho = (h + 2 * padding - k) // stride + 1
    wo = (w + 2 * padding - k) // stride + 1
    assert conv(x).shape[-2:] == (ho, wo)
    assert count_flops(conv, x) == 2 * b * cout * ho * wo * (cin // groups) * k * k
    assert flops_by_operator(conv, x) == {"aten.convolution": 2 * b * cout * ho * wo * (cin // groups) * k * k}


def test_flops_of_a_callable_add_up_and_ignore_elementwise_ops():
    conv, lin = nn.Conv2d(3, 8, 1, bias=False), nn.Linear(8, 2)
    x = torch.randn(1, 3, 4, 4)

    def fn(img, scale=1.0):
        f = torch.relu(conv(img)) * scale  # relu and the product count 0
        return lin(f.mean(dim=(2, 3)))

    assert count_flops(fn, x, scale=2.0) == 2 * 3 * 8 * 16 + 2 * 8 * 2


def test_parameter_count_by_hand():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2, bias=False))
    # conv 4*3*3*3 + 4, BN weight + bias 2*4 (running stats are buffers), linear 4*2
    assert count_parameters(m) == 108 + 4 + 8 + 8
    m[0].weight.requires_grad_(False)
    assert count_parameters(m, trainable_only=True) == 4 + 8 + 8
    assert count_parameters(m) == 128


def test_shared_parameters_count_once():
    lin = nn.Linear(3, 3)
    tied = nn.Sequential(lin, nn.ReLU(), lin)
    assert count_parameters(tied) == 3 * 3 + 3


class _Counter:
    def __init__(self):
        self.calls = 0
        self.grad_enabled = []

    def __call__(self, x):
        self.calls += 1
        self.grad_enabled.append(torch.is_grad_enabled())
        return (x @ x.T).sum()


@pytest.mark.parametrize("warmup,repeats", [(1, 5), (0, 1), (3, 2)])
def test_time_inference_calls_and_value(warmup, repeats):
    fn = _Counter()
    x = torch.randn(4, 16)
    ms = time_inference(fn, x, "cpu", warmup=warmup, repeats=repeats)
    assert fn.calls == warmup + repeats
    assert math.isfinite(ms) and ms > 0
    assert not any(fn.grad_enabled)  # under no_grad by default


def test_time_inference_is_the_median_batch_time_per_image(monkeypatch):
    import adlib.complexity as cx

    monkeypatch.setattr(cx, "time_batches", lambda *a, **k: [0.9, 0.1, 0.2, 0.3, 0.25])
    assert cx.time_inference(lambda x: x, torch.zeros(4, 1)) == pytest.approx(1000 * 0.25 / 4)
    assert cx.time_inference(lambda x: x, [1, 2], batch_size=5) == pytest.approx(1000 * 0.25 / 5)


def test_time_batches_returns_one_time_per_repeat_and_rejects_bad_arguments():
    fn = _Counter()
    times = time_batches(fn, torch.randn(2, 2), None, warmup=2, repeats=3, no_grad=False)
    assert len(times) == 3 and all(t > 0 for t in times)
    assert fn.calls == 5 and all(fn.grad_enabled)
    with pytest.raises(ValueError):
        time_batches(fn, torch.randn(2, 2), repeats=0)
    with pytest.raises(ValueError):
        time_inference(fn, torch.randn(0, 2))


def test_operator_breakdown_sums_to_the_total():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
    x = torch.randn(2, 3, 5, 5)
    by_op = flops_by_operator(net, x)
    assert set(by_op) == {"aten.convolution", "aten.addmm"}
    assert by_op["aten.addmm"] == 2 * 2 * 100 * 3
    assert sum(by_op.values()) == count_flops(net, x)
