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
    every record says which one produced it. A class with too few test anomalies: ``"released"``
    draws with replacement, as the released code does, and the record says so
    (``protocol_detail``: ``n_contaminating``, ``n_available``, ``with_replacement``,
    ``n_distinct``); ``"leak-free"`` needs the drawn anomalies plus one left to test and otherwise
    stops with one error line naming the class and both counts
    (:func:`adlib.synthesis.contamination.draw_plan`). The draw depends on ``(seed, eps)``:
    ``default_rng(SeedSequence([seed, round(eps * 1e6), 0xC0A7]))``, so each seed is a different
    contamination (the paper averages seeds). ``eps = 0`` adds and removes nothing: it is the
    standard protocol and is normalised to it (same key as a run without a protocol).
    The noise (released: ``N(0, 2^2)`` on the 0-255 scale after resizing to the training size,
    per-image min-max stretch, JPEG 95; :func:`~adlib.synthesis.contamination.add_contamination_noise`)
    is applied by :class:`ContaminatedDataset` when a contaminating image is read, with one seed
    per image drawn by ``contaminate``: the same pixels every epoch, as the released code stores
    them once.

``real_anomalies`` / ``real_holdout`` (ADTR with real labelled anomalies, beyond the paper)
    ``real_anomalies = N``: ``N`` anomalies *per defect type* are taken from the test split and
    added to the training set as *labelled* anomalies: their records keep label 1, their defect
    type and their mask file, so the training set yields them with ``sample.label == 1`` and the
    true ``sample.mask``. Why: ADTR's push-pull losses (Eq. 7 and Eq. 9) are written for labelled
    anomalies, but the paper measures them only with synthetic ones (confetti noise, CIFAR-100
    images as outliers); this protocol is the real-anomaly case the paper does not measure. Only
    methods that read ``sample.label`` at training time use them as anomalies; a method that does
    not would train on them as normal images. ``real_holdout = M >= N`` (default ``M = N``): ``M``
    anomalies per defect type leave the test set. The draw, per defect type (sorted by name): the
    type's anomalous test records sorted by path, permuted by
    ``default_rng(SeedSequence([seed, 0xADA7, zlib.crc32(defect_type)]))``; the first ``M`` of the
    permutation are held out of the test set, the first ``N`` of those go to training. The
    permutation depends on the seed and the set of files only (not on ``N`` or ``M``, not on file
    order), so draws are nested: with one seed the ``N = 1`` pick is in the ``N = 2`` pick, which
    is in the ``N = 4`` pick, and runs with ``N = 0, 1, 2, 4`` and the same ``M = 4`` are evaluated
    on exactly the same test images. Leak-free: no image used for training is ever evaluated (the
    ``N`` training anomalies are among the ``M`` held out). A defect type with fewer than ``M``
    anomalies is a :class:`~adlib.data.DataError`; one with exactly ``M`` leaves none of its
    anomalies in the test set (allowed, with a warning). Normalisation (:func:`check_protocol`):
    when either number is non-zero both keys are stored (``real_holdout`` alone means ``N = 0``: a
    reduced test set, the normal-only baseline of a series); ``N = M = 0`` is the standard protocol
    and both keys are dropped. It combines with ``shots`` (the normal images are drawn first, the
    anomalies added after); it cannot be combined with ``contamination`` (both move test anomalies
    into training).

``outliers`` (ADTR+ outlier exposure, CIFAR-10 Table 3)
    ``outliers = "cifar100"`` (the only source so far): as many CIFAR-100 training images as there
    are normal training images (after ``shots``, if any; 5000 for a CIFAR-10 class, the paper's
    natural reading) are added to the training set as *labelled* anomalies: label 1, defect type
    ``"outlier"``, zero mask (they are unrelated images, so only their image-level label means
    anything). The test set is unchanged. CIFAR-100 is looked for (``cifar-100-python``,
    ``cifar100``, ``CIFAR100``) beside the training data: in the nearest ancestor folder of the
    first training file that holds it, i.e. the training dataset's data root. The draw: the 50000
    CIFAR-100 training records in file order, permuted by ``default_rng(SeedSequence([seed,
    0x0E17]))`` (:data:`OUTLIER_MAGIC`); the first ``n`` are taken (and appended in file order),
    so draws are uniform without replacement, depend on the seed only, and are nested across
    ``n`` (a 4-shot run's outliers are among an 8-shot run's with the same seed). ``detail``:
    ``n_outliers``, ``outlier_source`` (the CIFAR-100 file) and ``outlier_rows_sha1`` (a digest
    of the chosen rows, sorted). Like ``real_anomalies``, it is refused for a method that does not
    read training labels (:func:`check_method_accepts`), and it cannot be combined with
    ``contamination`` or ``real_anomalies`` / ``real_holdout`` (one source of training anomalies
    per run).

