"""adlib's GLASS components against numbers from the authors' released code (cqylunlun/GLASS).

The fixtures ``tests/golden/glass_*.npz`` (provenance in ``glass_reference.json``) are written by
``tools/golden/make_glass.py`` from an unmodified checkout; these tests need only the fixtures.
Each test hands adlib's module the inputs and weights the reference used and compares the outputs.
adlib is set to the released options explicitly (manifold radii ``"released"``, centre per
position, OHEM 0.5, focal gamma 2 / smoothing 1e-5, AdamW for the discriminator).

Tolerance: ``max |adlib - reference| <= 1e-5 * max(1, max |reference|)`` (float32 round-off) unless
stated. The measured max differences (adlib's pinned numerics, torch 2.14.1 CPU) are in the
comments. Each group has a negative control: a deliberately wrong variant (the paper's radii, the
other distribution, no smoothing, ...) is shown to differ, so the comparisons can fail.
"""

from __future__ import annotations

import importlib
from functools import partial

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

from adlib import losses
from adlib.models.features import PatchFeatures
from adlib.models.glass import GLASS, Adaptor, Discriminator, GLASSConfig, image_score, smooth_map
from adlib.synthesis.las import feature_label
from adlib.synthesis.perlin import perlin_noise_batch

gas_mod = importlib.import_module(
    "adlib.synthesis.gas"
)  # the module (``adlib.synthesis.gas`` the attribute is the function)

REF = reference_record("glass_reference.json")
SET = REF["settings"]
D, PRE, HIDDEN = SET["target_embed_dimension"], SET["pretrain_embed_dimension"], SET["dsc_hidden"]


def _features(z: dict, prefix: str = "image_") -> PatchFeatures:
    maps = {"image": {k: t(z[prefix + k]) for k in ("layer2", "layer3")}}
    if "aug_layer2" in z:
        maps["aug"] = {k: t(z["aug_" + k]) for k in ("layer2", "layer3")}
    return PatchFeatures(StubBackbone(maps), patch_size=3, pretrain_embed_dim=PRE, target_embed_dim=D)


def _modules(z: dict) -> tuple[Adaptor, Discriminator]:
    a, d = Adaptor(D), Discriminator(D, HIDDEN, sigmoid=True)
    a.load_state_dict(adaptor_state(z))
    d.load_state_dict(discriminator_state(z))
    return a, d


def _zeros(z: dict) -> torch.Tensor:
    b = z["image_layer2"].shape[0]
    return torch.zeros(b, 3, SET["step_image_size"], SET["step_image_size"])


# ---------------------------------------------------------------------------------------------
# Patch embedding (PatchMaker.patchify + bilinear alignment + Preprocessing + Aggregator)


def test_patch_embedding_matches_released():
    z = load("glass_patch_embed.npz")
    maps = {"image": {"layer2": t(z["layer2"]), "layer3": t(z["layer3"])}}
    pf = PatchFeatures(StubBackbone(maps), patch_size=3, pretrain_embed_dim=PRE, target_embed_dim=D)
    out = pf(torch.zeros(2, 3, 8, 8))
    assert tuple(out.shape[1:3]) == tuple(z["patch_shapes"][0])
    # measured max difference: 2.4e-7 (values up to 1.4)
    assert_matches(out.reshape(-1, D), z["embedding"], what="patch embedding")
    # negative control: a 1 x 1 neighbourhood (no locally aware patches) does not match
    wrong = PatchFeatures(StubBackbone(maps), patch_size=1, pretrain_embed_dim=PRE, target_embed_dim=D)
    assert differs(wrong(torch.zeros(2, 3, 8, 8)).reshape(-1, D), z["embedding"])


# ---------------------------------------------------------------------------------------------
# Adaptor (Projection) and discriminator


