"""Tables with the papers' reported numbers beside the reproduced ones.

Reported numbers come from :mod:`adlib.reported` (transcribed, checked); reproduced numbers come
from the results store (:mod:`adlib.results`), never typed by hand. Both are shown in the
papers' units (percent for AUROC/AP/AU-PRO: reproduced metrics in [0, 1] are multiplied by 100).

:func:`side_by_side` lays them out one row per (dataset, category) and two columns per method,
``<method> paper`` and ``<method> ours``. Reported and reproduced rows are aligned where they
name the same dataset and category (the paper profile); in the smoke profile the reproduced rows
are the built-in benchmark's categories and the reported ones the paper's, so each row has one
side only and the two ``average`` rows carry the comparison. :func:`provenance` says which
profile, datasets, weights, seeds and configs produced the reproduced columns; it goes into every
table's caption. :func:`save_table` writes CSV and Markdown (with the caption) atomically.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .io import atomic_write_text
from .paths import figures_dir

log = logging.getLogger(__name__)

#: metrics reported in percent by the papers (reproduced values are fractions)
PERCENT_METRICS = ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "au_pro", "f1")
AVERAGE = "average"
#: short column names used in Markdown tables
METRIC_NAMES = {
    "image_auroc": "I-AUROC",
    "pixel_auroc": "P-AUROC",
    "au_pro": "PRO",
    "image_ap": "I-AP",
    "pixel_ap": "P-AP",
    "fps": "img/s",
}


def to_percent(frame: pd.DataFrame, metrics: Sequence[str] = PERCENT_METRICS) -> pd.DataFrame:
    """A copy with ``metrics`` columns multiplied by 100."""
    out = frame.copy()
    for m in metrics:
        if m in out.columns:
            out[m] = out[m] * 100.0
    return out


def side_by_side(
    reported: pd.DataFrame,
    reproduced: pd.DataFrame,
    *,
    metric: str,
    methods: Sequence[tuple[str, str | None, str | None]],
    average: bool = True,
    missing: dict[str, str] | None = None,
    reported_scale: float = 1.0,
) -> pd.DataFrame:
    """One row per (dataset, category), columns ``<name> paper`` and ``<name> ours`` per method.

    ``reported``: rows of :func:`adlib.reported.load` (already narrowed to one table/setting),
    ``reproduced``: a results frame (:meth:`adlib.results.ResultsStore.frame`, metrics as
    fractions; several seeds are averaged, and where a cell has more than one seed a ``<name>
    ours sd`` column holds their sample standard deviation; an ``average`` row's sd is the spread
    over seeds of the category mean; :func:`format_table` prints ``mean ± sd``). ``methods``: ``(name, reported_method,
    reproduced_label)`` triples; either side may be None (reported only: "not reproduced"; ours
    only: not in the paper). With ``average``, each dataset's reproduced categories get an
    ``average`` row (mean over categories) beside the paper's printed one. ``missing``: dataset
    -> reason, shown as a row whose "ours" cells are NaN with the reason in a ``status`` column
    (rows for datasets missing under the data root are marked, not dropped). ``reported_scale``
    multiplies the reported values (100 for a paper that prints fractions, e.g. ADL's 0.879, so
    that both columns are in percent).
    """
    rep = reported[reported["metric"] == metric]
    ours = reproduced
    if len(ours) and metric in ours.columns:
        scale = 100.0 if metric in PERCENT_METRICS else 1.0
        grouped = ours.groupby(["label", "dataset", "category"], sort=False)[metric]
        ours = grouped.mean().reset_index()
        ours[metric] = ours[metric] * scale
        ours["sd"] = grouped.std(ddof=1).to_numpy() * scale  # NaN for one seed
        ours["n"] = grouped.size().to_numpy()
    else:
        ours = pd.DataFrame(columns=["label", "dataset", "category", metric, "sd", "n"])
    rows: dict[tuple[str, str], dict[str, float | str]] = {}

    def row(ds: str, cat: str) -> dict:
        return rows.setdefault((ds, cat), {})

    for name, rep_name, our_label in methods:
        if rep_name is not None:
            for r in rep[rep["method"] == rep_name].itertuples():
                row(r.dataset, r.category)[f"{name} paper"] = float(r.value) * reported_scale
        if our_label is not None:
            sub = ours[ours["label"] == our_label]
            for r in sub.itertuples():
                row(r.dataset, r.category)[f"{name} ours"] = float(getattr(r, metric))
                if r.n > 1:
                    row(r.dataset, r.category)[f"{name} ours sd"] = float(r.sd)
            if average:
                for ds, g in sub.groupby("dataset", sort=False):
                    g = g[g["category"] != AVERAGE]
                    if len(g):
                        row(ds, AVERAGE)[f"{name} ours"] = float(g[metric].mean())
                        seeds = reproduced[(reproduced["label"] == our_label) & (reproduced["dataset"] == ds)]
                        per_seed = (
                            seeds.groupby("seed")[metric].mean() * (100.0 if metric in PERCENT_METRICS else 1.0)
                            if "seed" in seeds.columns
                            else pd.Series(dtype=float)
                        )
                        if len(per_seed) > 1:  # spread over seeds of the category mean
                            row(ds, AVERAGE)[f"{name} ours sd"] = float(per_seed.std(ddof=1))
    for ds, reason in (missing or {}).items():
        row(ds, AVERAGE)["status"] = reason
    columns = []
    with_sd = {k for r in rows.values() for k in r if k.endswith(" ours sd")}
    for name, _rep_name, _our_label in methods:
        columns += [f"{name} paper", f"{name} ours"] + ([f"{name} ours sd"] if f"{name} ours sd" in with_sd else [])
    index = _ordered(list(rows))
    table = pd.DataFrame(
        [rows[k] for k in index], index=pd.MultiIndex.from_tuples(index, names=["dataset", "category"])
    )
    for c in columns:
        if c not in table.columns:
            table[c] = np.nan
    extra = ["status"] if "status" in table.columns else []
    table = table[columns + extra]
    if extra:
        table["status"] = table["status"].fillna("")
    return table


def dataset_level(
    frame: pd.DataFrame, metrics: Sequence[str] = ("image_auroc", "pixel_auroc", "au_pro"), category: str = "all"
) -> pd.DataFrame:
    """Mean over categories (and seeds) per (label, dataset): rows with ``category`` "all", the
    way GLASS Tables 2-4 report a dataset. Provenance columns keep their first value."""
    if not len(frame):
        return frame
    present = [m for m in metrics if m in frame.columns]
    g = frame.groupby(["label", "dataset"], sort=False)
    out = g[present].mean()
    keep = [c for c in ("profile", "weights", "seed", "config_hash") if c in frame.columns]
    out = out.join(g[keep].first())
    if "numerics" in frame.columns:  # all of them, so that provenance() still sees a mixture
        out = out.join(g["numerics"].agg(lambda s: " | ".join(dict.fromkeys(s.dropna()))))
    out = out.reset_index()
    out["category"] = category
    return out


def _ordered(keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Datasets in first-seen order; within each, categories in first-seen order, averages last."""
    order: dict[str, list[str]] = {}
    for ds, cat in keys:
        order.setdefault(ds, [])
        if cat not in order[ds]:
            order[ds].append(cat)
    out = []
    for ds, cats in order.items():
        out += [(ds, c) for c in cats if c != AVERAGE] + [(ds, c) for c in cats if c == AVERAGE]
    return out


