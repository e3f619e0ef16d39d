"""The numbers the four papers report, transcribed from their results tables.

One CSV per paper, read with :func:`load`:

============  ==========================================================================
file          source (markdown text of the paper in ``shared/papers/``)
============  ==========================================================================
glass.csv     GLASS (``glass.md``): Tables 1-5. Fig. 8 is a plot whose values the text does
              not give (it only says the best range of r1 is [0.5, 1]), so it has no rows.
pouta.csv     POUTA (``pouta.md``): Tables I-VI.
adl.csv       ADL (``adl.md``): Tables 1-2.
adtr.csv      ADTR (``adtr-excerpt.md``, ``adtr-facts.md``): the excerpt (Eq. 6-9, Fig. 3
              caption, start of Sec. 4.1) prints no results. Only the numbers ``adtr-facts.md``
              tags P or S3 (three secondary summaries agree) are transcribed, each with its tag in
              ``note``: the means of Tables 1-3 for ADTR, ADTR+ and the S3 baselines (SPADE, TS,
              KDAD). S2/S1 numbers (Table 4's ablations, the other baselines, per-category values)
              are not reported numbers here.
============  ==========================================================================

Columns (``paper,table,method,dataset,category,metric,value,setting,note``):

``paper``
    ``glass``, ``pouta``, ``adl`` or ``adtr``.
``table``
    As the paper names it: ``Table 1`` (GLASS, ADL), ``Table IV`` (POUTA).
``method``
    The method as printed, without its citation (``DSR [38]`` -> ``DSR``). Two spellings are
    normalised: ``DRÆM`` is written ``DRAEM``, and ADL's own row, printed ``Ours`` (Table 1) or
    ``Proposed`` (Table 2), is ``ADL`` (the note says how it was printed).
    *Ablations*: where the rows (or columns) of a table are configurations of one model built from
    switched-on components, the configuration is the ``method``: GLASS Table 4 ``LAS``,
    ``GAS(GN)``, ``LAS+GAS(GN)``, ``LAS+GAS(GN+GA)``, ``LAS+GAS(GN+GA+TP)`` (all GLASS-m), POUTA
    Table V ``Vanilla`` ... ``POUTA`` and ADL Table 2 ``DL`` ... ``ADL``, as printed. Where a table
    varies a hyper-parameter of one method (backbone, shots, contamination), the method keeps its
    name and the hyper-parameter goes into ``setting``.
``dataset``
    Lower-case, hyphenated id: ``mvtec``, ``visa``, ``mpdd``, ``wfdd``, ``mad-man``, ``mad-sys``,
    ``dagm``, ``cifar10`` (ADTR Table 3, one-class). ``all`` for a number not tied to one dataset: an average across datasets (category
    ``average``) or a cost such as throughput, FLOPs, parameters (category ``all``).
``category``
    The dataset's folder name (``metal_nut``, ``chewinggum``, ``pipe_fryum``, ``class1`` ...).
    ``average`` for a row or column the paper prints as the average of the printed categories or
    datasets ("Average", "avg.", "Avg."). ``all`` for a dataset-level number that is not the
    average of rows printed in the same table (e.g. GLASS Table 2's "MVTec AD" column, POUTA
    Table V, ADL Table 2's "MVTec (Average)", whose categories are in another table).
    GLASS Table 1's "Texture Avg." / "Object Avg." rows are category ``average`` with setting
    ``subset=texture`` / ``subset=object`` (MVTec AD's 5 texture / 10 object categories).
``metric``
    ``image_auroc``, ``pixel_auroc``, ``pixel_ap`` (pixel-level average precision, POUTA's
    second LOC number), ``au_pro`` (GLASS's pixel-level PRO), ``fps`` (throughput, img/s),
    ``flops_g`` (GFLOPs), ``params_m`` (parameters, millions), ``ms_per_img`` (inference time,
    ms per image). A cell printed as ``a/b`` or ``a/b/c`` is split into one row per number, in
    the order the caption gives (GLASS: image AUROC / pixel AUROC / PRO; POUTA LOC:
    pixel AUROC / AP; ADL: the three contamination levels).
``value``
    The number exactly as printed, in the paper's units: percent for GLASS and POUTA, a
    fraction in [0, 1] for ADL (whose captions say "%" but whose tables print 0.775). Trailing
    zeros are as printed (``100``, ``0.76``, ``1``). A cell printed ``-`` has no row. Units
    suffixes (``35.37G``, ``32ms``) are dropped; the note keeps the printed cell.
``setting``
    Empty unless the table varies something besides method/dataset/category/metric, as
    ``key=value`` pairs joined with ``;``: ``k=2`` (POUTA Table IV shots), ``noise=0.1`` (ADL
    contamination ratio, as a fraction), ``backbone=wide_resnet50_2;levels=2+3;row=4`` (GLASS
    Table 5; the level checkmarks of all but one row were lost in the source, so those rows
    say ``levels=unknown`` and ``row`` -- the 1-based printed row -- keeps them apart),
    ``subset=texture`` (see category).
``note``
    Free text: ``bold in paper`` / ``underlined in paper`` (ADL, whose markup survived; the
    other sources lost their bold), how a name was printed, reconstruction caveats.

How averages are checked (:func:`check_averages`). Every row with category ``average`` is
recomputed from the numbers printed beside it: over the categories of its dataset (``kind``
``categories``; for ``subset=texture``/``subset=object`` only that subset, see :data:`SUBSETS`),
or, for dataset ``all``, over the dataset-level (category ``all``) numbers of the other datasets
(``kind`` ``datasets``: GLASS Tables 2 and 3). It agrees when ``|printed - mean|`` is at most the
rounding slack ``0.5 * 10**-d_avg + 0.5 * 10**-d_cat`` (``d_avg``: decimals printed in the
average, ``d_cat``: the most decimals printed among the numbers averaged), e.g. 0.1 for GLASS and
POUTA, 0.001 for ADL. A baseline quoted only by its average (POUTA's EdgRec, RD, MS, ...) cannot be
checked and is left out. Averages that the paper's own numbers do not reproduce are listed, never
corrected, in ``discrepancies.csv`` (:func:`discrepancies`; columns
``paper,table,method,dataset,setting,metric,printed,recomputed,note``). Averages whose parts sit in
another table (GLASS Table 2's MVTec column = Table 1's Average row, ADL Table 2 = Table 1's
Average rows at 10 %) are ``all`` rows and are compared in the tests, not here.
"""

