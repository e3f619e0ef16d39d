"""The ADL paper's experiment definitions: contamination protocols per level, the job grid (eps = 0
shared with the standard runs), grid rows, mean/sd curves by hand, and the rank shifts of Fig. 3."""

import numpy as np
import pandas as pd
import pytest

from adlib.papers import adl as paper
from adlib.papers.common import Plan
from adlib.results import Job
from adlib.synthesis.contamination import contamination_count


def test_protocol_per_level():
    assert paper.protocol(0.0) == {} and paper.protocol(0) == {}
    assert paper.protocol(0.1) == {"contamination": 0.1, "contamination_protocol": "leak-free"}
    assert paper.protocol(0.2, "released")["contamination_protocol"] == "released"
    with pytest.raises(ValueError, match="contamination_protocol must be one of"):
        paper.protocol(0.1, "leaky")


def test_grid_jobs_share_clean_runs_and_separate_levels():
    p = Plan(categories={"synth": ["wood", "nut"]})
    g = paper.grid_jobs(
        p, "smoke", {"PatchCore": ("patchcore", {}), "DRAEM / Vanilla": ("vanilla", {})}, (0.0, 0.1), seeds=(0, 1)
    )
    assert sorted(g) == [("DRAEM / Vanilla", 0.0), ("DRAEM / Vanilla", 0.1), ("PatchCore", 0.0), ("PatchCore", 0.1)]
    assert all(len(js) == 2 * 2 for js in g.values())
    assert g[("PatchCore", 0.0)][0] == Job.make("patchcore", "synth", "wood", "smoke", 0)  # the standard run
    assert dict(g[("PatchCore", 0.1)][0].protocol)["contamination"] == 0.1
    released = paper.grid_jobs(p, "smoke", {"PatchCore": ("patchcore", {})}, (0.1,), contamination_protocol="released")
    assert released[("PatchCore", 0.1)][0].key()["config_hash"] != g[("PatchCore", 0.1)][0].key()["config_hash"]
    assert set(paper.TABLE2) == {"DL", "Wt-DL", "DL-CE", "SoftDL-CE", "Wt-SoftDL-CE", "ADL"}
    s = paper.sensitivity_settings((0.1, 1.5), (0.0, 1.0))
    assert s == {"lambda": {0.1: {"lam": 0.1}, 1.5: {"lam": 1.5}}, "alpha": {0.0: {"alpha": 0.0}, 1.0: {"alpha": 1.0}}}


def test_grid_frame_and_curve_table_by_hand():
    p = Plan(categories={"synth": ["wood", "nut"]})
    g = paper.grid_jobs(p, "smoke", {"PatchCore": ("patchcore", {})}, (0.0, 0.1), seeds=(0, 1))
    rows = []
    values = {
        (0.0, "wood", 0): 0.9,
        (0.0, "nut", 0): 0.7,
        (0.0, "wood", 1): 0.8,
        (0.0, "nut", 1): 0.6,
        (0.1, "wood", 0): 0.5,
        (0.1, "nut", 0): 0.5,
        (0.1, "wood", 1): 0.7,
        (0.1, "nut", 1): 0.7,
    }
    for (_, e), jobs in g.items():
        for j in jobs:
            rows.append(
                {
                    "config_hash": j.key()["config_hash"],
                    "dataset": j.dataset,
                    "category": j.category,
                    "seed": j.seed,
                    "image_auroc": values[(e, j.category, j.seed)],
                    "image_ap": 1.0,
                }
            )
    rows.append(
        {"config_hash": "other", "dataset": "synth", "category": "wood", "seed": 0, "image_auroc": 0.0, "image_ap": 0.0}
    )
    f = paper.grid_frame(pd.DataFrame(rows), g)
    assert len(f) == 8 and set(f.eps) == {0.0, 0.1} and set(f.name) == {"PatchCore"}
    c = paper.curve_table(f)
    # eps 0: per-seed category means 0.8 and 0.7 -> mean 75, sd 5; eps 0.1: 0.5 and 0.7 -> 60, sd 10
    assert c.loc[("PatchCore", "synth", 0.0), "image_auroc"] == pytest.approx(75.0)
    assert c.loc[("PatchCore", "synth", 0.0), "image_auroc_sd"] == pytest.approx(5.0)
    assert c.loc[("PatchCore", "synth", 0.1), "image_auroc"] == pytest.approx(60.0)
    assert c.loc[("PatchCore", "synth", 0.1), "image_auroc_sd"] == pytest.approx(10.0)
    assert c.loc[("PatchCore", "synth", 0.1), "seeds"] == 2


