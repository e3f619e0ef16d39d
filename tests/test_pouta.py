"""POUTA (and its Vanilla / DRAEM-style baseline): the equations by hand, the network's shapes and
parameter counts, configuration checks, checkpoints, determinism, and an end-to-end run on a
generated built-in category in which the disconnected discriminator (zeros instead of the
reconstructive representations) must fail.

Every expected number below is computed by hand (or by an independent formula / brute force
written here), never copied from a run of the code under test.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest
import torch
from torch import nn

import adlib.models
from adlib.data import get_dataset
from adlib.data.synth import generate_benchmark
from adlib.models import build, evaluate
from adlib.models import pouta as P
from adlib.models.pouta import (
    POUTA,
    ConvBlock,
    FeatureContrast,
    HighLevelGuidance,
    POUTAConfig,
    Vanilla,
    channel_weight_map,
    hsg_refine,
    image_score,
    learning_rate,
    mss_loss,
    parameter_count,
    prediction_loss,
    reconstruction_loss,
    semantic_supervision_loss,
    spatial_weight_map,
    total_loss,
)

CATEGORY = "wood"
#: a tiny, fast configuration for the checkpoint / determinism tests (32 px, narrow networks)
TINY = dict(
    image_size=32,
    widths=(4, 8, 8, 8),
    mapping_width=8,
    batch_size=4,
    epochs=3,
    lr=2e-3,
    lr_gamma=0.2,
    lr_milestones=(2,),
    anomaly_prob=0.5,
    score_pool=7,
)
TINY_EXTRA = {
    "pouta": dict(fcm_widths=(4, 4, 8, 8), aggregate_width=4),
    "vanilla": dict(disc_widths=(4, 4, 8, 8), disc_bottleneck=8),
}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """The built-in benchmark's wood category (benchmark seed 0, default counts: 32 train images,
    10 good + 4 x 5 defective test images), at 128 px, with the built-in textures."""
    root = tmp_path_factory.mktemp("pouta-bench")
    generate_benchmark(root, seed=0, categories=[CATEGORY], size=128, progress=False, workers=1)
    return root


def _ds(root, split, model, n=None):
    ds = get_dataset("synth", CATEGORY, split, root=root, transform=model.transform)
    return dataclasses.replace(ds, records=ds.records[:n]) if n else ds


def _tiny(root, name="pouta", **kw):
    return build(name, "smoke", **{**TINY, **TINY_EXTRA[name], "data_root": str(root), **kw})


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


# ----------------------------------------------------------------------------------------------
# Eq. 1: L_rec = MSE + (1 - SSIM)

C1 = 0.01**2  # (K1 * data_range)^2


def test_reconstruction_loss_identical_images_is_zero():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert reconstruction_loss(x.clone(), x).item() == pytest.approx(0.0, abs=1e-6)


def test_reconstruction_loss_constant_images_by_hand():
    # Constant images a and b: every Gaussian-filtered mean is the constant, the variances and the
    # covariance are 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1) * (0 + C2) / (0 + C2). (pytorch_msssim's
    # float32 Gaussian window sums to 1 only up to rounding, and its variances E[x^2] - mu^2 then
    # come out ~1e-8 instead of 0, against C2 = 9e-4: hence the 1e-4 tolerance.)
    a, b = 0.5, 0.3
    x, y = torch.full((1, 3, 32, 32), a), torch.full((1, 3, 32, 32), b)
    mse = (a - b) ** 2  # 0.04
    ssim = (2 * a * b + C1) / (a * a + b * b + C1)  # 0.3001 / 0.3401 = 0.882387...
    assert ssim == pytest.approx(0.3001 / 0.3401)
    assert reconstruction_loss(y, x).item() == pytest.approx(mse + 1 - ssim, abs=1e-4)  # 0.157612...
    # the window does not matter for constant images
    assert reconstruction_loss(y, x, ssim_window=7).item() == pytest.approx(mse + 1 - ssim, abs=1e-4)
    # the batch average: one identical pair (loss 0) and the pair above
    xb, yb = torch.cat([x, x]), torch.cat([x, y])
    assert reconstruction_loss(yb, xb).item() == pytest.approx(mse / 2 + (1 - ssim) / 2, abs=1e-4)


def test_reconstruction_loss_mse_part_of_a_constant_offset_and_the_ssim_part():
    from pytorch_msssim import ssim

    g = torch.Generator().manual_seed(1)
    x = 0.2 + 0.6 * torch.rand(2, 3, 32, 32, generator=g)
    delta = 0.1
    y = x + delta
    s = ssim(y, x, data_range=1.0, size_average=True, win_size=11).item()
    # MSE part by hand: every pixel differs by delta -> delta^2 = 0.01
    assert reconstruction_loss(y, x).item() - (1 - s) == pytest.approx(delta**2, abs=1e-6)
    # an offset only changes the luminance term: contrast/structure stay 1, SSIM < 1 but close
    assert 0.9 < s < 1.0
    # ssim_window reaches pytorch_msssim (7 differs from the default 11 on a non-constant image)
    s7 = ssim(y * 0.5, x, data_range=1.0, size_average=True, win_size=7).item()
    s11 = ssim(y * 0.5, x, data_range=1.0, size_average=True, win_size=11).item()
    assert s7 != pytest.approx(s11, abs=1e-6)
    mse = ((y * 0.5 - x) ** 2).mean().item()
    assert reconstruction_loss(y * 0.5, x, ssim_window=7).item() == pytest.approx(mse + 1 - s7, abs=1e-6)


# ----------------------------------------------------------------------------------------------
# Eq. 2-4: HSG weight maps and the refinement


def _conv1x1(cin, cout, weight, bias):
    conv = nn.Conv2d(cin, cout, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(weight, dtype=torch.float32).reshape(cout, cin, 1, 1))
        conv.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return conv


def test_spatial_weight_map_by_hand():
    # guide: 1 x 2 x 1 x 3; f_sp's 1x1 conv: weight (1, -2), bias 0.5
    guide = torch.tensor([[[[1.0, 0.0, 2.0]], [[0.5, -0.25, 1.25]]]])
    w = spatial_weight_map(guide, _conv1x1(2, 1, [1.0, -2.0], [0.5]))
    # z = 1*g0 - 2*g1 + 0.5: (1 - 1 + 0.5, 0 + 0.5 + 0.5, 2 - 2.5 + 0.5) = (0.5, 1, 0)
    expected = torch.tensor([[[[_sigmoid(0.5), _sigmoid(1.0), 0.5]]]])
    assert w.shape == (1, 1, 1, 3)
    assert torch.allclose(w, expected, atol=1e-6)
    assert w[0, 0, 0, 0].item() == pytest.approx(0.6224593, abs=1e-6)  # 1 / (1 + e^-0.5)


def test_channel_weight_map_by_hand():
    # guide 1 x 2 x 2 x 2: channel means 2.5 and 0 (global average pooling first)
    guide = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [-1.0, 1.0]]]])
    conv = _conv1x1(2, 2, [[1.0, 0.0], [1.0, 1.0]], [0.0, -1.0])
    w = channel_weight_map(guide, conv)
    # z0 = 2.5, z1 = 2.5 + 0 - 1 = 1.5
    assert w.shape == (1, 2, 1, 1)
    assert torch.allclose(w.flatten(), torch.tensor([_sigmoid(2.5), _sigmoid(1.5)]), atol=1e-6)
    # the pooling is per sample (over positions, not over the batch): a second sample with the
    # channels swapped (means 0 and 2.5) gets z = (0, 0 + 2.5 - 1)
    g2 = torch.cat([guide, guide.flip(1)])
    w2 = channel_weight_map(g2, conv)
    assert torch.allclose(w2[1].flatten(), torch.tensor([_sigmoid(0.0), _sigmoid(0.0 + 2.5 - 1.0)]), atol=1e-6)


def test_hsg_refine_broadcasts_by_hand():
    f = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]]])  # 1 x 2 x 2 x 2
    w_sp = torch.tensor([[[[0.5, 1.0], [0.0, 2.0]]]])  # 1 x 1 x 2 x 2
    w_cn = torch.tensor([[[[10.0]], [[0.1]]]])  # 1 x 2 x 1 x 1
    out = hsg_refine(f, w_sp, w_cn)
    expected = torch.tensor([[[[5.0, 20.0], [0.0, 80.0]], [[0.25, 0.6], [0.0, 1.6]]]])
    assert out.shape == (1, 2, 2, 2)
    assert torch.allclose(out, expected)
    # batches stay apart: sample 1 has its own weights
    fb = torch.cat([f, f])
    out_b = hsg_refine(fb, torch.cat([w_sp, torch.ones_like(w_sp)]), torch.cat([w_cn, torch.full_like(w_cn, 2.0)]))
    assert torch.allclose(out_b[0], expected[0]) and torch.allclose(out_b[1], 2 * f[0])


# ----------------------------------------------------------------------------------------------
# Eq. 5-8: losses


def _focal_by_hand(p: float, t: float, gamma=2.0, alpha=1.0, s=1e-5) -> float:
    # adlib.losses.focal_loss: t' = clamp(t, s, 1 - s), p_t = t' p + (1 - t')(1 - p) + s,
    # loss = -alpha (1 - p_t)^gamma log(p_t)
    t2 = min(max(t, s), 1 - s)
    pt = t2 * p + (1 - t2) * (1 - p) + s
    return -alpha * max(1 - pt, 0.0) ** gamma * math.log(pt)


P22 = torch.tensor([[[0.9, 0.2], [0.6, 0.1]]])  # 1 x 2 x 2 anomaly probabilities
M22 = torch.tensor([[[1, 0], [0, 0]]], dtype=torch.uint8)


def test_semantic_supervision_loss_2x2_by_hand():
    # textbook focal (smoothing 0, gamma 2): p_t = 0.9, 0.8, 0.4, 0.9
    #   0.01 * -ln 0.9 = 0.00105361, 0.04 * -ln 0.8 = 0.00892574, 0.36 * -ln 0.4 = 0.32986466,
    #   0.00105361 -> mean 0.08522440;  L1 = (0.1 + 0.2 + 0.6 + 0.1) / 4 = 0.25
    got = semantic_supervision_loss(P22, M22, smoothing=0.0).item()
    assert got == pytest.approx(0.08522440 + 0.25, abs=1e-6)
    # gamma 0, smoothing 0: BCE + L1 = mean(-ln 0.9, -ln 0.8, -ln 0.4, -ln 0.9) + 0.25
    bce = (2 * -math.log(0.9) - math.log(0.8) - math.log(0.4)) / 4
    assert semantic_supervision_loss(P22, M22, gamma=0.0, smoothing=0.0).item() == pytest.approx(bce + 0.25, abs=1e-6)
    # the defaults (gamma 2, alpha 1, smoothing 1e-5), pixel by pixel
    pix = [(0.9, 1), (0.2, 0), (0.6, 0), (0.1, 0)]
    focal = sum(_focal_by_hand(p, t) for p, t in pix) / 4
    assert semantic_supervision_loss(P22, M22).item() == pytest.approx(focal + 0.25, abs=1e-6)
    # alpha scales the focal part only
    assert semantic_supervision_loss(P22, M22, alpha=3.0).item() == pytest.approx(3 * focal + 0.25, abs=1e-6)
    # a perfect prediction: L1 = 0 and the focal part vanishes up to the smoothing
    perfect = semantic_supervision_loss(M22.float(), M22).item()
    assert 0.0 <= perfect < 1e-8


def test_prediction_loss_with_and_without_l1():
    focal = sum(_focal_by_hand(p, t) for p, t in [(0.9, 1), (0.2, 0), (0.6, 0), (0.1, 0)]) / 4
    assert prediction_loss(P22, M22, l1=False).item() == pytest.approx(focal, abs=1e-6)
    assert prediction_loss(P22, M22, l1=True).item() == pytest.approx(focal + 0.25, abs=1e-6)
    assert prediction_loss(P22, M22).item() == pytest.approx(focal + 0.25, abs=1e-6)  # L1 by default


def test_mss_loss_weighted_sum_and_length_check():
    ss = [torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0), torch.tensor(4.0)]
    # 4*1 + 0.3*2 + 0.2*3 + 0.1*4 = 4 + 0.6 + 0.6 + 0.4
    assert mss_loss(ss, (4.0, 0.3, 0.2, 0.1)).item() == pytest.approx(5.6)
    # the paper's literal reading (0, 4, 0.3, 0.2): 0 + 8 + 0.9 + 0.8
    assert mss_loss(ss, (0.0, 4.0, 0.3, 0.2)).item() == pytest.approx(9.7)
    # the two named readings: "decimal" 0.4 + 0.6 + 0.6 + 0.4, "as-printed" as above
    assert mss_loss(ss, P.MSS_WEIGHT_READINGS["decimal"]).item() == pytest.approx(2.0)
    assert mss_loss(ss, P.MSS_WEIGHT_READINGS["as-printed"]).item() == pytest.approx(5.6)
    with pytest.raises(ValueError):
        mss_loss(ss, (4.0, 0.3, 0.2))
    with pytest.raises(ValueError):
        mss_loss(ss[:3], (4.0, 0.3, 0.2, 0.1))


def test_mss_weight_readings_named_with_a_default_per_profile():
    """The printed "0, 4, 0.3, 0.2 and 0.1" read two ways, both named; the paper profile takes
    ``"decimal"``, the smoke profile keeps ``"as-printed"`` (its calibration)."""
    assert P.MSS_WEIGHT_READINGS == {"decimal": (0.4, 0.3, 0.2, 0.1), "as-printed": (4.0, 0.3, 0.2, 0.1)}
    for cfg in (POUTAConfig(), POUTAConfig.for_profile("paper")):
        assert (cfg.mss_weights_reading, cfg.mss_weights) == ("decimal", (0.4, 0.3, 0.2, 0.1))
    smoke = POUTAConfig.for_profile("smoke")
    assert (smoke.mss_weights_reading, smoke.mss_weights) == ("as-printed", (4.0, 0.3, 0.2, 0.1))
    # a reading alone sets the weights, in either profile
    for profile in ("paper", "smoke"):
        for name, weights in P.MSS_WEIGHT_READINGS.items():
            cfg = POUTAConfig.for_profile(profile, mss_weights_reading=name)
            assert (cfg.mss_weights_reading, cfg.mss_weights) == (name, weights)
    # weights alone are named after the reading whose weights they are, else "custom"
    assert POUTAConfig.for_profile("smoke", mss_weights=(0.4, 0.3, 0.2, 0.1)).mss_weights_reading == "decimal"
    assert POUTAConfig.for_profile("paper", mss_weights=[4, 0.3, 0.2, 0.1]).mss_weights_reading == "as-printed"
    custom = POUTAConfig.for_profile("smoke", mss_weights=(0, 4, 0.3, 0.2))
    assert (custom.mss_weights_reading, custom.mss_weights) == ("custom", (0.0, 4.0, 0.3, 0.2))
    # both, alike or not
    same = POUTAConfig.for_profile("smoke", mss_weights=(0.4, 0.3, 0.2, 0.1), mss_weights_reading="decimal")
    assert same.mss_weights_reading == "decimal"
    with pytest.raises(ValueError, match=r"mss_weights \(4.0, 0.3, 0.2, 0.1\) are not the 'decimal' reading"):
        POUTAConfig.for_profile("smoke", mss_weights=(4, 0.3, 0.2, 0.1), mss_weights_reading="decimal")
    with pytest.raises(ValueError, match="mss_weights_reading must be one of"):
        POUTAConfig.for_profile("paper", mss_weights_reading="0.4")
    with pytest.raises(ValueError, match="'custom' needs mss_weights"):
        POUTAConfig.for_profile("paper", mss_weights_reading="custom")
    # a config read back (checkpoint, record) is the same config; one written before the reading
    # existed (weights only) is named after its weights
    for cfg in (smoke, custom, POUTAConfig()):
        assert POUTAConfig(**cfg.as_dict()) == cfg
    former = {k: v for k, v in smoke.as_dict().items() if k != "mss_weights_reading"}
    assert POUTAConfig(**former) == smoke


def test_mss_weights_reading_in_the_loss_the_run_key_and_info():
    from adlib.results import Job, config_hash

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g)
    mask = (torch.rand(2, 32, 32, generator=g) > 0.8).float()
    out = {}
    for name in P.MSS_WEIGHT_READINGS:
        model = build("pouta", "smoke", image_size=32, mss_weights_reading=name)
        with torch.no_grad():
            out[name] = model.compute_losses(x, x, mask)
        info = model.info()
        assert info["mss_weights"] == {"reading": name, "lambda": list(P.MSS_WEIGHT_READINGS[name]), "used": True}
        assert info["config"]["mss_weights_reading"] == name
    a, d = out["as-printed"], out["decimal"]
    for i in range(1, 5):  # same seed, same network: the same L_SS(i) under both readings
        assert a[f"ss{i}"].item() == d[f"ss{i}"].item()
    # only lambda_1 differs: L_MSS(as-printed) - L_MSS(decimal) = (4 - 0.4) L_SS(1)
    assert a["mss"].item() - d["mss"].item() == pytest.approx(3.6 * a["ss1"].item(), rel=1e-5)
    by_hand = 0.4 * d["ss1"].item() + 0.3 * d["ss2"].item() + 0.2 * d["ss3"].item() + 0.1 * d["ss4"].item()
    assert d["mss"].item() == pytest.approx(by_hand, rel=1e-5)

    jobs = {
        "smoke": Job.make("pouta", "synth", "wood", "smoke", 0),
        "smoke decimal": Job.make("pouta", "synth", "wood", "smoke", 0, mss_weights_reading="decimal"),
        "smoke custom": Job.make("pouta", "synth", "wood", "smoke", 0, mss_weights=(0, 4, 0.3, 0.2)),
        "paper": Job.make("pouta", "synth", "wood", "paper", 0),
        "paper as-printed": Job.make("pouta", "synth", "wood", "paper", 0, mss_weights_reading="as-printed"),
    }
    hashes = {k: j.key()["config_hash"] for k, j in jobs.items()}
    assert len(set(hashes.values())) == len(hashes)
    assert jobs["smoke"].config()["mss_weights_reading"] == "as-printed"
    assert jobs["paper"].config()["mss_weights_reading"] == "decimal"
    # the smoke run key is the one of the former config (weights only, unnamed): records stay valid
    cfg = jobs["smoke"].config()
    assert config_hash(cfg) == config_hash({k: v for k, v in cfg.items() if k != "mss_weights_reading"})
    # the paper profile's default changed (decimal); asked for, the former weights hash as before
    former = jobs["paper as-printed"].config()
    assert config_hash(former) == config_hash({k: v for k, v in former.items() if k != "mss_weights_reading"})


def test_total_loss_is_the_plain_sum():
    assert total_loss(torch.tensor(1.5), torch.tensor(0.25), torch.tensor(2.0)).item() == pytest.approx(3.75)
    assert total_loss(torch.tensor(1.5), torch.tensor(0.25)).item() == pytest.approx(1.75)  # no MSS


# ----------------------------------------------------------------------------------------------
# Image score and learning rate


def _score_brute_force(heat: np.ndarray, pool: int) -> np.ndarray:
    """Max over positions of the mean of a pool x pool window, zero padding pool // 2 counted."""
    r = pool // 2
    out = []
    for h in heat:
        padded = np.zeros((h.shape[0] + 2 * r, h.shape[1] + 2 * r))
        padded[r : r + h.shape[0], r : r + h.shape[1]] = h
        best = -np.inf
        for i in range(h.shape[0]):
            for j in range(h.shape[1]):
                best = max(best, padded[i : i + pool, j : j + pool].sum() / pool**2)
        out.append(best)
    return np.array(out)