@pytest.mark.parametrize("dist", ["manifold", "hypersphere"])
def test_adaptor_and_discriminator_scores_match_released(dist):
    z = load(f"glass_step_{dist}.npz")
    a, d = _modules(z)
    feats = _features(z)(_zeros(z)).reshape(-1, D)
    u = a(feats)
    # measured max difference: 2.4e-7 (|u| <= 1.3; LAS images 2.4e-7, |u+| <= 1.9)
    assert_matches(u, z["u"], what="adaptor output")
    aug = _features(z)(torch.ones_like(_zeros(z))).reshape(-1, D)
    assert_matches(a(aug), z["u_plus"], what="adaptor output of the LAS images")
    d.train()  # the reference scores cat([u, g]) with BatchNorm in training mode
    x0 = torch.cat([t(z["u"]), t(z["gas_inputs"][0])])
    # measured max difference: 3.6e-7 over the three calls (scores in (0, 1))
    assert_matches(d(x0), z["scores_first"][:, 0], what="discriminator scores (train mode), first call")
    x20 = torch.cat([t(z["u"]), t(z["gas_inputs"][20])])
    assert_matches(d(x20), z["scores_last"][:, 0], what="discriminator scores (train mode), last GAS call")
    assert_matches(d(t(z["las_input"])), z["las_scores"][:, 0], what="discriminator scores of the LAS features")
    # negative control: SimpleNet's head (no sigmoid) does not match
    d2 = Discriminator(D, HIDDEN, sigmoid=False)
    d2.load_state_dict(d.state_dict())
    d2.train()
    assert differs(d2(x0), z["scores_first"][:, 0])


# ---------------------------------------------------------------------------------------------
# GAS: every ascent step and projection, and the whole of Algorithm 1


def _same_noise(monkeypatch, z: dict) -> None:
    """adlib's ``gaussian_noise`` adds the reference's noise (``g0 - u``, drawn by its global RNG):
    ``u + noise`` keeps the dependence on ``u`` (the adaptor's gradient flows through it)."""
    noise = t(z["gas_inputs"][0]) - t(z["u"])
    monkeypatch.setattr(gas_mod, "gaussian_noise", lambda u, std=0.015, generator=None, mean=0.0: u + noise)


def _projection(z: dict, dist: str):
    if dist == "manifold":
        return partial(gas_mod.truncated_projection_manifold, radii="released")
    center, r = t(z["center"]), torch.tensor(float(z["r_t"]))
    return lambda g, _u: gas_mod.truncated_projection_hypersphere(g, center, r, *gas_mod.HYPERSPHERE_GAS_BOUNDS)


@pytest.mark.parametrize("dist", ["manifold", "hypersphere"])
def test_gas_each_step_matches_released(dist):
    """Every discriminator call of the reference's GAS loop: from the reference's input to call k,
    one adlib ascent step (and the projection after steps 5, 10, 15, 20) gives its input to call k+1."""
    z = load(f"glass_step_{dist}.npz")
    _, d = _modules(z)
    d.train()
    u, gs = t(z["u"]), t(z["gas_inputs"])
    proj = _projection(z, dist)
    for k in range(20):
        g = gas_mod.gradient_ascent_step(gs[k], d, eta=0.001, context=u)
        if (k + 1) % 5 == 0:
            g = proj(g, u)
        # measured max difference over the 20 steps, both distributions: 6e-8 (|g| <= 1.44)
        assert_matches(g, gs[k + 1], what=f"GAS step {k + 1}")
    # the projections did something: after step 5 the features are not where the ascent left them
    g5 = gas_mod.gradient_ascent_step(gs[4], d, eta=0.001, context=u)
    assert differs(g5, gs[5])


@pytest.mark.parametrize("dist", ["manifold", "hypersphere"])
def test_gas_algorithm_matches_released(dist, monkeypatch):
    """adlib's ``gas`` (Alg. 1 end to end) from the reference's noisy start: the features after 20 steps."""
    z = load(f"glass_step_{dist}.npz")
    _, d = _modules(z)
    d.train()
    u, gs = t(z["u"]), t(z["gas_inputs"])
    # the noise is drawn by the reference's global RNG: hand adlib the same noise
    _same_noise(monkeypatch, z)
    v = gas_mod.gas(u, d, steps=20, eta=0.001, noise_std=0.015, project_every=5, projection=_projection(z, dist))
    # measured max difference: 3.0e-7, both distributions (|v| <= 1.28)
    assert_matches(v, gs[20], what="GAS output")
    # negative controls: the paper's radii (manifold) / the manifold projection (hypersphere)
    wrong = partial(gas_mod.truncated_projection_manifold, radii="paper")
    v_wrong = gas_mod.gas(u, d, steps=20, eta=0.001, project_every=5, projection=wrong)
    assert differs(v_wrong, gs[20])


def test_gas_noise_std_matches_released():
    """The reference's Gaussian noise ``torch.normal(0, 0.015)``: the start of the ascent minus ``u``."""
    for dist in ("manifold", "hypersphere"):
        z = load(f"glass_step_{dist}.npz")
        noise = z["gas_inputs"][0] - z["u"]
        assert abs(float(noise.mean())) < 3 * 0.015 / np.sqrt(noise.size)
        assert abs(float(noise.std()) / 0.015 - 1) < 0.05


