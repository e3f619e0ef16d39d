"""The ADL paper's experiments, and the companion's contamination study, as data.

Every run goes through the results store (:mod:`adlib.results`) with a contamination protocol
(:mod:`adlib.protocols`: ``{"contamination": eps, "contamination_protocol": ...}``; leak-free by
default, the released protocol as the labelled option). ``eps = 0`` is the standard protocol,
so those runs are shared with the other papers' notebooks.

- Table 1 (:func:`grid_jobs` with :data:`TABLE1_EPS`): PatchCore, DRAEM (the official architecture
  and recipe, :mod:`adlib.models.draem`) and ADL per category at 10/15/20 %; DeSTSeg and LOE are
  reported only ("not reproduced").
- Fig. 2 (:data:`FIG2_EPS`): image AUROC and AUPR against eps for the same methods.
- The companion's own study (:data:`STUDY_METHODS`): the same eps grid (:data:`EPS_GRID`)
  applied to GLASS-m, POUTA, ADL, PatchCore and DRAEM: one figure, one table.
- Fig. 3 (:func:`rank_shifts`): the test images whose score ranks move most between two eps
  levels (the failure cases of training on contaminated data).
- Table 2 (:data:`TABLE2`): the ablation variants of ADL at 10 % (configurations of one code).
- Fig. 4 (:func:`sensitivity_settings`): image AUROC against lambda and alpha at several eps.

ADL prints its numbers as fractions (0.879); the tables show both sides in percent
(``reported_scale=100`` in :func:`adlib.tables.side_by_side`).

Which contamination protocol (issue 17, item 9). The released code, which produced the paper's
numbers, keeps the contaminating anomalies in the test set (``"released"``); the companion's
honest choice removes them (``"leak-free"``). Per profile (:data:`NOTEBOOK_DEFAULTS`,
``protocols``): the ``paper`` profile's Table 1 and Fig. 2 show both, released first, in adjacent
columns / curves (:func:`protocol_grid`, :func:`protocol_methods`, :func:`table1`); the ``smoke``
profile keeps its leak-free tables and adds one small comparison on the built-in benchmark
(:func:`protocol_comparison`: ADL on ``wood`` at the top of the smoke eps grid, 20 %, seeds 0-2,
mean ± sd over seeds and a verdict; at 20 % the leak-free runs are the ones the Fig. 2 claim
already trains, so only the three released runs are new). A leak-free draw that would leave a
class without test anomalies (VisA at 10 and 15 % on the 7 classes with at least 900 training
images and at 20 % on all 12; MVTec AD at 20 % on grid, hazelnut, transistor and wood) is not
run: :func:`runnable` names it in the log and its cells stay empty; the released protocol draws
with replacement there, as the released code does (:mod:`adlib.synthesis.contamination`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..results import Job
from ..synthesis.contamination import ContaminationError, draw_plan
from .common import Plan, as_reported_rows, example_rows, label_rows, notebook_defaults, plan, reproduced_on

log = logging.getLogger(__name__)

#: the paper's contamination levels (Sec. 4) and the companion's grid (0 = clean training set)
EPS_GRID = (0.0, 0.05, 0.1, 0.15, 0.2)
TABLE1_EPS = (0.1, 0.15, 0.2)
FIG2_EPS = (0.05, 0.1, 0.15, 0.2)
PROTOCOLS = ("leak-free", "released")

#: (name in the tables, reported method, reproduced name); None = not reproduced. The reproduced
#: rows are those of :func:`grid_frame`, whose ``name`` column is used as the label.
TABLE1_METHODS: tuple[tuple[str, str | None, str | None], ...] = (
    ("PatchCore", "PatchCore", "PatchCore"),
    ("DeSTSeg", "DestSeg", None),
    ("DRAEM", "DRAEM", "DRAEM"),
    ("LOE", "LOE", None),
    ("ADL", "ADL", "ADL"),
)
#: name -> (registered method, overrides) of the methods trained for Table 1 / Fig. 2
TRAINED: dict[str, tuple[str, dict[str, Any]]] = {
    "PatchCore": ("patchcore", {}),
    "DRAEM": ("draem", {}),
    "ADL": ("adl", {}),
}
#: what the "DRAEM" columns hold (in every caption)
DRAEM_VANILLA_NOTE = (
    "DRAEM: paper = the official DRAEM as the ADL paper reports it; ours = adlib's draem, the official DRAEM "
    "architecture and recipe (VitjanZ/DRAEM: 97.4 M parameters, 256 px, L2 + SSIM and focal losses, 700 epochs), "
    "smoke-sized (64 px, narrow widths, a short schedule) in the smoke profile; POUTA's DRAEM-style Vanilla is not used here"
)
#: the every-method contamination study: name -> (registered method, overrides)
STUDY_METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "GLASS-m": ("glass", {"variant": "m"}),
    "POUTA": ("pouta", {}),
    "ADL": ("adl", {}),
    "PatchCore": ("patchcore", {}),
    "DRAEM": ("draem", {}),
}
#: Table 2 rows (reported names) -> ADL overrides
TABLE2: dict[str, dict[str, Any]] = {
    "DL": {"variant": "dl"},
    "Wt-DL": {"variant": "wt-dl"},
    "DL-CE": {"variant": "dl-ce"},
    "SoftDL-CE": {"variant": "softdl-ce"},
    "Wt-SoftDL-CE": {"variant": "wt-softdl-ce"},
    "ADL": {"variant": "proposed"},
}
DATASETS = {"smoke": ("synth",), "paper": ("mvtec", "visa")}


def protocol(eps: float, contamination_protocol: str = "leak-free") -> dict[str, Any]:
    """The protocol dict of one contamination level (``eps = 0``: the standard protocol)."""
    if contamination_protocol not in PROTOCOLS:
        raise ValueError(f"contamination_protocol must be one of {PROTOCOLS}, got {contamination_protocol!r}")
    return {"contamination": float(eps), "contamination_protocol": contamination_protocol} if eps else {}


def grid_jobs(
    p: Plan,
    profile: str,
    methods: dict[str, tuple[str, dict[str, Any]]],
    eps: Sequence[float],
    seeds: Sequence[int] = (0,),
    contamination_protocol: str = "leak-free",
    extra: dict[str, dict[str, Any]] | None = None,
) -> dict[tuple[str, float], list[Job]]:
    """``(name, eps)`` -> the jobs of that method at that contamination over the plan and seeds.
    ``extra``: registered method -> more overrides (e.g. a shorter smoke schedule)."""
    extra = extra or {}
    out: dict[tuple[str, float], list[Job]] = {}
    for name, (method, opts) in methods.items():
        for e in eps:
            out[(name, float(e))] = [
                Job.make(
                    method,
                    ds,
                    c,
                    profile,
                    s,
                    protocol=protocol(e, contamination_protocol),
                    **{**opts, **extra.get(method, {})},
                )
                for ds, cats in p.categories.items()
                for c in cats
                for s in seeds
            ]
    return out


def protocol_label(name: str, contamination_protocol: str, protocols: Sequence[str]) -> str:
    """``name`` when one protocol is shown, else ``"name [protocol]"`` (table columns, curve labels)."""
    return name if len(protocols) == 1 else f"{name} [{contamination_protocol}]"


def _check_protocols(protocols: Sequence[str]) -> tuple[str, ...]:
    out = tuple(protocols)
    bad = [p for p in out if p not in PROTOCOLS]
    if not out or bad or len(set(out)) != len(out):
        raise ValueError(f"protocols must be distinct values of {PROTOCOLS}, got {list(protocols)!r}")
    return out


def protocol_grid(
    p: Plan,
    profile: str,
    methods: dict[str, tuple[str, dict[str, Any]]],
    eps: Sequence[float],
    seeds: Sequence[int] = (0,),
    protocols: Sequence[str] = ("leak-free",),
    extra: dict[str, dict[str, Any]] | None = None,
) -> dict[tuple[str, float], list[Job]]:
    """:func:`grid_jobs` for each contamination protocol, names labelled by
    :func:`protocol_label` (unchanged for one protocol: the same grid as :func:`grid_jobs`)."""
    protocols = _check_protocols(protocols)
    out: dict[tuple[str, float], list[Job]] = {}
    for proto in protocols:
        for (name, e), jobs in grid_jobs(p, profile, methods, eps, seeds, proto, extra).items():
            out[(protocol_label(name, proto, protocols), e)] = jobs
    return out


def protocol_methods(
    methods: Sequence[tuple[str, str | None, str | None]], protocols: Sequence[str]
) -> list[tuple[str, str | None, str | None]]:
    """:data:`TABLE1_METHODS`-style triples for :func:`adlib.tables.side_by_side` with one
    reproduced column per protocol, adjacent, the paper's value beside the first protocol's; a
    reported-only method keeps one triple. One protocol: ``methods`` unchanged."""
    protocols = _check_protocols(protocols)
    if len(protocols) == 1:
        return list(methods)
    out = []
    for name, rep, ours in methods:
        if ours is None:
            out.append((name, rep, None))
            continue
        for i, proto in enumerate(protocols):
            out.append(
                (
                    protocol_label(name, proto, protocols),
                    rep if i == 0 else None,
                    protocol_label(ours, proto, protocols),
                )
            )
    return out


def protocols_text(protocols: Sequence[str]) -> str:
    """``"leak-free"`` or ``"released vs leak-free"`` (captions, figure titles)."""
    return " vs ".join(_check_protocols(protocols))


def table1(
    reported_rows: pd.DataFrame,
    rows: pd.DataFrame,
    eps_levels: Sequence[float],
    protocols: Sequence[str] = ("leak-free",),
    missing: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Table 1: image AUROC per (contamination, dataset, category), the paper's value beside ours
    per method (:func:`protocol_methods`: one "ours" column per protocol, adjacent), from
    :func:`grid_frame` rows of a :func:`protocol_grid`. ``reported_rows``: ``reported.load("adl",
    table="Table 1")``. Empty "paper" columns of the second protocol are dropped."""
    from .. import tables

    methods = protocol_methods(TABLE1_METHODS, protocols)
    parts = {}
    for e in eps_levels:
        sub = rows[rows.eps == e].assign(label=lambda d: d.name)
        parts[f"eps={e:g}"] = tables.side_by_side(
            reported_rows[reported_rows.setting == f"noise={e:g}"],
            sub,
            metric="image_auroc",
            methods=methods,
            missing=missing,
            reported_scale=100,
        )
    t1 = pd.concat(parts, names=["contamination"])
    if len(_check_protocols(protocols)) > 1:  # the second protocol's columns have no paper value
        t1 = t1.drop(columns=[f"{name} paper" for name, rep, _ in methods if rep is None and f"{name} paper" in t1])
    return t1