from __future__ import annotations

from importlib.resources import files

import pandas as pd

__all__ = ["PAPERS", "COLUMNS", "DISCREPANCY_COLUMNS", "SUBSETS", "load", "discrepancies", "check_averages", "decimals"]

PAPERS = ("glass", "pouta", "adl", "adtr")
COLUMNS = ["paper", "table", "method", "dataset", "category", "metric", "value", "setting", "note"]
DISCREPANCY_COLUMNS = ["paper", "table", "method", "dataset", "setting", "metric", "printed", "recomputed", "note"]
KEY = ["paper", "table", "method", "dataset", "category", "metric", "setting"]

#: Category subsets that a printed sub-average (setting ``subset=NAME``) runs over.
SUBSETS = {
    "mvtec": {
        "texture": ("carpet", "grid", "leather", "tile", "wood"),
        "object": (
            "bottle",
            "cable",
            "capsule",
            "hazelnut",
            "metal_nut",
            "pill",
            "screw",
            "toothbrush",
            "transistor",
            "zipper",
        ),
    },
}


def decimals(text: str) -> int:
    """Number of decimals printed in ``text`` (``"99.7"`` -> 1, ``"100"`` -> 0, ``"0.775"`` -> 3)."""
    text = str(text).strip()
    return len(text.split(".", 1)[1]) if "." in text else 0


def _read(name: str) -> pd.DataFrame:
    with files(__package__).joinpath(name).open("r", encoding="utf-8") as f:
        return pd.read_csv(f, dtype=str, keep_default_na=False)


def load(paper: str | None = None, **filters) -> pd.DataFrame:
    """All transcribed numbers (one paper's if ``paper`` is given), optionally filtered.

    Returns the CSV columns with ``value`` as float, ``setting``/``note`` as ``''`` where empty,
    plus ``decimals`` (the number of decimals printed, used by :func:`check_averages`).
    Each keyword filter keeps rows whose column equals the given value (``table="Table 1"``,
    ``method="GLASS-m"``); a value of ``value`` is compared as a float. An unknown paper or filter
    column raises ``ValueError`` naming it.
    """
    if paper is not None and paper not in PAPERS:
        raise ValueError(f"unknown paper {paper!r}; expected one of {', '.join(PAPERS)}")
    unknown = [k for k in filters if k not in COLUMNS]
    if unknown:
        raise ValueError(
            f"unknown filter column(s) {', '.join(map(repr, unknown))}; expected one of {', '.join(COLUMNS)}"
        )
    frames = []
    for p in PAPERS if paper is None else (paper,):
        d = _read(f"{p}.csv")
        if list(d.columns) != COLUMNS:
            raise ValueError(f"{p}.csv: columns {list(d.columns)} != {COLUMNS}")
        frames.append(d)
    df = pd.concat(frames, ignore_index=True)
    df["decimals"] = df["value"].map(decimals).astype(int)
    df["value"] = df["value"].astype(float)
    for k, v in filters.items():
        df = df[df[k] == (float(v) if k == "value" else v)]
    return df.reset_index(drop=True)


def discrepancies() -> pd.DataFrame:
    """Printed averages that the paper's own numbers do not reproduce (``discrepancies.csv``).

    ``printed`` and ``recomputed`` are floats; ``setting``/``note`` are ``''`` where empty.
    """
    d = _read("discrepancies.csv")
    if list(d.columns) != DISCREPANCY_COLUMNS:
        raise ValueError(f"discrepancies.csv: columns {list(d.columns)} != {DISCREPANCY_COLUMNS}")
    d["printed"] = d["printed"].astype(float)
    d["recomputed"] = d["recomputed"].astype(float)
    return d


