"""ADL (adaptive deviation learning under contamination): every loss of Sec. 3 against values
computed by hand (or by an independent brute force written here), the Table 2 variant table,
burn-in switching, configuration checks, checkpoints, determinism, and an end-to-end run on a
generated built-in category at eps = 10 % contamination, with a negative control that must fail.

No expected number below is copied from a run of the code under test.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch

import adlib.models
from adlib.backbones import WeightsUnavailable
from adlib.data import get_dataset
from adlib.data.synth import generate_benchmark
from adlib.models import adl as A
from adlib.models import build, evaluate
from adlib.models.adl import (
    ADL,
    ADLConfig,
    adl_objective,
    alpha_divergence_weights,
    bce_loss,
    burn_in_iterations,
    deviation_loss,
    in_burn_in,
    kl_weights,
    learning_rate,
    pseudo_labels,
    reference_scores,
    reverse_kl_weights,
    reweighted_loss,
    segmentation_loss,
    soft_deviation_loss,
    top_k_score,
    two_means_labels,
    uniform_weights,
)
from adlib.synthesis.contamination import ContaminatedRecord, contaminate

CATEGORY = "grass"
#: a tiny configuration for the checkpoint / determinism / burn-in tests (32 px, B = 2)
TINY = dict(resize=32, batch_size=2, steps_per_epoch=2, epochs=3, lr=1e-3, lr_step=2, burn_in=0.34)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """The built-in benchmark's grass category (benchmark seed 0: 32 training images, 10 good + 3 x 5
    defective test images) at 128 px, with the built-in textures (about 2 s)."""
    root = tmp_path_factory.mktemp("adl-bench")
    generate_benchmark(root, seed=0, categories=[CATEGORY], size=128, progress=False, workers=1)
    return root


def _ds(root, split, model, n=None):
    ds = get_dataset("synth", CATEGORY, split, root=root, transform=model.transform)
    return dataclasses.replace(ds, records=ds.records[:n]) if n else ds


def _tiny(root=None, **kw):
    extra = {"data_root": str(root)} if root is not None else {}
    return build("adl", "smoke", **{**TINY, **extra, **kw})


# ----------------------------------------------------------------------------------------------
# Eq. 2-6: scores and losses by hand


def test_top_k_score_by_hand():
    m = torch.arange(1.0, 11.0).reshape(1, 2, 5)  # positions 1..10
    assert top_k_score(m, 0.1).item() == 10.0  # K = int(0.1 * 10) = 1
    assert top_k_score(m, 0.3).item() == pytest.approx(9.0)  # (10 + 9 + 8) / 3
    assert top_k_score(m, 0.05).item() == 10.0  # int(0.5) = 0 -> K = 1 (at least one position)
    assert top_k_score(m, 1.0).item() == pytest.approx(5.5)
    two = torch.stack([m[0], -m[0] * 0 + 2.0])  # per image: the second one is constant 2
    assert top_k_score(two, 0.2).tolist() == pytest.approx([9.5, 2.0])


def test_reference_scores_by_hand_and_drawn():
    mu, sigma = reference_scores(None, samples=torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert mu.item() == pytest.approx(2.5)
    assert sigma.item() == pytest.approx(math.sqrt(5.0 / 3.0))  # (2.25 + 0.25 + 0.25 + 2.25) / 3
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = reference_scores(g1, 5000), reference_scores(g2, 5000)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # same stream, same draws
    # 5000 draws of N(0, 1): the mean within 4 standard errors (0.057), the std within 0.05
    assert abs(a[0].item()) < 4 / math.sqrt(5000) and abs(a[1].item() - 1.0) < 0.05
    c = reference_scores(g1, 5000)
    assert c[0].item() != a[0].item()  # fresh draws every call (Alg. 1 line 5)
    mu3, _ = reference_scores(torch.Generator().manual_seed(0), 5000, mean=3.0, std=0.5)
    assert abs(mu3.item() - 3.0) < 0.03


def test_deviation_loss_by_hand():
    # mu_S = 0.5, sigma_S = 2: Z = (score - 0.5) / 2
    score = torch.tensor([0.5, 4.5, -3.5, 2.5, 20.5, 10.5])
    y = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    # Z = [0, 2, -2, 1, 10, 5]; normal: |Z|; anomalous: max(0, 5 - Z)
    expected = [0.0, 2.0, 2.0, 4.0, 0.0, 0.0]
    assert deviation_loss(score, y, 0.5, 2.0, margin=5.0).tolist() == pytest.approx(expected)
    # the released margin 10: anomalies need Z >= 10
    assert deviation_loss(score, y, 0.5, 2.0, margin=10.0).tolist() == pytest.approx([0, 2, 2, 9, 0, 5])
    assert deviation_loss(score, 1, 0.5, 2.0, margin=5.0).tolist() == pytest.approx([5, 3, 7, 4, 0, 0])


def test_soft_deviation_loss_by_hand_and_detached():
    score = torch.tensor([4.0, 4.0, -4.0], requires_grad=True)
    p = torch.tensor([0.25, 0.75, 1.0], requires_grad=True)
    # mu 0, sigma 2: Z = [2, 2, -2]; (1 - p)|Z| + p max(0, 5 - Z)
    loss = soft_deviation_loss(score, p, 0.0, 2.0, margin=5.0)
    assert loss.tolist() == pytest.approx([0.75 * 2 + 0.25 * 3, 0.25 * 2 + 0.75 * 3, 7.0])
    loss.sum().backward()
    assert p.grad is None  # the classifier's probability is a target, not a gradient path
    # d/dscore: (1 - p) sign(Z) / sigma - p / sigma (inside the margin)
    assert score.grad.tolist() == pytest.approx([(0.75 - 0.25) / 2, (0.25 - 0.75) / 2, -1 / 2])
    # p = y gives Eq. 4
    y = torch.tensor([0.0, 1.0, 1.0])
    assert torch.allclose(soft_deviation_loss(score.detach(), y, 0.0, 2.0), deviation_loss(score.detach(), y, 0.0, 2.0))


def _brute_two_means(v: list[float]) -> list[int]:
    """Exhaustive k-means (k = 2): every labelling into two non-empty clusters, smallest SSE."""
    best, arg = math.inf, None
    for lab in itertools.product((0, 1), repeat=len(v)):
        if 0 < sum(lab) < len(v):
            sse = 0.0
            for c in (0, 1):
                pts = [x for x, l in zip(v, lab) if l == c]
                mu = sum(pts) / len(pts)
                sse += sum((x - mu) ** 2 for x in pts)
            hi = (
                1
                if np.mean([x for x, l in zip(v, lab) if l == 1]) > np.mean([x for x, l in zip(v, lab) if l == 0])
                else 0
            )
            norm = [int(l == hi) for l in lab]  # label 1 = the cluster with the higher mean
            if sse < best - 1e-12:
                best, arg = sse, norm
    return arg


def test_two_means_pseudo_labels_on_a_separable_toy_batch():
    scores = torch.tensor([0.10, 5.00, 0.20, 0.15, 5.20, 0.05])
    assert two_means_labels(scores).tolist() == [0, 1, 0, 0, 1, 0]
    # against exhaustive search on random batches (distinct values, so the optimum is unique)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        v = (torch.rand(9, generator=g) * torch.tensor([1.0, 1, 1, 1, 1, 5, 5, 9, 9])).tolist()
        assert two_means_labels(torch.tensor(v, dtype=torch.float64)).tolist() == _brute_two_means(v)
    # neither the largest gap (6 -> 11) nor the mean (3): {0, 0, 0, 0, 4} | {6, 11} has SSE 12.8 + 12.5
    # = 25.3, against 26 for {0 x4} | {4, 6, 11} and 35.3 for {.., 6} | {11}
    assert two_means_labels(torch.tensor([0.0, 0, 0, 0, 4, 6, 11])).tolist() == [0, 0, 0, 0, 0, 1, 1]
    assert two_means_labels(torch.tensor([2.0, 2.0, 2.0])).tolist() == [0, 0, 0]  # one distinct value
    assert two_means_labels(torch.tensor([3.0, 1.0])).tolist() == [1, 0]
    # OR with the given labels (released) or k-means alone (paper wording)
    s, y = torch.tensor([0.1, 5.0, 0.2, 0.3]), torch.tensor([0.0, 0.0, 1.0, 0.0])
    assert pseudo_labels(s, y, "or").tolist() == [0.0, 1.0, 1.0, 0.0]
    assert pseudo_labels(s, y, "kmeans").tolist() == [0.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="rule"):
        pseudo_labels(s, y, "and")


def test_bce_and_segmentation_losses_by_hand():
    out = bce_loss(torch.tensor([0.9, 0.2, 0.6]), torch.tensor([1.0, 0.0, 1.0]))
    assert out.tolist() == pytest.approx([-math.log(0.9), -math.log(0.8), -math.log(0.6)])
    # focal loss gamma 2, no smoothing: mean of -(1 - p_t)^2 log p_t
    p = torch.tensor([[[0.9, 0.2]]])
    m = torch.tensor([[[1.0, 0.0]]])
    by_hand = (-(0.1**2) * math.log(0.9) - (0.2**2) * math.log(0.8)) / 2
    assert segmentation_loss(p, m, smoothing=0.0).item() == pytest.approx(by_hand, rel=1e-6)
    # the released smoothing 1e-5: t' = clamp(t, 1e-5, 1 - 1e-5), p_t = t' p + (1 - t')(1 - p) + 1e-5
    s = 1e-5
    pt = [(1 - s) * 0.9 + s * 0.1 + s, s * 0.2 + (1 - s) * 0.8 + s]
    by_hand = sum(-((1 - q) ** 2) * math.log(q) for q in pt) / 2
    assert segmentation_loss(p, m).item() == pytest.approx(by_hand, rel=1e-6)


# ----------------------------------------------------------------------------------------------
# Eq. 7-11: instance weights


def test_alpha_divergence_weights_by_hand():
    L = torch.tensor([0.0, 1.0, 2.0])
    # alpha = 0.1, lambda = 0.1: [(0.9 L + 0.1)]^(1 / -0.9) = [0.1, 1.0, 1.9]^(-10/9)
    raw = [0.1 ** (-10 / 9), 1.0, 1.9 ** (-10 / 9)]
    w = alpha_divergence_weights(L, 0.1, 0.1)
    assert w.tolist() == pytest.approx([r / sum(raw) for r in raw], rel=1e-6)
    assert w.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert w.dtype == torch.float32 and w[0] > w[1] > w[2]  # higher loss, lower weight
    # normalised per batch: a constant factor on (1 - alpha) L + lambda cancels, uniform losses -> uniform
    assert alpha_divergence_weights(torch.full((4,), 3.0)).tolist() == pytest.approx([0.25] * 4)
    # alpha = 0 is Eq. 9 (reverse KL): 1 / (L + lambda)
    inv = [1 / 0.1, 1 / 1.1, 1 / 2.1]
    assert alpha_divergence_weights(L, 0.0, 0.1).tolist() == pytest.approx([i / sum(inv) for i in inv], rel=1e-6)
    assert reverse_kl_weights(L, 0.1).tolist() == pytest.approx([i / sum(inv) for i in inv], rel=1e-6)
    # alpha = 1 is Eq. 8 (KL): exp(-L / lambda)
    e = [1.0, math.exp(-10), math.exp(-20)]
    assert alpha_divergence_weights(L, 1.0, 0.1).tolist() == pytest.approx([x / sum(e) for x in e], rel=1e-6)
    assert kl_weights(L, 0.1).tolist() == pytest.approx([x / sum(e) for x in e], rel=1e-6)
    # alpha > 1: [.]_+ cuts large losses to weight 0 (alpha = 2, lambda = 1: [1 - L]_+^1)
    assert alpha_divergence_weights(torch.tensor([0.0, 0.5, 2.0]), 2.0, 1.0).tolist() == pytest.approx(
        [2 / 3, 1 / 3, 0]
    )
    # ... and if every weight is 0 the batch falls back to uniform weights
    assert alpha_divergence_weights(torch.tensor([1.0, 2.0]), 2.0, 0.1).tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="lambda"):
        alpha_divergence_weights(L, 0.1, 0.0)
    with pytest.raises(ValueError, match="non-negative"):
        alpha_divergence_weights(torch.tensor([-1.0, 1.0]))


def test_alpha_divergence_tends_to_the_kl_weights():
    """Eq. 10 -> Eq. 8 as alpha -> 1 (module docstring): the error shrinks with 1 - alpha."""
    L = torch.tensor([0.0, 0.05, 0.1, 0.3, 0.2], dtype=torch.float64)
    kl = torch.tensor([math.exp(-x / 0.1) for x in L.tolist()], dtype=torch.float64)
    kl = kl / kl.sum()
    errs = [
        float((alpha_divergence_weights(L, 1 - e, 0.1).double() - kl).abs().max()) for e in (1e-1, 1e-2, 1e-3, 1e-5)
    ]
    assert errs[0] > errs[1] > errs[2] > errs[3] and errs[3] < 1e-5 and errs[0] > 1e-3
    # no overflow close to 1 although the exponent 1/(alpha - 1) is -1e7
    w = alpha_divergence_weights(L * 100, 1 - 1e-7, 0.1)
    assert torch.isfinite(w).all() and w.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_reweighted_objective_by_hand():
    l = torch.tensor([1.0, 2.0, 3.0])
    assert reweighted_loss(l, torch.tensor([0.5, 0.25, 0.25])).item() == pytest.approx(1.75)
    assert uniform_weights(4).tolist() == [0.25] * 4
    # Eq. 11 with uniform weights: the means plus the segmentation loss
    b = torch.tensor([0.5, 0.5, 2.0])
    u = uniform_weights(3)
    assert adl_objective(l, b, 0.25, u, u).item() == pytest.approx(2.0 + 1.0 + 0.25)
    assert adl_objective(l, None, 0.0, u, None).item() == pytest.approx(2.0)  # no BCE term (DL variants)
    w1, w2 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])
    assert adl_objective(l, b, 0.0, w1, w2).item() == pytest.approx(1.0 + 2.0)  # w1 on l_dev, w2 on l_bce


def test_eq11_reductions_by_hand_and_per_profile():
    l = torch.tensor([1.0, 2.0, 3.0])
    b = torch.tensor([0.5, 0.5, 2.0])
    w1, w2 = torch.tensor([0.5, 0.25, 0.25]), torch.tensor([0.0, 0.5, 0.5])
    # sum (Eq. 11 as printed): 0.5 + 0.5 + 0.75 = 1.75 and 0.25 + 1.0 = 1.25, plus l_seg 0.25
    assert adl_objective(l, b, 0.25, w1, w2, "sum").item() == pytest.approx(1.75 + 1.25 + 0.25)
    # released mean(l w) over n = 3 images: 1.75 / 3 and 1.25 / 3, the segmentation loss undivided
    assert adl_objective(l, b, 0.25, w1, w2, "batch_mean").item() == pytest.approx(1.75 / 3 + 1.25 / 3 + 0.25)
    assert reweighted_loss(l, w1, "batch_mean").item() == pytest.approx(1.75 / 3)
    # burn-in (uniform 1/n): the released terms are the plain means divided by n once more
    u = uniform_weights(3)
    assert adl_objective(l, b, 0.0, u, u, "batch_mean").item() == pytest.approx((2.0 + 1.0) / 3)
    with pytest.raises(ValueError, match="reduction must be one of"):
        adl_objective(l, b, 0.0, w1, w2, "mean")
    # paper profile = released; smoke keeps the sum (its recorded numbers)
    assert ADLConfig.for_profile("paper").reweight_reduction == "batch_mean" == ADLConfig().reweight_reduction
    assert ADLConfig.for_profile("smoke").reweight_reduction == "sum"
    # the option reaches the objective: same model and batch in burn-in, the reweighted terms / 2B
    x, y, mask = _batch(n=2)
    out = {}
    for red in ("sum", "batch_mean"):
        m = _tiny(reweight_reduction=red)
        with torch.no_grad():
            out[red] = m.compute_losses(x, y, mask, 0)
        assert out[red]["loss"].item() == pytest.approx(
            (out[red]["dev"] + out[red]["bce"] + out[red]["seg"]).item(), rel=1e-6
        )
    assert out["batch_mean"]["dev"].item() == pytest.approx(out["sum"]["dev"].item() / 4, rel=1e-6)
    assert out["batch_mean"]["bce"].item() == pytest.approx(out["sum"]["bce"].item() / 4, rel=1e-6)
    assert out["batch_mean"]["seg"].item() == pytest.approx(out["sum"]["seg"].item(), rel=1e-6)
    info = _tiny(reweight_reduction="batch_mean").info()
    assert info["config"]["reweight_reduction"] == "batch_mean" and info["eq11_reduction"].startswith("released")
    # both codes clip the gradient norm at 1.0 in every step (released adl_train.py:154)
    assert ADLConfig.for_profile("paper").grad_clip == 1.0 == ADLConfig.for_profile("smoke").grad_clip


def _adl_parameters(layout: str, bias: bool, c=(128, 256, 512), seg=64) -> int:
    """The ADL network's parameter count from its layers (ResNet-18 encoder without its fc)."""
    c2, c3, c4 = c

    def up(ch):  # conv ch -> 2ch (3x3), its bias, BatchNorm(2ch) weight and bias
        return 9 * ch * 2 * ch + (2 * ch if bias else 0) + 2 * 2 * ch

    def conv_bn(cin, cout):
        return 9 * cin * cout + cout + 2 * cout

    f = c2 + c3 + c4
    heads = (f + 1) + (c4 + 1)
    segmentation = conv_bn(f, seg) + conv_bn(seg, seg) + 3 * conv_bn(seg, seg) + 9 * seg * 2 + 2
    encoder = 11_689_512 - 513_000
    return encoder + up(c3) + (2 if layout == "two_x2" else 1) * up(c4) + heads + segmentation