def provenance(frame: pd.DataFrame) -> str:
    """One line naming what produced a results frame: profile(s), dataset(s), weights, seeds,
    number of runs and distinct configs."""
    if not len(frame):
        return "no reproduced runs"

    def uniq(col):
        return ", ".join(str(v) for v in dict.fromkeys(frame[col].dropna())) if col in frame.columns else "?"

    text = (
        f"reproduced: profile {uniq('profile')}; dataset {uniq('dataset')}; weights {uniq('weights')}; "
        f"seeds {uniq('seed')}; {len(frame)} runs, {frame['config_hash'].nunique()} config(s)"
    )
    return text + numerics_note(frame)


def numerics_note(frame: pd.DataFrame) -> str:
    """``"; numerics <signature>"``, or a warning naming each signature and its run count when the
    runs of ``frame`` were made under different numerics or package versions (or some records
    predate numerics recording)."""
    if "numerics" not in frame.columns or not len(frame):
        return ""
    sigs = [s for v in frame["numerics"].dropna() for s in str(v).split(" | ")]
    counts = pd.Series(sigs).value_counts(sort=False) if sigs else pd.Series(dtype=int)
    if len(counts) <= 1:
        return f"; numerics {counts.index[0]}" if len(counts) else ""
    parts = ", ".join(f"{sig} ({n})" for sig, n in counts.items())
    return f"; WARNING: runs made under {len(counts)} different numerics/versions, numbers not comparable to the last digit: {parts}"


