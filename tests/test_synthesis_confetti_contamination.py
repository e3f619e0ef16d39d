"""FCDD confetti noise (ADTR+ synthetic anomalies) and ADL training-set contamination."""

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from adlib.data.base import Record
from adlib.synthesis.confetti import (
    blob_footprint,
    confetti_grid_label,
    confetti_noise,
    confetti_pattern,
    replace_with_confetti,
    sample_blob_count,
    sample_blobs,
)
from adlib.synthesis.contamination import (
    ContaminatedRecord,
    ContaminationError,
    add_contamination_noise,
    contaminate,
    contamination_count,
    draw_plan,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _images(b=4, c=3, h=64, w=64, seed=0):
    return torch.randint(0, 256, (b, c, h, w), generator=_gen(seed), dtype=torch.uint8)


# ---------------------------------------------------------------- confetti


def test_confetti_output_and_changed_mask_exact():
    img = _images(6, h=80, w=96)
    noisy, mask = confetti_noise(img, _gen(1))
    assert noisy.dtype == torch.uint8 and noisy.shape == img.shape
    assert int(noisy.min()) >= 0 and int(noisy.max()) <= 255
    assert mask.dtype == torch.bool and mask.shape == (6, 80, 96)
    assert torch.equal(mask, (noisy != img).any(dim=1))
    assert mask.flatten(1).any(1).all()  # every image got at least one visible blob


def test_confetti_deterministic_under_seed():
    img = _images(3)
    a, ma = confetti_noise(img, _gen(7))
    b, mb = confetti_noise(img, _gen(7))
    c, _ = confetti_noise(img, _gen(8))
    assert torch.equal(a, b) and torch.equal(ma, mb) and not torch.equal(a, c)


def test_at_least_one_blob_per_layer_and_image():
    # 32 x 32: expected blob count 0.018 / 0.012 per layer, so "at least one" is doing the work
    pat = confetti_pattern((16, 3, 32, 32), _gen(2))
    for blobs in (pat.colour_blobs, pat.grey_blobs):
        counts = np.bincount([b.sample for b in blobs], minlength=16)
        assert counts.min() >= 1
    assert all(b.value == (-255, -255, -255) for b in pat.grey_blobs)
    assert all(-256 <= v <= -1 for b in pat.colour_blobs for v in b.value)


def test_blob_sides_angles_and_footprint():
    blobs = sample_blobs(200, 3, 64, 64, _gen(3), 1e-3, colour_range=(-256, 0))
    sides = np.array([b.side for b in blobs])
    angles = np.array([b.angle for b in blobs])
    assert len(blobs) > 500
    assert sides.min() == 8 and sides.max() == 54 and set(sides) <= set(range(8, 55))
    assert abs(sides.mean() - 31) < 2.0  # uniform on 8..54
    assert np.all(np.abs(angles) <= 45) and angles.min() < -40 and angles.max() > 40
    for side in (8, 9, 54):
        dy, dx = blob_footprint(side, 0.0)
        assert len(dy) == side * side and int(dy.max() - dy.min()) + 1 == side
        dy, dx = blob_footprint(side, 30.0)
        assert abs(len(dy) - side * side) <= 0.15 * side * side


def test_blob_count_law():
    g = _gen(4)
    counts = [sample_blob_count(224 * 224, 1.8e-5, g, ensure_blob=False) for _ in range(3000)]
    assert np.mean(counts) == pytest.approx(224 * 224 * 1.8e-5, rel=0.08)
    assert min(sample_blob_count(16 * 16, 1.2e-5, g) for _ in range(200)) >= 1


def test_inversion_makes_bright_blobs_on_dark_images():
    dark = torch.zeros((2, 3, 64, 64), dtype=torch.uint8)
    noisy, mask = confetti_noise(dark, _gen(5))
    assert mask.any() and int(noisy.max()) > 0  # the (negative) noise was inverted
    bright = torch.full((2, 3, 64, 64), 200, dtype=torch.uint8)
    noisy, mask = confetti_noise(bright, _gen(5))
    assert mask.any() and torch.all(noisy <= bright)  # not inverted: confetti darkens


def test_replacement_rate_is_p():
    batch = torch.full((3000, 1, 16, 16), 128, dtype=torch.uint8)
    out = replace_with_confetti(batch, _gen(6), p=0.5)
    assert out.replaced.float().mean().item() == pytest.approx(0.5, abs=0.04)
    kept = ~out.replaced
    assert torch.equal(out.images[kept], batch[kept]) and not out.mask[kept].any()
    assert torch.equal(out.mask, (out.images != batch).any(1))
    assert out.mask[out.replaced].flatten(1).any(1).float().mean() > 0.95
    assert not replace_with_confetti(batch[:20], _gen(0), p=0.0).replaced.any()
    assert replace_with_confetti(batch[:20], _gen(0), p=1.0).replaced.all()


def test_grid_label_modes_by_hand():
    m = torch.zeros(2, 4, 4, dtype=torch.bool)
    m[0, 0, 0] = True  # one pixel in the top-left cell
    m[0, 2:, 2:] = True  # the whole bottom-right cell
    assert torch.equal(confetti_grid_label(m, 2), torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]]))
    assert torch.equal(
        confetti_grid_label(m, 2, mode="area"), torch.tensor([[[0.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]])
    )
    assert torch.equal(
        confetti_grid_label(m, 2, mode="area", area_threshold=0.25)[0], torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    )
    assert torch.equal(confetti_grid_label(m, (1, 2), mode="image"), torch.tensor([[[1.0, 1.0]], [[0.0, 0.0]]]))
    both = torch.tensor([True, True])
    assert torch.equal(confetti_grid_label(m, 2, mode="image", replaced=both), torch.ones(2, 2, 2))
    assert torch.equal(confetti_grid_label(m[:, None], 4), m.float())
    with pytest.raises(ValueError, match="mode"):
        confetti_grid_label(m, 2, mode="mean")


# ---------------------------------------------------------------- contamination


def _records():
    train = [Record(Path(f"/d/bottle/train/good/{i:03d}.png"), 0, "good", None, "bottle", "train") for i in range(100)]
    test = [Record(Path(f"/d/bottle/test/good/{i:03d}.png"), 0, "good", None, "bottle", "test") for i in range(20)]
    for d in ("broken_large", "broken_small", "contamination"):
        test += [
            Record(
                Path(f"/d/bottle/test/{d}/{i:03d}.png"),
                1,
                d,
                Path(f"/d/bottle/ground_truth/{d}/{i:03d}_mask.png"),
                "bottle",
                "test",
            )
            for i in range(15)
        ]
    return train, test


def test_contamination_count_hand_values():
    assert contamination_count(0.1, 100) == 11
    assert contamination_count(0.0, 100) == 0
    assert contamination_count(0.2, 209) == 52
    assert contamination_count(0.15, 0) == 0
    for bad in (1.0, 1, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=f"got {bad!r}".replace("(", r"\(").replace(".", r"\.")):
            contamination_count(bad, 100)
    with pytest.raises(ValueError, match="n_train"):
        contamination_count(0.1, -3)


def test_leak_free_vs_released_split():
    train, test = _records()
    lf = contaminate(train, test, 0.1, seed=0)
    rel = contaminate(train, test, 0.1, seed=0, protocol="released")
    assert lf.protocol == "leak-free" and rel.protocol == "released"
    assert lf.n_contaminating == 11 and lf.chosen_files == rel.chosen_files
    chosen = set(lf.chosen_files)
    assert len(chosen) == 11 and all(r.label == 1 for r in lf.chosen)
    # leak-free removes exactly the chosen anomalies; released keeps the test set as it was
    assert [r for r in test if r.image_path not in chosen] == lf.test
    assert rel.test == test and rel.leaked and not lf.leaked
    # training: the normal records, then the contaminating ones presented as unlabelled normals
    assert lf.train[:100] == train
    extra = lf.train[100:]
    assert all(isinstance(r, ContaminatedRecord) for r in extra)
    assert [r.image_path for r in extra] == lf.chosen_files
    assert all(r.label == 0 and r.defect_type == "good" and r.mask_path is None and r.split == "train" for r in extra)
    assert all(r.true_label == 1 and r.true_mask_path is not None and r.true_defect_type != "good" for r in extra)
    # no record lost or duplicated (leak-free: every original image is in exactly one of train / test)
    all_paths = [r.image_path for r in lf.train] + [r.image_path for r in lf.test]
    assert len(all_paths) == len(set(all_paths)) == len(train) + len(test)
    # inputs untouched
    assert _records() == (train, test)


def test_contamination_deterministic_and_order_independent():
    train, test = _records()
    a = contaminate(train, test, 0.15, seed=3).chosen_files
    b = contaminate(train, test, 0.15, seed=3).chosen_files
    shuffled = test[:]
    random.Random(0).shuffle(shuffled)
    c = contaminate(train, shuffled, 0.15, seed=3).chosen_files
    d = contaminate(train, test, 0.15, seed=4).chosen_files
    assert a == b == c and a != d and len(a) == 17
    assert contaminate(train, test, 0.15, seed=np.random.default_rng(3)).chosen_files == a
    assert len(contaminate(train, test, 0.15, seed=3).noise_seeds) == 17
    assert contaminate(train, test, 0.0, seed=0).train == train


def test_contamination_shortage_and_bad_input():
    train, test = _records()  # 100 normal training images, 45 test anomalies
    # leak-free: eps 0.5 hides 100 anomalies and must leave one to test: one line with both counts
    with pytest.raises(ContaminationError, match=r"^mvtec/bottle: leak-free .*needs 101 test anomalies.*only 45 "):
        contaminate(train, test, 0.5, seed=0, where="mvtec/bottle")
    with pytest.raises(ContaminationError, match="not allowed under the leak-free"):
        contaminate(train, test, 0.1, seed=0, on_shortage="with_replacement")
    # released: with replacement when short (the released try/except fallback), and it says so
    dup = contaminate(train, test, 0.5, seed=0, protocol="released")
    assert dup.with_replacement and dup.n_contaminating == 100 and dup.n_available == 45
    assert dup.n_distinct == len(set(dup.chosen_files)) <= 45 and len(dup.noise_seeds) == 100
    assert dup.test == test  # the released protocol keeps every test anomaly
    # not short: the same draw as before (without replacement), nothing recorded as replaced
    ok = contaminate(train, test, 0.3, seed=0, protocol="released")  # k = 42 of 45
    assert not ok.with_replacement and ok.n_distinct == ok.n_contaminating == 42
    with pytest.raises(ContaminationError, match=r"needs 100 anomalies.*only 45"):
        contaminate(train, test, 0.5, seed=0, protocol="released", on_shortage="raise")
    # leak-free with exactly k anomalies would leave none to test (AUROC undefined): refused
    with pytest.raises(ContaminationError, match=r"needs 43 test anomalies \(42 to hide.*only 42"):
        contaminate(train, [r for r in test if r.label == 0] + [r for r in test if r.label == 1][:42], 0.3, seed=0)
    assert sum(r.label for r in contaminate(train, test, 0.3, seed=0).test) == 3  # 42 of 45: three left
    with pytest.raises(ContaminationError, match="protocol"):
        contaminate(train, test, 0.1, seed=0, protocol="leaky")
    with pytest.raises(ContaminationError, match="on_shortage"):
        contaminate(train, test, 0.1, seed=0, on_shortage="duplicate")
    with pytest.raises(ContaminationError, match="label 0"):
        contaminate(train + test[-1:], test, 0.1, seed=0)
    with pytest.raises(ValueError, match="got 1.0"):
        contaminate(train, test, 1.0, seed=0)
    with pytest.raises(ContaminationError, match="only 0"):  # released, but nothing to draw from
        contaminate(train, test[:20], 0.1, seed=0, protocol="released")


# Class sizes of the real datasets (normal training images, anomalous test images).
# MVTec AD: Bergmann et al., "MVTec AD - A Comprehensive Real-World Dataset for Unsupervised Anomaly
# Detection", CVPR 2019, Table 1 (3629 training and 1725 test images: 467 good, 1258 defective;
# 5354 in all, the paper's abstract).
MVTEC_COUNTS = {
    "bottle": (209, 63),
    "cable": (224, 92),
    "capsule": (219, 109),
    "carpet": (280, 89),
    "grid": (264, 57),
    "hazelnut": (391, 70),
    "leather": (245, 92),
    "metal_nut": (220, 93),
    "pill": (267, 141),
    "screw": (320, 119),
    "tile": (230, 84),
    "toothbrush": (60, 30),
    "transistor": (213, 40),
    "wood": (247, 60),
    "zipper": (240, 119),
}
MVTEC_TEST_GOOD = 467
# VisA: Zou et al., "SPot-the-Difference Self-Supervised Pre-training for Anomaly Detection and
# Segmentation", ECCV 2022; the one-class split amazon-science/spot-diff split_csv/1cls.csv (commit
# 2a692ab), which both ADL's loader and adlib.data.visa read: rows with split=train, label=normal
# and split=test, label=anomaly per object (8659 training images; 962 good and 1200 anomalous test).
VISA_COUNTS = {
    "candle": (900, 100),
    "capsules": (542, 100),
    "cashew": (450, 100),
    "chewinggum": (453, 100),
    "fryum": (450, 100),
    "macaroni1": (900, 100),
    "macaroni2": (900, 100),
    "pcb1": (904, 100),
    "pcb2": (901, 100),
    "pcb3": (905, 100),
    "pcb4": (904, 100),
    "pipe_fryum": (450, 100),
}
VISA_TEST_GOOD = 962


def test_real_class_size_tables_add_up():
    assert sum(n for n, _ in MVTEC_COUNTS.values()) == 3629
    assert sum(a for _, a in MVTEC_COUNTS.values()) + MVTEC_TEST_GOOD == 1725
    assert 3629 + 1725 == 5354
    assert sum(n for n, _ in VISA_COUNTS.values()) == 8659 and sum(a for _, a in VISA_COUNTS.values()) == 1200


def _class_records(cls: str, n_train: int, n_anomalies: int):
    train = [Record(Path(f"/d/{cls}/train/good/{i:04d}.png"), 0, "good", None, cls, "train") for i in range(n_train)]
    test = [Record(Path(f"/d/{cls}/test/good/{i:04d}.png"), 0, "good", None, cls, "test") for i in range(5)]
    test += [
        Record(Path(f"/d/{cls}/test/bad/{i:04d}.png"), 1, "bad", Path(f"/m/{i:04d}.png"), cls, "test")
        for i in range(n_anomalies)
    ]
    return train, test


def _draws(counts: dict, eps: float, protocol: str):
    """class -> the ContaminatedSplit of a real draw on records of that class's size, or the error."""
    out = {}
    for cls, (n, a) in counts.items():
        train, test = _class_records(cls, n, a)
        try:
            out[cls] = contaminate(train, test, eps, seed=0, protocol=protocol, where=f"data/{cls}")
        except ContaminationError as exc:
            out[cls] = exc
    return out


def test_released_protocol_samples_with_replacement_exactly_where_the_real_classes_are_short():
    mv20 = _draws(MVTEC_COUNTS, 0.2, "released")
    assert not any(isinstance(v, Exception) for v in mv20.values())
    assert {c for c, s in mv20.items() if s.with_replacement} == {"grid", "hazelnut", "transistor", "wood"}
    for c, s in mv20.items():  # the count drawn is the released formula's; duplicates only when short
        n, a = MVTEC_COUNTS[c]
        assert s.n_contaminating == contamination_count(0.2, n) and s.n_available == a
        assert s.n_distinct <= a and (s.n_distinct == s.n_contaminating) == (not s.with_replacement)
        assert len(s.test) == a + 5  # released: every test anomaly stays
    assert not any(s.with_replacement for s in _draws(MVTEC_COUNTS, 0.1, "released").values())
    visa15 = _draws(VISA_COUNTS, 0.15, "released")
    short15 = {c for c, s in visa15.items() if s.with_replacement}
    assert len(short15) == 7 and short15 == {c for c, (n, _) in VISA_COUNTS.items() if n >= 900}
    assert all(s.with_replacement for s in _draws(VISA_COUNTS, 0.2, "released").values())  # all 12


def test_leak_free_visa_at_10_percent_names_the_seven_classes_left_without_test_anomalies():
    lf = _draws(VISA_COUNTS, 0.1, "leak-free")
    failed = {c: str(v) for c, v in lf.items() if isinstance(v, ContaminationError)}
    assert len(failed) == 7 and set(failed) == {c for c, (n, _) in VISA_COUNTS.items() if n >= 900}
    for c, msg in failed.items():
        n, a = VISA_COUNTS[c]
        k = contamination_count(0.1, n)
        assert k == a  # the draw would take every test anomaly of the class
        assert "\n" not in msg and msg.startswith(f"data/{c}: leak-free contamination at eps=0.1")
        assert f"needs {k + 1} test anomalies ({k} to hide among {n} normal" in msg and f"only {a} are" in msg
    for c, s in lf.items():
        if c not in failed:
            assert not s.leaked and len([r for r in s.test if r.label == 1]) == VISA_COUNTS[c][1] - s.n_contaminating
    # the pure plan agrees with the draw, class by class
    for c, (n, a) in VISA_COUNTS.items():
        if c in failed:
            with pytest.raises(ContaminationError, match=c):
                draw_plan(0.1, n, a, "leak-free", where=c)
        else:
            assert draw_plan(0.1, n, a, "leak-free").test_anomalies_left == a - contamination_count(0.1, n) >= 1
    # MVTec AD leak-free: fine at 10 and 15 %, short at 20 % on the four classes the released draw repeats
    assert not any(isinstance(v, Exception) for e in (0.1, 0.15) for v in _draws(MVTEC_COUNTS, e, "leak-free").values())
    lf20 = _draws(MVTEC_COUNTS, 0.2, "leak-free")
    assert {c for c, v in lf20.items() if isinstance(v, Exception)} == {"grid", "hazelnut", "transistor", "wood"}


def test_contamination_noise_clamp_mode():
    grey = np.full((256, 256, 3), 128, dtype=np.uint8)
    out = add_contamination_noise(grey, np.random.default_rng(0), range_mode="clamp", jpeg_quality=None)
    diff = out.astype(np.float64) - 128
    assert out.dtype == np.uint8 and abs(diff.mean()) < 0.02
    assert diff.std() == pytest.approx(np.sqrt(4 + 1 / 12), rel=0.02)  # std 2, rounded to integers
    black = np.zeros((64, 64), dtype=np.uint8)
    white = np.full((64, 64), 255, dtype=np.uint8)
    ob = add_contamination_noise(black, _gen(0), range_mode="clamp", jpeg_quality=None)
    ow = add_contamination_noise(white, _gen(0), range_mode="clamp", jpeg_quality=None)
    assert ob.min() == 0 and 0 < ob.mean() < 1 and ow.max() == 255 and 254 < ow.mean() < 255


def test_contamination_noise_released_defaults():
    ramp = np.tile(np.linspace(0, 255, 256).astype(np.uint8), (256, 1))
    rgb = np.stack([ramp] * 3, axis=-1)
    a = add_contamination_noise(rgb, _gen(1), jpeg_quality=None)  # min-max rescale, released
    assert a.min() == 0 and a.max() == 255
    # an affine contrast stretch of the noisy image: a ~ s * (x + noise) + t, truncated
    x, y = rgb.reshape(-1).astype(np.float64), a.reshape(-1).astype(np.float64)
    s, t = np.polyfit(x, y, 1)
    assert 0.9 < s < 1.0  # 255 / (max - min) with max - min a little over 255
    assert (y - (s * x + t)).std() == pytest.approx(np.sqrt((2 * s) ** 2 + 1 / 12), rel=0.05)
    full = add_contamination_noise(rgb, _gen(1))  # + JPEG quality 95 round trip
    assert full.shape == rgb.shape and full.dtype == np.uint8
    assert np.array_equal(full, add_contamination_noise(rgb, _gen(1)))  # deterministic
    t = torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
    tt = add_contamination_noise(t, _gen(1))
    assert isinstance(tt, torch.Tensor) and tt.shape == t.shape and tt.dtype == torch.uint8
    with pytest.raises(ValueError, match="range_mode"):
        add_contamination_noise(rgb, _gen(1), range_mode="wrap")