def test_image_score_by_hand_and_brute_force():
    # ones in the top-left 2x2 of a 4x4 map, pool 3: the best window holds those 4 ones out of 9
    # cells -> 4/9 (without counting the padded zeros the corner window would give 4/4 = 1)
    heat = torch.zeros(1, 4, 4)
    heat[0, :2, :2] = 1.0
    assert image_score(heat, 3).item() == pytest.approx(4 / 9, abs=1e-6)
    # pool 1 (and below): the plain maximum
    g = torch.Generator().manual_seed(0)
    h = torch.rand(3, 9, 11, generator=g)
    assert torch.equal(image_score(h, 1), h.flatten(1).amax(1))
    # brute force, including a 21x21 window wider than the map (all borders padded)
    for pool, shape in [(3, (3, 9, 11)), (5, (2, 12, 7)), (21, (2, 16, 16)), (21, (1, 40, 33))]:
        hm = torch.rand(*shape, generator=g)
        hm[0, 0, 0] = 5.0  # a corner spike: padding decides how much of it survives
        np.testing.assert_allclose(image_score(hm, pool).numpy(), _score_brute_force(hm.numpy(), pool), rtol=1e-5)
    assert POUTAConfig().score_pool == 21


def test_learning_rate_steps_of_the_paper_config():
    cfg = POUTAConfig.for_profile("paper")
    assert (cfg.lr, cfg.lr_milestones, cfg.lr_gamma, cfg.epochs, cfg.batch_size, cfg.image_size) == (
        2e-4,
        (480, 540),
        0.2,
        600,
        8,
        224,
    )
    assert learning_rate(cfg, 0) == pytest.approx(2e-4)
    assert learning_rate(cfg, 479) == pytest.approx(2e-4)
    assert learning_rate(cfg, 480) == pytest.approx(4e-5)  # 2e-4 * 0.2
    assert learning_rate(cfg, 539) == pytest.approx(4e-5)
    assert learning_rate(cfg, 540) == pytest.approx(8e-6)  # 2e-4 * 0.2^2
    assert learning_rate(cfg, 599) == pytest.approx(8e-6)