def test_layer4_upsampling_layouts_and_parameter_counts():
    counts = {}
    for layout, bias in (("two_x2", False), ("two_x2", True), ("one_x4", True)):
        m = build(
            "adl",
            "smoke",
            resize=64,
            encoder_width=1.0,
            upsample_kernel=3,
            seg_width=64,
            layer4_upsampling=layout,
            upsample_bias=bias,
        )
        counts[(layout, bias)] = A.parameter_count(m)
        assert counts[(layout, bias)] == _adl_parameters(layout, bias)
        with torch.no_grad():
            fco, f4 = m.net.eval().features(torch.rand(2, 3, 64, 64))
        assert fco.shape == (2, 896, 8, 8) and f4.shape == (2, 512, 2, 2)
        assert m.info()["config"]["layer4_upsampling"] == layout and m.info()["config"]["upsample_bias"] == bias
    # released (two x2 blocks, no conv bias): 22.47 M; this project's former one x4 block: 17.75 M
    assert counts[("two_x2", False)] == 22_465_540 and counts[("one_x4", True)] == 17_746_436
    assert counts[("two_x2", True)] == 22_468_100
    released = build(
        "adl", "smoke", resize=64, encoder_width=1.0, upsample_kernel=3, layer4_upsampling="two_x2", upsample_bias=False
    ).net.up4
    assert [(b.scale, b.kernel, b.conv.bias) for b in released] == [(2, 3, None), (2, 3, None)]
    # the two x2 blocks are two sequential x2 steps, each with its own 3x3 conv
    z = torch.randn(1, 512, 2, 2)
    released.eval()
    with torch.no_grad():
        assert torch.equal(released(z), released[1](released[0](z))) and released(z).shape == (1, 512, 8, 8)
    # per profile: paper = released, smoke = the former layout (its numbers and run keys unchanged)
    assert (ADLConfig().layer4_upsampling, ADLConfig().upsample_bias) == ("two_x2", False)
    smoke = ADLConfig.for_profile("smoke")
    assert (smoke.layer4_upsampling, smoke.upsample_bias) == ("one_x4", True)
    from adlib.results import Job

    assert (
        Job.make("adl", "synth", "wood", "smoke", 0).key()
        == Job.make(
            "adl", "synth", "wood", "smoke", 0, layer4_upsampling="one_x4", upsample_bias=True, reweight_reduction="sum"
        ).key()
    )
    from adlib.results import ADDED_FIELDS

    assert all(ADDED_FIELDS[k] == v == getattr(smoke, k) for k, v in ADL.FORMER_CONFIG.items())
    keys = {
        Job.make("adl", "synth", "wood", "paper", 0, layer4_upsampling=v, upsample_bias=b).key()["config_hash"]
        for v in A.LAYER4_UPSAMPLINGS
        for b in (False, True)
    }
    assert len(keys) == 4