``calibration`` (a decision threshold from held-out normal images, issue 20)
    ``calibration = f`` in (0, 0.5]: ``max(1, round(f * n))`` of the ``n`` normal training images
    are held out of training (drawn uniformly without replacement, candidates sorted by path, from
    ``default_rng(SeedSequence([seed, round(f * 1e6), 0xCA1B]))``, :data:`CALIBRATION_MAGIC`);
    after training, the run scores them and stores the normal-quantile threshold
    (:func:`adlib.thresholds.from_normal`) with the model, in ``threshold.json`` beside
    ``model.pt`` (:func:`adlib.results.train_job`), which ``adlib predict`` then uses. It is applied
    first, so ``shots`` draws from the images left; the test set is unchanged. The held-out files
    are recorded (``calibration_files``). A category with a single normal training image cannot
    hold one out (:class:`~adlib.data.DataError`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
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
KEYS = ("shots", "contamination", "contamination_protocol", "real_anomalies", "real_holdout", "outliers", "calibration")

#: the fixed entry of the real-anomaly draw's seed sequence (module docstring)
REAL_ANOMALY_MAGIC = 0xADA7

#: the fixed entry of the outlier-exposure draw's seed sequence (module docstring)
OUTLIER_MAGIC = 0x0E17

#: the fixed entry of the calibration draw's seed sequence (module docstring)
CALIBRATION_MAGIC = 0xCA1B

#: outlier sources of the ``outliers`` protocol: value -> (dataset, category, split)
OUTLIER_SOURCES = {"cifar100": ("cifar100", "all", "train")}


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
        if (
            isinstance(eps, bool)
            or not isinstance(eps, (int, float, np.floating, np.integer))
            or not 0.0 <= float(eps) < 1.0
        ):
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
    if "real_anomalies" in out or "real_holdout" in out:
        for name in ("real_anomalies", "real_holdout"):
            if name in out:
                v = out[name]
                if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                    raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
        n = int(out.get("real_anomalies", 0))
        m = int(out.get("real_holdout", n))
        if m < n:
            raise ValueError(
                f"real_holdout ({m}) must be at least real_anomalies ({n}): "
                "the training anomalies are drawn from the held-out ones"
            )
        if n == 0 and m == 0:  # nothing added, nothing removed: the standard protocol
            out.pop("real_anomalies", None)
            out.pop("real_holdout", None)
        else:
            out["real_anomalies"], out["real_holdout"] = n, m
            if "contamination" in out:
                raise ValueError(
                    "real_anomalies/real_holdout cannot be combined with contamination: "
                    "both protocols move test anomalies into training"
                )
    if "calibration" in out:
        f = out["calibration"]
        if isinstance(f, bool) or not isinstance(f, (int, float, np.floating, np.integer)) or not 0.0 < float(f) <= 0.5:
            raise ValueError(f"calibration must be a fraction in (0, 0.5] of the normal training images, got {f!r}")
        out["calibration"] = float(f)
    if "outliers" in out:
        if out["outliers"] not in OUTLIER_SOURCES:
            raise ValueError(f"outliers must be one of {tuple(OUTLIER_SOURCES)}, got {out['outliers']!r}")
        clash = [k for k in ("contamination", "real_anomalies") if k in out]
        if clash:
            raise ValueError(f"outliers cannot be combined with {clash[0]}: one source of training anomalies per run")
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
        raise DataError(
            f"{ds.name}/{ds.category}/{ds.split}: {k} shots asked for, but it has only {len(normal)} normal images"
        )
    chosen = [normal[int(i)] for i in few_shot_indices(len(normal), k, seed)]
    return dataclasses.replace(ds, records=chosen)


def calibration_split(ds: AnomalyDataset, fraction: float, seed: int) -> tuple[AnomalyDataset, AnomalyDataset]:
    """``(train, held_out)``: ``ds`` without ``max(1, round(fraction * n))`` of its ``n`` normal
    images, and a dataset of those (module docstring, ``calibration``). The draw depends on
    ``(seed, fraction)`` and the set of normal files only; ``DataError`` when fewer than two normal
    images leave nothing to train on."""
    normal = sorted((r for r in ds.records if int(r.label) == 0), key=lambda r: str(r.image_path))
    k = max(1, round(float(fraction) * len(normal)))
    if k >= len(normal):
        raise DataError(
            f"{ds.name}/{ds.category}/{ds.split}: calibration={fraction} would hold out {k} of its "
            f"{len(normal)} normal training image(s), leaving none to train on"
        )
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), round(float(fraction) * 1e6), CALIBRATION_MAGIC]))
    held = {str(normal[int(i)].image_path) for i in rng.choice(len(normal), size=k, replace=False)}
    train = [r for r in ds.records if str(r.image_path) not in held]
    out = [r for r in normal if str(r.image_path) in held]
    return dataclasses.replace(ds, records=train), dataclasses.replace(ds, records=out)