def test_rank_shifts_by_hand():
    a = {
        "paths": np.array(["p1", "p2", "p3", "p4"]),
        "image_scores": np.array([0.1, 0.2, 0.3, 0.4]),
        "labels": np.array([0, 0, 1, 1]),
        "defect_types": np.array(["good", "good", "crack", "hole"]),
    }
    # p4 left the test set (leak-free); p1 jumps from lowest to highest among p1..p3
    b = {
        "paths": np.array(["p3", "p1", "p2"]),
        "image_scores": np.array([0.5, 0.9, 0.1]),
        "labels": np.array([1, 0, 0]),
        "defect_types": np.array(["crack", "good", "good"]),
    }
    m = paper.rank_shifts(a, b, top=3)
    # common p1, p2, p3: ranks in a 0, .5, 1; in b 1, 0, .5
    assert list(m.path) == ["p1", "p2", "p3"]
    assert list(m["shift"]) == pytest.approx([1.0, -0.5, -0.5])
    assert list(m.defect_type) == ["good", "good", "crack"] and list(m.label) == [0, 0, 1]
    with pytest.raises(ValueError, match="only 1 test image"):
        paper.rank_shifts(a, {"paths": np.array(["p1"]), "image_scores": np.array([1.0])})


# ------------------------------------------------------------------ released vs leak-free (issue 17)


def _rows_for(grid, value):
    """A results frame for every job of ``grid``: image AUROC ``value(name, eps, job)``, AP 1."""
    rows = []
    for (name, e), jobs in grid.items():
        for j in jobs:
            v = value(name, e, j)
            rows.append(
                {
                    "config_hash": j.key()["config_hash"],
                    "dataset": j.dataset,
                    "category": j.category,
                    "seed": j.seed,
                    "image_auroc": v,
                    "image_ap": 1.0,
                }
            )
    return pd.DataFrame(rows)


def test_protocol_grid_labels_and_profile_defaults():
    p = Plan(categories={"synth": ["wood"]})
    methods = {"PatchCore": ("patchcore", {})}
    assert paper.protocol_grid(p, "smoke", methods, (0.1,), (0,)) == paper.grid_jobs(p, "smoke", methods, (0.1,))
    g = paper.protocol_grid(p, "smoke", methods, (0.1, 0.2), (0, 1), ("released", "leak-free"))
    assert sorted(g) == [
        ("PatchCore [leak-free]", 0.1),
        ("PatchCore [leak-free]", 0.2),
        ("PatchCore [released]", 0.1),
        ("PatchCore [released]", 0.2),
    ]
    assert dict(g[("PatchCore [released]", 0.1)][0].protocol)["contamination_protocol"] == "released"
    assert g[("PatchCore [leak-free]", 0.2)] == paper.grid_jobs(p, "smoke", methods, (0.2,), (0, 1))[("PatchCore", 0.2)]
    for bad in ((), ("leaky",), ("released", "released")):
        with pytest.raises(ValueError, match="protocols must be distinct"):
            paper.protocol_grid(p, "smoke", methods, (0.1,), (0,), bad)
    d = paper.NOTEBOOK_DEFAULTS
    for nb in ("01_main_table", "02_robustness"):
        assert d[nb]["paper"]["protocols"] == ["released", "leak-free"] and d[nb]["smoke"]["protocols"] == ["leak-free"]
    assert paper.protocols_text(["released", "leak-free"]) == "released vs leak-free"
    assert paper.protocols_text(["leak-free"]) == "leak-free"


