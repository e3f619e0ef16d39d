"""The ADTR paper's experiment definitions: job grids, the shared held-out test set of the push-pull
study, Table 4's rows, the seed summary and Fig. 5's difference vectors."""

import numpy as np
import pandas as pd
import pytest

from adlib import reported
from adlib.data import get_dataset
from adlib.data.synth import generate_benchmark
from adlib.models import build
from adlib.papers import adtr as paper
from adlib.papers.common import Plan

PLAN = Plan(categories={"synth": ["wood", "grass"]})


def test_main_jobs_are_adtr_adtr_plus_and_patchcore():
    jobs = paper.main_jobs(PLAN, "smoke", seeds=(0, 1))
    assert len(jobs) == 2 * 3 * 2
    labels = {j.label for j in jobs}
    assert labels == {"patchcore", "adtr-normal", "adtr-pixel"} == {lab for _, _, lab in paper.MAIN_METHODS if lab}
    plus = [j for j in jobs if j.label == "adtr-pixel"][0].config()
    assert plus["anomalies"] == "confetti" and plus["alpha"] == 0.003
    # the reported side: only S3 means, and every reported method of Tables 1-2 is in the table layout
    rep = reported.load("adtr", table="Table 1")
    assert set(rep["method"]) <= {m for _, m, _ in paper.MAIN_METHODS if m}


def test_push_pull_rows_share_one_holdout_per_seed():
    jobs = paper.push_pull_jobs(
        Plan(categories={"synth": ["wood"]}), "smoke", seeds=(0, 1), counts=(1, 2, 4), holdout=4
    )
    assert list(jobs) == [
        "normal-only",
        "image labels, confetti",
        "image labels, 1 real",
        "image labels, 2 real",
        "image labels, 4 real",
        "pixel labels, confetti",
        "pixel labels, 1 real",
        "pixel labels, 2 real",
        "pixel labels, 4 real",
    ]
    for js in jobs.values():
        assert len(js) == 2 and all(dict(j.protocol)["real_holdout"] == 4 for j in js)
    n = {row: dict(js[0].protocol)["real_anomalies"] for row, js in jobs.items()}
    assert n["normal-only"] == 0 and n["pixel labels, confetti"] == 0 and n["image labels, 2 real"] == 2
    assert jobs["pixel labels, 4 real"][0].config()["anomalies"] == "real"
    assert jobs["normal-only"][0].config()["variant"] == "normal"
    with pytest.raises(ValueError, match="holdout"):
        paper.push_pull_jobs(PLAN, "smoke", counts=(1, 8), holdout=4)
    sens = paper.sensitivity_jobs(Plan(categories={"synth": ["wood"]}), "smoke", alphas=(0.0, 0.3), ks=(1, 64))
    assert sens[("alpha", 0.0)][0].config()["alpha"] == 0.0 and sens[("k", 64)][0].config()["k"] == 64
    assert sens[("alpha", 0.3)][0].config()["variant"] == "pixel" and sens[("k", 1)][0].config()["variant"] == "image"
    # alpha = 0.003 / k = 20 of the sweep are the study's "4 real" rows: the same runs, not new ones
    same = paper.sensitivity_jobs(Plan(categories={"synth": ["wood"]}), "smoke", alphas=(0.003,), ks=(20,))
    assert same[("alpha", 0.003)][0].key() == jobs["pixel labels, 4 real"][0].key()
    assert same[("k", 20)][0].key() == jobs["image labels, 4 real"][0].key()


