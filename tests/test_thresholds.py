"""adlib.thresholds: hand-computed thresholds, brute-force order statistics, fallbacks and errors."""

from __future__ import annotations

import json
import logging
from fractions import Fraction

import numpy as np
import pytest

from adlib import metrics as M
from adlib import thresholds as T

# --------------------------------------------------------------------------------------------------
# references written from the definitions
# --------------------------------------------------------------------------------------------------


def ref_quantile(scores, q) -> float:
    """The smallest observed x with #{s <= x} >= 1 + (n - 1) q (exact), i.e. s_(ceil((n-1) q))."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    need = 1 + (s.size - 1) * Fraction(q)
    return float(min(x for x in np.unique(s) if np.count_nonzero(s <= x) >= need))


def ref_target_fpr(labels, scores, f) -> float:
    """The lowest observed score t with #{normal >= t} / #{normal} <= f (exact)."""
    y = np.asarray(labels).ravel() > 0
    s = np.asarray(scores, dtype=np.float64).ravel()
    neg = s[~y]
    ok = [t for t in np.unique(s) if Fraction(int(np.count_nonzero(neg >= t)), neg.size) <= Fraction(f)]
    return float(min(ok))


def f1_of(decisions, labels) -> float:
    d = np.asarray(decisions).ravel()
    y = np.asarray(labels).ravel() > 0
    tp = np.count_nonzero(d & y)
    return 2 * tp / (2 * tp + np.count_nonzero(d & ~y) + np.count_nonzero(~d & y))


# --------------------------------------------------------------------------------------------------
# normal-quantile rule
# --------------------------------------------------------------------------------------------------


def test_from_normal_hand_computed():
    s = [5.0, 1.0, 4.0, 2.0, 3.0]  # sorted 1 2 3 4 5, n - 1 = 4
    assert T.from_normal(s, 0.5).value == 3.0  # j = ceil(2.0) = 2
    assert T.from_normal(s, 0.6).value == 4.0  # j = ceil(2.4) = 3
    assert T.from_normal(s, 0.99).value == 5.0  # j = ceil(3.96) = 4
    assert T.from_normal(s, 0.2).value == 2.0  # j = ceil(0.8) = 1
    t = T.from_normal(s)
    assert t == T.Threshold(5.0, "normal-quantile", "image", {"quantile": 0.99, "method": "higher"}, 5, 0)
    # 50 normal images, q = 0.99: j = ceil(48.51) = 49, the highest score; 200: j = ceil(197.01) = 198
    assert T.from_normal(np.arange(50.0)).value == 49.0
    assert T.from_normal(np.arange(200.0)).value == 198.0
    # ties: sorted 1 1 2 2 2 7, q = 0.5 -> j = ceil(2.5) = 3 -> 2
    assert T.from_normal([2, 7, 1, 2, 1, 2], 0.5).value == 2.0


@pytest.mark.parametrize("seed", range(6))
def test_from_normal_matches_definition_and_numpy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    s = rng.normal(size=n) if seed % 2 else np.round(rng.normal(size=n), 1)
    s[0] = -0.0
    for q in (0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999):
        t = T.from_normal(s, q).value
        assert t == ref_quantile(s, q)
        assert t == np.quantile(s, q, method="higher")
        assert t in s
        # the stated guarantee: at most floor((n - 1)(1 - q)) normal scores strictly above
        assert np.count_nonzero(s > t) <= (n - 1) * (1 - Fraction(q))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_from_normal_maps_matches_sorted_pixels(dtype):
    rng = np.random.default_rng(3)
    maps = (rng.normal(size=(4, 9, 11)) * 10).astype(dtype)
    maps[1, 0, 0] = 0
    for q in (0.1, 0.5, 0.99, 0.9999):
        t = T.from_normal_maps(maps, q)
        assert t.value == ref_quantile(maps, q)
        assert (t.level, t.n_normal, t.n_anomalous) == ("pixel", maps.size, 0)
    assert T.from_normal(maps, 0.5, level="pixel") == T.from_normal_maps(maps, 0.5)


def test_radix_selection_on_extremes():
    # negative and positive zeros, subnormals, huge values: order statistics as np.sort gives them
    x = np.array([-0.0, 0.0, 5e-324, -5e-324, 1e308, -1e308, 1.0, -1.0, 2.0**-1074 * 3, 1e-300])
    srt = np.sort(x)
    for j in range(x.size):
        assert T._kth_smallest(lambda: iter((x[:4], x[4:])), j) == srt[j]


