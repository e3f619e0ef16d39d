"""The transcribed results tables (adlib/reported): format, coverage, averages, spot checks.

Expected counts and cell values below were read off the papers' tables by hand (shared/papers/*.md),
independently of the CSVs, so a dropped, shifted or mistyped cell makes one of them fail.
"""

from __future__ import annotations

import math
import re
from importlib.resources import files
from pathlib import Path

import pandas as pd
import pytest
import tomllib

from adlib import reported as R

ROOT = Path(__file__).resolve().parents[1]
PAPERS = ("glass", "pouta", "adl", "adtr")
KEY = ["paper", "table", "method", "dataset", "category", "metric", "setting"]

MVTEC = (
    "bottle",
    "cable",
    "capsule",
    "carpet",
    "grid",
    "hazelnut",
    "leather",
    "metal_nut",
    "pill",
    "screw",
    "tile",
    "toothbrush",
    "transistor",
    "wood",
    "zipper",
)
VISA = (
    "candle",
    "capsules",
    "cashew",
    "chewinggum",
    "fryum",
    "macaroni1",
    "macaroni2",
    "pcb1",
    "pcb2",
    "pcb3",
    "pcb4",
    "pipe_fryum",
)
DAGM = tuple(f"class{i}" for i in range(1, 11))
CATEGORIES = {"mvtec": set(MVTEC), "visa": set(VISA), "dagm": set(DAGM)}
DATASETS = {"mvtec", "visa", "mpdd", "wfdd", "mad-man", "mad-sys", "dagm", "cifar10", "all"}
PERCENT = {"image_auroc", "pixel_auroc", "image_ap", "pixel_ap", "au_pro"}
POSITIVE = {"fps", "params_m", "flops_g", "ms_per_img"}
TABLES = {
    "glass": {"Table 1", "Table 2", "Table 3", "Table 4", "Table 5"},
    "pouta": {"Table I", "Table II", "Table III", "Table IV", "Table V", "Table VI"},
    "adl": {"Table 1", "Table 2"},
    "adtr": {"Table 1", "Table 2", "Table 3"},
}

# rows per table, counted from the papers by hand
ROWS = {
    # 15 categories + Texture Avg. + Object Avg. + Average, 8 methods, image/pixel AUROC
    ("glass", "Table 1"): 18 * 8 * 2,
    # 8 methods x (4 datasets + Avg.) x 3 metrics + 8 throughputs
    ("glass", "Table 2"): 8 * 5 * 3 + 8,
    # 6 methods x (MAD-man, MAD-sys, Avg.) x 3
    ("glass", "Table 3"): 6 * 3 * 3,
    # 5 configurations x 3 datasets x 3
    ("glass", "Table 4"): 5 * 3 * 3,
    # 10 backbone rows x 3
    ("glass", "Table 5"): 10 * 3,
    # 16 rows (15 + avg); DRAEM, DBPI, PatchCore, POUTA: CLS + LOC AUROC/AP; RSTD: CLS + LOC AUROC;
    # ReContrast: CLS + the average LOC AUROC only; DeSTSeg: LOC AUROC/AP only
    ("pouta", "Table I"): 4 * 16 * 3 + 16 * 2 + (16 + 1) + 16 * 2,
    # EdgRec, RD, ReContrast: avg only; PatchCore, POUTA: 12 + avg
    ("pouta", "Table II"): 3 + 2 * 13,
    # DBPI, DRAEM, MS: avg only; PatchCore, POUTA, CCNN: 10 + avg
    ("pouta", "Table III"): 3 + 3 * 11,
    ("pouta", "Table IV"): 4 * 3,
    ("pouta", "Table V"): 5 * 3,
    # FLOPs and parameters for POUTA, Vanilla; inference time for all three
    ("pouta", "Table VI"): 2 * 2 + 3,
    # 5 methods x (15 + avg + 12 + avg) x 3 contamination levels
    ("adl", "Table 1"): 5 * 29 * 3,
    # 6 configurations x 2 datasets
    ("adl", "Table 2"): 6 * 2,
    # ADTR: only the S3-tagged means of adtr-facts.md (3 methods per table)
    ("adtr", "Table 1"): 3,
    ("adtr", "Table 2"): 3,
    ("adtr", "Table 3"): 3,
}