def test_table4_rows_fill_the_profile_stages():
    assert paper.ablation_overrides({"layers": "{last}"}, "paper") == {"layers": (4,)}
    assert paper.ablation_overrides({"backbone": "resnet34", "layers": "{stages}"}, "smoke") == {
        "backbone": "resnet34",
        "layers": (1, 2, 3),
    }
    abl = paper.ablation_jobs(Plan(categories={"synth": ["wood"]}), "smoke", rows=paper.SMOKE_ABLATION_ROWS)
    assert ("c", "EfficientNet-B4") not in abl and len(abl) == len(paper.ABLATIONS) - len(paper.SMOKE_SKIPPED_ROWS)
    assert {t for t, _ in abl} == {"a", "b", "c", "d"} and all(sum(t == s for t, _ in abl) >= 2 for s in "abcd")
    cfg = {row: js[0].config() for row, js in abl.items()}
    assert cfg[("a", "CNN")]["reconstructor"] == "cnn" and cfg[("b", "pixels")]["target"] == "pixels"
    assert cfg[("d", "last layer")]["layers"] == (3,) or list(cfg[("d", "last layer")]["layers"]) == [3]
    # the full model appears under (a), (b), (d) and, in smoke, (c) ResNet-18: one run
    keys = {
        abl[r][0].key()["config_hash"]
        for r in [("a", "attention + query"), ("b", "features"), ("d", "multi-scale"), ("c", "ResNet-18")]
    }
    assert len(keys) == 1
    assert set(paper.SECONDARY) == {(t, r) for t, r, _ in paper.ABLATIONS}
    with pytest.raises(ValueError, match="unknown Table 4 rows"):
        paper.ablation_jobs(PLAN, "smoke", rows=[("e", "nope")])


def test_summarise_mean_and_sample_std_in_percent():
    jobs = paper.push_pull_jobs(Plan(categories={"synth": ["wood"]}), "smoke", seeds=(0, 1), counts=(1,), holdout=1)
    rows = []
    for i, j in enumerate(jobs["normal-only"] + jobs["pixel labels, 1 real"]):
        rows.append({"config_hash": j.key()["config_hash"], "image_auroc": [0.8, 0.9, 0.5, 0.7][i], "pixel_auroc": 0.9})
    out = paper.summarise(
        pd.DataFrame(rows),
        {k: jobs[k] for k in ("normal-only", "pixel labels, 1 real")},
        metrics=("image_auroc", "pixel_auroc"),
    )
    assert out.loc["normal-only", "image_auroc mean"] == pytest.approx(85.0)
    assert out.loc["normal-only", "image_auroc std"] == pytest.approx(np.std([80, 90], ddof=1))
    assert out.loc["pixel labels, 1 real", "image_auroc mean"] == pytest.approx(60.0)
    assert out.loc["pixel labels, 1 real", "runs"] == 2 and out.loc["normal-only", "pixel_auroc std"] == pytest.approx(
        0.0
    )


def test_difference_vectors_carry_the_grid_labels(tmp_path):
    generate_benchmark(
        tmp_path, categories=["wood"], n_train=4, n_test_good=2, n_per_defect=1, size=128, progress=False
    )
    model = build("adtr", "smoke", epochs=1)
    ds = get_dataset("synth", "wood", "test", root=tmp_path, transform=model.transform)
    model.fit(get_dataset("synth", "wood", "train", root=tmp_path, transform=model.transform), progress=False)
    dv = paper.difference_vectors(model, ds, n_images=4)
    assert dv["d"].shape == (4 * 64, 448) and dv["score"].shape == dv["label"].shape == dv["image"].shape == (256,)
    np.testing.assert_allclose(dv["score"], np.linalg.norm(dv["d"], axis=1), rtol=1e-5)
    # alternating normal / anomalous images: the first has no defect position, the second has some
    assert dv["label"][dv["image"] == 0].sum() == 0 and dv["label"][dv["image"] == 1].sum() > 0


def test_a_labelled_anomaly_without_a_mask_is_anomalous_everywhere(tmp_path):
    """Outlier images (protocol ``outliers``) have no mask: with pixel labels they must still be pushed."""
    import dataclasses

    from adlib.data.base import Record

    generate_benchmark(
        tmp_path, categories=["wood"], n_train=4, n_test_good=2, n_per_defect=1, size=128, progress=False
    )
    model = build("adtr", "smoke", variant="pixel", anomalies="real", epochs=1, adapt_epochs=1, anomaly_prob=1.0)
    tr = get_dataset("synth", "wood", "train", root=tmp_path, transform=model.transform)
    te = get_dataset("synth", "wood", "test", root=tmp_path, transform=model.transform)
    outlier = next(r for r in te.records if r.label == 1)
    tr = dataclasses.replace(
        tr,
        records=list(tr.records)
        + [Record(image_path=outlier.image_path, mask_path=None, label=1, defect_type="outlier")],
    )
    seen = []
    orig = model.adapt_step
    model.adapt_step = lambda f, yg, yi: (seen.append(yg.clone()), orig(f, yg, yi))[1]
    model.fit(tr, progress=False)
    assert seen and all(bool((y == 1).all()) for y in seen)
