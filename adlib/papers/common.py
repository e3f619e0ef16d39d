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
    dict dataset -> list; None: all categories on disk."""
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
        out.categories[ds] = found
    return out


def notebook_defaults(
    table: Mapping[str, Mapping[str, Mapping[str, Any]]], notebook: str, profile: str, **given: Any
) -> Any:
    """The notebook's parameters, each as given or, where left empty (None), its profile's default.

    ``table``: a paper module's ``NOTEBOOK_DEFAULTS`` (notebook -> profile -> parameter -> value;
    a default of None means "everything on disk"). Returns the values in the order given (one
    value for one parameter). The defaults live in :mod:`adlib.papers`, so a notebook carries no
    ``if profile == ...`` block."""
    try:
        defaults = table[notebook][profile]
    except KeyError:
        raise ValueError(f"no notebook defaults for {notebook!r} and profile {profile!r}") from None
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"{notebook}: no profile default for parameter(s) {unknown}; known: {sorted(defaults)}")
    out = [v if v else copy.deepcopy(defaults[k]) for k, v in given.items()]
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


__all__ = ["Plan", "as_reported_rows", "notebook_defaults", "plan", "reproduced_on"]