def runnable(grid: dict[tuple[str, float], list[Job]] | Sequence[Job], data_root=None) -> list[Job]:
    """The jobs of ``grid`` (or a list of jobs) whose contamination draw can be made, in order,
    without duplicates. A leak-free draw short of test anomalies
    (:func:`adlib.synthesis.contamination.draw_plan`: the hidden ones plus one left to test) is
    left out and logged as a warning with its error line (class, count needed, count available),
    so a grid over every class runs the rest; its table cells stay empty. Counts come from the
    datasets' records (no image is read)."""
    from ..data import get_dataset

    jobs = [j for js in grid.values() for j in js] if isinstance(grid, dict) else list(grid)
    counts: dict[tuple[str, str], tuple[int, int]] = {}
    out, skipped = [], []
    for j in dict.fromkeys(jobs):
        proto = dict(j.protocol)
        if "contamination" in proto:
            key = (j.dataset, j.category)
            if key not in counts:
                train = get_dataset(j.dataset, j.category, "train", root=data_root)
                test = get_dataset(j.dataset, j.category, "test", root=data_root)
                counts[key] = (
                    sum(int(r.label) == 0 for r in train.records),
                    sum(int(r.label) == 1 for r in test.records),
                )
            n_normal, n_anomalies = counts[key]
            if "shots" in proto:
                n_normal = min(n_normal, int(proto["shots"]))
            try:
                draw_plan(
                    proto["contamination"],
                    n_normal,
                    n_anomalies,
                    proto["contamination_protocol"],
                    where=f"{j.dataset}/{j.category}",
                )
            except ContaminationError as exc:
                skipped.append(f"{j}: {exc}")
                continue
        out.append(j)
    if skipped:
        log.warning("%d run(s) not made (too few test anomalies):\n  %s", len(skipped), "\n  ".join(skipped))
    return out


