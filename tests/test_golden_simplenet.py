"""adlib's SimpleNet components against numbers from the authors' released code (DonaldRR/SimpleNet).

The fixtures ``tests/golden/simplenet_*.npz`` (provenance in ``simplenet_reference.json``) are
written by ``tools/golden/make_simplenet.py`` from an unmodified checkout; these tests need only the
fixtures. adlib's ``SimpleNet`` gets the reference's inputs and weights (the released options of
``run.sh``: one-layer projection, discriminator Linear-BN-LeakyReLU-Linear without sigmoid,
truncated l1 with margin 0.5, noise std 0.015; Adam for the discriminator with weight decay 1e-5,
AdamW for the projection at 1e-4).

Tolerance: ``max |adlib - reference| <= 1e-5 * max(1, max |reference|)`` (float32 round-off) unless
stated; the measured max differences (adlib's pinned numerics, torch 2.14.1 CPU) are in the
comments. Each group has a negative control that must differ.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _golden_gs import (
    StubBackbone,
    adaptor_state,
    assert_matches,
    differs,
    discriminator_state,
    load,
    reference_record,
    t,
)

import adlib.models.glass as glass_mod
from adlib import losses
from adlib.models.features import PatchFeatures
from adlib.models.glass import Discriminator, SimpleNet, SimpleNetConfig, image_score, smooth_map

REF = reference_record("simplenet_reference.json")
SET = REF["settings"]
D, PRE, HIDDEN = SET["target_embed_dimension"], SET["pretrain_embed_dimension"], SET["dsc_hidden"]


def _features(z: dict) -> PatchFeatures:
    maps = {"image": {k: t(z["image_" + k]) for k in ("layer2", "layer3")}}
    return PatchFeatures(StubBackbone(maps), patch_size=3, pretrain_embed_dim=PRE, target_embed_dim=D)


def _model(z: dict, prefix: str = "") -> SimpleNet:
    cfg = SimpleNetConfig(
        backbone="resnet18",
        pretrained=False,
        layers=("layer2", "layer3"),
        patch_size=3,
        pretrain_embed_dim=PRE,
        target_embed_dim=D,
        dsc_hidden=HIDDEN,
        resize=SET["step_image_size"],
        crop=SET["step_image_size"],
        batch_size=2,
        epochs=1,
        noise_std=0.015,
        th_pos=0.5,
        th_neg=-0.5,
        adaptor_lr=1e-4,
        adaptor_weight_decay=None,
        dsc_lr=2e-4,
        dsc_weight_decay=1e-5,
    )
    model = SimpleNet(cfg)
    model.features = _features(z)
    model.adaptor.load_state_dict(adaptor_state(z, prefix + "proj."))
    model.discriminator.load_state_dict(discriminator_state(z, prefix + "dsc.", tail="tail.weight"))
    return model


def _zeros() -> torch.Tensor:
    return torch.zeros(2, 3, SET["step_image_size"], SET["step_image_size"])


def _same_noise(monkeypatch, z: dict) -> None:
    """adlib's noise is the reference's (``q- - q``, drawn by its global RNG), added to adlib's ``q``."""
    noise = t(z["q_minus"]) - t(z["q"])
    monkeypatch.setattr(glass_mod, "gaussian_noise", lambda q, std=0.015, generator=None, mean=0.0: q + noise)


def test_patch_embedding_matches_released():
    z = load("simplenet_patch_embed.npz")
    maps = {"image": {"layer2": t(z["layer2"]), "layer3": t(z["layer3"])}}
    pf = PatchFeatures(StubBackbone(maps), patch_size=3, pretrain_embed_dim=PRE, target_embed_dim=D)
    out = pf(torch.zeros(2, 3, 8, 8))
    assert tuple(out.shape[1:3]) == tuple(z["patch_shapes"][0])
    # measured max difference: 2.4e-7 (values up to 1.4)
    assert_matches(out.reshape(-1, D), z["embedding"], what="patch embedding")
    wrong = PatchFeatures(StubBackbone(maps), patch_size=1, pretrain_embed_dim=PRE, target_embed_dim=D)
    assert differs(wrong(torch.zeros(2, 3, 8, 8)).reshape(-1, D), z["embedding"])


def test_projection_and_discriminator_scores_match_released():
    z = load("simplenet_step.npz")
    model = _model(z)
    q = model.adaptor(model.patch_features(_zeros()).reshape(-1, D))
    # measured max difference: 2.4e-7
    assert_matches(q, z["q"], what="projection output")
    model.discriminator.train()
    x = torch.cat([t(z["q"]), t(z["q_minus"])])
    # measured max difference: 1.9e-6 (normality scores up to 2.6: relative 7e-7)
    assert_matches(model.discriminator(x), z["scores"][:, 0], what="discriminator scores (train mode)")
    d = Discriminator(D, HIDDEN, sigmoid=True)  # negative control: GLASS's head
    d.load_state_dict(model.discriminator.state_dict())
    d.train()
    assert differs(d(x), z["scores"][:, 0])


