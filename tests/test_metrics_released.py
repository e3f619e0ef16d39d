"""The PRO of GLASS's released code (:func:`adlib.metrics.pro_released`): hand-computed cases, a
brute force written from the definition, and a golden fixture of the released function itself.

The golden fixture ``tests/golden/pro_released.npz`` (inputs) / ``pro_released.json`` (provenance
and the reference's values) is written by ``tools/golden/make_pro_released.py``, which calls
``metrics.compute_pro`` of cqylunlun/GLASS (commit in the JSON) unmodified.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from adlib import metrics as M
from adlib.models.base import Prediction, evaluate

GOLDEN = Path(__file__).parent / "golden"


# --------------------------------------------------------------------------------------------------
# hand-computed cases: one 7 x 7 image, one anomalous pixel at (3, 3), 4 thresholds 0, .25, .5, .75
# --------------------------------------------------------------------------------------------------


def _image(region_score: float, high_at: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Mask: pixel (3, 3). Map (float64): 0 except the region pixel, one normal pixel of 1.0 at
    ``high_at``, and normal pixels 0.6 (one), 0.3 (two), 0.1 (three), all outside the 5 x 5 window
    of (3, 3) (rows 1-5, columns 1-5). Normal pixels (48) above each threshold 0, .25, .5, .75:
    7, 4, 2, 1, so FPR = (7, 4, 2, 1) / 48, all below 0.3."""
    mask = np.zeros((1, 7, 7), dtype=np.uint8)
    mask[0, 3, 3] = 1
    s = np.zeros((1, 7, 7))
    s[0, 3, 3] = region_score
    s[0][high_at] = 1.0
    s[0, 0, 6] = 0.6
    s[0, 6, 0] = s[0, 0, 0] = 0.3
    s[0, 0, 3] = s[0, 6, 3] = s[0, 3, 6] = 0.1
    return mask, s


def test_dilation_credits_a_detection_two_pixels_away():
    """Region score 0, a normal pixel of 1.0 two columns to its left: undilated, the region is
    never detected (PRO 0 at every threshold, area 0); dilated 5 x 5, it is detected at every
    threshold (PRO 1), so the area is the whole rescaled FPR span, 1 (up to the 1e-10 guard)."""
    mask, s = _image(0.0, (3, 1))
    assert M.pro_released(mask, s, num_thresholds=4) == pytest.approx(1.0, abs=1e-8)
    assert M.pro_released(mask, s, num_thresholds=4, dilation=1) == 0.0
    assert M.pro_released(mask, s, num_thresholds=4, dilation=3) == 0.0  # 3 x 3 reaches one pixel
    # three columns away is outside the 5 x 5 window
    mask, s = _image(0.0, (3, 0))
    assert M.pro_released(mask, s, num_thresholds=4) == 0.0
    # the standard AU-PRO of the first map: the region pixel ties with the 41 normal zeros, so the
    # curve runs flat to FPR 7/48, then diagonally to (1, 1); area up to 0.3, over 0.3
    mask, s = _image(0.0, (3, 1))
    f0 = 7 / 48
    assert M.au_pro(mask, s) == pytest.approx(0.5 * (0.3 - f0) ** 2 / (1 - f0) / 0.3, rel=1e-12)


def test_fpr_rescaling_by_hand():
    """Region score 0.6, nothing higher in its window: PRO = (1, 1, 1, 0) at the thresholds
    (0.6 > 0.5, not > 0.75). FPR (7, 4, 2, 1) / 48 rescaled over the kept points to
    (1, 1/2, 1/6, 0): area (1/2) 2/2 + (1/3) 2/2 + (1/6) 1/2 = 11/12."""
    mask, s = _image(0.6, (6, 6))
    assert M.pro_released(mask, s, num_thresholds=4) == pytest.approx(11 / 12, abs=1e-8)
    # fpr_limit 0.1 drops FPR 7/48 = 0.146: x = (1, 1/3, 0), y = (1, 1, 0): 2/3 + 1/6
    assert M.pro_released(mask, s, num_thresholds=4, fpr_limit=0.1) == pytest.approx(5 / 6, abs=1e-8)
    # the limit is strict: at 4/48 only FPR 2/48 and 1/48 stay, x = (1, 0), y = (1, 0): 1/2
    assert M.pro_released(mask, s, num_thresholds=4, fpr_limit=4 / 48) == pytest.approx(0.5, abs=1e-8)
    with pytest.raises(ValueError, match="at least two of its 4 thresholds with FPR < 0.03"):
        M.pro_released(mask, s, num_thresholds=4, fpr_limit=0.03)  # only 1/48 = 0.021 is below