def test_burn_in_iterations_and_learning_rate():
    assert burn_in_iterations(500, 0.06) == 30 and burn_in_iterations(10, 0.06) == 0
    assert [in_burn_in(t, 100) for t in (0, 5, 6, 99)] == [True, True, False, False]
    assert not any(in_burn_in(t, 10) for t in range(10))  # int(0.6) = 0: no burn-in at all
    cfg = ADLConfig.for_profile("paper")
    assert [learning_rate(cfg, e) for e in (0, 9, 10, 19, 20, 24)] == pytest.approx(
        [2e-4, 2e-4, 2e-5, 2e-5, 2e-6, 2e-6]
    )


# ----------------------------------------------------------------------------------------------
# Burn-in switching inside the model (Alg. 1 lines 7-11)


def _batch(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2 * n, 3, size, size, generator=g)
    y = torch.cat([torch.zeros(n), torch.ones(n)])
    mask = (torch.rand(2 * n, size, size, generator=g) > 0.7).float() * y[:, None, None]
    return x, y, mask


def test_burn_in_uses_hard_labels_and_uniform_weights_then_switches():
    # 10 epochs x 5 steps = 50 iterations; 6 % -> iterations 0, 1, 2 are burn-in
    model = _tiny(epochs=10, steps_per_epoch=5, burn_in=0.06)
    assert model.total_iterations == 50 and burn_in_iterations(50, 0.06) == 3
    x, y, mask = _batch()
    model.net.eval()  # fixed BatchNorm statistics: the network's outputs can be recomputed here
    with torch.no_grad():
        out = model.net(x)
    seen = {}
    for t in range(6):
        ref_state = model.generators["reference"].get_state()
        with torch.no_grad():
            r = model.compute_losses(x, y, mask, t)
        mu, sigma = reference_scores(torch.Generator().set_state(ref_state), model.cfg.ref_samples)
        seen[t] = {k: float(v) for k, v in r.items()}
        if t < 3:
            # hard labels (Eq. 4), uniform weights (1 / 2B), BCE against the given labels
            assert r["dev"].item() == pytest.approx(
                deviation_loss(out["score"], y, mu, sigma, 10.0).mean().item(), rel=1e-5
            )
            assert r["bce"].item() == pytest.approx(bce_loss(out["prob"], y).mean().item(), rel=1e-5)
        else:
            soft = soft_deviation_loss(out["score"], out["prob"], mu, sigma, 10.0)
            w = alpha_divergence_weights(soft, 0.1, 0.1)
            assert r["dev"].item() == pytest.approx((w * soft).sum().item(), rel=1e-5)
            target = pseudo_labels(out["score"], y, "or") if r["pseudo"] else y
            l_bce = bce_loss(out["prob"], target)
            assert r["bce"].item() == pytest.approx((alpha_divergence_weights(l_bce) * l_bce).sum().item(), rel=1e-5)
    assert [seen[t]["burn_in"] for t in range(6)] == [1, 1, 1, 0, 0, 0]
    assert [seen[t]["soft"] for t in range(6)] == [0, 0, 0, 1, 1, 1]
    assert all(seen[t]["pseudo"] == 0 for t in range(3))
    assert all(seen[t]["ess_dev"] == pytest.approx(1.0) and seen[t]["ess_bce"] == pytest.approx(1.0) for t in range(3))
    # non-uniform weights after burn-in (barely, at initialisation: p is about 0.5 for every image,
    # so every BCE loss is about log 2, and with p = 0.5 and 0 <= Z <= 10 every l_soft is 5)
    assert all(seen[t]["ess_dev"] < 1 - 1e-6 and seen[t]["ess_bce"] < 1 - 1e-6 for t in range(3, 6))

    # the paper's Algorithm 1: soft deviation from the start, only the weights uniform in burn-in
    paper = _tiny(epochs=10, steps_per_epoch=5, burn_in=0.06, burn_in_mode="paper", pseudo_label_schedule="alternate")
    paper.net.eval()
    with torch.no_grad():
        rs = [paper.compute_losses(x, y, mask, t) for t in range(6)]
    assert [float(r["soft"]) for r in rs] == [1] * 6
    assert [float(r["ess_dev"]) for r in rs[:3]] == pytest.approx([1.0] * 3)
    assert [float(r["ess_bce"]) for r in rs[:3]] == [1.0] * 3
    assert all(float(r["ess_bce"]) < 1 - 1e-6 for r in rs[3:])
    # "alternately used": given and pseudo-labels alternate, the first iteration after burn-in (t = 3)
    # using the pseudo-labels (under the paper's burn-in they are used during it too)
    assert [float(r["pseudo"]) for r in rs] == [0, 1, 0, 1, 0, 1]