# --------------------------------------------------------------------------------------------------
# labelled rules
# --------------------------------------------------------------------------------------------------

HAND_Y = [0, 0, 0, 0, 1, 1]
HAND_S = [0.1, 0.2, 0.3, 0.6, 0.5, 0.9]


def test_f1_max_and_target_fpr_by_hand():
    # F1 at t = 0.9: 2/3; 0.6: 2/4; 0.5: 4/5; 0.3: 4/6; 0.2: 4/7; 0.1: 4/8
    t = T.from_labels(HAND_Y, HAND_S)
    assert t == T.Threshold(0.5, "f1-max", "image", {"f1": 0.8}, 4, 2)
    # FPR (4 normals) at t = 0.9: 0, 0.6: 1/4, 0.5: 1/4, 0.3: 2/4, 0.2: 3/4, 0.1: 1
    assert T.from_labels(HAND_Y, HAND_S, "target-fpr", target_fpr=0.25).value == 0.5
    assert T.from_labels(HAND_Y, HAND_S, "target-fpr", target_fpr=0.3).value == 0.5
    assert T.from_labels(HAND_Y, HAND_S, "target-fpr", target_fpr=0.2).value == 0.9
    t = T.from_labels(HAND_Y, HAND_S, "target-fpr", target_fpr=0.5)
    assert (t.value, t.params) == (0.3, {"target_fpr": 0.5, "fpr": 0.5})
    t = T.from_labels(HAND_Y, HAND_S, "target-fpr", target_fpr=0.0)
    assert (t.value, t.params["fpr"]) == (0.9, 0.0)


def test_target_fpr_above_every_observed_score(caplog):
    # the highest score is normal and target 0: no observed score has FPR 0; next float above 3
    with caplog.at_level(logging.WARNING, logger="adlib.thresholds"):
        t = T.from_labels([0, 0, 1], [1.0, 3.0, 2.0], "target-fpr", target_fpr=0.0)
    assert t.value == np.nextafter(3.0, np.inf) and t.params["fpr"] == 0.0
    assert "no observed score reaches FPR <= 0.0" in caplog.text
    assert not T.decide([1.0, 3.0, 2.0], t).any()
    # float32 maps: the next float32 above the highest normal pixel
    masks = np.zeros((1, 1, 3), dtype=bool)
    masks[0, 0, 2] = True
    maps = np.array([[[1.0, 3.0, 2.0]]], dtype=np.float32)
    t = T.from_labels(masks, maps, "target-fpr", target_fpr=0.0, level="pixel")
    assert t.value == float(np.nextafter(np.float32(3.0), np.float32(np.inf)))


@pytest.mark.parametrize("seed", range(5))
def test_target_fpr_matches_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(5, 300))
    y = rng.random(n) < 0.3
    y[:2] = [True, False]
    s = rng.normal(size=n) + 2 * y
    if seed % 2:
        s = np.round(s, 1)
    for f in (0.0, 0.01, 0.05, 0.1, 0.5, 0.9):
        if f == 0.0 and s[~y].max() >= s.max():
            continue  # the brute force has no observed candidate (covered by the test above)
        t = T.from_labels(y, s, "target-fpr", target_fpr=f)
        assert t.value == ref_target_fpr(y, s, f)
        assert t.params["fpr"] == np.count_nonzero(s[~y] >= t.value) / np.count_nonzero(~y) <= f


@pytest.mark.parametrize("seed", range(4))
def test_pixel_level_equals_image_rules_on_flattened(seed):
    rng = np.random.default_rng(200 + seed)
    masks = np.zeros((3, 8, 9), dtype=np.uint8)
    masks[0, 2:5, 3:7] = 1
    masks[2, 0:2, 0:3] = 1
    maps = rng.normal(size=masks.shape) + 1.5 * masks
    maps = maps.astype(np.float32) if seed % 2 else np.round(maps, 1)
    y, s = masks.ravel(), maps.ravel()
    for rule in ("f1-max", "target-fpr"):
        px = T.from_labels(masks, maps, rule, target_fpr=0.05, level="pixel")
        im = T.from_labels(y, s, rule, target_fpr=0.05)
        assert px.value == im.value
        assert px.params == pytest.approx(im.params)
        assert (px.level, px.n_normal, px.n_anomalous) == ("pixel", int((masks == 0).sum()), int(masks.sum()))
    assert T.from_labels(masks, maps, "target-fpr", target_fpr=0.05, level="pixel").value == ref_target_fpr(
        masks, maps, 0.05
    )


