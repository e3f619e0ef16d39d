"""Weak-defect sets (MAD-sys manner): layout, Eq. 4 at fixed beta, same mask across betas."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from adlib.data import get_dataset
from adlib.data.synth import generate_benchmark
from adlib.data.textures import texture_source
from adlib.synthesis.weak import weak_defect, write_weak_defect_sets


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    generate_benchmark(
        root,
        seed=5,
        categories=["brick", "wood", "nut"],
        n_train=2,
        n_test_good=6,
        n_per_defect=1,
        size=96,
        progress=False,
    )
    out = root / "weak"
    manifest = write_weak_defect_sets(
        root / "synth", out, texture_source(root), dataset="synth", betas=(0.1, 0.7), seed=1, progress=False
    )
    return root, out, manifest


def _arr(p):
    return np.asarray(Image.open(p)).astype(np.float64)


def test_layout_counts_and_manifest(built):
    root, out, manifest = built
    assert set(manifest["categories"]) == {"brick", "wood"}  # textures only, the object is skipped
    assert manifest["texture_is_stand_in"] is True
    assert json.loads((out / "manifest.json").read_text()) == manifest
    for beta in ("0.1", "0.7"):
        for cat in ("brick", "wood"):
            test = get_dataset("mad-sys", cat, "test", root=out / f"beta_{beta}")
            assert test.summary() == {"good": 3, "synthetic": 3}
            assert len(get_dataset("mad-sys", cat, "train", root=out / f"beta_{beta}")) == 2
            for i, rec in enumerate(test.records):
                s = test[i]
                assert (s.mask.sum() > 0) == (rec.label == 1)


def test_same_mask_for_every_beta_and_change_scales_with_one_minus_beta(built):
    root, out, _ = built
    for p01 in sorted((out / "beta_0.1" / "brick" / "test" / "synthetic").glob("*.png")):
        p07 = out / "beta_0.7" / "brick" / "test" / "synthetic" / p01.name
        m01 = _arr(out / "beta_0.1" / "brick" / "ground_truth" / "synthetic" / f"{p01.stem}_mask.png") > 0
        m07 = _arr(out / "beta_0.7" / "brick" / "ground_truth" / "synthetic" / f"{p07.stem}_mask.png") > 0
        assert np.array_equal(m01, m07) and m01.any()
        orig = _arr(root / "synth" / "brick" / "test" / "good" / p01.name)
        d01, d07 = _arr(p01) - orig, _arr(p07) - orig
        assert np.abs(d01[~m01]).max() <= 1 and np.abs(d07[~m07]).max() <= 1  # outside: unchanged (rounding)
        # Eq. 4: x+ - x = (1 - beta) (t - x) m, so the change at 0.7 is 0.3/0.9 of the change at 0.1
        big = np.abs(d01[m01]) > 20
        ratio = np.abs(d07[m01][big]).mean() / np.abs(d01[m01][big]).mean()
        assert ratio == pytest.approx(0.3 / 0.9, abs=0.03)


def test_weak_defect_equation_by_hand(built):
    root, _, _ = built
    tex = texture_source(root)
    x = torch.full((3, 72, 72), 0.5)
    a, ma = weak_defect(x, tex, beta=0.0, seed=3)
    b, mb = weak_defect(x, tex, beta=1.0, seed=3)
    assert torch.equal(ma, mb) and ma.any()
    assert torch.allclose(b, x)  # beta = 1 keeps the normal image
    assert torch.equal(a[:, ~ma], x[:, ~ma])
    t = a[:, ma]  # beta = 0 is the texture itself inside the mask
    c, _ = weak_defect(x, tex, beta=0.25, seed=3)
    assert torch.allclose(c[:, ma], 0.25 * 0.5 + 0.75 * t, atol=1e-6)
    with pytest.raises(ValueError, match="beta must lie in"):
        weak_defect(x, tex, beta=1.5, seed=0)