def test_released_bce_target_mixes_pseudo_labels_with_probability_0_6():
    model = _tiny(epochs=1000, steps_per_epoch=10, burn_in=0.0)
    used = [model._use_pseudo_labels(t) for t in range(4000)]
    assert 0.58 < np.mean(used) < 0.62  # Binomial(4000, 0.6): 2.6 standard deviations either side
    again = _tiny(epochs=1000, steps_per_epoch=10, burn_in=0.0)
    assert [again._use_pseudo_labels(t) for t in range(4000)] == used  # drawn from the seeded "labels" stream
    never = _tiny(pseudo_label_prob=0.0)
    assert not any(never._use_pseudo_labels(t) for t in range(50))


# ----------------------------------------------------------------------------------------------
# Variants (Table 2) and configuration


def test_variant_table_is_table_2():
    # columns DL, Wt-DL, DL-CE, SoftDL-CE, Wt-SoftDL-CE, Proposed; rows l_dev, l_soft, l_bce, reweight, l_seg
    ticks = {
        "dl": "d....",
        "wt-dl": "d..w.",
        "dl-ce": "d.b..",
        "softdl-ce": ".sb..",
        "wt-softdl-ce": ".sbw.",
        "proposed": "dsbwg",
    }
    assert set(A.VARIANTS) == set(ticks) and ADLConfig().variant == "proposed"
    for v, t in ticks.items():
        c = A.VARIANTS[v]
        assert (c.dev, c.soft, c.bce, c.reweight, c.seg) == tuple(ch != "." for ch in t), v
    assert A.TABLE2_NAMES["wt-softdl-ce"] == "Wt-SoftDL-CE" and A.TABLE2_REPORTED["proposed"] == (0.924, 0.843)
    for v in ticks:
        m = build("adl", "smoke", variant=v, resize=32)
        assert m.variant == v and m.label == f"adl-{v}" and m.info()["table2"] == A.TABLE2_NAMES[v]
        assert m.pixel_map == ("segmentation" if v == "proposed" else "score")
    assert build("adl", "smoke", variant="dl", pixel_map="segmentation", resize=32).pixel_map == "segmentation"
    assert adlib.models.MODELS["adl"] is ADL and "adl" in adlib.models.available_models()