def runnable_grid(grid: dict[tuple[str, float], list[Job]], data_root=None) -> dict[tuple[str, float], list[Job]]:
    """``grid`` restricted to the classes (dataset, category) all of whose jobs are
    :func:`runnable`, so that the cells of a comparison (two eps levels of a claim, two
    protocols) average over the same classes; the classes dropped are logged by :func:`runnable`."""
    ok = set(runnable(grid, data_root))
    dropped = {(j.dataset, j.category) for js in grid.values() for j in js if j not in ok}
    return {k: [j for j in js if (j.dataset, j.category) not in dropped] for k, js in grid.items()}


def protocol_comparison(
    rows: pd.DataFrame, name: str = "ADL", metrics: Sequence[str] = ("image_auroc", "image_ap")
) -> tuple[pd.DataFrame, str]:
    """Leak-free vs released for one method from :func:`grid_frame` rows of a :func:`protocol_grid`
    over :data:`PROTOCOLS` (names ``"<name> [leak-free]"`` / ``"<name> [released]"``, one eps).

    Per seed the mean over categories, then mean and sample sd (ddof 1) over seeds, in percent:
    a table indexed by (dataset, metric) with columns ``leak-free``, ``released``, ``released −
    leak-free`` (the paired difference per seed) and their `` sd`` columns, and ``seeds`` (seeds
    with both protocols). The verdict line (image AUROC, first dataset) says whether the released
    protocol scores higher, lower, or the same within noise (more than two standard errors of the
    paired difference, :func:`adlib.checks.claim`)."""
    from .. import checks

    labels = {p: protocol_label(name, p, PROTOCOLS) for p in PROTOCOLS}
    out, verdict = [], None
    for ds in dict.fromkeys(rows["dataset"]):
        for m in metrics:
            per = {
                p: rows[(rows["name"] == lab) & (rows["dataset"] == ds)].groupby("seed")[m].mean() * 100.0
                for p, lab in labels.items()
            }
            both = pd.concat(per, axis=1).dropna()
            diff = both["released"] - both["leak-free"]
            row = {"dataset": ds, "metric": m}
            for col, v in (
                ("leak-free", both["leak-free"]),
                ("released", both["released"]),
                ("released − leak-free", diff),
            ):
                row[col] = float(v.mean()) if len(v) else np.nan
                row[f"{col} sd"] = float(v.std(ddof=1)) if len(v) > 1 else np.nan
            row["seeds"] = len(both)
            out.append(row)
            if verdict is None and m == "image_auroc" and len(both):
                c = checks.claim(f"{name} released vs leak-free", both["released"], both["leak-free"])
                word = {"holds": "released higher", "does not hold": "released lower"}.get(c.verdict, c.verdict)
                verdict = (
                    f"{name} on {ds}: released − leak-free image AUROC {c.mean:+.1f} ± {c.sd:.1f} points "
                    f"(paired over {len(both)} seeds, mean ± sd) -> {word}"
                )
    if not out:
        raise ValueError(f"protocol_comparison: no rows for {name!r}")
    table = pd.DataFrame(out).set_index(["dataset", "metric"])
    return table, verdict or f"{name}: no seed with both protocols"


