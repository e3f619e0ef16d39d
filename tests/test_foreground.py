"""Foreground estimation on the built-in object categories, whose true object masks are known."""

import numpy as np
import pytest

from adlib.data.synth import CATEGORIES, render_sample
from adlib.synthesis.foreground import estimate_foreground, uses_foreground

OBJECTS = [c for c, v in CATEGORIES.items() if v["kind"] == "object"]


@pytest.mark.parametrize("category", OBJECTS)
def test_covers_the_object_and_not_the_background(category):
    ious = []
    for i in range(4):
        r = render_sample(category, i, seed=0, split="train", size=128)
        est = estimate_foreground(r.image)
        true = np.asarray(r.foreground, bool)
        assert true.any() and not true.all()
        ious.append((est & true).sum() / (est | true).sum())
        assert (est & true).sum() / true.sum() > 0.97  # covers the object
        assert (est & ~true).sum() / (~true).sum() < 0.05  # not the background
    assert np.mean(ious) > 0.85


def test_deterministic_and_float_input():
    r = render_sample(OBJECTS[0], 0, seed=1, split="train", size=96)
    a = estimate_foreground(r.image)
    assert np.array_equal(a, estimate_foreground(r.image.copy()))
    assert np.array_equal(a, estimate_foreground(r.image.astype(np.float32) / 255.0))


def test_plain_image_is_not_split_into_noise():
    rng = np.random.default_rng(0)
    flat = np.clip(120 + rng.normal(0, 3, (64, 64, 3)), 0, 255).astype(np.uint8)
    assert estimate_foreground(flat).all()  # untrusted estimate -> whole image


def test_hand_made_disc():
    img = np.full((80, 80, 3), 30, np.uint8)
    yy, xx = np.mgrid[:80, :80]
    disc = (yy - 40) ** 2 + (xx - 40) ** 2 <= 20**2
    img[disc] = (200, 180, 160)
    est = estimate_foreground(img)
    ring = (yy - 40) ** 2 + (xx - 40) ** 2 <= 23**2  # the disc grown by 3 px (blur + closing)
    assert est[disc].all()
    assert not est[~ring].any()


def test_per_category_switch():
    assert uses_foreground("mvtec", "bottle") and not uses_foreground("mvtec", "carpet")
    assert not uses_foreground("mpdd", "bracket_black")
    assert uses_foreground("synth", "nut") and not uses_foreground("synth", "brick")
    with pytest.raises(ValueError, match="H x W x 3"):
        estimate_foreground(np.zeros((4, 4)))