def test_paper_profile_table1_grid_covers_every_mvtec_and_visa_class_at_10_15_20():
    # the classes of MVTec AD and VisA (the real datasets are not needed to enumerate the jobs)
    MVTEC = (
        "bottle cable capsule carpet grid hazelnut leather metal_nut pill screw tile toothbrush transistor wood zipper"
    )
    VISA = "candle capsules cashew chewinggum fryum macaroni1 macaroni2 pcb1 pcb2 pcb3 pcb4 pipe_fryum"
    MVTEC, VISA = MVTEC.split(), VISA.split()
    assert paper.DATASETS["paper"] == ("mvtec", "visa") and paper.TABLE1_EPS == (0.1, 0.15, 0.2)
    p = Plan(categories={"mvtec": list(MVTEC), "visa": list(VISA)})
    assert len(MVTEC) == 15 and len(VISA) == 12
    protocols = paper.defaults("01_main_table", "paper", protocols=None)
    seeds = paper.defaults("01_main_table", "paper", seeds=None)
    g = paper.protocol_grid(p, "paper", paper.TRAINED, paper.TABLE1_EPS, seeds, protocols)
    for name in paper.TRAINED:
        for proto in ("released", "leak-free"):
            for e in paper.TABLE1_EPS:
                jobs = g[(f"{name} [{proto}]", e)]
                assert {(j.dataset, j.category) for j in jobs} == {("mvtec", c) for c in MVTEC} | {
                    ("visa", c) for c in VISA
                }
                assert {j.seed for j in jobs} == {0, 1, 2} and len(jobs) == 27 * 3
                assert all(dict(j.protocol) == {"contamination": e, "contamination_protocol": proto} for j in jobs)


def test_protocol_methods_and_table1_side_by_side():
    m = paper.protocol_methods(paper.TABLE1_METHODS, ["released", "leak-free"])
    assert m[:2] == [
        ("PatchCore [released]", "PatchCore", "PatchCore [released]"),
        ("PatchCore [leak-free]", None, "PatchCore [leak-free]"),
    ]
    assert ("DeSTSeg", "DestSeg", None) in m and ("LOE", "LOE", None) in m  # reported only: one column
    assert paper.protocol_methods(paper.TABLE1_METHODS, ["leak-free"]) == list(paper.TABLE1_METHODS)
    p = Plan(categories={"synth": ["wood", "nut"]})
    protos = ["released", "leak-free"]
    g = paper.protocol_grid(p, "smoke", paper.TRAINED, (0.1,), (0,), protos)
    # released 0.9 / leak-free 0.7 for ADL on wood, 0.5 elsewhere
    val = lambda name, e, j: (
        (0.9 if "released" in name else 0.7) if (name.startswith("ADL") and j.category == "wood") else 0.5
    )  # noqa: E731
    rows = paper.grid_frame(_rows_for(g, val), g)
    rep = pd.DataFrame(
        [
            {
                "method": "ADL",
                "dataset": "mvtec",
                "category": "wood",
                "metric": "image_auroc",
                "value": 0.95,
                "setting": "noise=0.1",
            },
        ]
    )
    t1 = paper.table1(rep, rows, (0.1,), protos)
    cols = list(t1.columns)
    i = cols.index("ADL [released] paper")
    assert cols[i : i + 3] == ["ADL [released] paper", "ADL [released] ours", "ADL [leak-free] ours"]
    assert "ADL [leak-free] paper" not in cols and "PatchCore [leak-free] paper" not in cols
    assert t1.loc[("eps=0.1", "synth", "wood"), "ADL [released] ours"] == pytest.approx(90.0)
    assert t1.loc[("eps=0.1", "synth", "wood"), "ADL [leak-free] ours"] == pytest.approx(70.0)
    assert t1.loc[("eps=0.1", "synth", "average"), "ADL [leak-free] ours"] == pytest.approx(60.0)
    assert t1.loc[("eps=0.1", "mvtec", "wood"), "ADL [released] paper"] == pytest.approx(95.0)
    # one protocol: the former single-protocol table
    g1 = paper.protocol_grid(p, "smoke", paper.TRAINED, (0.1,), (0,), ["leak-free"])
    t_one = paper.table1(rep, paper.grid_frame(_rows_for(g1, val), g1), (0.1,), ["leak-free"])
    assert list(t_one.columns)[:2] == ["PatchCore paper", "PatchCore ours"] and "ADL paper" in t_one.columns