def grid_frame(frame: pd.DataFrame, grid: dict[tuple[str, float], list[Job]]) -> pd.DataFrame:
    """The rows of ``frame`` for each ``(name, eps)`` of ``grid``, with columns ``name`` and
    ``eps`` (a run shared by two cells of the grid appears in both)."""
    parts = []
    key = list(zip(frame.config_hash, frame.dataset, frame.category, frame.seed))
    for (name, e), jobs in grid.items():
        want = {(j.key()["config_hash"], j.dataset, j.category, j.seed) for j in jobs}
        sub = frame[[k in want for k in key]].copy()
        sub["name"], sub["eps"] = name, float(e)
        parts.append(sub)
    return pd.concat(parts, ignore_index=True) if parts else frame.iloc[:0].assign(name=[], eps=[])


def curve_table(rows: pd.DataFrame, metrics: Sequence[str] = ("image_auroc", "image_ap")) -> pd.DataFrame:
    """Mean over categories per (name, dataset, eps, seed), then mean and standard deviation over
    seeds: columns ``<metric>`` and ``<metric>_sd`` (in percent) and ``seeds``."""
    per_seed = rows.groupby(["name", "dataset", "eps", "seed"], sort=False)[list(metrics)].mean()
    g = per_seed.groupby(level=["name", "dataset", "eps"], sort=False)
    out = g.mean().mul(100)
    sd = g.std(ddof=0).mul(100).add_suffix("_sd")
    return out.join(sd).assign(seeds=g.size())


