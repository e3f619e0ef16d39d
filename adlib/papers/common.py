"""Pieces shared by the papers' experiment definitions (:mod:`adlib.papers.glass`, ...)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

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


__all__ = ["Plan", "plan"]