def format_table(table: pd.DataFrame, decimals: int = 1, caption: bool = True) -> str:
    """Markdown with ``decimals`` digits, "–" for empty cells and ``mean ± sd`` where a column
    ``<c> sd`` accompanies ``<c>``; with ``caption``, the caption :func:`save_table` gave the table
    (``table.attrs["caption"]``: profile, data, weights, seeds, hardware) is the paragraph above it,
    so that a notebook shows what the numbers are beside the numbers."""
    text = table.attrs.get("caption", "") if caption else ""
    return (f"{text}\n\n" if text else "") + _markdown(table, decimals)


def _markdown(table: pd.DataFrame, decimals: int) -> str:
    t = table.copy()
    if isinstance(t.columns, pd.MultiIndex):
        t.columns = [" · ".join(METRIC_NAMES.get(str(p), str(p)) for p in c if str(p)) for c in t.columns]
    sd_cols = {c for c in t.columns if str(c).endswith(" sd") and str(c)[:-3] in t.columns}
    for c in t.columns:
        if c in sd_cols:
            continue
        if pd.api.types.is_numeric_dtype(t[c]):
            sd = t[f"{c} sd"] if f"{c} sd" in sd_cols else None
            t[c] = [
                ("–" if pd.isna(v) else f"{v:.{decimals}f}")
                + ("" if sd is None or pd.isna(e) else f" ± {e:.{decimals}f}")
                for v, e in zip(t[c], sd if sd is not None else [np.nan] * len(t))
            ]
    t = t.drop(columns=sorted(sd_cols))
    return t.reset_index().to_markdown(index=False)


def save_table(
    table: pd.DataFrame,
    name: str,
    subdir: str | None = None,
    caption: str = "",
    decimals: int = 1,
    directory: str | os.PathLike | None = None,
) -> list[Path]:
    """Write ``<figures>/<subdir>/<name>.csv`` (full precision) and ``.md`` (rounded, with the
    caption above the table) atomically; returns the paths. The caption is also kept with the table
    (``table.attrs["caption"]``), where :func:`format_table` shows it above the table."""
    from .rehearsal import stamp_caption

    caption = stamp_caption(caption)
    if caption:
        table.attrs["caption"] = caption
    d = Path(directory) if directory else figures_dir(subdir)
    d.mkdir(parents=True, exist_ok=True)
    csv = atomic_write_text(d / f"{name}.csv", table.reset_index().to_csv(index=False))
    md_text = (f"{caption}\n\n" if caption else "") + format_table(table, decimals, caption=False) + "\n"
    md = atomic_write_text(d / f"{name}.md", md_text)
    log.info("saved %s, %s", csv, md)
    return [csv, md]


__all__ = [
    "side_by_side",
    "dataset_level",
    "provenance",
    "numerics_note",
    "format_table",
    "save_table",
    "to_percent",
    "PERCENT_METRICS",
]