def test_separable_synthetic_scores_reach_the_reported_f1():
    rng = np.random.default_rng(2026)
    y = np.r_[np.zeros(200, dtype=bool), np.ones(60, dtype=bool)]
    s = np.r_[rng.normal(0.0, 1.0, 200), rng.normal(4.0, 1.0, 60)]
    t = T.from_labels(y, s)
    f1 = M.image_f1_max(y, s)
    assert t.params["f1"] == f1 == f1_of(T.decide(s, t), y)
    assert f1 > 0.9  # N(0, 1) against N(4, 1)
    # pixel level: the same on maps
    masks = np.zeros((4, 16, 16), dtype=bool)
    masks[1, 4:9, 4:10] = True
    masks[3, 10:14, 2:5] = True
    maps = (rng.normal(size=masks.shape) + 4.0 * masks).astype(np.float32)
    t = T.from_labels(masks, maps, level="pixel")
    assert t.params["f1"] == M.pixel_f1_max(masks, maps) == f1_of(T.decide(maps, t), masks)


# --------------------------------------------------------------------------------------------------
# fallbacks and errors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", ["f1-max", "target-fpr"])
def test_only_normal_labels_fall_back_to_the_quantile(rule, caplog):
    s = np.array([0.3, 0.1, 0.9, 0.5, 0.7, 0.2])
    with caplog.at_level(logging.WARNING, logger="adlib.thresholds"):
        t = T.from_labels(np.zeros(6), s, rule, quantile=0.5)
    # sorted 0.1 0.2 0.3 0.5 0.7 0.9, j = ceil(2.5) = 3 -> 0.5 (never the lowest score, 0.1)
    assert t == T.Threshold(
        0.5, "normal-quantile", "image", {"quantile": 0.5, "method": "higher", "fallback_from": rule}, 6, 0
    )
    assert "falling back to the normal-only rule" in caplog.text and "not the lowest score" in caplog.text
    caplog.clear()
    maps = s.reshape(2, 1, 3)
    with caplog.at_level(logging.WARNING, logger="adlib.thresholds"):
        t = T.from_labels(np.zeros((2, 1, 3)), maps, rule, quantile=0.5, level="pixel")
    assert (t.value, t.level, t.rule, t.params["fallback_from"]) == (0.5, "pixel", "normal-quantile", rule)
    assert "no anomalous pixel" in caplog.text


