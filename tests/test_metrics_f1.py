"""F1-max metrics of adlib.metrics against brute force (every threshold, exact fractions) and by hand."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from adlib import metrics as M


def ref_f1_max(labels, scores) -> tuple[Fraction, float]:
    """Try every observed score as threshold (anomalous when score >= t); exact F1; highest t on ties."""
    y = np.asarray(labels).ravel() > 0
    s = np.asarray(scores).ravel()
    best, best_t = Fraction(-1), None
    for t in np.unique(s):
        pred = s >= t
        tp = int(np.count_nonzero(pred & y))
        fp = int(np.count_nonzero(pred & ~y))
        fn = int(np.count_nonzero(~pred & y))
        f1 = Fraction(2 * tp, 2 * tp + fp + fn)
        if f1 >= best:  # ascending thresholds: ">=" keeps the highest of the tied ones
            best, best_t = f1, float(t)
    return best, best_t


def _image_cases():
    rng = np.random.default_rng(20)
    for n in (2, 3, 7, 40, 300):
        for tied in (False, True):
            y = rng.random(n) < 0.3
            y[0], y[1] = True, False
            s = rng.integers(0, 4, n).astype(np.float64) if tied else rng.normal(size=n) + y
            yield y, s


@pytest.mark.parametrize("y,s", list(_image_cases()))
def test_image_f1_max_matches_brute_force(y, s):
    f1, t = M.f1_max_threshold(y, s)
    ref, ref_t = ref_f1_max(y, s)
    assert f1 == pytest.approx(float(ref), rel=1e-15, abs=0)
    assert t == ref_t
    assert M.image_f1_max(y.astype(int), s) == f1


def test_image_f1_max_hand_computed():
    # t = 0.9: TP 1 FP 0 -> 2/3; t = 0.5: TP 2 FP 1 -> 4/5; t = 0.2: TP 2 FP 2 -> 2/3
    assert M.f1_max_threshold([0, 0, 1, 1, 0], [0.1, 0.5, 0.5, 0.9, 0.2]) == (0.8, 0.5)
    # a tie of F1 at two thresholds: t = 4 -> 2/3, t = 1 -> 4/6; the higher one wins
    f1, t = M.f1_max_threshold([1, 0, 0, 1], [4, 3, 2, 1])
    assert (f1, t) == (pytest.approx(2 / 3), 4.0)
    # tied scores enter together: t = 2 flags one of each (2/4), t = 1 all (4/6)
    f1, t = M.f1_max_threshold([0, 1, 0, 1], [1, 1, 2, 2])
    assert (f1, t) == (pytest.approx(2 / 3), 1.0)
    # perfectly separated
    assert M.f1_max_threshold([0, 0, 1], [0.0, 1.0, 2.5]) == (1.0, 2.5)


def test_image_f1_max_errors():
    with pytest.raises(ValueError, match=r"f1_max_threshold is undefined when only one class .* all 3 labels are 0"):
        M.f1_max_threshold([0, 0, 0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"image_f1_max is undefined when only one class .* all 2 labels are 1"):
        M.image_f1_max([1, 1], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"non-finite value\(s\) \(1 NaN, 0 inf\) at index \[1\]"):
        M.image_f1_max([0, 1], [0.0, np.nan])
    with pytest.raises(ValueError, match="empty"):
        M.f1_max_threshold([], [])
    with pytest.raises(ValueError, match="differ in length"):
        M.f1_max_threshold([0, 1], [0.0])


def _pixel_cases():
    rng = np.random.default_rng(21)
    for shape in ((1, 4, 5), (3, 6, 7), (5, 10, 9)):
        for kind in ("float64", "float32", "tied", "int"):
            masks = np.zeros(shape, dtype=np.uint8)
            masks[0, 1:3, 1:4] = 255
            masks[-1, -2:, -3:] = 255
            if kind == "tied":
                maps = np.round(rng.random(shape) + 0.3 * (masks > 0), 1)
            elif kind == "int":
                maps = rng.integers(0, 5, shape) + (masks > 0)
            else:
                maps = (rng.normal(size=shape) + 1.5 * (masks > 0)).astype(kind)
            yield masks, maps


@pytest.mark.parametrize("masks,maps", list(_pixel_cases()))
def test_pixel_f1_max_matches_brute_force(masks, maps):
    f1, t = M.pixel_f1_max_threshold(masks, maps)
    ref, ref_t = ref_f1_max(masks, maps)
    assert f1 == pytest.approx(float(ref), rel=1e-15, abs=0)
    assert t == ref_t
    assert M.pixel_f1_max(masks, maps) == f1
    assert M.f1_max_threshold(masks.ravel() > 0, maps.ravel()) == (f1, t)


def test_pixel_f1_max_hand_computed():
    masks = np.zeros((1, 2, 3), dtype=bool)
    masks[0, 0, :2] = True  # anomalous pixels score 0 and 1, normal ones 2..5
    maps = np.arange(6.0).reshape(1, 2, 3)
    # t = 1: TP 1 FP 4 -> 2/7; t = 0: TP 2 FP 4 -> 4/8 (higher thresholds held by normals only: worse)
    assert M.pixel_f1_max_threshold(masks, maps) == (0.5, 0.0)
    maps2 = maps.copy()
    maps2[0, 0, :2] = [9.0, 7.0]  # t = 9: 2/3; t = 7: 4/4
    assert M.pixel_f1_max_threshold(masks, maps2) == (1.0, 7.0)
    # a tie of F1 (t = 4: 2/3, t = 1: 4/6): the higher threshold wins, as at the image level
    f1, t = M.pixel_f1_max_threshold(np.array([[[1, 0], [0, 1]]]), np.array([[[4.0, 3.0], [2.0, 1.0]]]))
    assert (f1, t) == (pytest.approx(2 / 3), 4.0)


def test_pixel_f1_max_errors():
    masks = np.zeros((2, 3, 3))
    maps = np.random.default_rng(0).random((2, 3, 3))
    with pytest.raises(ValueError, match=r"pixel_f1_max is undefined when only one class .* no anomalous pixel"):
        M.pixel_f1_max(masks, maps)
    with pytest.raises(ValueError, match=r"pixel_f1_max_threshold is undefined .* \(no normal pixel\)"):
        M.pixel_f1_max_threshold(np.ones((2, 3, 3)), maps)
    masks[0, 0, 0] = 1
    bad = maps.copy()
    bad[1, 2, 2] = np.inf
    with pytest.raises(ValueError, match=r"1 non-finite value\(s\) \(0 NaN, 1 inf\) in image index 1"):
        M.pixel_f1_max(masks, bad)
    with pytest.raises(ValueError, match=r"maps.shape \(2, 3, 2\) differs from masks.shape \(2, 3, 3\)"):
        M.pixel_f1_max(masks, maps[:, :, :2])