# ----------------------------------------------------------------------------------------------
# Shapes


def test_pouta_net_shapes_and_hsg_from_the_networks_own_outputs():
    widths, k = (8, 16, 32, 48), (6, 10, 12, 14)  # FCM widths differ from the encoder's on purpose
    model = build("pouta", "smoke", image_size=32, widths=widths, mapping_width=24, fcm_widths=k, aggregate_width=5)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    # train mode (batch statistics): at initialisation the eval-mode maps are ~1e-3 and differences
    # between them would hide under any absolute tolerance
    model.net.train()
    with torch.no_grad():
        out = model.forward(x)
        assert float(out["contrast"][2].abs().max()) > 0.1
    assert out["reconstruction"].shape == (2, 3, 32, 32)
    for i in range(4):
        side = 32 // 2**i
        assert out["enc"][i].shape == (2, widths[i], side, side)
        assert out["dec"][i].shape == out["enc"][i].shape  # F_Di has the shape of F_Ei
        assert out["contrast"][i].shape == (2, k[i], side, side)  # FCM output
        assert out["refined"][i].shape == (2, k[i], side, side)
    for i in range(3):
        side = 32 // 2**i
        assert out["w_sp"][i].shape == (2, 1, side, side)
        assert out["w_cn"][i].shape == (2, k[i], 1, 1)
        for w in (out["w_sp"][i], out["w_cn"][i]):
            assert float(w.min()) > 0 and float(w.max()) < 1  # sigmoids
        # Eq. 4 on the network's own maps
        assert torch.allclose(out["refined"][i], out["w_sp"][i] * out["contrast"][i] * out["w_cn"][i], atol=1e-6)
        # HSG (index i = paper's i - 1) is guided by the *refined* deeper map F'_C(i+1) (F_C4 for the last)
        with torch.no_grad():
            again = model.net.discriminative.hsg[i](out["contrast"][i], out["refined"][i + 1])
            raw = model.net.discriminative.hsg[i](out["contrast"][i], out["contrast"][i + 1])
        assert torch.allclose(again[0], out["refined"][i], atol=1e-6)
        if i < 2:  # (HSG 3, index 2 here, is guided by F_C4, which is not refined)
            assert not torch.allclose(raw[0], out["refined"][i], atol=1e-4)
    assert out["refined"][3] is out["contrast"][3]  # F_C4 is not refined
    # the heat map and the four MSS side outputs
    assert out["heat"].shape == (2, 32, 32)
    assert float(out["heat"].min()) >= 0 and float(out["heat"].max()) <= 1
    assert len(out["side"]) == 4 and all(s.shape == (2, 32, 32) for s in out["side"])
    assert all(0 <= float(s.min()) and float(s.max()) <= 1 for s in out["side"])
    # side outputs only when asked for and when MSS is on
    model.net.eval()
    with torch.no_grad():
        out = model.forward(x)
        assert model.forward(x, side=False)["side"] is None
        assert torch.allclose(model.forward(x, side=False)["heat"], out["heat"])
        assert model.heat_map(x).shape == (2, 32, 32)
        no_mss = build("pouta", "smoke", image_size=32, mss=False)
        assert no_mss.net.discriminative.side is None and no_mss.forward(x)["side"] is None
        no_hsg = build("pouta", "smoke", image_size=32, hsg=False).forward(x)
        assert no_hsg["w_sp"] == [None] * 3 and all(r is c for r, c in zip(no_hsg["refined"], no_hsg["contrast"]))


