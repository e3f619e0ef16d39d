"""Thresholds stored with the model: the ``calibration`` protocol (held-out normal training images)
and the labelled test split's thresholds (``thresholds.json``)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from adlib.cli import main
from adlib.data.base import AnomalyDataset, DataError, Record
from adlib.data.synth import generate_benchmark
from adlib.metrics import f1_max_threshold, image_f1_max
from adlib.models import load
from adlib.protocols import apply_protocol, calibration_set, calibration_split, check_protocol


def _ds(n_normal: int, n_anomalous: int = 0, order=None) -> AnomalyDataset:
    recs = [Record(Path(f"/d/train/good/{i:03d}.png"), 0, "good") for i in range(n_normal)]
    recs += [Record(Path(f"/d/train/bad/{i:03d}.png"), 1, "bad") for i in range(n_anomalous)]
    if order is not None:
        recs = [recs[i] for i in order]
    return AnomalyDataset(recs, name="d", category="c", split="train")


def _names(ds) -> list[str]:
    return sorted(str(r.image_path) for r in ds.records)


def test_calibration_split_sizes_disjoint_and_order_free():
    ds = _ds(20, 3)
    train, held = calibration_split(ds, 0.1, seed=4)
    assert len(held) == 2 and len(train) == 21  # round(0.1 * 20) normal images out; anomalies stay
    assert not set(_names(train)) & set(_names(held))
    assert sorted(_names(train) + _names(held)) == _names(ds)
    assert all(r.label == 0 for r in held.records)
    # the draw depends on the set of files, not on their order; another seed draws others
    shuffled = _ds(20, 3, order=np.random.default_rng(0).permutation(23))
    assert _names(calibration_split(shuffled, 0.1, seed=4)[1]) == _names(held)
    draws = {tuple(_names(calibration_split(ds, 0.1, seed=s)[1])) for s in range(8)}
    assert len(draws) > 1
    # at least one image, and never all of them
    assert len(calibration_split(_ds(3), 0.01, seed=0)[1]) == 1
    with pytest.raises(DataError, match="d/c/train: calibration=0.5 would hold out 1 of its 1"):
        calibration_split(_ds(1), 0.5, seed=0)


def test_calibration_protocol_checked_and_applied_first():
    for bad in (0, 0.0, 0.6, -0.1, True, "0.1"):
        with pytest.raises(ValueError, match="calibration must be a fraction in"):
            check_protocol({"calibration": bad})
    ds, test = _ds(10), _ds(2)
    train, _, detail = apply_protocol({"calibration": 0.2, "shots": 4}, ds, test, seed=1)
    held = calibration_set({"calibration": 0.2}, ds, seed=1)
    assert len(held) == 2 and len(train) == 4  # shots drawn from the 8 images left
    assert not set(_names(train)) & set(_names(held))
    assert detail["calibration_files"] == ["/".join(str(r.image_path).split("/")[-4:]) for r in held.records]
    assert calibration_set({}, ds, seed=1) is None


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    generate_benchmark(
        root, seed=3, categories=["wood"], n_train=8, n_test_good=3, n_per_defect=1, size=64, progress=False
    )
    return root


def _args(root, out, *extra):
    return [
        "patchcore",
        "--dataset",
        "synth",
        "--category",
        "wood",
        "--data-root",
        str(root),
        "--out",
        str(out),
        *extra,
    ]


def test_train_with_calibration_stores_the_threshold_predict_uses(root, tmp_path):
    out = tmp_path / "runs"
    assert main(["train", *_args(root, out, "--calibration", "0.5")]) == 0
    (run,) = (out / "patchcore" / "synth" / "wood").glob("s*-*")
    train = json.loads((run / "train.json").read_text())
    assert train["train_images"] == 4 and train["protocol"] == {"calibration": 0.5}
    held = [
        Path(root) / "synth" / "wood" / "train" / "good" / Path(f).name
        for f in train["protocol_detail"]["calibration_files"]
    ]
    assert len(held) == 4 and all(p.is_file() for p in held)
    # the stored threshold is the 0.99 quantile ("higher": ceil(3 * 0.99) = 3) of the held-out scores: their maximum
    model = load(run / "model.pt")
    scores = model.predict_images(held, progress=False).scores
    thr = json.loads((run / "threshold.json").read_text())
    assert thr["rule"] == "normal-quantile" and thr["n_normal"] == 4 and thr["params"]["quantile"] == 0.99
    assert thr["value"] == pytest.approx(float(np.max(scores)), rel=1e-6)
    calib = json.loads((run / "calibration.json").read_text())
    assert calib["scores"] == pytest.approx(list(scores), rel=1e-6) and calib["pixel"]["level"] == "pixel"
    assert train["calibration"]["image"] == thr["value"]

    # adlib predict decides with it; --quantile alone recomputes it from the stored scores
    good = Path(root) / "synth" / "wood" / "test" / "good"
    assert main(["predict", str(run), str(good), "--out", str(tmp_path / "p"), "--no-overlays"]) == 0
    rows = list(csv.DictReader((tmp_path / "p" / "scores.csv").open()))
    assert {r["rule"] for r in rows} == {"normal-quantile"} and float(rows[0]["threshold"]) == thr["value"]
    assert (
        main(["predict", str(run), str(good), "--out", str(tmp_path / "q"), "--quantile", "0.3", "--no-overlays"]) == 0
    )
    rows = list(csv.DictReader((tmp_path / "q" / "scores.csv").open()))
    assert float(rows[0]["threshold"]) == pytest.approx(float(np.sort(scores)[1]), rel=1e-6)  # ceil(3 * 0.3) = 1

    # the test writes the labelled split's thresholds beside its record; F1-max is the metric's optimum
    assert main(["test", *_args(root, out, "--calibration", "0.5")]) == 0
    rec = json.loads((run / "record.json").read_text())
    assert rec["test_images"] == 3 + len(list((Path(root) / "synth" / "wood" / "test").iterdir())) - 1
    label = json.loads((run / "thresholds.json").read_text())
    pred = np.load(run / "prediction.npz")
    labels, s = pred["labels"], pred["image_scores"]
    f1, value = f1_max_threshold(labels, s)
    assert label["image_f1_max"]["value"] == pytest.approx(value, rel=1e-6)
    assert f1 == pytest.approx(image_f1_max(labels, s))
    assert label["image_f1_max"]["params"]["f1"] == pytest.approx(image_f1_max(labels, s))
    assert label["image_target_fpr"]["params"]["target_fpr"] == 0.05
    assert label["pixel_f1_max"]["level"] == "pixel" and "optimistic" in label["source"]


def test_quantile_alone_needs_a_calibration_run(root, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["train", *_args(root, out)]) == 0
    (run,) = (out / "patchcore" / "synth" / "wood").glob("s*-*")
    assert not (run / "threshold.json").exists()
    good = Path(root) / "synth" / "wood" / "test" / "good"
    capsys.readouterr()
    assert main(["predict", str(run), str(good), "--quantile", "0.9", "--no-overlays"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "calibration.json" in err[0]
    shutil.rmtree(run)