@pytest.mark.parametrize(
    "variant,trained",
    [
        ("dl", {"scoring"}),
        ("dl-ce", {"scoring", "classifier"}),
        ("proposed", {"scoring", "classifier", "segmentation"}),
    ],
)
def test_each_variant_trains_only_its_heads(variant, trained):
    model = _tiny(variant=variant, burn_in=0.0)
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    x, y, mask = _batch(n=2)
    model.train_step(x, y, mask)
    after = model.net.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert {"encoder", "up3", "up4"} <= changed  # the encoder is fine-tuned, not frozen
    assert changed & {"scoring", "classifier", "segmentation"} == trained


def test_config_validation_errors():
    for bad, match in [
        (dict(variant="devnet"), "variant"),
        (dict(resize=48), "multiple of 32"),
        (dict(resize=64, crop=96), "crop"),
        (dict(burn_in_mode="epochs"), "burn_in_mode"),
        (dict(pseudo_label_rule="and"), "pseudo_label_rule"),
        (dict(pseudo_label_schedule="never"), "pseudo_label_schedule"),
        (dict(margin=0), "margin"),
        (dict(lam=0.0), "lam"),
        (dict(burn_in=1.5), "burn_in"),
        (dict(top_k=0.0), "top_k"),
        (dict(synthesis="pouta"), "synthesis"),
        (dict(pixel_map="max"), "pixel_map"),
        (dict(upsample_kernel=2), "upsample_kernel"),
        (dict(pseudo_label_prob=1.2), "pseudo_label_prob"),
        (dict(batch_size=0), "batch_size"),
        (dict(grad_clip=0.0), "grad_clip"),
        (dict(reweight_reduction="mean"), "reweight_reduction"),
        (dict(layer4_upsampling="x4"), "layer4_upsampling"),
        (dict(upsample_bias="no"), "upsample_bias"),
    ]:
        with pytest.raises(ValueError, match=match):
            build("adl", "smoke", **bad)
    with pytest.raises(ValueError, match="unknown"):
        build("adl", "smoke", no_such_field=1)
    with pytest.raises(ValueError, match="profile"):
        ADLConfig.for_profile("huge")
    with pytest.raises(TypeError):
        ADL(adlib.models.MODELS["pouta"].Config())
    # valid edge values
    assert build("adl", "smoke", resize=64, crop=32, alpha=1.0, burn_in=0.0).cfg.input_size == 32
    assert build("adl", "smoke", synthesis="adl_paper", margin=5.0).cfg.margin == 5.0