def test_pouta_losses_keys_and_sum():
    model = build("pouta", "smoke", image_size=32)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g)
    mask = (torch.rand(2, 32, 32, generator=g) > 0.8).float()
    with torch.no_grad():
        out = model.compute_losses(x, x, mask)
    assert set(out) == {"loss", "rec", "pre", "mss", "ss1", "ss2", "ss3", "ss4"}
    lam = model.cfg.mss_weights
    assert out["mss"].item() == pytest.approx(sum(l * out[f"ss{i + 1}"].item() for i, l in enumerate(lam)), rel=1e-5)
    assert out["loss"].item() == pytest.approx(out["rec"].item() + out["pre"].item() + out["mss"].item(), rel=1e-5)
    with torch.no_grad():
        base = build("pouta", "smoke", image_size=32, mss=False).compute_losses(x, x, mask)
    assert "ss1" not in base and base["mss"].item() == 0.0
    assert base["loss"].item() == pytest.approx(base["rec"].item() + base["pre"].item(), rel=1e-6)


def test_vanilla_output_shapes():
    model = build("vanilla", "smoke", image_size=32)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model.forward(x)
    assert out["reconstruction"].shape == (2, 3, 32, 32)
    assert out["heat"].shape == (2, 32, 32) and 0 <= float(out["heat"].min()) and float(out["heat"].max()) <= 1
    assert out["side"] is None
    assert [e.shape[1] for e in out["enc"]] == list(model.cfg.widths)
    mask = torch.zeros(2, 32, 32)
    with torch.no_grad():
        losses = model.compute_losses(x, x, mask)
        focal_only = build("vanilla", "smoke", image_size=32, pre_l1=False).compute_losses(x, x, mask)
    assert losses["mss"].item() == 0.0
    assert losses["loss"].item() == pytest.approx(losses["rec"].item() + losses["pre"].item(), rel=1e-6)
    # same seed, same weights: dropping L1 removes exactly mean(p) (mask all zero)
    assert losses["pre"].item() - focal_only["pre"].item() == pytest.approx(out["heat"].mean().item(), abs=1e-5)


