"""The GLASS paper's experiment definitions: plans over datasets on disk, job grids, GLASS-j
assembly, ablation and sensitivity settings, the t-SNE feature sets (their distributions), and
the tables built from them."""

import numpy as np
import pandas as pd
import pytest
import torch

from adlib import reported, tables
from adlib.data import get_dataset
from adlib.data.synth import generate_benchmark
from adlib.models import build
from adlib.papers import glass as paper

TINY = dict(
    backbone="resnet18",
    pretrained=False,
    resize=64,
    crop=64,
    pretrain_embed_dim=32,
    target_embed_dim=32,
    dsc_hidden=32,
    batch_size=4,
    samples_per_epoch=4,
    epochs=1,
    cache_features=False,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("pg_data")
    generate_benchmark(r, categories=["wood", "nut"], n_train=8, n_test_good=4, n_per_defect=2, size=64, progress=False)
    return r


def test_plan_lists_categories_on_disk_and_marks_missing_datasets(root):
    p = paper.plan(["synth", "mvtec"], root)
    assert p.categories == {"synth": ["nut", "wood"]} and list(p.missing) == ["mvtec"]
    assert "missing under the data root" in p.missing["mvtec"]
    assert paper.plan(["synth"], root, ["wood"]).categories == {"synth": ["wood"]}
    with pytest.raises(ValueError, match="unknown synth categories \\['carpet'\\]"):
        paper.plan(["synth"], root, {"synth": ["carpet"]})


def test_main_jobs_cover_every_label_category_and_seed(root):
    p = paper.plan(["synth"], root)
    jobs = paper.main_jobs(p, "smoke", seeds=(0, 1), overrides={"glass": {"epochs": 2}})
    assert len(jobs) == 2 * 4 * 2
    assert {j.label for j in jobs} == {"glass-m", "glass-h", "simplenet", "patchcore"}
    assert all(j.options.get("epochs") == 2 for j in jobs if j.method == "glass")
    assert all("epochs" not in j.options for j in jobs if j.method != "glass")


def test_glass_j_rows_are_the_chosen_variant_rows():
    f = pd.DataFrame(
        {
            "label": ["glass-m", "glass-h", "glass-m", "glass-h"],
            "variant": ["m", "h", "m", "h"],
            "dataset": ["d"] * 4,
            "category": ["a", "a", "b", "b"],
            "image_auroc": [0.1, 0.2, 0.3, 0.4],
        }
    )
    out = paper.add_glass_j(f, {("d", "a"): "manifold", ("d", "b"): "hypersphere"})
    j = out[out.label == "glass-j"].set_index("category")
    assert j.loc["a", "image_auroc"] == 0.1 and j.loc["b", "image_auroc"] == 0.4
    assert list(j["j_choice"]) == ["manifold", "hypersphere"] and len(out) == 6


def test_judge_matches_the_model_fit_decision(root):
    choice, stats = paper.judge("synth", "wood", "smoke", root, **TINY)
    model = build("glass", "smoke", **{**TINY, "variant": "j"})
    model.fit(get_dataset("synth", "wood", "train", root=root, transform=model.transform), progress=False)
    assert choice == model.j_choice and choice in ("manifold", "hypersphere") and stats["rule"] == "spectrogram"


def test_ablation_rows_match_the_reported_tables():
    rep4 = set(reported.load("glass", table="Table 4").method)
    assert set(paper.TABLE4) == rep4
    full = paper.TABLE4["LAS+GAS(GN+GA+TP)"]
    assert full == {} and paper.TABLE4["GAS(GN)"]["las"] is False
    rep1 = set(reported.load("glass", table="Table 1").method)
    assert {r for _, r, _ in paper.MAIN_METHODS} == rep1
    rep3 = set(reported.load("glass", table="Table 3").method)
    assert {r for _, r, _ in paper.WEAK_METHODS if r} == rep3


def test_table5_settings_are_the_seven_level_subsets_and_other_resnets():
    s = paper.table5_settings("paper")
    subsets = [tuple(v["layers"]) for k, v in s.items() if "backbone" not in v]
    assert len(subsets) == 7 == len(set(subsets)) and all(subsets)
    assert ("layer2", "layer3") in subsets
    assert [v["backbone"] for v in s.values() if "backbone" in v] == ["resnet18", "resnet50", "resnet101"]
    assert list(s)[0].startswith("wide_resnet50_2 levels")


def test_r1_settings_scale_the_profile_radius_with_r2_twice_r1():
    paper_r = paper.r1_settings("paper", (0.5, 1.0, 2.0))
    assert list(paper_r) == [0.25, 0.5, 1.0]  # released [0.5, 1]
    assert paper_r[1.0]["manifold_radii"] == (1.0, 2.0)
    smoke = paper.r1_settings("smoke", (1.0,))
    assert smoke == {0.25: {"manifold_radii": (0.25, 0.5)}}  # in units of the measured feature spread


def test_tsne_feature_sets_follow_their_stated_distributions(root):
    model = build("glass", "smoke", **{**TINY, "variant": "m", "manifold_radii": (0.05, 0.1), "radii_unit": "absolute"})
    train = get_dataset("synth", "wood", "train", root=root, transform=model.transform)
    model.fit(train, progress=False)
    images = torch.stack([train[i].image for i in range(4)])
    f = model.synthetic_features(train, images, seed=0)
    d = (f["v"] - f["u"]).norm(dim=1)
    # GAS: after the last truncated projection every feature lies in the [r1, r2] shell of its u
    assert d.min() >= 0.05 - 1e-5 and d.max() <= 0.1 + 1e-5
    assert set(f["labels"].unique().tolist()) <= {0.0, 1.0} and f["u_plus"].shape == f["u"].shape
    sets = paper.tsne_feature_sets(model, train, n_images=4, seed=0, max_points=50)
    assert set(sets) == {"normal", "LAS", "GN", "GAS"} and all(len(v) <= 50 for v in sets.values())
    # GN: u + N(0, 0.015^2) in 32 dimensions, so the shift has norm about 0.015 * sqrt(32)
    again = paper.tsne_feature_sets(model, train, n_images=4, seed=0, max_points=10_000)
    shift = np.linalg.norm(again["GN"] - again["normal"], axis=1)
    assert abs(np.median(shift) - 0.015 * np.sqrt(32)) < 0.015
    dist = paper.nearest_normal_distance(sets)
    assert set(dist) == {"LAS", "GN", "GAS"} and all(v >= 0 for v in dist.values())
    np.testing.assert_array_equal(
        paper.tsne_feature_sets(model, train, n_images=4, seed=0, max_points=50)["GAS"], sets["GAS"]
    )


def test_dataset_level_means_and_markdown_flattening():
    f = pd.DataFrame(
        {
            "label": ["x", "x", "y"],
            "dataset": ["d", "d", "d"],
            "category": ["a", "b", "a"],
            "image_auroc": [0.5, 0.7, 0.9],
            "profile": ["smoke"] * 3,
            "weights": ["w"] * 3,
            "seed": [0] * 3,
            "config_hash": ["h", "h", "k"],
        }
    )
    lvl = tables.dataset_level(f, ("image_auroc",)).set_index("label")
    assert lvl.loc["x", "image_auroc"] == pytest.approx(0.6) and lvl.loc["x", "category"] == "all"
    t = pd.concat({"image_auroc": pd.DataFrame({"x ours": [60.0]}, index=["d"])}, axis=1)
    assert "I-AUROC · x ours" in tables.format_table(t)