def test_regions_weighted_equally_over_images():
    """Two images, one region each: a 1-pixel region that is found at every threshold and a
    4-pixel region of which one pixel is found: PRO = (1 + 1/4) / 2 at every threshold; the area
    of a constant PRO over the rescaled span is that constant."""
    masks = np.zeros((2, 9, 9), dtype=np.uint8)
    masks[0, 4, 4] = 1
    masks[1, 0:2, 7:9] = 1  # 2 x 2 in the top right corner
    maps = np.zeros((2, 9, 9), dtype=np.float32)
    maps[0, 4, 4] = 1.0
    maps[1, 0, 8] = 0.9  # one pixel of the 2 x 2 region...
    maps[1, 8, 0] = 0.5  # ...and graded false positives far away, so that the FPR varies
    maps[0, 8, 8] = 0.25
    # dilation 1: exactly one pixel of the second region is above each threshold below 0.9
    got = M.pro_released(masks, maps, num_thresholds=8, dilation=1)
    assert got == pytest.approx(0.625, abs=1e-8)
    # dilated 5 x 5 (clipped at the corner), the 0.9 pixel covers the whole 2 x 2 region
    assert M.pro_released(masks, maps, num_thresholds=8) == pytest.approx(1.0, abs=1e-8)


def test_bad_inputs_give_one_clear_error():
    mask, s = _image(0.6, (6, 6))
    with pytest.raises(ValueError, match="constant maps"):
        M.pro_released(mask, np.full_like(s, 0.5))
    with pytest.raises(ValueError, match="no anomalous pixel"):
        M.pro_released(np.zeros_like(mask), s)
    with pytest.raises(ValueError, match="dilation must be odd"):
        M.pro_released(mask, s, dilation=4)
    with pytest.raises(ValueError, match="num_thresholds must be a positive int"):
        M.pro_released(mask, s, num_thresholds=0)
    with pytest.raises(ValueError, match="fpr_limit"):
        M.pro_released(mask, s, fpr_limit=0)
    with pytest.raises(ValueError, match="differs from masks.shape"):
        M.pro_released(mask, s[:, :5])
    bad = s.copy()
    bad[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        M.pro_released(mask, bad)


# --------------------------------------------------------------------------------------------------
# brute force: one threshold at a time, binary dilation of each prediction (scipy), region by region
# --------------------------------------------------------------------------------------------------


def ref_pro_released(masks, maps, num_th=200, dilation=5, limit=0.3) -> float:
    maps = np.asarray(maps)
    lo, hi = maps.min(), maps.max()
    thresholds = np.arange(lo, hi, (hi - lo) / num_th)
    normal = np.asarray(masks) == 0
    labels = [ndimage.label(m > 0, structure=np.ones((3, 3)))[0] for m in masks]
    window = np.ones((dilation, dilation), dtype=bool)
    fprs, pros = [], []
    for t in thresholds:
        pred = maps > t
        fprs.append(np.count_nonzero(pred & normal) / np.count_nonzero(normal))
        overlaps = []
        for p, lab in zip(pred, labels):
            grown = ndimage.binary_dilation(p, structure=window)
            overlaps += [grown[lab == r].mean() for r in range(1, lab.max() + 1)]
        pros.append(np.mean(overlaps))
    fprs, pros = np.array(fprs), np.array(pros)
    keep = fprs < limit
    x, y = fprs[keep], pros[keep]
    x = (x - x.min()) / (x.max() - x.min() + 1e-10)
    return float(-np.trapezoid(y, x))


def _random_case(seed: int, n: int, h: int, w: int):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, h, w), dtype=np.uint8)
    for i in range(1, n):
        for _ in range(2):
            y0, x0 = rng.integers(0, h - 3), rng.integers(0, w - 3)
            masks[i, y0 : y0 + rng.integers(1, 5), x0 : x0 + rng.integers(1, 5)] = 1
    noise = np.stack([ndimage.gaussian_filter(im, 1.0) for im in rng.standard_normal((n, h, w))])
    maps = noise + 0.8 * np.stack([ndimage.gaussian_filter(m.astype(float), 1.0) for m in masks])
    return masks, maps