def test_disconnected_discriminator_does_not_see_the_input():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    off = build("pouta", "smoke", image_size=32, disconnect=True)
    on = build("pouta", "smoke", image_size=32)
    assert torch.equal(off.heat_map(x), off.heat_map(y))
    assert torch.equal(off.heat_map(x)[0], off.heat_map(x)[1])
    assert not torch.allclose(on.heat_map(x), on.heat_map(y))
    # the reconstruction is untouched by the hook
    with torch.no_grad():
        assert torch.equal(off.forward(x)["reconstruction"], on.forward(x)["reconstruction"])
    assert off.info()["disconnected"] is True and on.info()["disconnected"] is False


# ----------------------------------------------------------------------------------------------
# Parameter counts


def _cb(cin, cout):  # ConvBlock: two 3x3 convs without bias, two BatchNorms (weight + bias)
    return 9 * cin * cout + 2 * cout + 9 * cout * cout + 2 * cout


def _reconstructive(c, m):
    n = sum(_cb(i, o) for i, o in zip((3,) + c[:-1], c))  # encoder
    n += _cb(c[-1], m)  # mapping layer
    n += sum(_cb(i, o) for i, o in zip((m,) + c[:0:-1], c[::-1]))  # decoder D4..D1
    return n + 3 * c[0] + 3  # I_r: 1x1 conv with bias