def test_paper_profile_and_missing_weights(tmp_path, monkeypatch):
    cfg = ADLConfig.for_profile("paper")
    assert (cfg.resize, cfg.crop, cfg.normalize, cfg.margin, cfg.epochs, cfg.batch_size, cfg.steps_per_epoch) == (
        256,
        None,
        False,
        10.0,
        25,
        24,
        20,
    )
    assert (cfg.pretrained, cfg.upsample_kernel, cfg.seg_width, cfg.alpha, cfg.lam, cfg.burn_in) == (
        True,
        3,
        64,
        0.1,
        0.1,
        0.06,
    )
    assert (cfg.lr, cfg.weight_decay, cfg.lr_step, cfg.lr_gamma, cfg.grad_clip, cfg.ref_samples) == (
        2e-4,
        1e-5,
        10,
        0.1,
        1.0,
        5000,
    )
    # offline without cached weights: a clear error, not a silent random initialisation
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("ADLIB_WEIGHTS_DIR", raising=False)
    with pytest.raises(WeightsUnavailable, match="resnet18.tv_in1k"):
        build("adl", "paper")


def test_network_shapes_and_channels():
    # the paper's ResNet-18 (random initialisation): 128 + 256 + 512 = 896 channels at stride 8
    model = build("adl", "smoke", resize=64, encoder_width=1.0)
    x = torch.rand(3, 3, 64, 64)
    model.net.eval()
    with torch.no_grad():
        fco, f4 = model.net.features(x)
        out = model.net(x)
    assert fco.shape == (3, 128 + 256 + 512, 8, 8) and f4.shape == (3, 512, 2, 2)
    assert out["score_map"].shape == (3, 8, 8) and (out["score_map"] >= 0).all()
    assert out["score"].shape == (3,) and out["prob"].shape == (3,) and out["seg"].shape == (3, 64, 64)
    assert torch.allclose(out["score"], top_k_score(out["score_map"], 0.1))  # K = int(6.4) = 6 of 64
    assert ((out["prob"] > 0) & (out["prob"] < 1)).all()
    assert model.backbone_info.channels == (128, 256, 512) and model.backbone_info.strides == (8, 16, 32)
    assert A.parameter_count(model.net.encoder) == 11_689_512 - 513_000  # ResNet-18 (11.69 M) without its fc layer
    # the smoke encoder: a quarter of the channels
    assert build("adl", "smoke").backbone_info.channels == (32, 64, 128)
    info = model.info()
    assert (
        info["weights"].startswith("random-init") and info["fine_tuned_encoder"] and info["pixel_map"] == "segmentation"
    )
    assert all(p.requires_grad for p in model.net.encoder.parameters())
    # a 1x1 up-sampling block computed before the up-sampling equals the block after it
    blk = A.UpBlock(4, 4, kernel=1).eval()
    blk.bn.running_mean.uniform_(-1, 1)
    z = torch.randn(2, 4, 3, 3)
    ref = torch.nn.functional.glu(blk.bn(blk.conv(torch.nn.functional.interpolate(z, scale_factor=4))), dim=1)
    assert torch.allclose(blk(z), ref, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Checkpoints and determinism


def _weights_equal(a, b) -> bool:
    sa, sb = a.net.state_dict(), b.net.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _losses(model):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in model.history]