@pytest.mark.parametrize(
    "seed, dtype, num_th, dilation",
    [(0, np.float32, 40, 5), (1, np.float64, 25, 3), (2, np.float32, 200, 5), (3, "quantised", 30, 5)],
)
def test_matches_the_brute_force(seed, dtype, num_th, dilation):
    masks, maps = _random_case(seed, 3, 16, 20)
    if dtype == "quantised":  # many ties, integer scores
        maps = np.round((maps - maps.min()) * 10).astype(np.int64)
    else:
        maps = maps.astype(dtype)
    want = ref_pro_released(masks, maps, num_th, dilation)
    got = M.pro_released(masks, maps, num_thresholds=num_th, dilation=dilation)
    assert got == pytest.approx(want, abs=1e-12)
    assert 0.0 < got < 1.0


# --------------------------------------------------------------------------------------------------
# golden fixture: the released metrics.compute_pro itself
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def golden():
    meta = json.loads((GOLDEN / "pro_released.json").read_text())
    with np.load(GOLDEN / "pro_released.npz") as d:
        arrays = {k: d[k] for k in d.files}
    return meta, arrays


def test_golden_provenance(golden):
    meta, arrays = golden
    assert meta["repo"].endswith("cqylunlun/GLASS")
    assert meta["commit"] == "f788d567db552820d744ca2d93e989265aad8c45"
    assert set(meta["expected"]) == set(meta["cases"]) and len(meta["cases"]) >= 4
    for name in meta["cases"]:
        assert arrays[f"{name}_masks"].any() and arrays[f"{name}_maps"].dtype == np.float32


def test_equals_the_released_compute_pro(golden):
    """adlib's ``pro_released`` on the fixture's inputs (masks as given, maps in the dtype the
    reference got) equals the released ``compute_pro``'s values to float64 round-off (the mean
    overlap is summed in another order)."""
    meta, arrays = golden
    for name, case in meta["cases"].items():
        maps = arrays[f"{name}_maps"].astype(case["maps_dtype_in_reference"])
        got = M.pro_released(arrays[f"{name}_masks"], maps, num_thresholds=case["num_th"])
        assert got == pytest.approx(meta["expected"][name], abs=1e-10), name
        # and it is not the standard AU-PRO
        assert abs(got - M.au_pro(arrays[f"{name}_masks"], maps)) > 1e-3, name


# --------------------------------------------------------------------------------------------------
# evaluate(released_pro=True)
# --------------------------------------------------------------------------------------------------


def test_evaluate_adds_pro_released_only_when_asked():
    mask, s = _image(0.6, (6, 6))
    masks = np.concatenate([mask, np.zeros_like(mask)])
    maps = np.concatenate([s, 0.5 * s]).astype(np.float32)
    pred = Prediction(
        image_scores=maps.reshape(2, -1).max(axis=1).astype(np.float64),
        maps=maps,
        labels=np.array([1, 0]),
        masks=masks,
    )
    plain = evaluate(pred)
    assert set(plain) == {"image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "au_pro"}
    both = evaluate(pred, released_pro=True)
    assert set(both) == set(plain) | {"pro_released"}
    assert {k: both[k] for k in plain} == plain
    assert both["pro_released"] == M.pro_released(masks, maps)
    assert "pro_released" not in evaluate(pred, pixel=False, released_pro=True)