def _pouta_count(c, m, k, a, hsg=True, mss=True):
    n = _reconstructive(c, m)
    n += sum(2 * (ci * ki + 2 * ki) + 2 * ki * ki + 2 * ki for ci, ki in zip(c, k))  # FCMs
    if hsg:  # 3x3 conv + BN, 1x1 -> 1 (bias), 1x1 k -> k (bias)
        n += sum(9 * k[i + 1] * k[i] + 2 * k[i] + k[i] + 1 + k[i] * k[i] + k[i] for i in range(3))
    if mss:
        n += sum(2 * ki + 2 for ki in k)  # side heads
    return n + sum(ki * a for ki in k) + 2 * a + 9 * a * a + 2 * a + 2 * a + 2  # aggregation


def _unet_count(d, b):
    n = sum(_cb(i, o) for i, o in zip((6,) + d[:-1], d)) + _cb(d[-1], b)
    n += sum(_cb(x + s, s) for x, s in zip((b,) + d[:0:-1], d[::-1]))
    return n + 2 * d[0] + 2


def _docstring_table() -> dict[str, int]:
    rows = re.findall(r"^\s*(\(reconstructive net\)|POUTA[-\w+]*|Vanilla)\s+([\d,]+)\s", P.__doc__, re.M)
    return {name: int(n.replace(",", "")) for name, n in rows}


def test_small_modules_counted_by_hand():
    # ConvBlock(3, 4): 3*4*9 = 108 + BN 8 + 4*4*9 = 144 + BN 8 = 268
    assert parameter_count(ConvBlock(3, 4)) == 268
    # FeatureContrast(5, 3): two (5*3 + BN 6) = 42, fuse 6*3 + 6 = 24 -> 66
    assert parameter_count(FeatureContrast(5, 3)) == 66
    # HighLevelGuidance(4, 3): 4*3*9 + 6 = 114, to_spatial 3 + 1, to_channel 9 + 3 -> 130
    assert parameter_count(HighLevelGuidance(4, 3)) == 130
    # a whole tiny POUTA against the formula
    m = build("pouta", "smoke", widths=(2, 3, 4, 5), mapping_width=6, fcm_widths=(2, 2, 3, 3), aggregate_width=2)
    assert parameter_count(m) == _pouta_count((2, 3, 4, 5), 6, (2, 2, 3, 3), 2)