# ---------------------------------------------------------------------------------------------
# Hypersphere centre and radius; LAS projection


def test_hypersphere_center_and_radius_match_released():
    z = load("glass_step_hypersphere.npz")
    a, _ = _modules(z)
    b = z["image_layer2"].shape[0]
    u = a(_features(z)(_zeros(z)).reshape(-1, D)).detach()
    c = gas_mod.hypersphere_center(u.reshape(b, -1, D), mode="released")
    # measured max difference: 1.2e-7 (centre, per position: 16 x 48, values up to 1.17)
    assert_matches(c, z["center"], what="hypersphere centre")
    assert differs(gas_mod.hypersphere_center(u.reshape(b, -1, D), mode="paper").expand_as(c), z["center"])
    # radius: 0.75-quantile of the distances of the normal and the label-0 LAS features to the centre
    m = t(z["mask_s"]).reshape(-1)
    crow = t(z["center"]).repeat(b, 1)
    pts = torch.cat([t(z["u_plus"])[m == 0], t(z["u"])])
    cts = torch.cat([crow[m == 0], crow])
    r = gas_mod.hypersphere_radius((pts - cts).norm(dim=-1), q=0.75)
    # measured max difference: 0 (r = 0.845; r_g and r_f below: 0)
    assert_matches(r, z["r_t"], what="hypersphere radius")
    # r_g and r_f, logged by the reference: quantiles of the final GAS and of the LAS label-1 distances
    assert_matches(gas_mod.hypersphere_radius((t(z["gas_inputs"][20]) - crow).norm(dim=-1)), z["r_g"], what="r_g")
    r_f = gas_mod.hypersphere_radius((t(z["u_plus"])[m == 1] - crow[m == 1]).norm(dim=-1))
    assert_matches(r_f, z["r_f"], what="r_f")


def test_las_projection_matches_released():
    z = load("glass_step_hypersphere.npz")
    m = t(z["mask_s"]).reshape(-1)
    b = z["image_layer2"].shape[0]
    crow = t(z["center"]).repeat(b, 1)
    u_plus = t(z["u_plus"])
    lo, hi = gas_mod.HYPERSPHERE_LAS_BOUNDS
    proj = gas_mod.truncated_projection_hypersphere(u_plus, crow, torch.tensor(float(z["r_t"])), lo, hi)
    out = torch.where(m[:, None] == 1, proj, u_plus)
    # measured max difference: 0
    assert_matches(out, z["las_input"], what="LAS features after the [2r, 4r] projection")
    assert differs(gas_mod.truncated_projection_hypersphere(u_plus, crow, float(z["r_t"]), 1.0, 2.0), z["las_input"])
    # manifold: the reference leaves the LAS features unprojected
    zm = load("glass_step_manifold.npz")
    assert np.array_equal(zm["las_input"], zm["u_plus"])


# ---------------------------------------------------------------------------------------------
# Focal loss with OHEM


@pytest.mark.parametrize("dist", ["manifold", "hypersphere"])
def test_focal_ohem_matches_released(dist):
    z = load(f"glass_step_{dist}.npz")
    p, m = t(z["las_scores"][:, 0]), t(z["mask_s"]).reshape(-1)
    # the reference's focal-loss module on the points OHEM kept (its inputs were recorded)
    p_kept, t_kept = t(z["focal_output"][:, 1]), t(z["focal_target"][:, 0])
    # measured max difference: 0 (loss about 0.5), both distributions; with OHEM: 0
    assert_matches(
        losses.focal_loss(p_kept, t_kept, gamma=2.0, alpha=1.0, smoothing=1e-5), z["focal_loss"], what="focal loss"
    )
    keep = losses.ohem_mask((p - m) ** 2, 0.5)
    assert int(keep.sum()) == len(p_kept)
    assert_matches(p[keep], p_kept, what="OHEM-kept scores")
    assert_matches(
        losses.focal_loss_ohem(p, m, quantile=0.5, gamma=2.0, alpha=1.0, smoothing=1e-5),
        z["focal_loss"],
        what="focal loss with OHEM",
    )
    assert differs(losses.focal_loss_ohem(p, m, quantile=None), z["focal_loss"])
    assert differs(losses.focal_loss(p_kept, t_kept, smoothing=0.0), z["focal_loss"], rel=1e-7)


# ---------------------------------------------------------------------------------------------
# One training step through adlib's GLASS model