def test_protocol_comparison_by_hand():
    p = Plan(categories={"synth": ["wood", "nut"]})
    g = paper.protocol_grid(p, "smoke", {"ADL": ("adl", {})}, (0.2,), (0, 1, 2), paper.PROTOCOLS)
    # per seed, mean over wood and nut: leak-free 0.80, 0.70, 0.60; released 0.90, 0.75, 0.70
    lf = {0: (0.9, 0.7), 1: (0.8, 0.6), 2: (0.7, 0.5)}
    rel = {0: (1.0, 0.8), 1: (0.85, 0.65), 2: (0.8, 0.6)}

    def val(name, e, j):
        return (rel if "released" in name else lf)[j.seed][0 if j.category == "wood" else 1]

    t, verdict = paper.protocol_comparison(paper.grid_frame(_rows_for(g, val), g), "ADL")
    r = t.loc[("synth", "image_auroc")]
    assert r["leak-free"] == pytest.approx(70.0) and r["leak-free sd"] == pytest.approx(10.0)
    assert r["released"] == pytest.approx((90 + 75 + 70) / 3)
    d = np.array([10.0, 5.0, 10.0])  # paired differences per seed
    assert r["released − leak-free"] == pytest.approx(d.mean()) and r["released − leak-free sd"] == pytest.approx(
        d.std(ddof=1)
    )
    assert r["seeds"] == 3 and t.loc[("synth", "image_ap"), "released − leak-free"] == pytest.approx(0.0)
    # mean 8.33, se 1.67: more than two standard errors
    assert (
        verdict
        == "ADL on synth: released − leak-free image AUROC +8.3 ± 2.9 points (paired over 3 seeds, mean ± sd) -> released higher"
    )
    lower, _ = paper.protocol_comparison(
        paper.grid_frame(
            _rows_for(
                g,
                lambda n, e, j: val(
                    n.replace("released", "x").replace("leak-free", "released").replace("x", "leak-free"), e, j
                ),
            ),
            g,
        ),
        "ADL",
    )
    assert lower.loc[("synth", "image_auroc"), "released − leak-free"] == pytest.approx(-d.mean())


def test_runnable_leaves_out_short_leak_free_draws_and_names_them(benchmark, caplog):
    p = Plan(categories={"synth": ["wood"]})
    g = paper.protocol_grid(p, "smoke", {"ADL": ("adl", {})}, (0.2, 0.6), (0,), paper.PROTOCOLS)
    with caplog.at_level("WARNING", logger="adlib.papers.adl"):
        jobs = paper.runnable(g, benchmark)
    # wood: 8 normal training images and 8 test anomalies; eps 0.6 hides int(0.6 / 0.4 * 8) = 11
    # (1.4999999999999998 in floating point, as in the released formula)
    k = contamination_count(0.6, 8)
    assert k == 11
    kept = {(dict(j.protocol)["contamination"], dict(j.protocol)["contamination_protocol"]) for j in jobs}
    assert kept == {(0.2, "leak-free"), (0.2, "released"), (0.6, "released")}
    assert (
        "1 run(s) not made" in caplog.text
        and "synth/wood: leak-free" in caplog.text
        and f"needs {k + 1} test" in caplog.text
    )
    assert paper.runnable([jobs[0], jobs[0]], benchmark) == [jobs[0]]  # no duplicates


def test_runnable_grid_keeps_the_same_classes_in_every_cell(benchmark):
    from adlib.data import get_dataset

    # the shared benchmark: 8 training images, 2 anomalies per defect type (wood 4 types, grass 3)
    cats = ("wood", "grass")
    anomalies = {c: int(get_dataset("synth", c, "test", root=benchmark).labels.sum()) for c in cats}
    p = Plan(categories={"synth": list(cats)})
    g = paper.protocol_grid(p, "smoke", {"ADL": ("adl", {})}, (0.0, 0.45), (0,), paper.PROTOCOLS)
    k = contamination_count(0.45, 8)
    short = {c for c, a in anomalies.items() if k + 1 > a}  # leak-free at 0.45 must leave one to test
    assert short == {"grass"}
    r = paper.runnable_grid(g, benchmark)
    assert set(r) == set(g)
    for jobs in r.values():
        assert {j.category for j in jobs} == {"wood"}  # also at eps 0 and under released
    assert len(paper.runnable(g, benchmark)) == len({j for js in g.values() for j in js}) - 1
