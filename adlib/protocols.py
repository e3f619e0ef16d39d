"""Training protocols: how a run's training and test sets are formed from a category's splits.

A protocol is a small dict carried by a run (``adlib.results.Job.protocol``, ``adlib train
--shots``) and recorded with its results. The empty protocol is the standard full-shot one: all
normal training images, the whole test split.

``shots`` (POUTA Table IV, few-shot)
    Train on ``k`` normal training images drawn uniformly without replacement from the training
    split. The draw depends only on ``(seed, k)`` and the set of training files: the candidates
    are sorted by path first, and the generator is ``numpy.random.default_rng(SeedSequence([seed,
    k, 0x5407]))``, so seed 0 with ``k = 2`` and seed 0 with ``k = 4`` are independent draws (the
    paper does not say how it samples; several seeds are averaged, as Table IV's protocol asks).
    The test split is unchanged. The chosen files are recorded (:func:`apply_protocol`'s detail).

The ADL issue adds the contamination protocol here.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from .data.base import AnomalyDataset, DataError

log = logging.getLogger(__name__)

#: the protocol keys this version understands
KEYS = ("shots",)


def check_protocol(protocol: dict[str, Any] | None) -> dict[str, Any]:
    """The protocol with ``None`` values dropped; raises ``ValueError`` naming an unknown key or a
    bad value."""
    out = {k: v for k, v in (protocol or {}).items() if v is not None}
    unknown = sorted(set(out) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown protocol key(s) {unknown}; known: {', '.join(KEYS)}")
    if "shots" in out:
        k = out["shots"]
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"shots must be a positive integer, got {k!r}")
        out["shots"] = int(k)
    return out


def few_shot_indices(n: int, k: int, seed: int) -> np.ndarray:
    """Indices of ``k`` of ``n`` items drawn uniformly without replacement (sorted), from
    ``default_rng(SeedSequence([seed, k, 0x5407]))``."""
    if k > n:
        raise ValueError(f"cannot draw {k} shots from {n} training images")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(k), 0x5407]))
    return np.sort(rng.choice(n, size=k, replace=False))


def few_shot(ds: AnomalyDataset, k: int, seed: int) -> AnomalyDataset:
    """``ds`` restricted to ``k`` of its normal images (see the module docstring)."""
    normal = sorted((r for r in ds.records if int(r.label) == 0), key=lambda r: str(r.image_path))
    if k > len(normal):
        raise DataError(f"{ds.name}/{ds.category}/{ds.split}: {k} shots asked for, but it has only {len(normal)} normal images")
    chosen = [normal[int(i)] for i in few_shot_indices(len(normal), k, seed)]
    return dataclasses.replace(ds, records=chosen)


def apply_protocol(protocol: dict[str, Any] | None, train_ds: AnomalyDataset, test_ds: AnomalyDataset,
                   seed: int) -> tuple[AnomalyDataset, AnomalyDataset, dict[str, Any]]:
    """``(train_ds, test_ds, detail)`` under ``protocol``; ``detail`` records what was done
    (for ``shots``: the chosen training files, relative to the dataset's folder where possible)."""
    p = check_protocol(protocol)
    detail: dict[str, Any] = dict(p)
    if "shots" in p:
        train_ds = few_shot(train_ds, p["shots"], seed)
        detail["train_files"] = [_short(r.image_path) for r in train_ds.records]
        log.info("few-shot: %d of the training images of %s/%s (seed %d)", p["shots"], train_ds.name, train_ds.category, seed)
    return train_ds, test_ds, detail


def _short(path) -> str:
    parts = str(path).replace("\\", "/").split("/")
    return "/".join(parts[-4:])


__all__ = ["KEYS", "apply_protocol", "check_protocol", "few_shot", "few_shot_indices"]