def calibration_set(protocol: dict[str, Any] | None, train_ds: AnomalyDataset, seed: int) -> AnomalyDataset | None:
    """The held-out normal images of a ``calibration`` protocol (the training split before any
    protocol is applied, as :func:`apply_protocol` draws them), None without one."""
    p = check_protocol(protocol)
    if "calibration" not in p:
        return None
    return calibration_split(train_ds, p["calibration"], seed)[1]


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
        noisy = add_contamination_noise(
            np.asarray(img),
            np.random.default_rng(seed),
            std=self.noise_std,
            range_mode=self.range_mode,
            jpeg_quality=self.jpeg_quality,
        )
        x = dataclasses.replace(self.transform, resize=None, crop=None).image(Image.fromarray(noisy))
        return Sample(x, torch.zeros((1, *x.shape[-2:]), dtype=torch.float32), 0, "good", str(rec.image_path))


def contaminated(
    train_ds: AnomalyDataset, test_ds: AnomalyDataset, eps: float, seed: int, protocol: str = DEFAULT_PROTOCOL
) -> tuple[ContaminatedDataset, AnomalyDataset, dict[str, Any]]:
    """``train_ds`` contaminated with ``eps`` of ``test_ds``'s anomalies (module docstring), the
    test set under ``protocol``, and what was done: ``n_contaminating`` (the count drawn),
    ``n_available`` (test anomalies to draw from), ``with_replacement`` (the released fallback
    when short), ``n_distinct``, the files (a file twice when drawn twice), ``leaked``. Too few
    anomalies under ``"leak-free"``: one :class:`~adlib.synthesis.contamination.ContaminationError`
    naming ``dataset/category``, the count needed and the count available."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(round(float(eps) * 1e6)), 0xC0A7]))
    where = f"{train_ds.name}/{train_ds.category}"
    split = contaminate(train_ds.records, test_ds.records, eps, rng, protocol=protocol, where=where)
    seeds = (None,) * split.n_normal_train + tuple(split.noise_seeds)
    fields = {f.name: getattr(train_ds, f.name) for f in dataclasses.fields(AnomalyDataset)}
    train = ContaminatedDataset(**{**fields, "records": split.train}, noise_seeds=seeds, noise_std=split.noise_std)
    test = dataclasses.replace(test_ds, records=split.test)
    detail = {
        "n_normal_train": split.n_normal_train,
        "n_contaminating": split.n_contaminating,
        "n_available": split.n_available,
        "with_replacement": split.with_replacement,
        "n_distinct": split.n_distinct,
        "contaminating_files": [_short(p) for p in split.chosen_files],
        "leaked": split.leaked,
        "test_images": len(split.test),
    }
    log.info(
        "contamination %.3f (%s): %d anomalies among %d normal training images of %s/%s; test %d -> %d",
        eps,
        protocol,
        split.n_contaminating,
        split.n_normal_train,
        train_ds.name,
        train_ds.category,
        len(test_ds),
        len(test),
    )
    return train, test, detail


def real_anomaly_order(n_candidates: int, seed: int, defect_type: str) -> np.ndarray:
    """The permutation of a defect type's ``n_candidates`` anomalous test records (sorted by
    path) from ``default_rng(SeedSequence([seed, REAL_ANOMALY_MAGIC, crc32(defect_type)]))``:
    its first ``M`` are held out of the test set, its first ``N`` go to training."""
    tag = zlib.crc32(str(defect_type).encode("utf-8"))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), REAL_ANOMALY_MAGIC, tag]))
    return rng.permutation(int(n_candidates))


def real_anomalies(
    train_ds: AnomalyDataset, test_ds: AnomalyDataset, n: int, seed: int, holdout: int | None = None
) -> tuple[AnomalyDataset, AnomalyDataset, dict[str, Any]]:
    """``train_ds`` plus ``n`` labelled test anomalies per defect type, ``test_ds`` less
    ``holdout`` (default ``n``) anomalies per defect type, and what was done (module docstring).

    The added records are the test records themselves (label 1, defect type, mask file), so the
    training set reads them with their label and true mask. ``detail``: ``n_real_anomalies``
    (added to training, all types), ``real_anomaly_files``, ``n_held_out``, ``held_out_files``
    (removed from the test set, the training ones included), ``test_images``."""
    p = check_protocol({"real_anomalies": n, "real_holdout": holdout})
    n, m = p.get("real_anomalies", 0), p.get("real_holdout", 0)
    by_type: dict[str, list] = {}
    for r in test_ds.records:
        if int(r.label) == 1:
            by_type.setdefault(r.defect_type, []).append(r)
    where = f"{test_ds.name}/{test_ds.category}/{test_ds.split}"
    if m > 0 and not by_type:
        raise DataError(f"{where}: no anomalous test images to draw real anomalies from")
    added, held = [], []
    for defect in sorted(by_type):
        cands = sorted(by_type[defect], key=lambda r: str(r.image_path))
        if len(cands) < m:
            raise DataError(
                f"{where}: defect type {defect!r} has {len(cands)} anomalous test images, "
                f"fewer than real_holdout = {m} (real_anomalies = {n}) asks to hold out"
            )
        if m and len(cands) == m:
            log.warning(
                "real anomalies: all %d %r anomalies of %s are held out; none is left in the test set", m, defect, where
            )
        order = real_anomaly_order(len(cands), seed, defect)
        picked = [cands[int(i)] for i in order[:m]]
        held += picked
        added += picked[:n]
    held_paths = {str(r.image_path) for r in held}
    train = dataclasses.replace(train_ds, records=list(train_ds.records) + added) if added else train_ds
    test = (
        dataclasses.replace(test_ds, records=[r for r in test_ds.records if str(r.image_path) not in held_paths])
        if held
        else test_ds
    )
    detail = {
        "n_real_anomalies": len(added),
        "real_anomaly_files": [_short(r.image_path) for r in added],
        "n_held_out": len(held),
        "held_out_files": [_short(r.image_path) for r in held],
        "test_images": len(test),
    }
    log.info(
        "real anomalies: %d per defect type (%d in all) added as labelled anomalies to %d training images of "
        "%s/%s (seed %d); %d per defect type held out, test %d -> %d",
        n,
        len(added),
        len(train_ds),
        train_ds.name,
        train_ds.category,
        seed,
        m,
        len(test_ds),
        len(test),
    )
    return train, test, detail


def _outlier_root(train_ds: AnomalyDataset, dataset: str) -> Path:
    """The data root holding ``dataset``: the nearest ancestor of the first training file that does."""
    from .data import DATASETS, dataset_dir

    first = Path(str(train_ds.records[0].image_path))
    for folder in first.parents:
        try:
            dataset_dir(dataset, folder)
        except DataError:
            continue
        return folder
    raise DataError(
        f"outliers={dataset}: {dataset} not found beside the training data: no ancestor folder of {first} "
        f"holds {', '.join(DATASETS[dataset].dirnames)}"
    )


def outlier_exposure(train_ds: AnomalyDataset, source: str, seed: int) -> tuple[AnomalyDataset, dict[str, Any]]:
    """``train_ds`` plus as many labelled outliers from ``source`` as it has normal images (module
    docstring), and what was done (``n_outliers``, ``outlier_source``, ``outlier_rows_sha1``)."""
    from .data import get_dataset
    from .data.cifar import OUTLIER, CifarDataset

    name, category, split = OUTLIER_SOURCES[check_protocol({"outliers": source})["outliers"]]
    n = int((train_ds.labels == 0).sum())
    src = get_dataset(name, category, split, root=_outlier_root(train_ds, name), transform=train_ds.transform)
    if n > len(src):
        raise DataError(
            f"outliers={source}: {n} outliers asked for (one per normal training image), "
            f"but {name} {split} has only {len(src)} images"
        )
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), OUTLIER_MAGIC]))
    rows = np.sort(rng.permutation(len(src))[:n])
    added = [dataclasses.replace(src.records[int(i)], label=1, defect_type=OUTLIER) for i in rows]
    if isinstance(train_ds, CifarDataset):
        train = dataclasses.replace(train_ds, records=list(train_ds.records) + added)
    else:  # an image-file dataset: a CifarDataset reads its file records as before, and the outliers
        fields = {f.name: getattr(train_ds, f.name) for f in dataclasses.fields(AnomalyDataset)}
        train = CifarDataset(**{**fields, "records": list(train_ds.records) + added})
    files = sorted({str(getattr(r, "file", "")) for r in added})
    detail = {
        "n_outliers": n,
        "outlier_source": ", ".join(_short(f) for f in files) or name,
        "outlier_rows_sha1": hashlib.sha1(rows.astype(np.int64).tobytes()).hexdigest(),
    }
    log.info(
        "outlier exposure: %d %s images added as labelled anomalies to the %d normal training images of %s/%s "
        "(seed %d)",
        n,
        name,
        n,
        train_ds.name,
        train_ds.category,
        seed,
    )
    return train, detail


def check_method_accepts(protocol: dict[str, Any] | None, model) -> None:
    """``ValueError`` when ``protocol`` adds labelled anomalies to the training set of a method that
    does not read training labels (it would train on them as normal images). A method opts in
    with a true ``uses_training_labels`` attribute (ADTR)."""
    p = check_protocol(protocol)
    if p.get("real_anomalies") and not getattr(model, "uses_training_labels", False):
        raise ValueError(
            f"protocol real_anomalies={p['real_anomalies']} adds labelled anomalies to the training set, "
            f"but {getattr(model, 'name', type(model).__name__)!r} does not read training labels and would "
            "train on them as normal images; use real_holdout alone for a reduced test set"
        )
    if p.get("outliers") and not getattr(model, "uses_training_labels", False):
        raise ValueError(
            f"protocol outliers={p['outliers']} adds labelled outliers to the training set, but "
            f"{getattr(model, 'name', type(model).__name__)!r} does not read training labels and would "
            "train on them as normal images"
        )


def apply_protocol(
    protocol: dict[str, Any] | None, train_ds: AnomalyDataset, test_ds: AnomalyDataset, seed: int
) -> tuple[AnomalyDataset, AnomalyDataset, dict[str, Any]]:
    """``(train_ds, test_ds, detail)`` under ``protocol``; ``detail`` records what was done
    (for ``shots``: the chosen training files, relative to the dataset's folder where possible;
    for ``contamination`` and ``real_anomalies``: the files moved, see :func:`contaminated` and
    :func:`real_anomalies`; for ``outliers``: see :func:`outlier_exposure`). ``shots`` is applied
    first (after ``calibration``'s hold-out), then the anomalies are added."""
    p = check_protocol(protocol)
    detail: dict[str, Any] = dict(p)
    if "calibration" in p:
        train_ds, held = calibration_split(train_ds, p["calibration"], seed)
        detail["calibration_files"] = [_short(r.image_path) for r in held.records]
        log.info(
            "calibration: %d normal training image(s) of %s/%s held out for the threshold (seed %d)",
            len(held),
            train_ds.name,
            train_ds.category,
            seed,
        )
    if "shots" in p:
        train_ds = few_shot(train_ds, p["shots"], seed)
        detail["train_files"] = [_short(r.image_path) for r in train_ds.records]
        log.info(
            "few-shot: %d of the training images of %s/%s (seed %d)", p["shots"], train_ds.name, train_ds.category, seed
        )
    if "contamination" in p:
        train_ds, test_ds, more = contaminated(train_ds, test_ds, p["contamination"], seed, p["contamination_protocol"])
        detail.update(more)
    if "real_anomalies" in p:  # after shots: the normal images are drawn first
        train_ds, test_ds, more = real_anomalies(train_ds, test_ds, p["real_anomalies"], seed, p["real_holdout"])
        detail.update(more)
    if "outliers" in p:  # after shots: as many outliers as normal images drawn
        train_ds, more = outlier_exposure(train_ds, p["outliers"], seed)
        detail.update(more)
    return train_ds, test_ds, detail


def _short(path) -> str:
    parts = str(path).replace("\\", "/").split("/")
    return "/".join(parts[-4:])


__all__ = [
    "CALIBRATION_MAGIC",
    "KEYS",
    "OUTLIER_MAGIC",
    "OUTLIER_SOURCES",
    "REAL_ANOMALY_MAGIC",
    "ContaminatedDataset",
    "apply_protocol",
    "calibration_set",
    "calibration_split",
    "check_method_accepts",
    "check_protocol",
    "contaminated",
    "few_shot",
    "few_shot_indices",
    "outlier_exposure",
    "real_anomalies",
    "real_anomaly_order",
]
