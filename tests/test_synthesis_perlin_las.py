"""Perlin masks, GLASS LAS (Eq. 3, Eq. 4) and DRAEM-style synthesis (ADL Eq. 1, POUTA)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.stats as st
import torch
from PIL import Image

from adlib.data.base import IMAGENET_MEAN, IMAGENET_STD
from adlib.data.textures import texture_source
from adlib.synthesis import (
    ADL_PAPER,
    ADL_RELEASED,
    DRAEM_AUGMENTERS,
    GLASS_TEXTURE_TRANSFORMS,
    MASK_RULES,
    POUTA,
    DraemSynthesizer,
    LocalAnomalySynthesizer,
    adl_blend,
    combine_masks,
    draem_augment,
    feature_label,
    las_blend,
    perlin_mask,
    perlin_masks,
    perlin_noise,
    perlin_noise_batch,
    preset,
    sample_beta,
    sample_opacity,
    texture_augment,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def textures(tmp_path_factory):
    root = tmp_path_factory.mktemp("texroot")
    rng = np.random.default_rng(0)
    for cls in ("banded", "dotted"):
        d = root / "dtd" / "images" / cls
        d.mkdir(parents=True)
        for i in range(2):
            arr = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
            Image.fromarray(arr).save(d / f"{cls}_{i}.png")
    src = texture_source(root)
    assert len(src) == 4 and not src.is_stand_in
    return src


# ---------------------------------------------------------------------------------------------
# Perlin


def test_perlin_mask_bool_shape_and_determinism():
    m = perlin_mask((48, 80), gen(3))
    assert m.dtype == torch.bool and tuple(m.shape) == (48, 80)
    assert torch.equal(m, perlin_mask((48, 80), gen(3)))
    assert torch.equal(m, perlin_masks(1, (48, 80), gen(3))[0])
    others = [perlin_mask((48, 80), gen(s)) for s in (4, 5, 6)]
    assert any(not torch.equal(m, o) for o in others)


def test_perlin_noise_range_is_minus_one_to_one():
    for scale in [(1, 1), (2, 8), (5, 3), (32, 32)]:
        n = perlin_noise((64, 96), scale, gen(sum(scale)))
        assert n.shape == (64, 96)
        assert float(n.abs().max()) <= 1.0 + 1e-6
        assert float(n[0, 0]) == 0.0  # lattice corner
    # noise of the masks themselves, rotated, stays inside too and is spread out
    _, info = perlin_masks(40, (64, 64), gen(1), return_info=True)
    assert float(info["noise"].abs().max()) <= 1.0 + 1e-6
    assert float(info["noise"].max()) > 0.7
    # the bound is tight: all four gradients pointing at the cell centre give 1 there
    ang = torch.tensor([[[math.pi / 4, -math.pi / 4], [3 * math.pi / 4, -3 * math.pi / 4]]], dtype=torch.float64)
    v = perlin_noise_batch((64, 64), torch.tensor([[1, 1]]), ang)
    assert abs(float(v.max()) - 1.0) < 1e-5 and float(v[0, 32, 32]) == pytest.approx(1.0, abs=1e-5)


def test_perlin_mask_coverage_matches_documented_distribution():
    # Documented (perlin.py): 64x64, defaults -> mean coverage 0.040, 5.4 % empty masks. The mean
    # of 200 masks has a standard error of ~0.002; [0.03, 0.055] excludes e.g. "no rotation"
    # (0.057) and any reading where the threshold gives ~half coverage.
    m = perlin_masks(200, (64, 64), gen(0))
    cov = m.float().mean(dim=(1, 2))
    assert 0.03 <= float(cov.mean()) <= 0.055
    assert 0.0 < float((cov == 0).float().mean()) < 0.15
    assert float(cov.max()) < 0.7


def test_perlin_scale_changes_number_of_components():
    def components(k):
        m = perlin_masks(30, (64, 64), gen(10 + k), min_scale_exp=k, max_scale_exp=k + 1)
        return np.mean([ndi.label(x.numpy())[1] for x in m])

    coarse, fine = components(0), components(5)
    assert coarse <= 2.0  # one lattice cell: nothing or a single blob (measured ~0.5)
    assert fine >= 20.0  # 32 x 32 cells: dozens of blobs (measured ~58)


# ---------------------------------------------------------------------------------------------
# LAS Eq. 3


def test_combine_masks_rules_frequencies_and_exact_results():
    g = gen(0)
    counts = dict.fromkeys(MASK_RULES, 0)
    fg = torch.rand(16, 16, generator=gen(99)) > 0.3
    for i in range(1500):
        m1 = torch.rand(16, 16, generator=g) > 0.5
        m2 = torch.rand(16, 16, generator=g) > 0.5
        use_fg = i % 2 == 0
        m, rule = combine_masks(m1, m2, g, foreground=fg if use_fg else None)
        expected = {"intersection": m1 & m2, "union": m1 | m2, "m1": m1}[rule]
        if use_fg:
            expected = expected & fg
        assert m.dtype == torch.bool and torch.equal(m, expected)
        counts[rule] += 1
    obs = np.array([counts[r] for r in MASK_RULES])
    assert st.chisquare(obs).pvalue > 1e-3
    assert np.all(np.abs(obs / 1500 - 1 / 3) < 0.05)
    # alpha = 0: only the m1 case of Eq. 3 remains
    assert {combine_masks(m1, m2, g, alpha=0.0)[1] for _ in range(50)} == {"m1"}


# ---------------------------------------------------------------------------------------------
# beta (Eq. 4's transparency)


def test_sample_beta_clip_has_small_point_masses_and_right_moments():
    n = 200_000
    b = sample_beta(gen(0), size=n)
    assert float(b.min()) == 0.2 and float(b.max()) == 0.8
    p = st.norm.cdf(-3.0)  # P(N(0.5, 0.1) < 0.2) = 0.135 %
    se = math.sqrt(p * (1 - p) / n)
    for bound in (0.2, 0.8):
        frac = float((b == bound).double().mean())
        assert abs(frac - p) < 5 * se
    assert abs(float(b.mean()) - 0.5) < 0.002
    assert abs(float(b.std()) - 0.1) < 0.002
    assert isinstance(sample_beta(gen(1)), float)
    assert sample_beta(gen(1)) == sample_beta(gen(1))


def test_sample_beta_truncate_stays_inside_without_point_mass():
    b = sample_beta(gen(0), mode="truncate", size=200_000)
    assert float(b.min()) >= 0.2 and float(b.max()) <= 0.8
    assert int(((b == 0.2) | (b == 0.8)).sum()) == 0
    assert abs(float(b.mean()) - 0.5) < 0.002
    # a normal truncated at +-3 sigma has std 0.9866 sigma, i.e. 0.0987 here
    expected_std = st.truncnorm(-3, 3, loc=0.5, scale=0.1).std()
    assert abs(float(b.std()) - expected_std) < 0.002
    with pytest.raises(ValueError):
        sample_beta(gen(0), mode="resample")


# ---------------------------------------------------------------------------------------------
# Eq. 4 and the feature label


def test_las_blend_hand_computed_and_identities():
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    t = torch.tensor([[[10.0, 20.0], [30.0, 40.0]]])
    m = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # inside: (1 - 0.25) * t + 0.25 * x ; outside: x
    expected = torch.tensor([[[7.75, 2.0], [3.0, 31.0]]])
    assert torch.allclose(las_blend(x, t, m, 0.25), expected)
    xr = torch.randn(3, 20, 24, generator=gen(0))
    tr = torch.randn(3, 20, 24, generator=gen(1))
    mr = perlin_mask((20, 24), gen(2), min_scale_exp=2)
    out = las_blend(xr, tr, mr, 0.37)
    assert torch.equal(out[:, ~mr], xr[:, ~mr])
    assert torch.equal(las_blend(xr, tr, mr, 1.0), xr)
    # beta = 0: pure texture inside the mask
    assert torch.allclose(las_blend(xr, tr, mr, 0.0)[:, mr], tr[:, mr])


@pytest.mark.parametrize("hw,grid", [((288, 288), (36, 36)), ((50, 70), (7, 9)), ((64, 48), (5, 6))])
def test_feature_label_equals_bruteforce_maxpool(hw, grid):
    h, w = hw
    gh, gw = grid
    m = (torch.rand(h, w, generator=gen(h + w)) > 0.995).float()
    lab = feature_label(m, grid)
    ref = torch.zeros(gh, gw)
    for i in range(gh):
        for j in range(gw):
            y0, y1 = (i * h) // gh, -((-(i + 1) * h) // gh)
            x0, x1 = (j * w) // gw, -((-(j + 1) * w) // gw)
            ref[i, j] = m[y0:y1, x0:x1].max()
    assert torch.equal(lab, ref)
    assert feature_label(m[None, None], grid).shape == (1, 1, gh, gw)


# ---------------------------------------------------------------------------------------------
# texture augmentation


def test_texture_augment_three_distinct_and_deterministic():
    img = (torch.rand(3, 32, 40, generator=gen(0)) * 255).to(torch.uint8)
    seen = set()
    for seed in range(12):
        out, names, params = texture_augment(img, gen(seed))
        assert len(names) == 3 == len(set(names)) == len(params)
        assert set(names) <= set(GLASS_TEXTURE_TRANSFORMS)
        assert out.dtype == torch.uint8 and out.shape == img.shape
        out2, names2, _ = texture_augment(img, gen(seed))
        assert names2 == names and torch.equal(out, out2)
        seen.add(tuple(names))
    assert len(seen) > 6
    out, names, _ = texture_augment(img, gen(0), k=2, transforms=("hflip", "vflip"))
    assert sorted(names) == ["hflip", "vflip"] and torch.equal(out, img.flip(-1).flip(-2))


# ---------------------------------------------------------------------------------------------
# the LAS synthesizer


def test_las_synthesizer_nonempty_labels_and_info(textures):
    las = LocalAnomalySynthesizer(image_size=64, grid=(8, 8), textures=textures)
    g = gen(0)
    img = torch.randn(3, 64, 64, generator=gen(1))
    rules = set()
    for _ in range(25):
        x, m, lab, info = las(img, g)
        assert x.shape == img.shape and m.shape == (64, 64) and lab.shape == (8, 8)
        assert bool(lab.any())
        assert torch.equal(lab, feature_label(m, (8, 8)))
        assert set(m.unique().tolist()) <= {0.0, 1.0}
        outside = m == 0
        assert torch.equal(x[:, outside], img[:, outside])
        assert len(info["transforms"]) == 3 == len(set(info["transforms"]))
        assert 0.2 <= info["beta"] <= 0.8 and info["fallback"] is None
        assert info["texture_path"] in {str(p) for p in textures.paths}
        rules.add(info["mask_rule"])
    assert rules <= set(MASK_RULES) and len(rules) >= 2
    x1, m1, _, i1 = las(img, gen(5))
    x2, m2, _, i2 = las(img, gen(5))
    assert torch.equal(x1, x2) and torch.equal(m1, m2) and i1["transforms"] == i2["transforms"]


def test_las_synthesizer_foreground_and_fallbacks(textures, caplog):
    las = LocalAnomalySynthesizer(grid=(8, 8), textures=textures)
    img = torch.randn(3, 64, 64, generator=gen(1))
    fg = torch.zeros(64, 64)
    fg[16:48, 8:40] = 1
    for seed in range(10):
        _, m, lab, info = las(img, gen(seed), foreground=fg)
        assert bool(lab.any()) and bool(m.any())
        assert not bool((m.bool() & (fg == 0)).any())
    # a one-pixel foreground: Perlin rarely hits it -> documented fallback, still inside it
    tiny = torch.zeros(64, 64)
    tiny[5, 60] = 1
    las_few = LocalAnomalySynthesizer(grid=(8, 8), textures=textures, max_tries=2)
    with caplog.at_level(logging.WARNING, logger="adlib.synthesis.las"):
        _, m, lab, info = las_few(img, gen(0), foreground=tiny)
    assert info["fallback"] == "foreground-cell" and info["tries"] == 2
    assert torch.equal(m, tiny) and int(lab.sum()) == 1
    assert any("re-draws" in r.getMessage() for r in caplog.records)
    # an empty foreground is ignored (with a warning), not looped on forever
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="adlib.synthesis.las"):
        _, m, lab, info = las(img, gen(0), foreground=torch.zeros(64, 64))
    assert info["fallback"] == "empty-foreground-ignored" and bool(lab.any())
    assert any("foreground mask is empty" in r.getMessage() for r in caplog.records)


def test_las_synthesizer_normalises_texture_like_the_image():
    # A constant-colour texture through hflip + vflip + grayscale is a constant grey value, so the
    # blend inside the mask is checkable by hand in normalised space.
    las = LocalAnomalySynthesizer(texture_transforms=("hflip", "vflip", "grayscale"), grid=(4, 4))
    tex = torch.zeros(3, 32, 32, dtype=torch.uint8)
    tex[0], tex[1], tex[2] = 200, 100, 50
    img = torch.randn(3, 32, 32, generator=gen(0))
    x, m, _, info = las(img, gen(3), texture=tex)
    grey = torch.tensor(200 * 0.2989 + 100 * 0.587 + 50 * 0.114).round() / 255.0
    t_norm = (grey - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    beta = info["beta"]
    inside = m.bool()
    expected = (1 - beta) * t_norm[:, None] + beta * img[:, inside]
    assert torch.allclose(x[:, inside], expected, atol=1e-3)
    assert info["texture_index"] is None and sorted(info["transforms"]) == ["grayscale", "hflip", "vflip"]


# ---------------------------------------------------------------------------------------------
# DRAEM-style synthesis (ADL, POUTA)


def test_adl_eq1_hand_computed():
    img = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    src = torch.tensor([[[10.0, 20.0], [30.0, 40.0]]])
    m = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # inside: beta * I_s + (1 - beta) * I ; outside: I
    assert torch.allclose(adl_blend(img, src, m, 0.25), torch.tensor([[[3.25, 2.0], [3.0, 13.0]]]))
    assert torch.equal(adl_blend(img, src, m, 0.0), img)


@pytest.mark.parametrize("cfg,lo,hi", [(ADL_RELEASED, 0.2, 1.0), (ADL_PAPER, 0.1, 1.0), (POUTA, 0.15, 1.0)])
def test_draem_presets_opacity_mask_label(cfg, lo, hi, textures):
    b = sample_opacity(gen(0), cfg.opacity_range, size=20_000)
    assert float(b.min()) > lo and float(b.max()) <= hi
    assert float(b.min()) < lo + 0.01 and float(b.max()) > hi - 0.01
    assert abs(float(b.mean()) - (lo + hi) / 2) < 0.01
    synth = DraemSynthesizer(cfg, textures)
    g = gen(1)
    labels = []
    for _ in range(30):
        img = torch.rand(3, 32, 32, generator=g)
        out, mask, label, info = synth(img, g, return_info=True)
        assert out.shape == img.shape and mask.shape == (32, 32)
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        assert label == int(bool(mask.any()))
        assert lo < info["opacity"] <= hi
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0 + 1e-6
        if not info["rotated"]:
            assert torch.equal(out[:, mask == 0], img[:, mask == 0])
        if cfg.source == "texture":
            assert len(info["augmenters"]) == 3 == len(set(info["augmenters"]))
            assert set(info["augmenters"]) <= set(DRAEM_AUGMENTERS)
        else:
            assert info["augmenters"] == [] and info["self_transform"] in {"identity", "translate", "rotate"}
        labels.append(label)
    assert sum(labels) >= 20  # ~5 % of masks are empty
    out3 = synth(torch.rand(3, 32, 32, generator=gen(7)), gen(8))
    assert len(out3) == 3


def test_draem_empty_mask_gives_label_zero_and_unchanged_image():
    synth = DraemSynthesizer(preset("adl_released", perlin_threshold=1.0, image_rotate_prob=0.0))
    img = torch.rand(3, 16, 16, generator=gen(0))
    out, mask, label = synth(img, gen(1), texture=torch.rand(3, 16, 16, generator=gen(2)))
    assert label == 0 and not bool(mask.any()) and torch.equal(out, img)


def test_draem_image_rotation_probability():
    tex = torch.rand(3, 16, 16, generator=gen(0))
    img = torch.rand(3, 16, 16, generator=gen(1))
    n = 400
    for cfg, p in ((ADL_RELEASED, 0.3), (ADL_PAPER, 0.3), (POUTA, 0.0)):
        synth = DraemSynthesizer(cfg)
        g = gen(2)
        rot = [synth(img, g, texture=tex, return_info=True)[3] for _ in range(n)]
        frac = np.mean([r["rotated"] for r in rot])
        assert abs(frac - p) <= 3.5 * math.sqrt(p * (1 - p) / n) + 1e-12
        assert all(-90 <= r["rotation_angle"] <= 90 for r in rot)


def test_pouta_merge_with_identity_transform():
    cfg = preset("pouta", self_transforms=("identity",))
    img = torch.rand(3, 24, 24, generator=gen(0))
    tex = (torch.rand(3, 24, 24, generator=gen(1)) * 255).to(torch.uint8)
    out, mask, label, info = DraemSynthesizer(cfg)(img, gen(4), texture=tex, return_info=True)
    d = info["opacity"]
    src = 0.5 * img + 0.5 * tex.float() / 255.0
    expected = (1 - mask) * img + mask * (d * src + (1 - d) * img)
    assert torch.allclose(out, expected, atol=1e-6) and info["self_transform"] == "identity"


def test_draem_augment_distinct_in_range_deterministic():
    x = torch.rand(3, 20, 20, generator=gen(0))
    for seed in range(8):
        out, names, _ = draem_augment(x, gen(seed))
        assert len(set(names)) == 3 and set(names) <= set(DRAEM_AUGMENTERS)
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        out2, names2, _ = draem_augment(x, gen(seed))
        assert names == names2 and torch.equal(out, out2)
    every = draem_augment(x, gen(0), k=10)
    assert sorted(every[1]) == sorted(DRAEM_AUGMENTERS)


def test_las_walkthrough_pieces_are_consistent(tmp_path):
    """The Fig. 4 intermediates obey Eq. 3 (mask from m1, m2, rule, foreground) and Eq. 4 (blends)."""
    from adlib.data.synth import generate_texture_bank
    from adlib.data.textures import texture_source
    from adlib.synthesis.las import las_blend, las_walkthrough

    generate_texture_bank(tmp_path, seed=0, progress=False)
    tex = texture_source(tmp_path)
    img = torch.rand(3, 72, 72, generator=torch.Generator().manual_seed(0))
    fg = torch.zeros(72, 72, dtype=torch.bool)
    fg[8:64, 8:64] = True
    w = las_walkthrough(img, tex, torch.Generator().manual_seed(4), foreground=fg, betas=(0.2, 0.8), grid=(9, 9))
    rule = {"intersection": w.m1 & w.m2, "union": w.m1 | w.m2, "m1": w.m1}[w.mask_rule]
    assert torch.equal(w.mask, rule & fg) and w.mask.any()
    assert len(w.transforms) == 3 and w.texture.shape == img.shape and 0 <= w.texture.min() <= w.texture.max() <= 1
    for b, x in w.blends.items():
        assert torch.allclose(x, las_blend(img, w.texture, w.mask, b))
        assert torch.equal(x[:, ~w.mask], img[:, ~w.mask])