def raw(paper: str) -> pd.DataFrame:
    with files("adlib.reported").joinpath(f"{paper}.csv").open(encoding="utf-8") as f:
        return pd.read_csv(f, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return R.load()


@pytest.fixture(scope="module")
def checks() -> pd.DataFrame:
    return R.check_averages()


def cell(df, **kw) -> float:
    d = df
    kw.setdefault("setting", "")
    for k, v in kw.items():
        d = d[d[k] == v]
    assert len(d) == 1, f"{kw}: {len(d)} rows"
    return float(d["value"].iloc[0])


# --------------------------------------------------------------------------------------------------
# format
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("paper", PAPERS)
def test_csv_columns_and_values(paper):
    d = raw(paper)
    assert list(d.columns) == R.COLUMNS
    assert (d["paper"] == paper).all()
    for c in R.COLUMNS:
        assert (d[c] == d[c].str.strip()).all(), f"{paper}: stray whitespace in {c}"
    for c in ("paper", "table", "method", "dataset", "category", "metric", "value"):
        assert (d[c] != "").all(), f"{paper}: empty {c}"
    assert set(d["table"]) <= TABLES[paper]
    assert set(d["dataset"]) <= DATASETS
    assert set(d["metric"]) <= PERCENT | POSITIVE
    bad = d[~d["value"].str.fullmatch(r"\d+(\.\d+)?")]
    assert bad.empty, bad
    setting = re.compile(r"[a-z0-9_]+=[A-Za-z0-9_.+]+(;[a-z0-9_]+=[A-Za-z0-9_.+]+)*")
    assert all(s == "" or setting.fullmatch(s) for s in d["setting"]), set(d["setting"])
    for ds, cats in CATEGORIES.items():
        got = set(d.loc[d["dataset"] == ds, "category"])
        assert got <= cats | {"average", "all"}, got - cats
    # categories of the other datasets are only dataset-level numbers
    other = d[~d["dataset"].isin(CATEGORIES)]
    assert set(other["category"]) <= {"all", "average"}
    # an average over datasets sits on dataset "all"; dataset "all" holds nothing per category
    assert set(d.loc[d["dataset"] == "all", "category"]) <= {"all", "average"}
    dup = d[d.duplicated(KEY, keep=False)]
    assert dup.empty, dup


def test_load_types_and_ranges(df):
    assert list(df.columns[: len(R.COLUMNS)]) == R.COLUMNS
    assert df["value"].dtype == float
    assert df["value"].map(math.isfinite).all()
    assert df["setting"].map(lambda v: isinstance(v, str)).all() and df["note"].map(lambda v: isinstance(v, str)).all()
    assert not df.duplicated(KEY).any()
    pct = df[df["metric"].isin(PERCENT)]
    assert pct["value"].between(0, 100).all()
    # GLASS and POUTA print percent; ADL prints fractions (0.775) although its captions say "%"
    assert pct.loc[pct["paper"] == "adl", "value"].between(0, 1).all()
    assert pct.loc[pct["paper"] != "adl", "value"].between(30, 100).all()  # nothing below 31.5 is printed
    assert (df.loc[df["metric"].isin(POSITIVE), "value"] > 0).all()
    assert df.loc[df["metric"] == "fps", "value"].between(1, 10000).all()
    assert df.loc[df["metric"] == "ms_per_img", "value"].between(1, 1000).all()


def test_value_text_kept_as_printed():
    g, a = raw("glass"), raw("adl")
    assert "100" in set(g.loc[(g["table"] == "Table 1") & (g["method"] == "GLASS-j"), "value"])
    assert set(a.loc[(a["method"] == "DestSeg") & (a["category"] == "bottle"), "value"]) == {"1"}
    assert R.decimals("100") == 0 and R.decimals("99.7") == 1 and R.decimals("0.76") == 2


def test_row_counts_per_table(df):
    got = df.groupby(["paper", "table"]).size().to_dict()
    assert got == ROWS
    assert len(df) == sum(ROWS.values()) == 545 + 372 + 447 + 9


# --------------------------------------------------------------------------------------------------
# coverage
# --------------------------------------------------------------------------------------------------


def test_glass_table1_coverage(df):
    t = df[(df["paper"] == "glass") & (df["table"] == "Table 1")]
    methods = ["DSR", "PatchCore", "BGAD", "RD++", "SimpleNet", "GLASS-m", "GLASS-h", "GLASS-j"]
    assert sorted(set(t["method"])) == sorted(methods)
    for m in methods:
        for metric in ("image_auroc", "pixel_auroc"):
            d = t[(t["method"] == m) & (t["metric"] == metric)]
            assert set(d.loc[d["category"] != "average", "category"]) == set(MVTEC), (m, metric)
            assert (d.loc[d["category"] != "average", "setting"] == "").all()
            assert set(d.loc[d["category"] == "average", "setting"]) == {"", "subset=texture", "subset=object"}


def test_glass_tables_2_to_5_coverage(df):
    g = df[df["paper"] == "glass"]
    t2 = g[g["table"] == "Table 2"]
    for m, d in t2.groupby("method"):
        assert set(zip(d["dataset"], d["category"], d["metric"])) == (
            {
                (ds, "all", mt)
                for ds in ("mvtec", "visa", "mpdd", "wfdd")
                for mt in ("image_auroc", "pixel_auroc", "au_pro")
            }
            | {("all", "average", mt) for mt in ("image_auroc", "pixel_auroc", "au_pro")}
            | {("all", "all", "fps")}
        ), m
    t3 = g[g["table"] == "Table 3"]
    assert sorted(set(t3["method"])) == sorted(["DSR", "PatchCore", "BGAD", "RD++", "SimpleNet", "GLASS"])
    assert set(t3["dataset"]) == {"mad-man", "mad-sys", "all"}
    t4 = g[g["table"] == "Table 4"]
    assert list(dict.fromkeys(t4["method"])) == ["LAS", "GAS(GN)", "LAS+GAS(GN)", "LAS+GAS(GN+GA)", "LAS+GAS(GN+GA+TP)"]
    assert set(t4["dataset"]) == {"mvtec", "mad-man", "mad-sys"}
    t5 = g[g["table"] == "Table 5"]
    assert set(t5["method"]) == {"GLASS-m"}
    backbones = [dict(kv.split("=") for kv in s.split(";")) for s in dict.fromkeys(t5["setting"])]
    assert [b["backbone"] for b in backbones] == ["wide_resnet50_2"] * 7 + ["resnet18", "resnet50", "resnet101"]
    assert [b["row"] for b in backbones] == [str(i) for i in range(1, 11)]
    assert [b["levels"] for b in backbones].count("2+3") == 1 and backbones[3]["levels"] == "2+3"
    assert not g["table"].eq("Fig. 8").any()  # Fig. 8 is a plot without printed numbers


def test_pouta_coverage(df):
    p = df[df["paper"] == "pouta"]
    t1 = p[p["table"] == "Table I"]
    per = t1.groupby(["method", "metric"]).size().unstack(fill_value=0)
    expected = {  # rows per method and metric, 16 = 15 categories + avg
        "DRAEM": (16, 16, 16),
        "RSTD": (16, 16, 0),
        "ReContrast": (16, 1, 0),
        "DeSTSeg": (0, 16, 16),
        "DBPI": (16, 16, 16),
        "PatchCore": (16, 16, 16),
        "POUTA": (16, 16, 16),
    }
    for m, (cls, auroc, ap) in expected.items():
        row = per.loc[m]
        assert (row.get("image_auroc", 0), row.get("pixel_auroc", 0), row.get("pixel_ap", 0)) == (cls, auroc, ap), m
    for metric in ("image_auroc", "pixel_auroc", "pixel_ap"):
        d = t1[(t1["method"] == "POUTA") & (t1["metric"] == metric)]
        assert set(d["category"]) == set(MVTEC) | {"average"}
    t2 = p[p["table"] == "Table II"]
    for m in ("PatchCore", "POUTA"):
        assert set(t2.loc[t2["method"] == m, "category"]) == set(VISA) | {"average"}
    for m in ("EdgRec", "RD", "ReContrast"):
        assert list(t2.loc[t2["method"] == m, "category"]) == ["average"]
    t3 = p[p["table"] == "Table III"]
    for m in ("PatchCore", "POUTA", "CCNN"):
        assert set(t3.loc[t3["method"] == m, "category"]) == set(DAGM) | {"average"}
    for m in ("DBPI", "DRAEM", "MS"):
        assert list(t3.loc[t3["method"] == m, "category"]) == ["average"]
    assert set(t3.loc[t3["method"].isin(["CCNN", "MS"]), "note"]) == {"supervised method"}
    t4 = p[p["table"] == "Table IV"]
    assert set(zip(t4["method"], t4["setting"])) == {
        (m, f"k={k}") for m in ("TDG", "DifferNet", "RegAD", "POUTA") for k in (2, 4, 8)
    }
    t5 = p[p["table"] == "Table V"]
    assert list(dict.fromkeys(t5["method"])) == ["Vanilla", "POUTA-base", "POUTA-base+HSG", "POUTA-base+MSS", "POUTA"]
    t6 = p[p["table"] == "Table VI"]
    assert set(zip(t6["method"], t6["metric"])) == {
        ("POUTA", "flops_g"),
        ("Vanilla", "flops_g"),
        ("POUTA", "params_m"),
        ("Vanilla", "params_m"),
        ("POUTA", "ms_per_img"),
        ("Vanilla", "ms_per_img"),
        ("PatchCore", "ms_per_img"),
    }


def test_adl_coverage(df):
    a = df[df["paper"] == "adl"]
    t1 = a[a["table"] == "Table 1"]
    assert set(t1["metric"]) == {"image_auroc"}
    for m in ("PatchCore", "DestSeg", "DRAEM", "LOE", "ADL"):
        for noise in ("noise=0.1", "noise=0.15", "noise=0.2"):
            d = t1[(t1["method"] == m) & (t1["setting"] == noise)]
            assert set(d.loc[d["dataset"] == "mvtec", "category"]) == set(MVTEC) | {"average"}, (m, noise)
            assert set(d.loc[d["dataset"] == "visa", "category"]) == set(VISA) | {"average"}, (m, noise)
    assert set(t1["method"]) == {"PatchCore", "DestSeg", "DRAEM", "LOE", "ADL"}
    t2 = a[a["table"] == "Table 2"]
    assert set(zip(t2["method"], t2["dataset"], t2["category"], t2["setting"])) == {
        (m, ds, "all", "noise=0.1")
        for m in ("DL", "Wt-DL", "DL-CE", "SoftDL-CE", "Wt-SoftDL-CE", "ADL")
        for ds in ("mvtec", "visa")
    }


# --------------------------------------------------------------------------------------------------
# spot checks: cells read off the markdown by hand
# --------------------------------------------------------------------------------------------------

SPOT = [
    # GLASS Table 1
    (dict(paper="glass", table="Table 1", method="BGAD", category="toothbrush", metric="image_auroc"), 86.9),
    (dict(paper="glass", table="Table 1", method="BGAD", category="toothbrush", metric="pixel_auroc"), 98.7),
    (dict(paper="glass", table="Table 1", method="DSR", category="transistor", metric="pixel_auroc"), 80.3),
    (dict(paper="glass", table="Table 1", method="GLASS-h", category="screw", metric="image_auroc"), 100),
    (dict(paper="glass", table="Table 1", method="GLASS-m", category="cable", metric="image_auroc"), 98.2),
    (
        dict(
            paper="glass",
            table="Table 1",
            method="SimpleNet",
            category="average",
            metric="pixel_auroc",
            setting="subset=object",
        ),
        98.3,
    ),
    (
        dict(
            paper="glass",
            table="Table 1",
            method="RD++",
            category="average",
            metric="image_auroc",
            setting="subset=texture",
        ),
        99.8,
    ),
    (dict(paper="glass", table="Table 1", method="GLASS-j", category="average", metric="pixel_auroc"), 99.3),
    # GLASS Table 2
    (dict(paper="glass", table="Table 2", method="DSR", dataset="visa", category="all", metric="au_pro"), 61.9),
    (dict(paper="glass", table="Table 2", method="SimpleNet", dataset="all", category="all", metric="fps"), 1306),
    (dict(paper="glass", table="Table 2", method="PatchCore", dataset="all", category="all", metric="fps"), 31),
    (
        dict(paper="glass", table="Table 2", method="GLASS-h", dataset="mpdd", category="all", metric="image_auroc"),
        96.7,
    ),
    (dict(paper="glass", table="Table 2", method="GLASS-j", dataset="all", category="average", metric="au_pro"), 95.7),
    (dict(paper="glass", table="Table 2", method="BGAD", dataset="wfdd", category="all", metric="au_pro"), 88.5),
    # GLASS Tables 3-5
    (
        dict(paper="glass", table="Table 3", method="RD++", dataset="mad-sys", category="all", metric="image_auroc"),
        83.9,
    ),
    (dict(paper="glass", table="Table 3", method="GLASS", dataset="all", category="average", metric="au_pro"), 88.9),
    (dict(paper="glass", table="Table 4", method="GAS(GN)", dataset="mad-sys", category="all", metric="au_pro"), 60.6),
    (dict(paper="glass", table="Table 4", method="LAS", dataset="mvtec", category="all", metric="pixel_auroc"), 95.4),
    (
        dict(
            paper="glass",
            table="Table 5",
            method="GLASS-m",
            dataset="mvtec",
            category="all",
            metric="au_pro",
            setting="backbone=resnet18;levels=unknown;row=8",
        ),
        94.7,
    ),
    (
        dict(
            paper="glass",
            table="Table 5",
            method="GLASS-m",
            dataset="mvtec",
            category="all",
            metric="image_auroc",
            setting="backbone=wide_resnet50_2;levels=unknown;row=1",
        ),
        96.7,
    ),
    # POUTA Table I (the DBPI carpet cell is printed "98.7/ 80.6")
    (dict(paper="pouta", table="Table I", method="DBPI", category="carpet", metric="pixel_ap"), 80.6),
    (dict(paper="pouta", table="Table I", method="DBPI", category="carpet", metric="image_auroc"), 99.7),
    (dict(paper="pouta", table="Table I", method="DeSTSeg", category="capsule", metric="pixel_ap"), 56.3),
    (dict(paper="pouta", table="Table I", method="ReContrast", category="average", metric="pixel_auroc"), 98.4),
    (dict(paper="pouta", table="Table I", method="PatchCore", category="screw", metric="pixel_ap"), 37.2),
    (dict(paper="pouta", table="Table I", method="POUTA", category="metal_nut", metric="pixel_ap"), 97.1),
    (dict(paper="pouta", table="Table I", method="RSTD", category="capsule", metric="image_auroc"), 93.0),
    (dict(paper="pouta", table="Table I", method="DRAEM", category="average", metric="pixel_ap"), 68.4),
    # POUTA Tables II-VI
    (dict(paper="pouta", table="Table II", method="PatchCore", category="capsules", metric="image_auroc"), 76.2),
    (dict(paper="pouta", table="Table II", method="POUTA", category="chewinggum", metric="image_auroc"), 99.7),
    (dict(paper="pouta", table="Table II", method="EdgRec", category="average", metric="image_auroc"), 94.2),
    (dict(paper="pouta", table="Table III", method="PatchCore", category="class8", metric="image_auroc"), 61.4),
    (dict(paper="pouta", table="Table III", method="POUTA", category="class9", metric="image_auroc"), 97.4),
    (dict(paper="pouta", table="Table III", method="MS", category="average", metric="image_auroc"), 100.0),
    (dict(paper="pouta", table="Table IV", method="RegAD", category="all", metric="image_auroc", setting="k=4"), 84.9),
    (dict(paper="pouta", table="Table IV", method="TDG", category="all", metric="image_auroc", setting="k=2"), 71.2),
    (dict(paper="pouta", table="Table V", method="POUTA-base+MSS", category="all", metric="pixel_ap"), 77.2),
    (dict(paper="pouta", table="Table V", method="Vanilla", category="all", metric="image_auroc"), 98.4),
    (dict(paper="pouta", table="Table VI", method="Vanilla", metric="params_m"), 28.68),
    (dict(paper="pouta", table="Table VI", method="POUTA", metric="flops_g"), 35.37),
    (dict(paper="pouta", table="Table VI", method="PatchCore", metric="ms_per_img"), 38),
    # ADL
    (dict(paper="adl", table="Table 1", method="DRAEM", dataset="visa", category="pcb1", setting="noise=0.1"), 0.21),
    (dict(paper="adl", table="Table 1", method="LOE", dataset="mvtec", category="grid", setting="noise=0.2"), 0.4),
    (dict(paper="adl", table="Table 1", method="ADL", dataset="mvtec", category="wood", setting="noise=0.2"), 0.997),
    (
        dict(
            paper="adl", table="Table 1", method="PatchCore", dataset="mvtec", category="hazelnut", setting="noise=0.2"
        ),
        0.651,
    ),
    (
        dict(paper="adl", table="Table 1", method="DestSeg", dataset="visa", category="average", setting="noise=0.15"),
        0.816,
    ),
    (
        dict(paper="adl", table="Table 1", method="DRAEM", dataset="mvtec", category="average", setting="noise=0.1"),
        0.879,
    ),
    (
        dict(paper="adl", table="Table 2", method="Wt-SoftDL-CE", dataset="visa", category="all", setting="noise=0.1"),
        0.821,
    ),
    (dict(paper="adl", table="Table 2", method="ADL", dataset="mvtec", category="all", setting="noise=0.1"), 0.924),
]


DEFAULT_DATASET = {
    ("glass", "Table 1"): "mvtec",
    ("pouta", "Table I"): "mvtec",
    ("pouta", "Table II"): "visa",
    ("pouta", "Table III"): "dagm",
    ("pouta", "Table IV"): "mvtec",
    ("pouta", "Table V"): "mvtec",
    ("pouta", "Table VI"): "all",
}


@pytest.mark.parametrize("filters,value", SPOT, ids=[f"{f['paper']}-{f['table']}-{i}" for i, (f, _) in enumerate(SPOT)])
def test_spot_cells(df, filters, value):
    filters = dict(filters)
    if filters["paper"] == "adl":
        filters.setdefault("metric", "image_auroc")
    filters.setdefault("dataset", DEFAULT_DATASET.get((filters["paper"], filters["table"])))
    filters.setdefault("category", "all")
    assert cell(df, **filters) == value


def test_notes():
    a = raw("adl")
    bottle = a[(a["method"] == "DestSeg") & (a["category"] == "bottle")]
    assert set(bottle["note"]) == {"bold in paper"}
    assert set(a.loc[(a["table"] == "Table 1") & (a["method"] == "ADL"), "note"]) >= {'printed as "Ours"'}
    assert set(a.loc[(a["table"] == "Table 2") & (a["method"] == "ADL"), "note"]) == {
        'printed as "Proposed"; bold in paper'
    }
    p = raw("pouta")
    assert set(p.loc[(p["table"] == "Table VI") & (p["method"] == "POUTA"), "note"]) == {
        "printed 35.37G",
        "printed 15.02M",
        "printed 32ms",
    }


# --------------------------------------------------------------------------------------------------
# claims the papers' texts make about their own tables (independent of the transcription)
# --------------------------------------------------------------------------------------------------


def best_other(df, method, **kw):
    d = df
    for k, v in kw.items():
        d = d[d[k] == v]
    return float(d.loc[d["method"] == method, "value"].iloc[0]), float(d.loc[d["method"] != method, "value"].max())


def test_claims_in_glass_text(df):
    g = df[df["paper"] == "glass"]
    t1 = g[(g["table"] == "Table 1") & (g["method"] == "GLASS-j") & (g["metric"] == "image_auroc")]
    assert (t1.loc[t1["category"] != "average", "value"] == 100).sum() == 9  # "100% ... on 9 out of 15 categories"
    avg2 = g[(g["table"] == "Table 2") & (g["category"] == "average")]
    for metric, gain in zip(("image_auroc", "pixel_auroc", "au_pro"), (1.2, 0.9, 3.9)):  # GLASS-j vs SimpleNet
        a = avg2[avg2["metric"] == metric].set_index("method")["value"]
        assert round(a["GLASS-j"] - a["SimpleNet"], 1) == gain
    avg3 = g[(g["table"] == "Table 3") & (g["category"] == "average")]
    for metric, gain in zip(("image_auroc", "pixel_auroc", "au_pro"), (5.6, 4.5, 12.9)):  # GLASS vs SimpleNet
        a = avg3[avg3["metric"] == metric].set_index("method")["value"]
        assert round(a["GLASS"] - a["SimpleNet"], 1) == gain


def test_claims_in_pouta_text(df):
    t1 = df[(df["paper"] == "pouta") & (df["table"] == "Table I")]
    own, other = best_other(t1, "POUTA", category="capsule", metric="image_auroc")
    assert round(own - other, 1) == 1.4
    own, other = best_other(t1, "POUTA", category="cable", metric="image_auroc")
    assert round(other - own, 1) == 2.0
    own, other = best_other(t1, "POUTA", category="transistor", metric="pixel_auroc")
    assert round(own - other, 1) == 2.6
    for cat, gain in (("cable", 9.1), ("transistor", 7.0)):
        own, other = best_other(t1, "POUTA", category=cat, metric="pixel_ap")
        assert round(own - other, 1) == gain
    for metric, gain in (("pixel_auroc", 0.3), ("pixel_ap", 2.9)):
        own, other = best_other(t1, "POUTA", category="average", metric=metric)
        assert round(own - other, 1) == gain
    t2 = df[(df["paper"] == "pouta") & (df["table"] == "Table II")]
    for cat, gain in (("capsules", 21.0), ("macaroni2", 17.1), ("average", 0.4)):
        own, other = best_other(t2, "POUTA", category=cat)
        assert round(own - other, 1) == gain
    t3 = df[(df["paper"] == "pouta") & (df["table"] == "Table III")]
    own, other = best_other(t3[t3["method"].isin(["POUTA", "PatchCore"])], "POUTA", category="class8")
    assert round(own - other, 1) == 38.6
    unsup = t3[t3["note"] == "unsupervised method"]
    beaten = [
        c for c in DAGM if cell(unsup, method="POUTA", category=c) < unsup.loc[unsup["category"] == c, "value"].max()
    ]
    assert beaten == ["class4"]  # "outperforms all the unsupervised methods on all the categories except for Class4"


def test_cross_table_identities(df):
    g = df[df["paper"] == "glass"]
    for m in ("DSR", "PatchCore", "BGAD", "RD++", "SimpleNet", "GLASS-m", "GLASS-h", "GLASS-j"):
        for metric in ("image_auroc", "pixel_auroc"):
            assert cell(g, table="Table 2", method=m, dataset="mvtec", category="all", metric=metric) == cell(
                g, table="Table 1", method=m, dataset="mvtec", category="average", metric=metric
            )
    for metric in ("image_auroc", "pixel_auroc", "au_pro"):
        full = cell(g, table="Table 4", method="LAS+GAS(GN+GA+TP)", dataset="mvtec", category="all", metric=metric)
        assert full == cell(g, table="Table 2", method="GLASS-m", dataset="mvtec", category="all", metric=metric)
        assert full == cell(
            g,
            table="Table 5",
            method="GLASS-m",
            dataset="mvtec",
            category="all",
            metric=metric,
            setting="backbone=wide_resnet50_2;levels=2+3;row=4",
        )
        for ds in ("mad-man", "mad-sys"):
            assert cell(
                g, table="Table 4", method="LAS+GAS(GN+GA+TP)", dataset=ds, category="all", metric=metric
            ) == cell(g, table="Table 3", method="GLASS", dataset=ds, category="all", metric=metric)
    p = df[df["paper"] == "pouta"]
    for metric in ("image_auroc", "pixel_auroc", "pixel_ap"):
        assert cell(p, table="Table V", method="POUTA", dataset="mvtec", category="all", metric=metric) == cell(
            p, table="Table I", method="POUTA", dataset="mvtec", category="average", metric=metric
        )
    a = df[df["paper"] == "adl"]
    kw = dict(method="ADL", metric="image_auroc", setting="noise=0.1")
    assert cell(a, table="Table 2", dataset="mvtec", category="all", **kw) == cell(
        a, table="Table 1", dataset="mvtec", category="average", **kw
    )
    # VisA: Table 2 prints 0.843, Table 1's average row 0.844; both are within rounding of the mean of
    # Table 1's twelve categories (10.123 / 12 = 0.84358), so neither is a transcription error.
    t1 = a[
        (a["table"] == "Table 1") & (a["dataset"] == "visa") & (a["method"] == "ADL") & (a["setting"] == "noise=0.1")
    ]
    mean = t1.loc[t1["category"] != "average", "value"].mean()
    assert cell(a, table="Table 2", dataset="visa", category="all", **kw) == 0.843
    assert cell(a, table="Table 1", dataset="visa", category="average", **kw) == 0.844
    assert abs(mean - 0.843) <= 0.001 and abs(mean - 0.844) <= 0.001


# --------------------------------------------------------------------------------------------------
# averages
# --------------------------------------------------------------------------------------------------


def test_check_averages_covers_every_checkable_average(checks):
    got = checks.groupby(["paper", "table", "kind"]).size().to_dict()
    assert got == {
        ("glass", "Table 1", "categories"): 8 * 2 * 3,  # Average, Texture Avg., Object Avg.
        ("glass", "Table 2", "datasets"): 8 * 3,
        ("glass", "Table 3", "datasets"): 6 * 3,
        ("pouta", "Table I", "categories"): 17,  # ReContrast's lone average LOC AUROC has nothing to average
        ("pouta", "Table II", "categories"): 2,
        ("pouta", "Table III", "categories"): 3,
        ("adl", "Table 1", "categories"): 5 * 2 * 3,
    }
    n = {
        ("glass", "Table 1", ""): 15,
        ("glass", "Table 1", "subset=texture"): 5,
        ("glass", "Table 1", "subset=object"): 10,
        ("glass", "Table 2", ""): 4,
        ("glass", "Table 3", ""): 2,
        ("pouta", "Table I", ""): 15,
        ("pouta", "Table II", ""): 12,
        ("pouta", "Table III", ""): 10,
    }
    for _, r in checks.iterrows():
        if r["paper"] == "adl":
            assert r["n"] == (15 if r["dataset"] == "mvtec" else 12)
        else:
            assert r["n"] == n[(r["paper"], r["table"], r["setting"])], dict(r)


def test_printed_averages_agree_or_are_listed(checks):
    listed = R.discrepancies()
    key = ["paper", "table", "method", "dataset", "setting", "metric"]
    bad = checks[~checks["ok"]]
    missing = bad.merge(listed[key], on=key, how="left", indicator=True)
    missing = missing[missing["_merge"] == "left_only"]
    assert missing.empty, f"averages that disagree but are not in discrepancies.csv:\n{missing.to_string()}"
    # every listed discrepancy is real (no stale entries), with the numbers it states
    merged = listed.merge(checks, on=key, how="left", suffixes=("", "_check"), indicator=True)
    assert (merged["_merge"] == "both").all(), merged[merged["_merge"] != "both"]
    for _, r in merged.iterrows():
        assert not r["ok"], f"listed but agrees: {dict(r)}"
        assert r["printed"] == r["printed_check"]
        assert abs(r["recomputed"] - r["recomputed_check"]) < 5e-5
    assert not listed.duplicated(key).any()


def test_discrepancies_file():
    d = R.discrepancies()
    assert list(d.columns) == R.DISCREPANCY_COLUMNS
    assert (d["note"] != "").all()
    assert len(d) == 1
    r = d.iloc[0]
    assert (r["paper"], r["table"], r["method"], r["dataset"], r["setting"]) == (
        "adl",
        "Table 1",
        "DRAEM",
        "mvtec",
        "noise=0.1",
    )
    assert r["printed"] == 0.879 and r["recomputed"] == pytest.approx(13.113 / 15)


def test_tolerance_is_rounding_slack(checks):
    glass = checks[checks["paper"] == "glass"]
    assert glass["tol"].eq(0.1).all()  # half of 0.1 (average) + half of 0.1 (categories)
    adl = checks[checks["paper"] == "adl"]
    # 0.69, 0.79 print two decimals: half of 0.01 + half of 0.001
    assert set(adl["tol"].round(6)) == {0.001, 0.0055}
    strict = R.check_averages(tol=0)
    assert (~strict["ok"]).sum() > 10
    loose = R.check_averages(tol=1)
    assert loose["ok"].all()


def test_check_averages_catches_a_corrupted_value(df):

    def status(frame, **kw):
        c = R.check_averages(frame)
        for k, v in kw.items():
            c = c[c[k] == v]
        return c

    cases = [
        # a texture category of GLASS Table 1 (5 categories: mean moves by 0.2, slack 0.1)
        (
            dict(paper="glass", table="Table 1", method="GLASS-j", category="wood", metric="image_auroc"),
            dict(paper="glass", table="Table 1", method="GLASS-j", metric="image_auroc", setting="subset=texture"),
        ),
        # a VisA category of ADL Table 1 (3 decimals)
        (
            dict(paper="adl", table="Table 1", method="ADL", category="pcb1", setting="noise=0.15"),
            dict(paper="adl", table="Table 1", method="ADL", dataset="visa", setting="noise=0.15"),
        ),
        # one dataset of GLASS Table 3 (average of two)
        (
            dict(paper="glass", table="Table 3", method="PatchCore", dataset="mad-man", metric="au_pro"),
            dict(paper="glass", table="Table 3", method="PatchCore", dataset="all", metric="au_pro"),
        ),
    ]
    for where, group in cases:
        assert status(df, **group)["ok"].all(), group
        bad = df.copy()
        mask = pd.Series(True, index=bad.index)
        for k, v in where.items():
            mask &= bad[k] == v
        assert mask.sum() == 1, where
        bad.loc[mask, "value"] += 1.0
        after = status(bad, **group)
        assert len(after) >= 1 and not after["ok"].any(), (where, after)
        # averages of other methods are untouched: only the listed discrepancies still fail there
        c = R.check_averages(bad)
        rest = c[~((c["paper"] == where["paper"]) & (c["table"] == where["table"]) & (c["method"] == where["method"]))]
        assert len(rest[~rest["ok"]]) == len(R.discrepancies())
    # also without the decimals column (decimals then come from the float values)
    bad = df.drop(columns="decimals")
    mask = (
        (bad["paper"] == "pouta")
        & (bad["table"] == "Table III")
        & (bad["method"] == "CCNN")
        & (bad["category"] == "class1")
    )
    bad.loc[mask, "value"] += 2.0
    after = status(bad, paper="pouta", table="Table III", method="CCNN")
    assert len(after) == 1 and not after["ok"].iloc[0]
    assert status(df.drop(columns="decimals"), paper="pouta", table="Table III", method="CCNN")["ok"].all()


# --------------------------------------------------------------------------------------------------
# load()
# --------------------------------------------------------------------------------------------------


def test_load_filters(df):
    g1 = R.load("glass", table="Table 1", method="GLASS-m")
    assert len(g1) == 18 * 2
    assert set(g1["paper"]) == {"glass"} and set(g1["method"]) == {"GLASS-m"}
    assert (
        len(R.load(table="Table 1"))
        == ROWS[("glass", "Table 1")] + ROWS[("adl", "Table 1")] + ROWS[("adtr", "Table 1")]
    )
    assert len(R.load(dataset="mvtec", metric="pixel_ap")) == 5 * 16 + 5  # Table I (no RSTD/ReContrast AP) + V
    assert len(R.load("pouta", value=100.0)) == len(df[(df["paper"] == "pouta") & (df["value"] == 100)])
    assert len(R.load("adtr")) == 9 and list(R.load("adtr").columns[:9]) == R.COLUMNS
    assert len(R.load("glass", method="no-such-method")) == 0
    pd.testing.assert_frame_equal(
        R.load("pouta").drop(columns="decimals"),
        df[df["paper"] == "pouta"].drop(columns="decimals").reset_index(drop=True),
    )


def test_load_rejects_unknown_names():
    with pytest.raises(ValueError, match="cvpr"):
        R.load("cvpr")
    with pytest.raises(ValueError, match="modle"):
        R.load(modle="GLASS-m")
    with pytest.raises(ValueError, match="decimals"):
        R.load("glass", decimals=1)


def test_csvs_are_package_data():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert cfg["tool"]["setuptools"]["package-data"] == {"adlib": ["reported/*.csv"]}
    names = {p.name for p in files("adlib.reported").iterdir()}
    assert {f"{p}.csv" for p in PAPERS} | {"discrepancies.csv"} <= names


def test_adtr_rows_are_the_s3_means_with_their_tag():
    a = raw("adtr")
    assert (a["category"] == "average").all() and a["note"].str.startswith("tag=S3").all()
    got = {(r.table, r.method): r.value for r in a.itertuples()}
    assert got == {
        ("Table 1", "SPADE"): "96.0",
        ("Table 1", "ADTR"): "97.2",
        ("Table 1", "ADTR+"): "97.5",
        ("Table 2", "TS"): "92.5",
        ("Table 2", "ADTR"): "96.4",
        ("Table 2", "ADTR+"): "96.9",
        ("Table 3", "KDAD"): "87.2",
        ("Table 3", "ADTR"): "94.7",
        ("Table 3", "ADTR+"): "96.1",
    }
    # S2/S1 numbers (Table 4, PSVDD, FCDD, ...) are not reported numbers
    assert not a["method"].isin(["PSVDD", "FCDD", "CNN"]).any() and "Table 4" not in set(a["table"])