def test_save_load_roundtrip(bench, tmp_path):
    model = _tiny(bench, epochs=1)
    train = _ds(bench, "train", model, 8)
    model.fit(train, device="cpu", progress=False)
    path = model.save(tmp_path / "m.pt")
    assert not list(tmp_path.glob(".*.tmp"))
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state["name"] == "adl" and state["epoch"] == 1 and state["iteration"] == 2
    assert set(state["rng"]) == {"sampler", "synthesis", "reference", "labels"}
    images = torch.stack([train[i].image for i in range(4)])
    for loaded in (ADL.load(path), adlib.models.load(path)):
        assert isinstance(loaded, ADL) and loaded.cfg == model.cfg and loaded.epoch == 1 and loaded.iteration == 2
        assert _weights_equal(model, loaded)
        s0, m0 = model.score(images)
        s1, m1 = loaded.score(images)
        assert torch.equal(s0, s1) and torch.equal(m0, m1)
        assert _losses(loaded) == _losses(model)
    assert loaded.info()["weights"] == model.info()["weights"] and loaded.backbone_info == model.backbone_info
    other = build(
        "pouta",
        "smoke",
        image_size=32,
        widths=(4, 4, 4, 4),
        mapping_width=4,
        fcm_widths=(4, 4, 4, 4),
        aggregate_width=4,
    )
    opath = other.save(tmp_path / "p" / "last.pt")
    with pytest.raises(ValueError, match="pouta"):
        ADL.load(opath)
    with pytest.raises(ValueError, match="pouta"):
        _tiny(bench).fit(train, device="cpu", progress=False, checkpoint_dir=opath.parent)


def test_resume_after_a_crash_equals_an_uninterrupted_fit(bench, tmp_path):
    # 3 epochs x 2 steps, burn-in int(0.34 * 6) = 2 iterations, lr x0.1 from epoch index 2
    ref = _tiny(bench)
    train = _ds(bench, "train", ref, 8)
    ref.fit(train, device="cpu", progress=False)
    assert [h["lr"] for h in ref.history] == pytest.approx([1e-3, 1e-3, 1e-4])
    assert [h["burn_in"] for h in ref.history] == [1.0, 0.0, 0.0]

    crashed = _tiny(bench)
    calls, run_epoch = [0], crashed._run_epoch

    def crash_in_epoch_3(*a, **k):
        calls[0] += 1
        if calls[0] == 3:
            raise RuntimeError("simulated crash")
        return run_epoch(*a, **k)

    crashed._run_epoch = crash_in_epoch_3
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit(train, device="cpu", progress=False, checkpoint_dir=tmp_path)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 2

    resumed = _tiny(bench)  # a fresh process would build exactly this
    resumed.fit(train, device="cpu", progress=False, checkpoint_dir=tmp_path)
    assert resumed.epoch == ref.epoch == 3 and resumed.iteration == ref.iteration == 6
    assert _losses(resumed) == _losses(ref)
    assert _weights_equal(resumed, ref)
    for k, g in ref.generators.items():
        assert torch.equal(g.get_state(), resumed.generators[k].get_state()), k
    oa, ob = ref.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert oa.keys() == ob.keys() and all(torch.equal(oa[i]["exp_avg_sq"], ob[i]["exp_avg_sq"]) for i in oa)
    with pytest.raises(ValueError, match="differs"):
        _tiny(bench, margin=5.0).fit(train, device="cpu", progress=False, checkpoint_dir=tmp_path)


def test_same_seed_same_run(bench):
    runs = []
    for seed in (0, 0, 1):
        m = _tiny(bench, epochs=1, seed=seed)
        m.fit(_ds(bench, "train", m, 8), device="cpu", progress=False)
        runs.append(m)
    assert _losses(runs[0]) == _losses(runs[1]) and _weights_equal(runs[0], runs[1])
    assert _losses(runs[0]) != _losses(runs[2])  # the seed matters (heads, sampling, synthesis, references)
    assert set(_losses(runs[0])[0]) == {
        "epoch",
        "loss",
        "dev",
        "bce",
        "seg",
        "burn_in",
        "soft",
        "pseudo",
        "ess_dev",
        "ess_bce",
        "lr",
    }


