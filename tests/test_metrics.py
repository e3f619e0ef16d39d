"""Tests of adlib.metrics against slow brute-force references and hand-computed values."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from adlib import metrics as M

# --------------------------------------------------------------------------------------------------
# slow brute-force references (written from the definitions, independent of adlib.metrics)
# --------------------------------------------------------------------------------------------------


def ref_auroc(pos_scores, neg_scores) -> float:
    """Count every (anomalous, normal) pair: 1 if the anomalous score is higher, 1/2 if tied."""
    neg = np.asarray(neg_scores, dtype=np.float64)
    wins = 0.0
    for p in np.asarray(pos_scores, dtype=np.float64):
        wins += np.count_nonzero(p > neg) + 0.5 * np.count_nonzero(p == neg)
    return wins / (len(pos_scores) * len(neg))


def ref_pixel_auroc(masks, maps) -> float:
    pos = np.asarray(masks) > 0
    s = np.asarray(maps, dtype=np.float64)
    return ref_auroc(s[pos], s[~pos])


def ref_ap(y, s) -> float:
    """AP = sum over distinct thresholds (descending) of (R_n - R_{n-1}) * P_n."""
    y = np.asarray(y).astype(bool).ravel()
    s = np.asarray(s, dtype=np.float64).ravel()
    n_pos = y.sum()
    ap, r_prev = 0.0, 0.0
    for t in np.unique(s)[::-1]:
        sel = s >= t
        tp = np.count_nonzero(sel & y)
        fp = np.count_nonzero(sel & ~y)
        r = tp / n_pos
        ap += (r - r_prev) * (tp / (tp + fp))
        r_prev = r
    return ap


def ref_label8(mask):
    """8-connected components by breadth-first flood fill (no scipy)."""
    h, w = mask.shape
    lab = np.zeros((h, w), dtype=int)
    n = 0
    for r in range(h):
        for c in range(w):
            if mask[r, c] and lab[r, c] == 0:
                n += 1
                lab[r, c] = n
                queue = deque([(r, c)])
                while queue:
                    y, x = queue.popleft()
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            yy, xx = y + dy, x + dx
                            if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and lab[yy, xx] == 0:
                                lab[yy, xx] = n
                                queue.append((yy, xx))
    return lab, n


def ref_pro_curve(masks, maps):
    """The official curve: one point per distinct score of any pixel, on the full arrays."""
    pos = np.asarray(masks) > 0
    s = np.asarray(maps, dtype=np.float64)
    region_scores = []
    for i in range(pos.shape[0]):
        lab, n = ref_label8(pos[i])
        region_scores += [s[i][lab == k] for k in range(1, n + 1)]
    neg_scores = s[~pos]
    fpr, pro = [0.0], [0.0]
    for t in np.unique(s)[::-1]:
        fpr.append(np.count_nonzero(neg_scores >= t) / neg_scores.size)
        pro.append(np.mean([np.count_nonzero(r >= t) / r.size for r in region_scores]))
    fpr.append(1.0)
    pro.append(1.0)
    return np.minimum(fpr, 1.0), np.minimum(pro, 1.0)


def ref_area(x, y, limit) -> float:
    """Trapezoids segment by segment, the last one cut at x = limit by linear interpolation."""
    area = 0.0
    for x0, y0, x1, y1 in zip(x[:-1], y[:-1], x[1:], y[1:]):
        if x0 >= limit:
            break
        if x1 <= limit:
            area += (x1 - x0) * (y0 + y1) / 2
        else:
            y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            area += (limit - x0) * (y0 + y_lim) / 2
            break
    return area


def ref_au_pro(masks, maps, limit=0.3) -> float:
    x, y = ref_pro_curve(masks, maps)
    return ref_area(x, y, limit) / limit


def sorted_au_pro(masks, maps, limit=0.3) -> float:
    """Flatten-and-sort version of the official algorithm (fine for medium test sizes)."""
    from scipy import ndimage

    pos = np.asarray(masks) > 0
    s = np.asarray(maps, dtype=np.float64).ravel()
    fp_step = (~pos).astype(np.float64).ravel()
    pro_step = np.zeros(pos.shape)
    n_regions = 0
    for i in range(pos.shape[0]):
        lab, n = ndimage.label(pos[i], structure=np.ones((3, 3)))
        for k in range(1, n + 1):
            pro_step[i][lab == k] = 1.0 / np.count_nonzero(lab == k)
        n_regions += n
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    fpr = np.cumsum(fp_step[order]) / fp_step.sum()
    pro = np.cumsum(pro_step.ravel()[order]) / n_regions
    last_of_tie = np.append(np.diff(s_sorted) != 0, True)
    x = np.minimum(np.concatenate(([0.0], fpr[last_of_tie], [1.0])), 1.0)
    y = np.minimum(np.concatenate(([0.0], pro[last_of_tie], [1.0])), 1.0)
    return ref_area(x, y, limit) / limit


# --------------------------------------------------------------------------------------------------
# random cases
# --------------------------------------------------------------------------------------------------

KINDS = ("blobs", "speckle", "ties_float", "ties_int")


def make_case(kind: str, seed: int, n=4, h=12, w=12):
    """Small masks/maps; image 0 is always normal (empty mask)."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, h, w), dtype=bool)
    for i in range(1, n):
        if kind == "speckle":  # many tiny regions, plenty of diagonal contacts
            masks[i] = rng.random((h, w)) < 0.2
        else:  # rectangles, possibly overlapping and running off the edge
            for _ in range(rng.integers(1, 4)):
                r0, c0 = rng.integers(0, h), rng.integers(0, w)
                rh, rw = rng.integers(1, 6, size=2)
                masks[i, r0 : r0 + rh, c0 : c0 + rw] = True
    maps = rng.normal(size=(n, h, w)) + rng.uniform(0.0, 2.0) * masks
    if kind == "ties_float":  # a handful of levels: heavy ties within and across classes
        maps = np.round(maps * 1.5) / 1.5
    elif kind == "ties_int":
        maps = np.clip(np.round(maps + 2), 0, 4).astype(np.uint8)
    else:
        maps = maps.astype(np.float32)
    if not masks.any():
        masks[1, 0, 0] = True
    return masks, maps


