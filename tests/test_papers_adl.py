"""The ADL paper's experiment definitions: contamination protocols per level, the job grid (eps = 0
shared with the standard runs), grid rows, mean/sd curves by hand, and the rank shifts of Fig. 3."""

import numpy as np
import pandas as pd
import pytest

from adlib.papers import adl as paper
from adlib.papers.common import Plan
from adlib.results import Job


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
