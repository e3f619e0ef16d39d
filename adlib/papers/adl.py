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
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..results import Job
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
    "01_main_table": {
        "smoke": dict(seeds=[0], categories=["wood"]),
        "paper": dict(seeds=[0, 1, 2], categories=None),
    },
    "02_robustness": {
        # smoke: eps 0 and 0.2 (CPU budget; 0.1 is in adl/01)
        "smoke": dict(seeds=[0], categories=["wood"], eps_grid=[0.0, 0.2]),
        "paper": dict(seeds=[0, 1, 2], categories=None, eps_grid=list(EPS_GRID)),
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
    "rank_shifts",
    "sensitivity_settings",
]