def _model(dist: str, z: dict) -> GLASS:
    cfg = GLASSConfig(
        variant={"manifold": "m", "hypersphere": "h"}[dist],
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
        samples_per_epoch=None,
        las=True,
        noise_std=0.015,
        gas_steps=20,
        gas_eta=0.001,
        gas_project_every=5,
        manifold_radii="released",
        radii_unit="absolute",
        center_mode="released",
        radius_quantile=0.75,
        focal_gamma=2.0,
        focal_alpha=1.0,
        focal_smoothing=1e-5,
        ohem_quantile=0.5,
        adaptor_lr=1e-4,
        adaptor_weight_decay=1e-5,
        dsc_lr=2e-4,
        dsc_optimizer="adamw",
        dsc_weight_decay=None,
    )
    model = GLASS(cfg)
    model.features = _features(z)
    model.adaptor.load_state_dict(adaptor_state(z))
    model.discriminator.load_state_dict(discriminator_state(z))
    return model


@pytest.mark.parametrize("dist", ["manifold", "hypersphere"])
def test_training_step_losses_match_released(dist, monkeypatch):
    z = load(f"glass_step_{dist}.npz")
    model = _model(dist, z)
    x = _zeros(z)
    feats = model.patch_features(x)
    if dist == "hypersphere":
        c = model.update_center(feats=feats)
        assert_matches(c, z["center"], what="GLASS.update_center")
    _same_noise(monkeypatch, z)
    model.train()
    out = model.compute_losses(feats, torch.ones_like(x), t(z["mask_s"]), return_features=True)
    # measured max differences (both distributions): u 2.4e-7, v 4.8e-7, u+ 6e-7, L_las 2.4e-7,
    # L_n + L_gas 1.2e-7, L 4.8e-7 (L about 2.1); update_center 1.2e-7
    assert_matches(out["u"], z["u"], what="u")
    assert_matches(out["v"], z["gas_inputs"][20], what="GAS features v")
    assert_matches(out["u_plus"], z["las_input"], what="LAS features u+")
    if dist == "hypersphere":
        assert_matches(out["radius"], z["r_t"], what="radius")
    assert_matches(out["loss_las"], z["focal_loss"], what="L_las")
    assert_matches(out["loss_n"] + out["loss_gas"], float(z["loss"]) - float(z["focal_loss"]), what="L_n + L_gas")
    assert_matches(out["loss"], z["loss"], what="L")


@pytest.mark.parametrize("dist", ["manifold", "hypersphere"])
def test_training_step_update_matches_released(dist, monkeypatch):
    """One optimiser step (Adam for the adaptor, AdamW for the discriminator, the released learning
    rates and weight decays): the weights after the step, and the discriminator's BatchNorm running
    statistics after the 22 training-mode calls, equal the reference's.

    Adam's first step is ``-lr * g / (|g| + 1e-8)``: about ``lr`` times the sign of the gradient, so an
    entry whose gradient is round-off (|g| < 1e-6) moves by a round-off-determined amount. Such
    entries exist: the discriminator's first Linear bias feeds BatchNorm in training mode, and, for
    GLASS-m, the adaptor bias shifts every row of every discriminator batch alike, which BatchNorm
    removes, so their exact gradients are 0 (the released code's too). They are excluded (and their
    gradients shown to be round-off); every other entry must match."""
    z = load(f"glass_step_{dist}.npz")
    model = _model(dist, z)
    x = _zeros(z)
    _same_noise(monkeypatch, z)
    feats = model.patch_features(x)
    if dist == "hypersphere":
        model.update_center(feats=feats)
    model.train()
    out = model.compute_losses(feats, torch.ones_like(x), t(z["mask_s"]))
    model.opt_adaptor.zero_grad(set_to_none=True)
    model.opt_dsc.zero_grad(set_to_none=True)
    out["loss"].backward()
    grads = {("adaptor", k): p.grad.clone() for k, p in model.adaptor.named_parameters()}
    grads.update({("discriminator", k): p.grad.clone() for k, p in model.discriminator.named_parameters()})
    model.opt_adaptor.step()
    model.opt_dsc.step()
    ref = {"adaptor": adaptor_state(z, "after.proj."), "discriminator": discriminator_state(z, "after.dsc.")}
    zero_grad = {("discriminator", "body.0.bias")} | ({("adaptor", "linear.bias")} if dist == "manifold" else set())
    compared = excluded = 0
    for part, module in (("adaptor", model.adaptor), ("discriminator", model.discriminator)):
        for k, v in module.state_dict().items():
            expected = ref[part][k].to(v.dtype)
            g = grads.get((part, k))
            if g is None:  # BatchNorm buffers: running mean / var after 22 updates, the counter
                # measured max difference: 6e-8 (running mean and var)
                assert_matches(v.float(), expected.float(), what=f"{part} {k} after one step")
                continue
            if (part, k) in zero_grad:
                # measured max |gradient|: 1.5e-6 (discriminator body.0.bias), 1.7e-7 (adaptor bias, GLASS-m);
                # the other gradients are 1e-4 .. 1
                assert float(g.abs().max()) < 1e-5, f"{part} {k}: expected a round-off gradient"
                excluded += g.numel()
                continue
            ok = g.abs() > 1e-6
            assert float(ok.float().mean()) > 0.99, f"{part} {k}: too many vanishing gradients"
            # measured max difference: 6e-8 (adaptor weight), 7.5e-9 (discriminator); one step moves them by about 1e-4
            assert_matches(v[ok], expected[ok], rel=1e-6, what=f"{part} {k} after one step")
            compared += int(ok.sum())
            excluded += int((~ok).sum())
    assert compared > 0.9 * (compared + excluded)
    init = t(z["dsc.body.block1.0.weight"])
    assert differs(init, ref["discriminator"]["body.0.weight"], rel=1e-6)  # the step is visible at this tolerance
    if dist == "hypersphere":  # the hypersphere projection anchors at the centre: the adaptor bias does get a gradient
        assert float(grads[("adaptor", "linear.bias")].abs().max()) > 1e-4