CASES = [(kind, seed) for kind in KINDS for seed in range(4)]


@pytest.mark.parametrize("kind,seed", CASES)
def test_pixel_auroc_and_ap_match_references(kind, seed):
    masks, maps = make_case(kind, seed)
    assert M.pixel_auroc(masks, maps) == pytest.approx(ref_pixel_auroc(masks, maps), abs=1e-12)
    y, s = masks.ravel(), maps.ravel()
    ap = M.pixel_ap(masks, maps)
    assert ap == pytest.approx(ref_ap(y, s), abs=1e-12)
    assert ap == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert M.pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


@pytest.mark.parametrize("kind,seed", CASES)
def test_au_pro_matches_brute_force(kind, seed):
    masks, maps = make_case(kind, seed)
    ref_x, ref_y = ref_pro_curve(masks, maps)
    for limit in (0.3, 0.05, 0.5, 1.0):
        expected = ref_area(ref_x, ref_y, limit) / limit
        got = M.au_pro(masks, maps, fpr_limit=limit)
        assert got == pytest.approx(expected, abs=1e-12), limit
        assert 0.0 <= got <= 1.0
    # the returned curve is the official one with collinear points dropped
    x, y = M.pro_curve(masks, maps)
    assert x[0] == y[0] == 0.0 and x[-1] == y[-1] == 1.0
    assert np.all(np.diff(x) >= 0) and np.all(np.diff(y) >= 0)
    ref_pts = np.stack([ref_x, ref_y], axis=1)
    for px, py in zip(x, y):
        assert np.min(np.abs(ref_pts - [px, py]).max(axis=1)) < 1e-12, (px, py)
    # one pass gives the same three numbers
    both = M.pixel_metrics(masks, maps, fpr_limit=0.3)
    assert both["au_pro"] == M.au_pro(masks, maps)
    assert both["pixel_auroc"] == M.pixel_auroc(masks, maps)
    assert both["pixel_ap"] == M.pixel_ap(masks, maps)