def test_parameter_counts_at_the_paper_profile():
    table = _docstring_table()
    assert set(table) == {"POUTA", "POUTA-base+HSG", "POUTA-base+MSS", "POUTA-base", "Vanilla", "(reconstructive net)"}
    c, k = (56, 112, 224, 448), (56, 112, 224, 448)
    for hsg, mss in [(True, True), (True, False), (False, True), (False, False)]:
        model = build("pouta", "paper", hsg=hsg, mss=mss)
        n = parameter_count(model)
        assert n == _pouta_count(c, 448, k, 64, hsg, mss), (hsg, mss)
        assert n == table[model.ablation], model.ablation
        assert P.parameter_counts(model)["reconstructive"] == _reconstructive(c, 448) == table["(reconstructive net)"]
        if hsg and mss:
            assert abs(n / 15.02e6 - 1) < 0.02
    vanilla = build("vanilla", "paper")
    n = parameter_count(vanilla)
    assert n == _reconstructive(c, 448) + _unet_count(vanilla.cfg.disc_widths, vanilla.cfg.disc_bottleneck)
    assert n == table["Vanilla"]
    assert abs(n / 28.68e6 - 1) < 0.02
    assert P.PAPER_PARAMETERS == {"pouta": 15.02e6, "vanilla": 28.68e6}
    # the counts do not depend on the image size
    assert parameter_count(build("pouta", "paper", image_size=64)) == table["POUTA"]


# ----------------------------------------------------------------------------------------------
# Configuration checks and ablation names


def test_config_validation_errors():
    with pytest.raises(ValueError, match="multiple of 16"):
        build("pouta", "smoke", image_size=40)
    with pytest.raises(ValueError, match="multiple of 16"):
        build("vanilla", "smoke", image_size=8)
    with pytest.raises(ValueError, match="mss_weights"):
        build("pouta", "smoke", mss_weights=(0, 4, 0.3, 0.2, 0.1))  # the paper's five printed values
    with pytest.raises(ValueError, match="mss_weights"):
        build("pouta", "smoke", mss_weights=(4, 0.3, 0.2))
    with pytest.raises(ValueError, match="synthesis"):
        build("pouta", "smoke", synthesis="no-such-preset")
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="anomaly_prob"):
            build("pouta", "smoke", anomaly_prob=bad)
    with pytest.raises(ValueError, match="unknown"):
        build("pouta", "smoke", no_such_field=1)
    with pytest.raises(TypeError):
        POUTA(P.VanillaConfig())
    # valid edge values
    assert build("pouta", "smoke", image_size=16, anomaly_prob=0.0).cfg.image_size == 16
    assert build("pouta", "smoke", mss_weights=(0, 4, 0.3, 0.2)).cfg.mss_weights == (0.0, 4.0, 0.3, 0.2)


def test_ablation_names_and_registry():
    names = {
        (True, True): "POUTA",
        (True, False): "POUTA-base+HSG",
        (False, True): "POUTA-base+MSS",
        (False, False): "POUTA-base",
    }
    for (hsg, mss), name in names.items():
        model = POUTA(POUTAConfig.for_profile("smoke", hsg=hsg, mss=mss))
        assert model.ablation == name
        assert model.info()["ablation"] == name and model.info()["modules"] == {"fcm": True, "hsg": hsg, "mss": mss}
        assert (model.net.discriminative.hsg is None) == (not hsg)
        assert (model.net.discriminative.side is None) == (not mss)
    assert adlib.models.MODELS["pouta"] is POUTA and adlib.models.MODELS["vanilla"] is Vanilla
    assert build("vanilla", "smoke").info()["ablation"] == "Vanilla"


# ----------------------------------------------------------------------------------------------
# Checkpoints and determinism


def _weights_equal(a, b) -> bool:
    sa, sb = a.net.state_dict(), b.net.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _losses(model):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in model.history]


def test_save_load_roundtrip_gives_identical_heat_maps(bench, tmp_path):
    model = _tiny(bench, epochs=1)
    train = _ds(bench, "train", model, 8)
    model.fit(train, device="cpu", progress=False)
    path = model.save(tmp_path / "m.pt")
    assert not list(tmp_path.glob(".*.tmp"))
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state["name"] == "pouta" and state["epoch"] == 1 and set(state["rng"]) == {"shuffle", "synthesis"}
    images = torch.stack([train[i].image for i in range(4)])
    for loaded in (POUTA.load(path), adlib.models.load(path)):
        assert isinstance(loaded, POUTA) and loaded.cfg == model.cfg and loaded.epoch == 1
        assert _weights_equal(model, loaded)
        assert torch.equal(model.heat_map(images), loaded.heat_map(images))
        assert _losses(loaded) == _losses(model)
    # a Vanilla checkpoint is not a POUTA one, neither to load nor to resume from
    van = _tiny(bench, "vanilla", epochs=1)
    vpath = van.save(tmp_path / "v" / "last.pt")
    with pytest.raises(ValueError, match="vanilla"):
        POUTA.load(vpath)
    with pytest.raises(ValueError, match="vanilla"):
        _tiny(bench).fit(train, device="cpu", progress=False, checkpoint_dir=vpath.parent)
    assert isinstance(Vanilla.load(vpath), Vanilla)


