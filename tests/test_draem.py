"""DRAEM (adlib.models.draem): the equations by hand, the networks' shapes and names, the schedule,
the training samples, the options recorded in the run key, save/load, and a short training that
separates a simple anomaly. The comparisons with the released code are in
``tests/test_golden_draem_model.py``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import adlib.models as M
from adlib.data import get_dataset
from adlib.metrics import pixel_auroc
from adlib.models import build, load
from adlib.models import draem as D
from adlib.results import Job, config_hash

#: a tiny DRAEM (32 px, base widths 4), trained for a few steps in the tests below
TINY = dict(image_size=32, rec_width=4, seg_width=4, batch_size=4, epochs=2, lr=2e-3, score_pool=7, bn_recalibration=2)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------
# Equations


def test_gaussian_window_and_ssim_by_hand():
    w = D.gaussian_window(11, 1.5)
    assert w.shape == (11, 11) and float(w.sum()) == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(w, w.T) and int(w.argmax()) == 5 * 11 + 5
    g1 = math.exp(-1 / (2 * 1.5**2))  # neighbour / centre of the 1-D Gaussian
    assert float(w[5, 6] / w[5, 5]) == pytest.approx(g1, rel=1e-6)
    x = torch.rand(2, 3, 16, 16, generator=gen(0))
    assert float(D.ssim_loss(x, x)) == pytest.approx(0.0, abs=1e-6)  # SSIM(I, I) = 1 everywhere
    # constant images a, b (unit range): zero padding makes the border windows see the zeros, but
    # in the interior (window inside) SSIM = (2ab + C1) / (a^2 + b^2 + C1) (no variance)
    a, b = torch.full((1, 1, 24, 24), 0.6), torch.full((1, 1, 24, 24), 0.3)
    c1 = 0.01**2
    m = D.ssim_map(a, b)
    # (float32 round-off leaves variances of about 1e-8 beside C2 = 9e-4: rel 2e-4)
    assert float(m[0, 0, 12, 12]) == pytest.approx((2 * 0.18 + c1) / (0.36 + 0.09 + c1), rel=2e-4)
    assert float(m[0, 0, 0, 0]) != pytest.approx(float(m[0, 0, 12, 12]), rel=1e-3)  # the padded border
    # Eq. 1 and Eq. 3 by hand
    rec = x + 0.1
    total, l2, ls = D.reconstruction_loss(rec, x, ssim_weight=0.5, parts=True)
    assert float(l2) == pytest.approx(0.01, rel=1e-5)
    assert float(total) == pytest.approx(float(l2) + 0.5 * float(ls), rel=1e-6)
    assert float(D.total_loss(torch.tensor(1.5), torch.tensor(0.25))) == 1.75


def test_released_ssim_range_by_hand():
    assert D.released_ssim_range(torch.tensor([0.0, 1.0])) == 1.0
    assert D.released_ssim_range(torch.tensor([-0.6, 1.0])) == 2.0  # below -0.5: lower bound -1
    assert D.released_ssim_range(torch.tensor([-0.5, 128.0])) == 1.0  # the bounds are strict
    assert D.released_ssim_range(torch.tensor([0.0, 128.5])) == 255.0
    assert D.released_ssim_range(torch.tensor([-0.51, 200.0])) == 256.0
    with pytest.raises(ValueError, match="ssim_range"):
        D.ssim_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), ssim_range="dynamic")


def test_segmentation_loss_by_hand():
    # p_t = t' p_1 + (1 - t') p_0 + 1e-5 with t' = clamp(t, 1e-5, 1 - 1e-5); loss -(1 - p_t)^2 log p_t
    probs = torch.tensor([0.1, 0.9]).reshape(1, 2, 1, 1)  # p(anomaly) = 0.9
    for t in (0.0, 1.0):
        tc = min(max(t, 1e-5), 1 - 1e-5)
        pt = tc * 0.9 + (1 - tc) * 0.1 + 1e-5
        want = -((1 - pt) ** 2) * math.log(pt)
        assert float(D.segmentation_loss(probs, torch.tensor([[[t]]]))) == pytest.approx(want, rel=1e-5)


def test_image_score_is_the_21x21_mean_filter_maximum():
    heat = torch.zeros(2, 32, 32)
    heat[0, 10:15, 10:15] = 1.0  # 25 ones inside one 21x21 window
    heat[1, 0, 0] = 1.0  # a corner: zero padding counted
    s = D.image_score(heat, 21)
    assert s.tolist() == pytest.approx([25 / 441, 1 / 441])


def test_paper_profile_is_the_released_recipe():
    cfg = D.DraemConfig.for_profile("paper")
    assert {k: getattr(cfg, k) for k in D.RELEASED} == D.RELEASED
    assert D.RELEASED == {
        "lr": 1e-4,
        "epochs": 700,
        "batch_size": 8,
        "lr_milestones": (0.8, 0.9),
        "lr_gamma": 0.2,
        "image_size": 256,
    }  # fmt: skip  (train_DRAEM.py and the README's command)
    assert (cfg.rec_width, cfg.seg_width, cfg.score_pool, cfg.ssim_window, cfg.anomaly_prob) == (128, 64, 21, 11, 0.5)
    assert (cfg.synthesis, cfg.ssim_range, cfg.epoch_sampling, cfg.init, cfg.bn_recalibration) == (
        "draem_released", "released", "replacement", "released", 0
    )  # fmt: skip


def test_learning_rate_schedule_released_multisteplr():
    cfg = D.DraemConfig.for_profile("paper")
    assert [D.learning_rate(cfg, e) for e in (0, 559, 560, 629, 630, 699)] == pytest.approx(
        [1e-4, 1e-4, 2e-5, 2e-5, 4e-6, 4e-6]
    )
    # released MultiStepLR matches float milestones against integer epochs: 0.8 * 13 = 10.4 never is
    odd = D.DraemConfig.for_profile("paper", epochs=13)
    assert {D.learning_rate(odd, e) for e in range(13)} == {1e-4}  # and 0.9 * 13 = 11.7...: no step at all
    smoke = D.DraemConfig.for_profile("smoke")
    lrs = [D.learning_rate(smoke, e) for e in range(smoke.epochs)]
    assert lrs.index(min(lrs)) == int(0.9 * smoke.epochs) and lrs[int(0.8 * smoke.epochs)] == pytest.approx(
        smoke.lr * 0.2
    )
    with pytest.raises(ValueError, match="lr_milestones"):
        D.DraemConfig.for_profile("paper", lr_milestones=(560,))


# ----------------------------------------------------------------------------------------------
# Networks


def test_networks_shapes_and_released_names():
    net = D.DraemNet(4, 4)
    out = net.eval()(torch.rand(2, 3, 64, 64, generator=gen(0)))
    assert out["reconstruction"].shape == (2, 3, 64, 64) and out["probs"].shape == (2, 2, 64, 64)
    assert torch.allclose(out["probs"].sum(1), torch.ones(2, 64, 64)) and torch.equal(out["heat"], out["probs"][:, 1])
    keys = set(net.state_dict())
    for k in (
        "reconstructive.encoder.block5.3.weight",
        "reconstructive.decoder.db4.4.running_var",
        "reconstructive.decoder.fin_out.0.bias",
        "discriminative.encoder_segment.block6.0.weight",
        "discriminative.decoder_segment.up_b.1.weight",
        "discriminative.decoder_segment.db_b.0.weight",
    ):
        assert k in keys, k
    # discriminative input: 6 channels (I_r, I); U-Net concatenations: db_b sees 16 w, db4 2 w
    assert net.discriminative.encoder_segment.block1[0].in_channels == 6
    assert net.discriminative.decoder_segment.db_b[0].in_channels == 16 * 4
    assert net.discriminative.decoder_segment.db4[0].in_channels == 2 * 4
    # released initialisation: conv weights N(0, 0.02), BatchNorm weights N(1, 0.02), biases 0
    big = D.DraemNet(16, 16).requires_grad_(False)
    convs = torch.cat([m.weight.flatten() for m in big.modules() if isinstance(m, torch.nn.Conv2d)])
    bns = [m for m in big.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert float(convs.std()) == pytest.approx(0.02, rel=0.05) and abs(float(convs.mean())) < 1e-3
    assert all(float(b.bias.abs().max()) == 0 for b in bns)
    assert float(torch.cat([b.weight for b in bns]).mean()) == pytest.approx(1.0, abs=0.01)
    with pytest.raises(ValueError, match="init"):
        D.DraemNet(4, 4, init="xavier")


def test_config_validation_names_the_field():
    for field, bad in (
        ("image_size", 48),
        ("init", "xavier"),
        ("ssim_range", "auto"),
        ("ssim_window", 10),
        ("epoch_sampling", "shuffle"),
        ("anomaly_prob", 1.5),
        ("score_pool", 4),
        ("synthesis", "adl_released"),
    ):
        with pytest.raises(ValueError, match=field):
            build("draem", "smoke", **{field: bad})


def test_every_option_is_in_the_run_key():
    base = Job.make("draem", "synth", "wood", "paper", 0)
    seen = {base.key()["config_hash"]}
    for field, value in (
        ("synthesis", "draem_paper"),
        ("ssim_range", "unit"),
        ("ssim_weight", 2.0),
        ("epoch_sampling", "permutation"),
        ("init", "pytorch"),
        ("anomaly_prob", 1.0),
    ):
        h = Job.make("draem", "synth", "wood", "paper", 0, **{field: value}).key()["config_hash"]
        assert h not in seen, field
        seen.add(h)
    model = build("draem", "smoke")
    info = model.info()
    assert info["config"]["synthesis"] == "draem_released" and info["config"]["ssim_range"] == "released"
    assert info["parameters"] == D.parameter_counts(model) and info["parameters"]["total"] == sum(
        p.numel() for p in model.network.parameters()
    )
    assert config_hash(info["config"]) == Job.make("draem", "synth", "wood", "smoke", 0).key()["config_hash"]


def test_registered_with_its_display_name():
    assert M.MODELS["draem"] is D.Draem and "draem" in M.available_names()
    assert M.display_name("draem") == "DRAEM"


# ----------------------------------------------------------------------------------------------
# Training samples


def _model(bench, **kw):
    return build("draem", "smoke", **{**TINY, "data_root": str(bench), **kw})


def test_training_samples_follow_the_released_generator(benchmark):
    model = _model(benchmark, anomaly_prob=0.5)
    images = torch.rand(64, 3, 32, 32, generator=gen(1))
    x_in, target, mask = model.synthesize(images, gen(2))
    assert x_in.shape == target.shape == images.shape and mask.shape == (64, 32, 32)
    rotated = [not torch.equal(t, i) for t, i in zip(target, images)]
    assert 5 <= sum(rotated) <= 35  # p = 0.3: the target is the rotated image
    normal = ~mask.flatten(1).any(1)
    assert 15 <= int(normal.sum()) <= 50  # p = 0.5 normal, plus the rare empty masks
    assert all(torch.equal(x_in[i], target[i]) for i in torch.nonzero(normal).flatten())  # unchanged when normal
    for i in torch.nonzero(~normal).flatten():  # outside the mask the input is the target
        outside = mask[i] == 0
        assert torch.equal(x_in[i][:, outside], target[i][:, outside])
        assert not torch.equal(x_in[i], target[i])
    always = _model(benchmark, anomaly_prob=1.0).synthesize(images, gen(2))[2]
    assert int((~always.flatten(1).any(1)).sum()) <= 8  # only empty Perlin masks stay normal


def test_epoch_sampling():
    model = build("draem", "smoke", batch_size=8)
    batches = model.epoch_batches(30)
    assert [len(b) for b in batches] == [8, 8, 8, 6]  # ceil(N / 8) steps, the last one shorter
    drawn = torch.cat(batches)
    assert len(set(drawn.tolist())) < 30  # with replacement (released): repeats
    perm = build("draem", "smoke", batch_size=8, epoch_sampling="permutation").epoch_batches(30)
    assert sorted(torch.cat(perm).tolist()) == list(range(30))


# ----------------------------------------------------------------------------------------------
# Lifecycle and a short training


def test_short_training_localises_synthetic_anomalies_and_round_trips(benchmark, tmp_path):
    """50 Adam steps of a narrow DRAEM (64 px, widths 4, batch 8 of synth/wood training images made
    anomalous by DRAEM's generator) localise held-out synthetic anomalies: pixel AUROC of the
    anomaly map against their masks from 0.5 (flat map at the released initialisation) to 0.83-0.96
    (seeds 0-2; 0.75 required). A broken loss, channel or input wiring stays near 0.5. Saved and
    loaded, the model predicts the same. About 5 s."""
    model = _model(benchmark, image_size=64, batch_size=8)
    train = get_dataset("synth", "wood", "train", root=benchmark, transform=model.transform)
    images = torch.stack([train[i].image for i in range(len(train))])
    x_in, _, mask = model.synthesize(images, generator=gen(999))  # held out: not a training draw
    with torch.no_grad():
        before = model.net.eval()(x_in)["heat"]
    g = gen(100)
    for _ in range(50):
        idx = torch.randint(len(images), (8,), generator=g)
        model.train_step(*model.synthesize(images[idx], generator=g))
    model.recalibrate_batchnorm(images)
    with torch.no_grad():
        after = model.net.eval()(x_in)["heat"]
    m = mask.numpy().astype(np.uint8)
    assert m.any() and abs(pixel_auroc(m, before.numpy()) - 0.5) < 0.1
    assert pixel_auroc(m, after.numpy()) >= 0.75

    test = get_dataset("synth", "wood", "test", root=benchmark, transform=model.transform)
    pred = model.predict(test, progress=False)
    again = load(model.save(tmp_path / "draem.pt"))
    assert isinstance(again, D.Draem) and again.cfg == model.cfg
    np.testing.assert_array_equal(again.predict(test, progress=False).image_scores, pred.image_scores)
    np.testing.assert_array_equal(again.predict(test, progress=False).maps, pred.maps)
    assert again.info()["texture_source"] == model.info()["texture_source"] is not None


def test_adl_draem_column_is_the_official_draem():
    from adlib.papers import adl as paper

    assert paper.TRAINED["DRAEM"] == ("draem", {}) == paper.STUDY_METHODS["DRAEM"]
    assert ("DRAEM", "DRAEM", "DRAEM") in paper.TABLE1_METHODS  # the reported "DRAEM" rows beside ours
    trained = {m for m, _ in [*paper.TRAINED.values(), *paper.STUDY_METHODS.values()]}
    assert "vanilla" not in trained and "draem" in trained
    assert "official DRAEM" in paper.DRAEM_VANILLA_NOTE and "smoke" in paper.DRAEM_VANILLA_NOTE