def test_ref_label8_agrees_with_scipy_8_connectivity():
    from scipy import ndimage

    for seed in range(3):
        masks, _ = make_case("speckle", seed)
        for m in masks:
            lab, n = ref_label8(m)
            lab_s, n_s = ndimage.label(m, structure=np.ones((3, 3)))
            assert n == n_s and np.array_equal(lab > 0, lab_s > 0)


def test_medium_size_against_sklearn_and_sorted_au_pro():
    """20 images of 256 x 256 (1.3e6 pixels): compare with the flatten-everything versions."""
    rng = np.random.default_rng(7)
    n, h, w = 20, 256, 256
    yy, xx = np.mgrid[:h, :w]
    masks = np.zeros((n, h, w), dtype=np.uint8)
    for i in range(n // 2, n):  # the first half are normal images
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.integers(0, h), rng.integers(0, w)
            ry, rx = rng.integers(3, 40, size=2)
            masks[i][((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = 255
    maps = (rng.normal(size=(n, h, w)) + 1.2 * (masks > 0)).astype(np.float32)
    maps[:, ::7] = np.round(maps[:, ::7], 1)  # some ties too
    y, s = masks.ravel() > 0, maps.ravel()
    res = M.pixel_metrics(masks, maps)
    assert res["pixel_auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-10)
    assert res["pixel_ap"] == pytest.approx(average_precision_score(y, s), abs=1e-10)
    assert res["au_pro"] == pytest.approx(sorted_au_pro(masks, maps), abs=1e-10)


# --------------------------------------------------------------------------------------------------
# hand-computed values
# --------------------------------------------------------------------------------------------------


def test_au_pro_perfect_and_reversed():
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[1, 1:3, 1:3] = True
    good = masks.astype(np.float32)  # every anomalous pixel above every normal one
    # curve (0,0) -> (0,1) -> (1,1): area up to any limit equals the limit
    for limit in (0.3, 0.01, 1.0):
        assert M.au_pro(masks, good, fpr_limit=limit) == 1.0
    # every normal pixel above every anomalous one: (0,0) -> (1,0) -> (1,1), zero area below FPR 1
    assert M.au_pro(masks, 1.0 - good) == 0.0
    assert M.pixel_auroc(masks, good) == 1.0 and M.pixel_auroc(masks, 1.0 - good) == 0.0


def test_au_pro_hand_one_region():
    # mask [1 1 0 0], map [.9 .5 .7 .1]. Thresholds: .9 -> (0, 1/2); .7 -> (1/2, 1/2);
    # .5 -> (1/2, 1); .1 -> (1, 1). Up to 0.3: 0.3 * 1/2 = 0.15 -> 0.5.
    # Up to 1: 1/2 * 1/2 + 1/2 * 1 = 0.75.
    masks = np.array([[[1, 1, 0, 0]]], dtype=np.uint8)
    maps = np.array([[[0.9, 0.5, 0.7, 0.1]]])
    assert M.au_pro(masks, maps) == pytest.approx(0.5, abs=1e-15)
    assert M.au_pro(masks, maps, fpr_limit=1.0) == pytest.approx(0.75, abs=1e-15)


def test_au_pro_hand_tie_diagonal_interpolated():
    # mask [1 0 0 0 0], map [.5 .5 .5 .2 .9]; 4 normal pixels.
    # .9 (normal) -> (1/4, 0); .5 (1 anomalous + 2 normal, tied) -> (3/4, 1) diagonally;
    # .2 -> (1, 1). At FPR .3 the diagonal has PRO (.3 - .25) / .5 = .1:
    # area = .05 * .1 / 2 = .0025 -> / .3 = 1/120.
    # Up to 1: .5 * (0 + 1) / 2 + .25 * 1 = .5.
    masks = np.array([[[1, 0, 0, 0, 0]]], dtype=bool)
    maps = np.array([[[0.5, 0.5, 0.5, 0.2, 0.9]]], dtype=np.float32)
    assert M.au_pro(masks, maps) == pytest.approx(1 / 120, abs=1e-15)
    assert M.au_pro(masks, maps, fpr_limit=1.0) == pytest.approx(0.5, abs=1e-15)
    x, y = M.pro_curve(masks, maps)
    np.testing.assert_allclose(x, [0, 0.25, 0.75, 1])
    np.testing.assert_allclose(y, [0, 0, 1, 1])


def test_au_pro_hand_two_regions_weighted_equally():
    # mask [1 1 1 0 1 0 0]: region A (size 3), region B (size 1); 3 normal pixels.
    # map  [.8 .8 .2 .5 .3 .1 .05]
    # .8 -> A 2/3, PRO (2/3 + 0)/2 = 1/3 at FPR 0; .5 -> (1/3, 1/3); .3 -> B: (1/3, 5/6);
    # .2 -> (1/3, 1); .1 -> (2/3, 1); .05 -> (1, 1).
    # Up to 0.3: 0.3 * 1/3 = 0.1 -> 1/3.  Up to 0.5: 1/3 * 1/3 + (1/2 - 1/3) * 1 = 5/18 -> 5/9.
    # (Weighting pixels instead of regions would give 1/2 at the first step, not 1/3.)
    masks = np.array([[[1, 1, 1, 0, 1, 0, 0]]], dtype=np.float64)
    maps = np.array([[[0.8, 0.8, 0.2, 0.5, 0.3, 0.1, 0.05]]])
    assert M.au_pro(masks, maps) == pytest.approx(1 / 3, abs=1e-15)
    assert M.au_pro(masks, maps, fpr_limit=0.5) == pytest.approx(5 / 9, abs=1e-15)


def test_au_pro_diagonal_contact_is_one_region():
    # (0,0), (1,1), (1,2) touch diagonally: one 8-connected region of 3 pixels
    # (4-connectivity would give two regions, {(0,0)} and {(1,1),(1,2)}).
    # Only (0,0) scores above the normal pixels: PRO = 1/3 up to FPR 1 (it would be 1/2 with
    # two regions), so AU-PRO = 1/3 for any limit below 1.
    masks = np.zeros((1, 3, 4), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 1, 2] = True
    maps = np.full((1, 3, 4), 0.5)
    maps[0, 0, 0] = 0.9
    maps[0, 1, 1] = maps[0, 1, 2] = 0.1
    assert M.au_pro(masks, maps) == pytest.approx(1 / 3, abs=1e-15)
    assert M.au_pro(masks, maps) == pytest.approx(ref_au_pro(masks, maps), abs=1e-15)


def test_region_spanning_edge_and_single_region_image():
    masks = np.zeros((3, 6, 6), dtype=bool)
    masks[1, :, 4:] = True  # touches top, bottom and right edges
    masks[2, 0, 0] = True  # single-pixel region in a corner
    rng = np.random.default_rng(3)
    maps = (rng.normal(size=masks.shape) + masks).astype(np.float32)
    for limit in (0.3, 1.0):
        expected = ref_au_pro(masks, maps, limit)
        assert M.au_pro(masks, maps, limit) == pytest.approx(expected, abs=1e-12)


def test_pixel_auroc_hand_with_ties():
    # anomalous [.8, .5], normal [.5, .2, .1]: .8 beats 3; .5 beats 2 and ties 1 -> (3 + 2.5) / 6
    masks = np.array([[[1, 1, 0, 0, 0]]], dtype=np.uint8)
    maps = np.array([[[0.8, 0.5, 0.5, 0.2, 0.1]]], dtype=np.float32)
    assert M.pixel_auroc(masks, maps) == pytest.approx(11 / 12, abs=1e-15)
    # PR: .8 -> R 1/2, P 1; .5 -> R 1, P 2/3 (tie merged): AP = 1/2 + 1/2 * 2/3 = 5/6
    assert M.pixel_ap(masks, maps) == pytest.approx(5 / 6, abs=1e-15)


def test_image_metrics_hand_values():
    labels = [1, 1, 0, 0, 0]
    scores = [0.8, 0.5, 0.5, 0.2, 0.1]
    assert M.image_auroc(labels, scores) == pytest.approx(11 / 12, abs=1e-15)
    assert M.image_ap(labels, scores) == pytest.approx(5 / 6, abs=1e-15)
    # labels [0 0 1 1], scores [.1 .4 .35 .8]: pairs .35>.1, .8>.1, .8>.4 -> 3/4;
    # AP: .8 -> R 1/2 P 1; .4 -> no recall change; .35 -> R 1 P 2/3 -> 5/6
    assert M.image_auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert M.image_ap([False, False, True, True], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(5 / 6)
    assert M.image_ap([1, 1], [0.3, 0.1]) == 1.0  # only anomalous images: precision is always 1


@pytest.mark.parametrize("seed", range(3))
def test_image_metrics_random_against_references(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(40) < 0.4
    s = np.round(rng.normal(size=40) + y, 1)
    assert M.image_auroc(y, s) == pytest.approx(ref_auroc(s[y], s[~y]), abs=1e-12)
    assert M.image_ap(y.astype(int), s) == pytest.approx(ref_ap(y, s), abs=1e-12)


# --------------------------------------------------------------------------------------------------
# dtypes, limits
# --------------------------------------------------------------------------------------------------


def test_mask_and_map_dtypes_are_equivalent():
    masks, maps = make_case("blobs", 11)
    expected = M.pixel_metrics(masks, maps)
    for m in (masks.astype(np.uint8), masks.astype(np.uint8) * 255, masks.astype(np.float32)):
        assert M.pixel_metrics(m, maps) == expected
    # float64 maps equal to the float32 ones give the same result; float16 stays exact too
    assert M.pixel_metrics(masks, maps.astype(np.float64)) == expected
    m16 = maps.astype(np.float16)
    assert M.au_pro(masks, m16) == pytest.approx(ref_au_pro(masks, m16), abs=1e-12)
    assert M.pixel_auroc(masks, m16) == pytest.approx(ref_pixel_auroc(masks, m16), abs=1e-12)


def test_result_never_exceeds_one_and_limits():
    masks, maps = make_case("speckle", 5)
    sep = masks * 10.0 + maps.astype(np.float64) * 1e-3  # perfect separation, many regions
    for limit in (1e-6, 0.1, 0.3, 0.7, 1.0):
        v = M.au_pro(masks, sep, fpr_limit=limit)
        assert v == pytest.approx(1.0, abs=1e-12) and v <= 1.0
        assert 0.0 <= M.au_pro(masks, maps, fpr_limit=limit) <= 1.0
    # a larger limit gives a different value on a non-trivial map
    assert M.au_pro(masks, maps, 0.3) != M.au_pro(masks, maps, 1.0)
    for bad in (0, -0.1, 1.5, float("nan"), "0.3", None, True):
        with pytest.raises(ValueError, match="fpr_limit"):
            M.au_pro(masks, maps, fpr_limit=bad)


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------


def test_nan_and_inf_in_maps_name_count_and_image():
    masks, maps = make_case("blobs", 0)
    maps = maps.copy()
    maps[2, 3, 4] = np.nan
    maps[2, 0, 0] = np.inf
    for fn in (M.pixel_auroc, M.pixel_ap, M.au_pro, M.pro_curve, M.pixel_metrics):
        with pytest.raises(ValueError, match=r"2 non-finite value\(s\) \(1 NaN, 1 inf\) in image index 2"):
            fn(masks, maps)


def test_shape_mismatch_names_both_shapes():
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[1, 2, 2] = True
    maps = np.zeros((2, 4, 4), dtype=np.float32)
    for fn in (M.pixel_auroc, M.pixel_ap, M.au_pro):
        with pytest.raises(ValueError, match=r"\(2, 4, 4\).*\(2, 8, 8\)"):
            fn(masks, maps)
    with pytest.raises(ValueError, match="N x H x W"):
        M.pixel_auroc(masks[0], maps[0])


def test_non_binary_masks_rejected():
    masks, maps = make_case("blobs", 1)
    for bad_value in (2, 128, -1):
        m = masks.astype(np.int16)
        m[3, 0, 0] = bad_value
        with pytest.raises(ValueError, match=rf"binary.*image index 3.*{bad_value}"):
            M.au_pro(m, maps)
    m = masks.astype(np.float32)
    m[2, 1, 1] = np.nan
    with pytest.raises(ValueError, match="binary.*image index 2"):
        M.pixel_auroc(m, maps)
    m = masks.astype(np.uint8)
    m[1][m[1] > 0] = 255
    m[1, 0, 0] = 1  # mixes 1 and 255 in one image
    with pytest.raises(ValueError, match="binary"):
        M.pixel_ap(m, maps)


def test_single_class_masks_rejected():
    maps = np.random.default_rng(0).normal(size=(2, 5, 5))
    empty = np.zeros((2, 5, 5), dtype=bool)
    for fn in (M.pixel_auroc, M.pixel_ap, M.au_pro):
        with pytest.raises(ValueError, match="only one class.*no anomalous pixel"):
            fn(empty, maps)
    with pytest.raises(ValueError, match="only one class.*no normal pixel"):
        M.pixel_auroc(~empty, maps)
    assert M.pixel_ap(~empty, maps) == 1.0


def test_image_level_errors():
    with pytest.raises(ValueError, match="image_auroc is undefined when only one class.*all 3 labels are 1"):
        M.image_auroc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="only one class.*labels are 0"):
        M.image_auroc([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="image_ap is undefined without anomalous"):
        M.image_ap([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="3 labels but 2 scores"):
        M.image_auroc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"non-binary value\(s\) \[2\] at index \[1\]"):
        M.image_auroc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"1 non-finite value\(s\) \(1 NaN, 0 inf\) at index \[2\]"):
        M.image_ap([0, 1, 1], [0.1, 0.2, np.nan])
    with pytest.raises(ValueError, match=r"\(0 NaN, 1 inf\)"):
        M.image_auroc([0, 1], [np.inf, 0.2])
    with pytest.raises(ValueError, match="1-D"):
        M.image_auroc([[0, 1]], [[0.1, 0.2]])


# --------------------------------------------------------------------------------------------------
# resize_maps
# --------------------------------------------------------------------------------------------------


def test_resize_maps_matches_torch_and_chunks():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(5, 7, 9)).astype(np.float64)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(maps.astype(np.float32))[:, None],
        size=(20, 16),
        mode="bilinear",
        align_corners=False,
    )[:, 0].numpy()
    for chunk in (None, 1, 2, 5, 100):
        out = M.resize_maps(maps, (20, 16), chunk_size=chunk)
        assert out.dtype == np.float32 and out.shape == (5, 20, 16)
        np.testing.assert_array_equal(out, expected)
    down = M.resize_maps(maps, 4)
    assert down.shape == (5, 4, 4)
    # constant maps stay constant; same size is a float32 copy; 2-D input gives 2-D output
    np.testing.assert_allclose(M.resize_maps(np.full((2, 3, 3), 0.25), (11, 13)), 0.25, rtol=1e-6)
    same = M.resize_maps(maps, (7, 9))
    np.testing.assert_array_equal(same, maps.astype(np.float32))
    assert M.resize_maps(maps[0], (14, 18)).shape == (14, 18)
    assert M.resize_maps(torch.from_numpy(maps), (8, 8)).shape == (5, 8, 8)
    with pytest.raises(ValueError, match="size"):
        M.resize_maps(maps, (0, 4))
    with pytest.raises(ValueError, match="shape"):
        M.resize_maps(maps[None], (4, 4))


def test_resized_maps_feed_the_pixel_metrics():
    masks, _ = make_case("blobs", 2, h=16, w=16)
    low = np.random.default_rng(1).normal(size=(4, 4, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="resize_maps"):
        M.au_pro(masks, low)
    up = M.resize_maps(low, masks.shape[1:])
    assert M.au_pro(masks, up) == pytest.approx(ref_au_pro(masks, up), abs=1e-12)