def test_resumed_fit_equals_an_uninterrupted_fit(bench, tmp_path):
    # 3 epochs with the learning-rate step at epoch index 2: the resumed epoch must use it too
    ref = _tiny(bench)
    train = _ds(bench, "train", ref, 8)
    ref.fit(train, device="cpu", progress=False)

    first = _tiny(bench, epochs=2)
    first.fit(train, device="cpu", progress=False, checkpoint_dir=tmp_path)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 2
    resumed = _tiny(bench)  # a fresh process would build exactly this
    resumed.fit(train, device="cpu", progress=False, checkpoint_dir=tmp_path)

    assert resumed.epoch == ref.epoch == 3
    assert _losses(resumed) == _losses(ref)
    assert [h["lr"] for h in ref.history] == pytest.approx([2e-3, 2e-3, 4e-4])
    assert _weights_equal(resumed, ref)
    for k, g in ref.generators.items():
        assert torch.equal(g.get_state(), resumed.generators[k].get_state()), k
    # the optimiser state too (one more step would otherwise diverge)
    oa, ob = ref.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert oa.keys() == ob.keys() and all(torch.equal(oa[i]["exp_avg_sq"], ob[i]["exp_avg_sq"]) for i in oa)
    # another configuration may not resume from it
    with pytest.raises(ValueError, match="differs"):
        _tiny(bench, lr=1e-3).fit(train, device="cpu", progress=False, checkpoint_dir=tmp_path)


def test_same_seed_same_history(bench):
    runs = []
    for seed in (0, 0, 1):
        m = _tiny(bench, epochs=1, seed=seed)
        m.fit(_ds(bench, "train", m, 8), device="cpu", progress=False)
        runs.append(m)
    assert _losses(runs[0]) == _losses(runs[1]) and _weights_equal(runs[0], runs[1])
    assert _losses(runs[0]) != _losses(runs[2])  # the seed matters (init, shuffling, synthesis)
    assert set(_losses(runs[0])[0]) == {"epoch", "loss", "rec", "pre", "mss", "ss1", "ss2", "ss3", "ss4", "lr"}


# ----------------------------------------------------------------------------------------------
# End to end: POUTA separates the defects of a built-in category, the disconnected one cannot

#: The smoke profile's networks at 64 px (all set here, so a change of the profile does not move
#: this test), 10 epochs of the 32 wood training images in batches of 4 (80 Adam steps), lr 2e-3
#: x0.2 at epochs 7 and 9, every training image made a synthetic anomaly (``anomaly_prob=1``: with
#: DRAEM's 0.5 the discriminator needs about twice the steps; at 0.5, 12 epochs, 6 seeds gave pixel
#: AUROC 0.79 - 0.96 but also collapsed runs at lower learning rates / fewer steps).
SEPARATION = dict(
    image_size=64,
    widths=(8, 16, 32, 48),
    mapping_width=48,
    fcm_widths=(8, 16, 32, 48),
    aggregate_width=16,
    epochs=10,
    batch_size=4,
    lr=2e-3,
    lr_gamma=0.2,
    lr_milestones=(7, 9),
    anomaly_prob=1.0,
    score_pool=7,
    bn_recalibration=0,
    seed=0,
)
#: Calibration (synth/wood, benchmark seed 0 at 128 px, 1 torch thread), training seeds 0 - 15:
#:   connected:    pixel AUROC 0.97 0.92 0.96 0.96 0.98 0.95 0.96 0.92 0.91 0.86 0.95 0.88 0.96 0.85 0.92 0.67
#:                 image AUROC 0.84 0.80 0.80 0.85 0.89 0.77 0.91 0.87 0.74 0.83 0.95 0.94 0.91 0.53 0.88 0.65
#:   disconnected: pixel AUROC 0.50 and image AUROC 0.50 for every seed (0 - 7): with zeros in place
#:                 of F_Ei / F_Di the heat map is the same for every test image.
#: The test runs seed 0 (0.97 / 0.84); 14 of the 16 seeds pass both thresholds (seed 13: image
#: 0.53, seed 15: pixel 0.67). Broken on purpose (seed 0): labels flipped in L_pre and L_SS give
#: image 0.81 but pixel 0.03 (so the image threshold alone would not do); a "disconnect" that
#: zeroes only F_Di and lets F_Ei through separates (0.945 / 0.982) and fails the second case.
MIN_PIXEL_AUROC, MIN_IMAGE_AUROC = 0.80, 0.65


def _separates(r: dict) -> bool:
    return r["pixel_auroc"] >= MIN_PIXEL_AUROC and r["image_auroc"] >= MIN_IMAGE_AUROC


@pytest.mark.parametrize("disconnect", [False, True], ids=["connected", "disconnected"])
def test_end_to_end_separates_defects_only_when_connected(bench, disconnect):
    model = build("pouta", "smoke", **SEPARATION, disconnect=disconnect, data_root=str(bench))
    model.fit(_ds(bench, "train", model), device="cpu", progress=False)
    test = _ds(bench, "test", model)
    pred = model.predict(test, progress=False)
    r = evaluate(pred)
    assert pred.maps.shape == pred.masks.shape == (len(test), 64, 64)  # masks follow the transform
    assert len(model.history) == 10 and model.info()["epochs_trained"] == 10
    if not disconnect:
        assert _separates(r), r
        assert model.history[-1]["loss"] < model.history[0]["loss"]
    else:
        assert not _separates(r), r
        # the discriminator sees nothing of the image: one score for every test image
        assert np.ptp(pred.image_scores) == 0.0 and r["image_auroc"] == 0.5