def _setting_without_subset(setting: str) -> tuple[str, str | None]:
    parts = [p for p in setting.split(";") if p]
    subset = [p.split("=", 1)[1] for p in parts if p.startswith("subset=")]
    rest = ";".join(p for p in parts if not p.startswith("subset="))
    return rest, (subset[0] if subset else None)


def _float_decimals(x: float) -> int:
    return decimals(f"{x:.6f}".rstrip("0").rstrip("."))


def check_averages(df: pd.DataFrame | None = None, tol: float | None = None) -> pd.DataFrame:
    """Recompute every printed average from the numbers it averages.

    Two kinds of average are checked, each within its group
    (paper, table, method, dataset, setting, metric):

    * ``categories``: a row with category ``average`` and a real dataset is compared with the
      mean of the same group's rows for the other categories (``all`` excluded). With setting
      ``subset=NAME`` only the categories of :data:`SUBSETS` ``[dataset][NAME]`` count, taken
      from the rows whose setting is the same without ``subset=``.
    * ``datasets``: a row with dataset ``all`` and category ``average`` is compared with the
      mean of the dataset-level (category ``all``) rows of the same paper, table, method,
      setting and metric for the other datasets.

    Averages with nothing printed to average (a baseline quoted only by its mean) are left out.

    Tolerance: with ``tol=None`` each average gets its own rounding slack,
    ``0.5 * 10**-d_avg + 0.5 * 10**-d_cat``, where ``d_avg`` is the number of decimals printed in
    the average and ``d_cat`` the largest number of decimals printed among the numbers averaged
    (some papers drop trailing zeros: ``100``, ``0.76``). A mean of numbers each rounded to
    ``d_cat`` decimals is off the mean of the unrounded numbers by at most half a unit of
    ``d_cat``, and the printed average is off that by at most half a unit of ``d_avg``; so
    ``ok = |printed - recomputed| <= tol`` (plus 1e-9 for float noise) is what any correctly
    computed average satisfies. A number passed as ``tol`` replaces this slack everywhere.

    ``df`` defaults to :func:`load` (). For a frame without a ``decimals`` column the
    decimals are read from the float values, which lose trailing zeros (``99.0`` -> 0), so then
    every number of a group is taken to have the largest number of decimals seen in the group
    (average included). Returns one row per average: paper, table, method, dataset,
    setting, metric, kind, printed, recomputed, n, diff (printed - recomputed), tol, ok.
    """
    df = load() if df is None else df.copy()
    from_floats = "decimals" not in df.columns
    if from_floats:
        df["decimals"] = df["value"].map(_float_decimals)
    for c in ("setting", "note"):
        if c in df.columns:
            df[c] = df[c].fillna("")
    out = []

    def record(avg, kind, parts):
        n = len(parts)
        if n == 0:
            return
        recomputed = float(parts["value"].mean())
        d_cat, d_avg = int(parts["decimals"].max()), int(avg["decimals"])
        if from_floats:  # trailing zeros are lost in floats: give every number the group's precision
            d_cat = d_avg = max(d_cat, d_avg)
        slack = (0.5 * 10.0**-d_avg + 0.5 * 10.0**-d_cat) if tol is None else float(tol)
        diff = float(avg["value"]) - recomputed
        out.append(
            dict(
                paper=avg["paper"],
                table=avg["table"],
                method=avg["method"],
                dataset=avg["dataset"],
                setting=avg["setting"],
                metric=avg["metric"],
                kind=kind,
                printed=float(avg["value"]),
                recomputed=recomputed,
                n=n,
                diff=diff,
                tol=slack,
                ok=abs(diff) <= slack + 1e-9,
            )
        )

    same = ["paper", "table", "method", "metric"]
    averages = df[df["category"] == "average"]
    for _, avg in averages.iterrows():
        cand = df
        for c in same:
            cand = cand[cand[c] == avg[c]]
        if avg["dataset"] == "all":
            parts = cand[(cand["setting"] == avg["setting"]) & (cand["dataset"] != "all") & (cand["category"] == "all")]
            record(avg, "datasets", parts)
            continue
        cand = cand[cand["dataset"] == avg["dataset"]]
        base, subset = _setting_without_subset(avg["setting"])
        parts = cand[(cand["setting"] == base) & ~cand["category"].isin(["average", "all"])]
        if subset is not None:
            try:
                members = SUBSETS[avg["dataset"]][subset]
            except KeyError:
                raise ValueError(f"no category subset {subset!r} known for dataset {avg['dataset']!r}") from None
            parts = parts[parts["category"].isin(members)]
        record(avg, "categories", parts)
    cols = [
        "paper",
        "table",
        "method",
        "dataset",
        "setting",
        "metric",
        "kind",
        "printed",
        "recomputed",
        "n",
        "diff",
        "tol",
        "ok",
    ]
    return pd.DataFrame(out, columns=cols)
