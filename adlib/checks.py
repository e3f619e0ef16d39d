"""Regression checks of the notebooks that mean the same on any machine, and paper claims with spread.

nbval compares the text of the tagged cells of the committed notebooks with a fresh execution. A
trained number printed to one decimal is not exactly reproducible across machines (see
:mod:`adlib.numerics`), so the tagged cells of the notebooks show two kinds of output only:

- exactly reproducible things (counts, the papers' reported numbers, metrics of fixed inputs);
- for trained results, one stable verdict line from :func:`regression_check`, which compares the
  reproduced values with a stored reference (``notebooks/references/<profile>.json``) within an
  explicit tolerance and prints ``PASS`` with the number of values and the tolerance, or
  ``FAIL`` naming every value outside it (so the cell's text changes and nbval fails).

References are written by executing the notebooks with ``ADLIB_UPDATE_REFERENCES=1`` (``make
notebooks`` does): the check then stores the current values and prints the same PASS line. A
profile without stored references (``paper``) prints that there is nothing to compare against.

Tolerances (:data:`TOLERANCE`, in the tables' units: percentage points) come from the measured
spread of the smoke profile: the standard deviation of a single run's image AUROC over 3 seeds x 2
numerics settings (reference and the machine's native kernels; ``tests/test_smoke_bands_*.py`` and
``benchmarks/RESULTS.md``). A check compares the values of the same seeds, so the numerics spread is
what it must absorb; the tolerance is set to cover the largest numerics deviation measured with a
margin, while a broken method (a disconnected head, swapped labels) moves the numbers by tens of
points and fails (``tests/test_checks.py``).

:func:`claim` states a paper claim as a paired difference over seeds with its spread and a verdict:
``holds`` (the mean difference favours the claim by more than two standard errors), ``does not
hold`` (it goes against the claim by more than two standard errors), or ``within noise``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .io import atomic_write_json, file_lock
from .paths import repo_root

log = logging.getLogger(__name__)

ENV_UPDATE = "ADLIB_UPDATE_REFERENCES"
#: tolerance in percentage points by kind of value (see the module docstring)
TOLERANCE: dict[str, float] = {
    "trained": 12.0,  # a trained single-category metric (AUROC / AP / AU-PRO, %)
    "trained_mean": 8.0,  # a mean over several categories or seeds
    "exact": 1e-6,  # values computed without training from fixed inputs
}


def references_path(profile: str) -> Path:
    return repo_root() / "notebooks" / "references" / f"{profile}.json"


def _flat(values: pd.DataFrame | pd.Series | Mapping[str, float]) -> dict[str, float]:
    """``{"row | column": value}`` of a table (NaN cells left out)."""
    if isinstance(values, pd.DataFrame):
        out = {}
        for idx, row in values.iterrows():
            for col, v in row.items():
                if isinstance(v, (int, float, np.floating, np.integer)) and not pd.isna(v):
                    out[f"{_label(idx)} | {_label(col)}"] = float(v)
        return out
    if isinstance(values, pd.Series):
        return {_label(k): float(v) for k, v in values.items() if not pd.isna(v)}
    return {str(k): float(v) for k, v in values.items() if v is not None and not pd.isna(v)}


def _label(key: Any) -> str:
    if isinstance(key, tuple):
        return " / ".join(str(k) for k in key)
    return str(key)


@dataclass
class CheckResult:
    name: str
    ok: bool
    line: str
    outside: dict[str, tuple[float, float]]

    def __str__(self) -> str:
        return self.line

    def _repr_pretty_(self, p, cycle) -> None:  # IPython shows the verdict line
        p.text(self.line)


def regression_check(
    name: str,
    values: pd.DataFrame | pd.Series | Mapping[str, float],
    profile: str,
    *,
    tolerance: float | str = "trained",
    path: str | os.PathLike | None = None,
) -> CheckResult:
    """Compare ``values`` with the stored reference ``name`` of ``profile`` within ``tolerance``
    (points, or a key of :data:`TOLERANCE`); returns a :class:`CheckResult` whose one-line text is
    the same on any machine while the check passes. With ``$ADLIB_UPDATE_REFERENCES=1`` the values
    become the new reference."""
    tol = TOLERANCE[tolerance] if isinstance(tolerance, str) else float(tolerance)
    flat = _flat(values)
    ref_path = Path(path) if path else references_path(profile)
    if os.environ.get(ENV_UPDATE) == "1":
        with file_lock(ref_path.with_name(f".{ref_path.name}.lock")):  # notebooks run side by side
            refs = json.loads(ref_path.read_text()) if ref_path.is_file() else {}
            refs[name] = {"tolerance": tol, "values": flat}
            atomic_write_json(ref_path, dict(sorted(refs.items())))
        log.info("reference %r of profile %s updated (%d values)", name, profile, len(flat))
    refs = json.loads(ref_path.read_text()) if ref_path.is_file() else {}
    if name not in refs:
        line = f"regression check {name!r}: no stored reference for profile {profile} (nothing to compare)"
        return CheckResult(name, True, line, {})
    ref = refs[name]["values"]
    tol = float(refs[name].get("tolerance", tol))
    missing = sorted(set(ref) - set(flat))
    extra = sorted(set(flat) - set(ref))
    outside = {k: (ref[k], flat[k]) for k in ref if k in flat and not abs(flat[k] - ref[k]) <= tol}
    ok = not outside and not missing and not extra
    if ok:
        line = f"regression check {name!r}: PASS, {len(ref)} values within ±{tol:g} of the reference"
    else:
        parts = [f"{k}: {a:.2f} -> {b:.2f}" for k, (a, b) in outside.items()]
        parts += [f"{k}: missing" for k in missing] + [f"{k}: not in the reference" for k in extra]
        line = (
            f"regression check {name!r}: FAIL, {len(outside) + len(missing) + len(extra)} of {len(ref)} values "
            f"outside ±{tol:g}: " + "; ".join(parts)
        )
        log.warning(line)
    return CheckResult(name, ok, line, outside)


@dataclass
class Claim:
    text: str
    metric: str
    diffs: np.ndarray  # per seed, in points: a - b (positive favours the claim)

    @property
    def mean(self) -> float:
        return float(np.mean(self.diffs))

    @property
    def sd(self) -> float:
        return float(np.std(self.diffs, ddof=1)) if len(self.diffs) > 1 else math.nan

    @property
    def verdict(self) -> str:
        n = len(self.diffs)
        if n < 2 or not np.isfinite(self.sd):
            return "within noise (one seed: no spread)"
        se = self.sd / math.sqrt(n)
        if self.sd == 0:
            se = 0.0
        if self.mean > 2 * se and self.mean > 0:
            return "holds"
        if self.mean < -2 * se and self.mean < 0:
            return "does not hold"
        return "within noise"

    def __str__(self) -> str:
        return (
            f"claim: {self.text}: {self.mean:+.1f} ± {self.sd:.1f} points {self.metric} "
            f"(paired difference, mean ± sd over {len(self.diffs)} seeds) -> {self.verdict}"
        )

    def _repr_pretty_(self, p, cycle) -> None:
        p.text(str(self))


def claim(text: str, a: pd.Series, b: pd.Series, metric: str = "image AUROC") -> Claim:
    """The claim "``a`` > ``b``" from per-seed values (Series indexed by seed, in points; several
    categories already averaged per seed). Only seeds present on both sides count."""
    both = pd.concat({"a": a, "b": b}, axis=1).dropna()
    if both.empty:
        raise ValueError(f"claim {text!r}: no seed has both sides")
    return Claim(text, metric, (both["a"] - both["b"]).to_numpy(dtype=float))


def seed_means(store, jobs, metric: str = "image_auroc") -> pd.Series:
    """Mean of ``metric`` (x100) over the categories of ``jobs`` per seed, from the results store
    (the jobs are run first if they are not finished)."""
    frame = store.run_many(list(jobs))
    if frame.empty:
        raise ValueError("seed_means: no finished run among the jobs")
    return frame.groupby("seed")[metric].mean() * 100.0


def per_seed(frame: pd.DataFrame, label: str, metric: str = "image_auroc", **where: Any) -> pd.Series:
    """Mean of ``metric`` (x100) over the categories of ``label`` per seed, rows filtered by ``where``."""
    sub = frame[frame["label"] == label]
    for k, v in where.items():
        sub = sub[sub[k] == v]
    return sub.groupby("seed")[metric].mean() * 100.0


__all__ = [
    "TOLERANCE",
    "CheckResult",
    "Claim",
    "claim",
    "per_seed",
    "references_path",
    "regression_check",
    "seed_means",
]