def test_only_anomalous_labels_are_refused():
    with pytest.raises(ValueError, match=r"needs normal samples: all 3 labelled images are anomalous"):
        T.from_labels([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"all 4 labelled pixels are anomalous"):
        T.from_labels(np.ones((1, 2, 2)), np.arange(4.0).reshape(1, 2, 2), "target-fpr", level="pixel")


def test_constant_scores_are_refused():
    msg = r"all 4 scores are equal to 2.0: no threshold separates anything"
    with pytest.raises(ValueError, match=msg):
        T.from_normal([2.0, 2.0, 2.0, 2.0])
    with pytest.raises(ValueError, match=msg):
        T.from_labels([0, 1, 0, 1], [2, 2, 2, 2])
    with pytest.raises(ValueError, match=r"all 8 pixel scores are equal to 0.5"):
        T.from_normal_maps(np.full((2, 2, 2), 0.5))
    with pytest.raises(ValueError, match=r"all 8 pixel scores are equal to 0.5"):
        T.from_labels(np.eye(2)[None].repeat(2, 0), np.full((2, 2, 2), 0.5), level="pixel")


def test_bad_input_errors():
    with pytest.raises(ValueError, match=r"1 non-finite value\(s\) \(1 NaN, 0 inf\) at index \[2\]"):
        T.from_normal([0.1, 0.2, np.nan])
    with pytest.raises(ValueError, match=r"\(0 NaN, 1 inf\) at index \[0\]"):
        T.from_labels([0, 1], [np.inf, 1.0])
    maps = np.zeros((3, 2, 2))
    maps[0, 0, 0] = 1.0
    maps[2, 1, 1] = np.nan
    with pytest.raises(ValueError, match=r"non-finite value\(s\) \(1 NaN, 0 inf\) in image index 2"):
        T.from_normal_maps(maps)
    with pytest.raises(ValueError, match=r"in image index 2"):
        T.from_labels(np.zeros((3, 2, 2)), maps, level="pixel")
    with pytest.raises(ValueError, match="scores are empty"):
        T.from_normal([])
    with pytest.raises(ValueError, match="labels and scores are empty"):
        T.from_labels([], [])
    with pytest.raises(ValueError, match=r"maps are empty \(shape \(0, 4, 4\)\)"):
        T.from_normal_maps(np.zeros((0, 4, 4)))
    for q in (0, 1, 1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match=rf"quantile must be in \(0, 1\), got {q!r}"):
            T.from_normal([0.0, 1.0], q)
    with pytest.raises(ValueError, match=r"quantile must be a number in \(0, 1\), got True"):
        T.from_normal([0.0, 1.0], True)
    with pytest.raises(ValueError, match=r"target_fpr must be in \[0, 1\), got 1.0"):
        T.from_labels([0, 1], [0.0, 1.0], "target-fpr", target_fpr=1.0)
    with pytest.raises(ValueError, match=r"rule must be 'f1-max' or 'target-fpr', got 'normal-quantile'"):
        T.from_labels([0, 1], [0.0, 1.0], "normal-quantile")
    with pytest.raises(ValueError, match=r"level must be one of \('image', 'pixel'\), got 'patch'"):
        T.from_normal([0.0, 1.0], level="patch")
    with pytest.raises(ValueError, match=r"scores must be a 1-D array, got shape \(2, 2\)"):
        T.from_normal(np.eye(2))


# --------------------------------------------------------------------------------------------------
# the Threshold record and decide
# --------------------------------------------------------------------------------------------------


def test_threshold_dict_round_trip():
    for t in (
        T.from_labels(HAND_Y, HAND_S),
        T.from_labels(HAND_Y, HAND_S, "target-fpr", target_fpr=0.25),
        T.from_labels(np.zeros(6), HAND_S),
        T.from_normal_maps(np.random.default_rng(0).random((2, 3, 3)).astype(np.float32), 0.9),
        T.Threshold(float(np.nextafter(3.0, 4.0)), "target-fpr", "image", {"target_fpr": 0.0, "fpr": 0.0}, 2, 1),
    ):
        d = json.loads(json.dumps(t.as_dict()))
        assert T.Threshold.from_dict(d) == t
        assert T.Threshold.from_dict(d).value == t.value  # bit-exact through JSON
    d = T.from_labels(HAND_Y, HAND_S).as_dict()
    assert d == {
        "value": 0.5,
        "rule": "f1-max",
        "level": "image",
        "params": {"f1": 0.8},
        "n_normal": 4,
        "n_anomalous": 2,
    }
    with pytest.raises(ValueError, match=r"threshold dict lacks key\(s\) \['level'\]"):
        T.Threshold.from_dict({k: v for k, v in d.items() if k != "level"})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['colour'\]"):
        T.Threshold.from_dict({**d, "colour": "red"})
    with pytest.raises(ValueError, match=r"Threshold rule must be one of .* got 'mean'"):
        T.Threshold.from_dict({**d, "rule": "mean"})
    with pytest.raises(ValueError, match=r"Threshold value must be a finite number, got nan"):
        T.Threshold.from_dict({**d, "value": float("nan")})
    with pytest.raises(ValueError, match=r"Threshold n_normal must be a non-negative int, got -1"):
        T.Threshold.from_dict({**d, "n_normal": -1})
    with pytest.raises(ValueError, match=r"params\['f1'\] must be a finite number"):
        T.Threshold.from_dict({**d, "params": {"f1": [1]}})


def test_decide():
    t = T.Threshold(0.5, "f1-max")
    assert T.decide([0.4, 0.5, 0.6], t).tolist() == [False, True, True]
    assert T.decide(np.array([[1, 2], [3, 4]]), 3).tolist() == [[False, False], [True, True]]
    # a threshold between two float32 values is not rounded onto one of them
    x = np.array([1.0, np.nextafter(np.float32(1.0), np.float32(2.0))], dtype=np.float32)
    assert T.decide(x, np.nextafter(1.0, 2.0)).tolist() == [False, True]
    with pytest.raises(ValueError, match=r"1 non-finite value\(s\); the first at index \(0, 1\)"):
        T.decide(np.array([[0.0, np.nan]]), t)
    with pytest.raises(ValueError, match="threshold must be a Threshold or a finite number"):
        T.decide([0.0], float("inf"))