def test_a_pretrained_checkpoint_loads_offline(tmp_path, monkeypatch):
    """The encoder is fine-tuned, so a checkpoint holds all of it: loading needs no pretrained
    weights, and the recorded provenance is the checkpoint's."""
    model = build("adl", "smoke", resize=32, encoder_width=1.0)
    state = model.state()
    state["config"]["pretrained"] = True
    state["backbone"]["pretrained"] = True
    state["backbone"]["weights"] = "timm:resnet18.tv_in1k (hf cache 0123456789ab)"
    torch.save(state, tmp_path / "paper.pt")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("ADLIB_WEIGHTS_DIR", raising=False)
    loaded = ADL.load(tmp_path / "paper.pt")
    assert loaded.cfg.pretrained and loaded.info()["weights"] == "timm:resnet18.tv_in1k (hf cache 0123456789ab)"
    assert _weights_equal(loaded, model)


# ----------------------------------------------------------------------------------------------
# End to end: a smoke run at eps = 10 % separates the defects; with shuffled labels it cannot

EPS = 0.1
#: Calibration (synth/grass, benchmark seed 0 at 128 px, contamination seed 0: 3 test anomalies
#: join the 32 training images and leave the test set, which keeps 10 good + 12 defective; smoke
#: profile; 1 torch thread), image AUROC of psi_K over training seeds 0-9:
#:   trained:         0.88 0.92 0.91 0.91 0.83 0.93 0.69 0.61 0.77 0.89   (pixel 0.69 - 0.96)
#:   shuffled labels: 0.36 0.45 0.34 0.55 0.69                            (seeds 0-4)
#: The test runs seed 0; 8 of the 10 seeds pass the threshold (seeds 6 and 7 do not), no
#: shuffled-label run reaches it. (With the released 6 % burn-in, lr 1e-3, the soft-label phase
#: made runs collapse, every image scored alike: 0.40 0.86 0.75 0.58 0.50 0.80 0.80 0.49.)
#: Re-measured after the smoke profile's burn-in moved to 80 % (the learning-rate step) and its
#: BatchNorm statistics are recalibrated after the last epoch (same set-up, reference numerics):
#:   trained:         0.925 0.95 0.942 0.933 0.883 0.917 0.767 0.725      (seeds 0-7, pixel 0.81 - 0.95)
#:   shuffled labels: 0.367 0.65 0.233 0.767                              (seeds 0-3)
#: all 8 trained seeds pass; the shuffled run at seed 3 reaches the threshold too (the test's
#: seed 0 does not: 0.367). The threshold is kept.
MIN_IMAGE_AUROC = 0.72
#: Same runs: mean Eq. 10 weight of the 3 hidden anomalies over that of the 32 clean training
#: images, scored by the trained model (seeds 0-7): 0.78 0.56 0.75 0.72 0.88 0.66 0.78 1.04; 7 of
#: 8 below the threshold (seed 7, the weakest model at 0.61 image AUROC, is not). After the smoke
#: change above: 0.70 0.39 0.54 0.93 0.78 0.62 1.02 0.85 (seeds 0-7; 6 of 8 below, seeds 3 and 6
#: not); the test's seed 0 (0.70) passes. The threshold is kept.
MAX_HIDDEN_WEIGHT_RATIO = 0.9


def _contaminated(root, model, eps, seed=0):
    train, test = _ds(root, "train", model), _ds(root, "test", model)
    split = contaminate(train.records, test.records, eps, seed)
    return dataclasses.replace(train, records=split.train), dataclasses.replace(test, records=split.test), split


@pytest.mark.parametrize("shuffle", [False, True], ids=["trained", "shuffled-labels"])
def test_end_to_end_separates_defects_at_10_percent_contamination(bench, shuffle):
    model = build("adl", "smoke", seed=0, shuffle_labels=shuffle, data_root=str(bench))
    train, test, split = _contaminated(bench, model, EPS)
    assert split.n_contaminating == 3 and len(train) == 35 and len(test) == 22
    assert all(int(r.label) == 0 for r in train.records)  # the model is never told which ones
    model.fit(train, device="cpu", progress=False)
    pred = model.predict(test, progress=False)
    r = evaluate(pred)
    assert pred.maps.shape == pred.masks.shape == (22, 64, 64)
    assert (
        model.iteration == 80 and model.info()["burn_in_iterations"] == 64
    )  # the smoke burn-in ends at the learning-rate step (80 %)
    if not shuffle:
        assert r["image_auroc"] >= MIN_IMAGE_AUROC, r
        # broken on purpose: the sign of the score flipped ranks the defects below the good images
        flipped = evaluate(dataclasses.replace(pred, image_scores=-pred.image_scores), pixel=False)
        assert flipped["image_auroc"] == pytest.approx(1 - r["image_auroc"]) and flipped["image_auroc"] < 0.5
        assert model.history[-1]["loss"] < model.history[0]["loss"]
        # after burn-in the weights are not uniform any more
        assert model.history[-1]["burn_in"] == 0.0 and model.history[-1]["ess_bce"] < 1.0
        # the mechanism against contamination: Eq. 10's weights of the training images as "normal"
        # (l_dev with y = 0 is |Z|) are lower for the hidden anomalies than for the clean images
        scores, _ = model.score(torch.stack([train[i].image for i in range(len(train))]))
        w = alpha_divergence_weights(deviation_loss(scores, 0, 0.0, 1.0, model.cfg.margin)).numpy()
        hidden = np.array([isinstance(rec, ContaminatedRecord) for rec in train.records])
        assert hidden.sum() == 3 and w[hidden].mean() / w[~hidden].mean() < MAX_HIDDEN_WEIGHT_RATIO
    else:
        assert r["image_auroc"] < MIN_IMAGE_AUROC, r
