"""Pieces shared by the papers' experiment definitions (:mod:`adlib.papers.glass`, ...)."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..data import DataError, list_categories


@dataclass
class Plan:
    """Categories to run per dataset, and datasets that are missing (with the reason)."""

    categories: dict[str, list[str]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    @property
    def datasets(self) -> list[str]:
        return list(self.categories)


def plan(datasets: Iterable[str], data_root=None, categories: Sequence[str] | dict | None = None) -> Plan:
    """The categories of each dataset found under ``data_root``; datasets that are absent go to
    ``missing``. ``categories``: a list (kept where the dataset has them, in that order) or a
    dict dataset -> list; None: all categories on disk (in a rehearsal of the paper profile,
    :mod:`adlib.rehearsal`, the first of them: one category per dataset)."""
    from .. import rehearsal

    out = Plan()
    for ds in datasets:
        try:
            found = list_categories(ds, data_root)
        except DataError as exc:
            out.missing[ds] = f"missing under the data root ({str(exc).splitlines()[0][:120]})"
            continue
        want = categories.get(ds) if isinstance(categories, dict) else categories
        if want is not None:
            unknown = [c for c in want if c not in found]
            if unknown and not isinstance(categories, dict) and not set(want) & set(found):
                unknown = []  # a list meant for another dataset
            if unknown:
                raise ValueError(f"unknown {ds} categories {unknown}; found: {', '.join(found)}")
            found = [c for c in want if c in found] or found
        elif rehearsal.active():
            found = found[:1]
        out.categories[ds] = found
    return out


def notebook_defaults(
    table: Mapping[str, Mapping[str, Mapping[str, Any]]], notebook: str, profile: str, **given: Any
) -> Any:
    """The notebook's parameters, each as given or, where left empty (None), its profile's default.

    ``table``: a paper module's ``NOTEBOOK_DEFAULTS`` (notebook -> profile -> parameter -> value;
    a default of None means "everything on disk"). Returns the values in the order given (one
    value for one parameter). The defaults live in :mod:`adlib.papers`, so a notebook carries no
    ``if profile == ...`` block. In a rehearsal of the paper profile (:mod:`adlib.rehearsal`) a
    default list of seeds keeps its first ``rehearsal.SEEDS``."""
    try:
        defaults = table[notebook][profile]
    except KeyError:
        raise ValueError(f"no notebook defaults for {notebook!r} and profile {profile!r}") from None
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"{notebook}: no profile default for parameter(s) {unknown}; known: {sorted(defaults)}")
    from .. import rehearsal

    out = [v if v else copy.deepcopy(defaults[k]) for k, v in given.items()]
    if profile == "paper" and rehearsal.active():  # a rehearsal keeps the first seeds of a default list
        out = [
            v[: rehearsal.SEEDS] if k.endswith("seeds") and not given[k] and isinstance(v, list) else v
            for k, v in zip(given, out)
        ]
    return out[0] if len(out) == 1 else tuple(out)


def reproduced_on(profile: str, dataset: str) -> str:
    """What a table's "ours" column was run on: the real dataset (``paper``) or the built-in
    benchmark standing in for it (``smoke``), for captions."""
    return f"the built-in benchmark standing in for {dataset}" if profile == "smoke" else dataset


def as_reported_rows(frame, profile: str, **columns: Any):
    """Reproduced rows relabelled as the paper reports them (e.g. ``category="all"``) in the
    ``paper`` profile, where they are the same datasets; in ``smoke`` (the built-in benchmark) they
    keep their own names so that they are never read as the paper's."""
    return frame if profile == "smoke" else frame.assign(**columns)


def label_rows(frame, mapping: Mapping[str, Iterable], column: str = "label"):
    """``frame`` rows of each group's jobs (:class:`adlib.results.Job`), relabelled with the group's
    name in ``column``: one row per (group, run), so a run two groups share appears in both (the
    rows of an ablation or sensitivity table, POUTA Tables IV/V, GLASS Tables 4/5, Fig. 8)."""
    import pandas as pd

    parts = []
    for name, jobs in mapping.items():
        keys = {(j.key()["config_hash"], j.dataset, j.category, j.seed) for j in jobs}
        sub = frame[
            [(h, d, c, s) in keys for h, d, c, s in zip(frame.config_hash, frame.dataset, frame.category, frame.seed)]
        ].copy()
        sub[column] = str(name)
        parts.append(sub)
    return pd.concat(parts, ignore_index=True) if parts else frame.iloc[:0]


def example_rows(
    store,
    methods: Mapping[str, tuple[str, dict[str, Any]]],
    p: Plan,
    profile: str,
    seed: int = 0,
    n: int = 1,
    image_of: str | None = None,
    data_root=None,
) -> list[dict]:
    """The rows of :func:`adlib.viz.qualitative_grid` (the papers' qualitative figures): for each of
    the first ``n`` categories of the plan, its first anomalous test image with every method's map of
    it, read from the saved predictions of ``store`` (``methods``: column name -> (registered
    method, overrides), trained at ``seed``). The image is shown as the ``image_of`` method (default:
    the first) prepares it. Categories whose saved predictions hold no maps (too large to keep) are
    left out."""
    from ..data import get_dataset
    from ..results import Job

    image_of = image_of or next(iter(methods))
    rows: list[dict] = []
    for ds, cats in p.categories.items():
        for cat in cats[:n]:
            jobs = {name: Job.make(m, ds, cat, profile, seed, **o) for name, (m, o) in methods.items()}
            preds = {name: store.prediction(j) for name, j in jobs.items()}
            if any("maps" not in pr for pr in preds.values()):
                continue
            i = int(next(iter(idx for idx, y in enumerate(preds[image_of]["labels"]) if y == 1)))
            transform = store.model(jobs[image_of]).transform
            sample = get_dataset(ds, cat, "test", root=data_root, transform=transform)[i]
            maps = {name: pr["maps"][i].astype("float32") for name, pr in preds.items()}
            rows.append(
                {"title": f"{cat}/{sample.defect_type}", "image": sample.image, "mask": sample.mask[0], "maps": maps}
            )
    return rows[:n]


__all__ = ["Plan", "as_reported_rows", "example_rows", "label_rows", "notebook_defaults", "plan", "reproduced_on"]