# ---------------------------------------------------------------------------------------------
# Inference: scores, image score, map post-processing


def test_prediction_matches_released():
    z = load("glass_predict.npz")
    model = _model("manifold", z)
    x = _zeros(z)
    grid = model.score_grid(x)
    # measured max difference: 1.2e-7 (eval mode, the running statistics of the trained step); image scores 1.2e-7
    assert_matches(grid.reshape(-1), z["raw_scores"][:, 0], what="raw score map")
    assert_matches(image_score(grid), z["image_scores"], what="image scores")
    # measured max difference: 6e-8
    assert_matches(smooth_map(grid, (x.shape[-2], x.shape[-1]), sigma=4.0), z["masks"], what="pixel maps")


@pytest.mark.parametrize("case", ["square", "rect"])
def test_map_postprocessing_matches_released(case):
    z = load("glass_postprocess.npz")
    scores = t(z[f"{case}_scores"])
    size = z[f"{case}_masks"].shape[-2:]
    # measured max difference: 0 (maps in [0, 1]); image scores 0
    assert_matches(smooth_map(scores, tuple(size), sigma=4.0), z[f"{case}_masks"], what="smoothed map")
    assert_matches(image_score(scores), z[f"{case}_image_scores"], what="image score")
    assert differs(smooth_map(scores, tuple(size), sigma=2.0), z[f"{case}_masks"])
    aligned = F.interpolate(scores[:, None], size=tuple(size), mode="bilinear", align_corners=True)[:, 0]
    from scipy import ndimage

    aligned = np.stack([ndimage.gaussian_filter(m, 4) for m in aligned.numpy()])
    assert differs(aligned, z[f"{case}_masks"])


# ---------------------------------------------------------------------------------------------
# Perlin noise and the feature-level LAS label


@pytest.mark.parametrize("i", range(len(SET["perlin_noise_cases"])))
def test_perlin_noise_matches_released(i):
    z = load("glass_perlin.npz")
    res = tuple(int(r) for r in z[f"noise{i}_res"])
    shape = tuple(SET["perlin_noise_cases"][i]["shape"])
    angles = torch.from_numpy(2 * np.pi * z[f"noise{i}_uniform"].astype(np.float64))[None]
    field = perlin_noise_batch(shape, torch.tensor([res]), angles)[0]
    # measured max difference: 1.8e-7 over the four cases (float32 vs the reference's float64; values in [-1, 1])
    assert_matches(field, z[f"noise{i}_field"], what=f"Perlin noise {shape} res {res}")
    assert differs(perlin_noise_batch(shape, torch.tensor([res]), angles + 0.1)[0], z[f"noise{i}_field"])


def test_feature_label_matches_released():
    z = load("glass_perlin.npz")
    n = len(SET["perlin_mask"]["seeds"])
    grid = SET["perlin_mask"]["feat_size"]
    for j in range(n):
        pixel, ref = torch.from_numpy(z[f"mask{j}_pixel"]), z[f"mask{j}_grid"]
        assert ref.max() == 1  # the reference re-draws until the label is non-empty
        assert np.array_equal(feature_label(pixel, grid).numpy(), ref)
