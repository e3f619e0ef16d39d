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

``contamination`` (ADL, every method's contamination study)
    ``eps`` in [0, 1): test anomalies hidden among the normal training images as unlabelled
    "normal" ones (:func:`adlib.synthesis.contamination.contaminate`: ``int(eps / (1 - eps) N)``
    anomalies, uniform over defect types, released noise on each). ``contamination_protocol``:
    ``"leak-free"`` (default: the contaminating anomalies leave the test set) or ``"released"``
    (they stay in it, as in the released ADL code); it is always written into the protocol, so
    every record says which one produced it. The draw depends on ``(seed, eps)``:
    ``default_rng(SeedSequence([seed, round(eps * 1e6), 0xC0A7]))``, so each seed is a different
    contamination (the paper averages seeds). ``eps = 0`` adds and removes nothing: it is the
    standard protocol and is normalised to it (same key as a run without a protocol).
    The noise (released: ``N(0, 2^2)`` on the 0-255 scale after resizing to the training size,
    per-image min-max stretch, JPEG 95; :func:`~adlib.synthesis.contamination.add_contamination_noise`)
    is applied by :class:`ContaminatedDataset` when a contaminating image is read, with one seed
    per image drawn by ``contaminate``: the same pixels every epoch, as the released code stores
    them once.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from .data.base import AnomalyDataset, DataError, Sample, open_image
from .synthesis.contamination import (
    DEFAULT_PROTOCOL,
    NOISE_STD,
    PROTOCOLS,
    RELEASED_JPEG_QUALITY,
    ContaminatedRecord,
    add_contamination_noise,
    contaminate,
)

log = logging.getLogger(__name__)

#: the protocol keys this version understands
KEYS = ("shots", "contamination", "contamination_protocol")


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
    if "contamination_protocol" in out and "contamination" not in out:
        raise ValueError("contamination_protocol given without contamination")
    if "contamination" in out:
        eps = out["contamination"]
        if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating, np.integer)) or not 0.0 <= float(eps) < 1.0:
            raise ValueError(f"contamination must be a number in [0, 1), got {eps!r}")
        proto = out.get("contamination_protocol", DEFAULT_PROTOCOL)
        if proto not in PROTOCOLS:
            raise ValueError(f"contamination_protocol must be one of {PROTOCOLS}, got {proto!r}")
        if float(eps) == 0.0:  # nothing added, nothing removed: the standard protocol
            out.pop("contamination")
            out.pop("contamination_protocol", None)
        else:
            out["contamination"] = float(eps)
            out["contamination_protocol"] = proto
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


@dataclass
class ContaminatedDataset(AnomalyDataset):
    """A training set whose :class:`~adlib.synthesis.contamination.ContaminatedRecord` s are read
    with the released contamination noise (module docstring): resized to the transform's size,
    noised with that record's seed, then converted like any image. They come out as what
    training sees: label 0, ``"good"``, an empty mask. ``noise_seeds`` is aligned with
    ``records`` (None for the normal ones)."""

    noise_seeds: tuple = ()
    noise_std: float = NOISE_STD
    range_mode: str = "minmax"
    jpeg_quality: int | None = RELEASED_JPEG_QUALITY

    def __getitem__(self, index: int) -> Sample:
        rec = self.records[index]
        seed = self.noise_seeds[index] if index < len(self.noise_seeds) else None
        if not isinstance(rec, ContaminatedRecord) or seed is None:
            return super().__getitem__(index)
        img = self.transform.geometry(open_image(rec.image_path).convert("RGB"), Image.BILINEAR)
        noisy = add_contamination_noise(np.asarray(img), np.random.default_rng(seed), std=self.noise_std,
                                        range_mode=self.range_mode, jpeg_quality=self.jpeg_quality)
        x = dataclasses.replace(self.transform, resize=None, crop=None).image(Image.fromarray(noisy))
        return Sample(x, torch.zeros((1, *x.shape[-2:]), dtype=torch.float32), 0, "good", str(rec.image_path))


def contaminated(train_ds: AnomalyDataset, test_ds: AnomalyDataset, eps: float, seed: int,
                 protocol: str = DEFAULT_PROTOCOL) -> tuple[ContaminatedDataset, AnomalyDataset, dict[str, Any]]:
    """``train_ds`` contaminated with ``eps`` of ``test_ds``'s anomalies (module docstring), the
    test set under ``protocol``, and what was done (``n_contaminating``, the files, ``leaked``)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(round(float(eps) * 1e6)), 0xC0A7]))
    split = contaminate(train_ds.records, test_ds.records, eps, rng, protocol=protocol)
    seeds = (None,) * split.n_normal_train + tuple(split.noise_seeds)
    fields = {f.name: getattr(train_ds, f.name) for f in dataclasses.fields(AnomalyDataset)}
    train = ContaminatedDataset(**{**fields, "records": split.train}, noise_seeds=seeds, noise_std=split.noise_std)
    test = dataclasses.replace(test_ds, records=split.test)
    detail = {"n_normal_train": split.n_normal_train, "n_contaminating": split.n_contaminating,
              "contaminating_files": [_short(p) for p in split.chosen_files], "leaked": split.leaked,
              "test_images": len(split.test)}
    log.info("contamination %.3f (%s): %d anomalies among %d normal training images of %s/%s; test %d -> %d",
             eps, protocol, split.n_contaminating, split.n_normal_train, train_ds.name, train_ds.category,
             len(test_ds), len(test))
    return train, test, detail


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
    if "contamination" in p:
        train_ds, test_ds, more = contaminated(train_ds, test_ds, p["contamination"], seed, p["contamination_protocol"])
        detail.update(more)
    return train_ds, test_ds, detail


def _short(path) -> str:
    parts = str(path).replace("\\", "/").split("/")
    return "/".join(parts[-4:])


__all__ = ["KEYS", "ContaminatedDataset", "apply_protocol", "check_protocol", "contaminated", "few_shot", "few_shot_indices"]