def test_noise_std_matches_released():
    z = load("simplenet_step.npz")
    noise = z["q_minus"] - z["q"]
    assert abs(float(noise.mean())) < 3 * 0.015 / np.sqrt(noise.size)
    assert abs(float(noise.std()) / 0.015 - 1) < 0.05


def test_truncated_l1_matches_released():
    z = load("simplenet_step.npz")
    s = t(z["scores"][:, 0])
    n = len(s) // 2
    # measured max difference: 0
    assert_matches(losses.truncated_l1(s[:n], s[n:], 0.5, -0.5), z["loss"], what="truncated l1")
    assert differs(losses.truncated_l1(s[:n], s[n:], 0.8, -0.8), z["loss"])  # main.py's default margin 0.8
    assert differs(losses.truncated_l1(s[n:], s[:n], 0.5, -0.5), z["loss"])


def test_training_step_loss_matches_released(monkeypatch):
    z = load("simplenet_step.npz")
    model = _model(z)
    _same_noise(monkeypatch, z)
    model.train()
    out = model.compute_losses(model.patch_features(_zeros()))
    # measured max difference: 0 (loss 1.44)
    assert_matches(out["loss"], z["loss"], what="SimpleNet loss")


def test_training_step_update_matches_released(monkeypatch):
    """One optimiser step: weights and BatchNorm running statistics after it equal the reference's.
    As for GLASS (tests/test_golden_glass.py), parameters whose exact gradient is 0 (the Linear bias
    before BatchNorm; the projection bias, which shifts both halves of the one discriminator batch
    alike) move by a round-off-determined amount under Adam's first step; they are excluded and
    their gradients shown to be round-off."""
    z = load("simplenet_step.npz")
    model = _model(z)
    _same_noise(monkeypatch, z)
    model.train()
    out = model.compute_losses(model.patch_features(_zeros()))
    model.opt_adaptor.zero_grad(set_to_none=True)
    model.opt_dsc.zero_grad(set_to_none=True)
    out["loss"].backward()
    grads = {("adaptor", k): p.grad.clone() for k, p in model.adaptor.named_parameters()}
    grads.update({("discriminator", k): p.grad.clone() for k, p in model.discriminator.named_parameters()})
    model.opt_adaptor.step()
    model.opt_dsc.step()
    ref = {
        "adaptor": adaptor_state(z, "after.proj."),
        "discriminator": discriminator_state(z, "after.dsc.", tail="tail.weight"),
    }
    zero_grad = {("discriminator", "body.0.bias"), ("adaptor", "linear.bias")}
    for part, module in (("adaptor", model.adaptor), ("discriminator", model.discriminator)):
        for k, v in module.state_dict().items():
            expected = ref[part][k].to(v.dtype)
            g = grads.get((part, k))
            if g is None:
                # measured max difference: 2.2e-8 (BatchNorm running statistics)
                assert_matches(v.float(), expected.float(), what=f"{part} {k} after one step")
            elif (part, k) in zero_grad:
                assert float(g.abs().max()) < 1e-5, f"{part} {k}: expected a round-off gradient"
            else:
                ok = g.abs() > 1e-6
                assert float(ok.float().mean()) > 0.99
                # measured max difference: 3.7e-9 (adaptor weight), 7.5e-9 (discriminator); a step is about 1e-4
                assert_matches(v[ok], expected[ok], rel=1e-6, what=f"{part} {k} after one step")
    assert differs(t(z["dsc.body.block1.0.weight"]), ref["discriminator"]["body.0.weight"], rel=1e-6)


def test_prediction_matches_released():
    z = load("simplenet_step.npz")
    model = _model(z, prefix="after.")
    grid = model.score_grid(_zeros())
    # the reference's anomaly score is -D (eval mode, the running statistics after the step)
    # measured max difference: 1.5e-7; image scores 6e-8
    assert_matches(grid.reshape(-1), -z["eval_scores"][:, 0], what="anomaly score map")
    assert_matches(image_score(grid), z["image_scores"], what="image scores")
    # measured max difference: 1.2e-7
    assert_matches(smooth_map(grid, (32, 32), sigma=4.0), z["masks"], what="pixel maps")
    assert differs(image_score(-grid), z["image_scores"])


@pytest.mark.parametrize("case", ["square", "rect"])
def test_map_postprocessing_matches_released(case):
    z = load("simplenet_postprocess.npz")
    scores = t(z[f"{case}_scores"])
    size = tuple(z[f"{case}_masks"].shape[-2:])
    # measured max difference: 0
    assert_matches(smooth_map(scores, size, sigma=4.0), z[f"{case}_masks"], what="smoothed map")
    assert_matches(image_score(scores), z[f"{case}_image_scores"], what="image score")
    assert differs(smooth_map(scores, size, sigma=0.0), z[f"{case}_masks"])
    nearest = F.interpolate(scores[:, None], size=size, mode="nearest")[:, 0]
    assert differs(smooth_map(nearest, size, sigma=4.0), z[f"{case}_masks"])