def rank_shifts(a: dict[str, np.ndarray], b: dict[str, np.ndarray], top: int = 6) -> pd.DataFrame:
    """Fig. 3: the test images (common to two predictions, matched by path) whose score rank moves
    most from ``a`` to ``b``. Ranks are percentiles within each prediction's common images (0:
    lowest score, 1: highest). Columns: ``path``, ``label``, ``defect_type``, ``rank_a``,
    ``rank_b``, ``shift`` (``rank_b - rank_a``); sorted by ``|shift|``, largest first."""
    from scipy.stats import rankdata

    pa = {str(p): i for i, p in enumerate(a["paths"])}
    pb = {str(p): i for i, p in enumerate(b["paths"])}
    common = [p for p in pa if p in pb]
    if len(common) < 2:
        raise ValueError(f"only {len(common)} test image(s) in common: cannot rank")
    ia = np.array([pa[p] for p in common])
    ib = np.array([pb[p] for p in common])
    n = len(common)
    ra = (rankdata(np.asarray(a["image_scores"])[ia]) - 1) / (n - 1)
    rb = (rankdata(np.asarray(b["image_scores"])[ib]) - 1) / (n - 1)
    df = pd.DataFrame(
        {
            "path": common,
            "label": np.asarray(a["labels"])[ia],
            "defect_type": np.asarray(a["defect_types"])[ia],
            "rank_a": ra,
            "rank_b": rb,
            "shift": rb - ra,
        }
    )
    order = np.argsort(-np.abs(df["shift"].to_numpy()), kind="stable")
    return df.iloc[order[:top]].reset_index(drop=True)


def sensitivity_settings(
    lams: Sequence[float] = (0.1, 0.5, 1.0, 1.5), alphas: Sequence[float] = (0.0, 0.1, 0.5, 1.0)
) -> dict[str, dict[float, dict[str, Any]]]:
    """Fig. 4: ``{"lambda": {value: overrides}, "alpha": {value: overrides}}`` (the other
    parameter at its default)."""
    return {
        "lambda": {float(v): {"lam": float(v)} for v in lams},
        "alpha": {float(v): {"alpha": float(v)} for v in alphas},
    }


#: each notebook's parameters left empty -> the profile's default (None: everything on disk);
#: smoke: one category and seed (CPU budget), a shorter grid; paper: the paper's seeds and grid
NOTEBOOK_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "00_contamination": {"smoke": dict(dataset="synth"), "paper": dict(dataset="mvtec")},
    # protocols: the contamination protocols Table 1 / Fig. 2 show side by side (released first:
    # what the paper did); smoke keeps leak-free only (its tables are unchanged, the comparison is
    # the small table of adl/02)
    "01_main_table": {
        "smoke": dict(seeds=[0], categories=["wood"], protocols=["leak-free"]),
        "paper": dict(seeds=[0, 1, 2], categories=None, protocols=["released", "leak-free"]),
    },
    "02_robustness": {
        # smoke: eps 0 and 0.2 (CPU budget; 0.1 is in adl/01)
        # study_methods: the every-method study's methods (smoke: without POUTA, CPU budget; None: all)
        "smoke": dict(
            seeds=[0],
            categories=["wood"],
            eps_grid=[0.0, 0.2],
            protocols=["leak-free"],
            study_methods=["GLASS-m", "ADL", "PatchCore", "DRAEM"],
        ),
        "paper": dict(
            seeds=[0, 1, 2],
            categories=None,
            eps_grid=list(EPS_GRID),
            protocols=["released", "leak-free"],
            study_methods=None,
        ),
    },
    "03_ablation_sensitivity": {
        "smoke": dict(seeds=[0], categories=["wood"], lams=[0.1, 1.5], alphas=[0.1, 1.0]),
        "paper": dict(seeds=[0, 1, 2], categories=None, lams=[0.1, 0.5, 1.0, 1.5], alphas=[0.0, 0.1, 0.5, 1.0]),
    },
}


def defaults(notebook: str, profile: str, **given: Any) -> Any:
    """A notebook's parameters with the profile's defaults filled in (:data:`NOTEBOOK_DEFAULTS`,
    :func:`adlib.papers.common.notebook_defaults`)."""
    return notebook_defaults(NOTEBOOK_DEFAULTS, notebook, profile, **given)


__all__ = [
    "DRAEM_VANILLA_NOTE",
    "NOTEBOOK_DEFAULTS",
    "as_reported_rows",
    "example_rows",
    "label_rows",
    "defaults",
    "reproduced_on",
    "DATASETS",
    "EPS_GRID",
    "FIG2_EPS",
    "PROTOCOLS",
    "STUDY_METHODS",
    "TABLE1_EPS",
    "TABLE1_METHODS",
    "TABLE2",
    "TRAINED",
    "Plan",
    "curve_table",
    "grid_frame",
    "grid_jobs",
    "plan",
    "protocol",
    "protocol_comparison",
    "protocol_grid",
    "protocol_label",
    "protocol_methods",
    "protocols_text",
    "runnable",
    "runnable_grid",
    "table1",
    "rank_shifts",
    "sensitivity_settings",
]
