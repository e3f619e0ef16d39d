"""The ADTR paper's experiments (and the push-pull study beyond it), as data and small analysis functions.

The notebooks under ``notebooks/adtr/`` call these; every training run goes through the results
store (:mod:`adlib.results`): cached, resumable, several worker processes.

- Tables 1 / 2 (MVTec AD, pixel / image AUROC per category): :func:`main_jobs` trains ADTR
  (normal-only, ``variant="normal"``), ADTR+ (confetti noise with pixel labels, ``L_px``) and
  PatchCore (this project's shared baseline). Only the means are known (adtr-facts.md section 6);
  the reported file holds the S3-tagged ones.
- Table 3 (CIFAR-10 one-class, image AUROC): :func:`cifar_jobs`, paper profile only, when the data
  root holds CIFAR-10 (and CIFAR-100 for ADTR+'s outlier exposure with ``L_img``); marked missing
  otherwise. Settings: :data:`CIFAR_OVERRIDES`.
- Table 4 (ablations, MVTec pixel AUROC): :data:`ABLATIONS` (a) reconstruction network, (b)
  target, (c) backbone, (d) feature scales, as config overrides of the same code
  (:func:`ablation_overrides` fills in the profile's stages). The values of Table 4 are tagged S2
  in adtr-facts.md; they are shown as :data:`SECONDARY` ("summaries, unverified"), never as
  reported numbers.
- Fig. 5 (t-SNE of ``d(:, u)``): :func:`difference_vectors`.
- The push-pull study (the excerpt's Eq. 6-9 on the case they were written for):
  :func:`push_pull_jobs` (normal-only vs image vs pixel labels; confetti vs 1, 2, 4 real labelled
  anomalies per defect type, all evaluated on one held-out test set per seed) and
  :func:`sensitivity_jobs` (``alpha`` with pixel labels, ``k`` with image labels).

Datasets per profile: ``smoke`` uses the built-in benchmark ``synth`` (standing in for MVTec AD);
``paper`` uses ``mvtec`` (and ``cifar10``/``cifar100``) under the data root.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..results import Job
from .common import Plan, as_reported_rows, example_rows, label_rows, notebook_defaults, plan, reproduced_on

#: (name in the tables, reported method, reproduced label); None = not reproduced / not in the paper
MAIN_METHODS: tuple[tuple[str, str | None, str | None], ...] = (
    ("SPADE", "SPADE", None),
    ("TS", "TS", None),
    ("PatchCore", None, "patchcore"),
    ("ADTR", "ADTR", "adtr-normal"),
    ("ADTR+", "ADTR+", "adtr-pixel"),
)
CIFAR_METHODS: tuple[tuple[str, str | None, str | None], ...] = (
    ("KDAD", "KDAD", None),
    ("ADTR", "ADTR", "adtr-normal"),
    ("ADTR+", "ADTR+", "adtr-image"),
)
#: reproduced label -> (registered method, overrides) of Tables 1-2
TRAINED: dict[str, tuple[str, dict[str, Any]]] = {
    "patchcore": ("patchcore", {}),
    "adtr-normal": ("adtr", dict(variant="normal")),
    "adtr-pixel": ("adtr", dict(variant="pixel", anomalies="confetti")),
}
#: CIFAR-10 settings (adtr-facts.md sections 2-5): 32-px input, an 8 x 8 grid, batch 128, k = 20;
#: the image score is open (UniAD scores CIFAR by the map's mean): a window of the whole image
#: makes the pooled maximum that mean.
CIFAR_OVERRIDES: dict[str, Any] = dict(image_size=32, grid=8, batch_size=128, k=20, score_pool=32)

DATASETS = {
    "main": {"smoke": ("synth",), "paper": ("mvtec",)},
    "cifar": {"smoke": (), "paper": ("cifar10",)},
}

#: Table 4 rows: (sub-table, row name as the summaries print it, overrides); "{stages}" and
#: "{last}" are filled per profile by :func:`ablation_overrides`
ABLATIONS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("a", "CNN", dict(reconstructor="cnn")),
    ("a", "w/o attention", dict(reconstructor="no-attention")),
    ("a", "w/o query", dict(reconstructor="no-query")),
    ("a", "attention + query", {}),
    ("b", "pixels", dict(target="pixels")),
    ("b", "features", {}),
    ("c", "ResNet-18", dict(backbone="resnet18", layers="{stages}")),
    ("c", "ResNet-34", dict(backbone="resnet34", layers="{stages}")),
    ("c", "EfficientNet-B0", dict(backbone="efficientnet_b0", layers="{stages}")),
    ("c", "EfficientNet-B4", dict(backbone="efficientnet_b4", layers="{stages}")),
    ("d", "last layer", dict(layers="{last}")),
    ("d", "multi-scale", {}),
)
#: the profile's feature stages (timm features_only indices): paper = EfficientNet-B4 stages 1-5
STAGES = {"paper": (0, 1, 2, 3, 4), "smoke": (1, 2, 3)}
#: Table 4 values (MVTec pixel AUROC mean, %) as two secondary summaries give them: tag S2 in
#: adtr-facts.md, so NOT reported numbers; shown beside ours, labelled "summaries (S2)"
SECONDARY: dict[tuple[str, str], float] = {
    ("a", "CNN"): 94.4,
    ("a", "w/o attention"): 94.8,
    ("a", "w/o query"): 94.2,
    ("a", "attention + query"): 97.2,
    ("b", "pixels"): 91.3,
    ("b", "features"): 97.2,
    ("c", "ResNet-18"): 95.3,
    ("c", "ResNet-34"): 95.7,
    ("c", "EfficientNet-B0"): 96.4,
    ("c", "EfficientNet-B4"): 97.2,
    ("d", "last layer"): 96.0,
    ("d", "multi-scale"): 97.2,
}
#: Table 4 rows the smoke profile leaves to the paper profile (CPU budget; the table is illustrative,
#: no claim rests on it): EfficientNet-B4 is the paper profile's backbone; one row of (a) and one of (c)
#: fewer keep each sub-table a comparison
SMOKE_SKIPPED_ROWS = (("a", "w/o query"), ("c", "ResNet-34"), ("c", "EfficientNet-B4"))
#: Table 4 rows the smoke profile runs
SMOKE_ABLATION_ROWS = tuple((t, r) for t, r, _ in ABLATIONS if (t, r) not in SMOKE_SKIPPED_ROWS)

#: push-pull study: anomalies per defect type and the held-out count shared by all its runs
REAL_COUNTS = (1, 2, 4)
HOLDOUT = 4
ALPHAS = (0.0, 0.0003, 0.003, 0.03, 0.3)
KS = (1, 5, 20, 64)


def ablation_overrides(row_overrides: dict[str, Any], profile: str) -> dict[str, Any]:
    """A Table 4 row's overrides with the profile's stages filled in."""
    stages = STAGES[profile]
    fill = {"{stages}": stages, "{last}": (stages[-1],)}
    return {k: fill.get(v, v) if isinstance(v, str) else v for k, v in row_overrides.items()}


def main_jobs(p: Plan, profile: str, seeds: Sequence[int] = (0,), labels: Sequence[str] = tuple(TRAINED)) -> list[Job]:
    """Runs of Tables 1-2: every label of :data:`TRAINED` on every planned category and seed."""
    return [
        Job.make(TRAINED[label][0], ds, cat, profile, s, **TRAINED[label][1])
        for ds, cats in p.categories.items()
        for cat in cats
        for label in labels
        for s in seeds
    ]


def cifar_jobs(p: Plan, profile: str, seeds: Sequence[int] = (0,), outliers: bool = True) -> dict[str, list[Job]]:
    """Table 3: ADTR (normal-only) and, with ``outliers``, ADTR+ (CIFAR-100 outlier exposure with
    image labels, ``L_img``, protocol ``outliers``) per CIFAR-10 class."""
    out: dict[str, list[Job]] = {"adtr-normal": [], "adtr-image": []}
    for ds, cats in p.categories.items():
        for cat in cats:
            for s in seeds:
                out["adtr-normal"].append(Job.make("adtr", ds, cat, profile, s, variant="normal", **CIFAR_OVERRIDES))
                if outliers:
                    out["adtr-image"].append(
                        Job.make(
                            "adtr",
                            ds,
                            cat,
                            profile,
                            s,
                            protocol={"outliers": "cifar100"},
                            variant="image",
                            anomalies="real",
                            **CIFAR_OVERRIDES,
                        )
                    )
    return out


def ablation_jobs(
    p: Plan, profile: str, seeds: Sequence[int] = (0,), rows: Sequence[tuple[str, str]] | None = None
) -> dict[tuple[str, str], list[Job]]:
    """Table 4 (sub-table, row) -> its jobs over the plan (ADTR normal-only)."""
    rows = list(rows) if rows is not None else [(t, r) for t, r, _ in ABLATIONS]
    spec = {(t, r): o for t, r, o in ABLATIONS}
    unknown = [r for r in rows if r not in spec]
    if unknown:
        raise ValueError(f"unknown Table 4 rows {unknown}; known: {list(spec)}")
    return {
        row: [
            Job.make("adtr", ds, c, profile, s, variant="normal", **ablation_overrides(spec[row], profile))
            for ds, cats in p.categories.items()
            for c in cats
            for s in seeds
        ]
        for row in rows
    }


def push_pull_runs(counts: Sequence[int] = REAL_COUNTS) -> dict[str, dict[str, Any]]:
    """The push-pull study's settings: row name -> ``{"labels", "anomalies", "n"}`` (``n`` real
    anomalies per defect type, 0 for normal-only and confetti)."""
    runs: dict[str, dict[str, Any]] = {"normal-only": dict(labels="normal", anomalies="confetti", n=0)}
    for labels in ("image", "pixel"):
        runs[f"{labels} labels, confetti"] = dict(labels=labels, anomalies="confetti", n=0)
        for n in counts:
            runs[f"{labels} labels, {n} real"] = dict(labels=labels, anomalies="real", n=n)
    return runs


def _pp_job(ds, cat, profile, seed, labels, anomalies, n, holdout, **extra) -> Job:
    return Job.make(
        "adtr",
        ds,
        cat,
        profile,
        seed,
        protocol={"real_anomalies": n, "real_holdout": holdout},
        variant=labels,
        anomalies=anomalies,
        **extra,
    )


def push_pull_jobs(
    p: Plan, profile: str, seeds: Sequence[int] = (0, 1), counts: Sequence[int] = REAL_COUNTS, holdout: int = HOLDOUT
) -> dict[str, list[Job]]:
    """Row of :func:`push_pull_runs` -> its jobs. Every run of a seed holds the same ``holdout``
    anomalies per defect type out of the test set (protocol ``real_holdout``; the real ones
    trained on are among them), so all rows of a seed are evaluated on the same images."""
    if max(counts, default=0) > holdout:
        raise ValueError(f"holdout ({holdout}) must be at least the largest count ({max(counts)})")
    return {
        row: [
            _pp_job(ds, c, profile, s, r["labels"], r["anomalies"], r["n"], holdout)
            for ds, cats in p.categories.items()
            for c in cats
            for s in seeds
        ]
        for row, r in push_pull_runs(counts).items()
    }


def sensitivity_jobs(
    p: Plan,
    profile: str,
    seeds: Sequence[int] = (0,),
    n: int = max(REAL_COUNTS),
    holdout: int = HOLDOUT,
    alphas: Sequence[float] = ALPHAS,
    ks: Sequence[int] = KS,
) -> dict[tuple[str, float], list[Job]]:
    """``("alpha", a)`` -> pixel-label runs with ``n`` real anomalies and ``alpha = a``; ``("k", k)``
    -> image-label runs with ``k``. ``alpha = 0`` removes the push term."""
    out: dict[tuple[str, float], list[Job]] = {}
    cells = [(ds, c) for ds, cats in p.categories.items() for c in cats]
    for a in alphas:
        out[("alpha", a)] = [
            _pp_job(ds, c, profile, s, "pixel", "real", n, holdout, alpha=float(a)) for ds, c in cells for s in seeds
        ]
    for k in ks:
        out[("k", k)] = [
            _pp_job(ds, c, profile, s, "image", "real", n, holdout, k=int(k)) for ds, c in cells for s in seeds
        ]
    return out


def summarise(frame, groups: dict, metrics: Sequence[str] = ("image_auroc", "pixel_auroc", "au_pro")):
    """Mean and standard deviation over seeds (and categories) of each group of jobs, in percent:
    one row per group key. ``frame``: :meth:`ResultsStore.frame` of the jobs; ``groups``: key ->
    jobs (as the ``*_jobs`` functions return)."""
    import pandas as pd

    rows = []
    for key, jobs in groups.items():
        hashes = {j.key()["config_hash"] for j in jobs}
        sub = frame[frame["config_hash"].isin(hashes)]
        row = {"row": key, "runs": len(sub)}
        for m in metrics:
            if m in sub.columns and len(sub):
                vals = sub[m].to_numpy(dtype=float) * 100.0
                row[f"{m} mean"] = float(np.mean(vals))
                row[f"{m} std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows).set_index("row")


@torch.no_grad()
def difference_vectors(model, ds, n_images: int | None = None, grid_label: str = "maxpool") -> dict[str, np.ndarray]:
    """Fig. 5's data: the feature-difference vectors ``d(:, u)`` of test images, one per grid
    position, with their anomaly score ``||d(:, u)||_2`` and the position's label (the mask taken
    to the grid: ``grid_label`` as in training). ``n_images``: the first normal and anomalous
    images alternately (None: all). Returns ``{"d": N x C, "score": N, "label": N, "image": N}``."""
    from ..models.adtr import pixel_score
    from ..synthesis.confetti import confetti_grid_label

    idx = list(range(len(ds)))
    if n_images is not None:
        labels = np.array([int(r.label) for r in ds.records])
        normal, anomalous = list(np.flatnonzero(labels == 0)), list(np.flatnonzero(labels == 1))
        idx = [i for pair in zip(normal, anomalous) for i in pair][:n_images]
        idx += [i for i in normal + anomalous if i not in idx][: max(0, n_images - len(idx))]
    samples = [ds[i] for i in idx]
    x = torch.stack([s.image for s in samples])
    d = model.difference(x).cpu()
    masks = torch.stack([s.mask[0] > 0 for s in samples])
    lab = confetti_grid_label(masks, d.shape[-1], mode=grid_label)
    return {
        "d": d.permute(0, 2, 3, 1).reshape(-1, d.shape[1]).numpy(),
        "score": pixel_score(d).reshape(-1).numpy(),
        "label": lab.reshape(-1).numpy().astype(np.int64),
        "image": np.repeat(np.arange(len(idx)), d.shape[-1] * d.shape[-2]),
    }


#: each notebook's parameters left empty -> the profile's default (None: everything on disk);
#: smoke: the CPU budget (fewer categories, seeds, rows and sweep points); paper: the paper's
NOTEBOOK_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "01_confetti": {"smoke": dict(dataset="synth"), "paper": dict(dataset="mvtec")},
    "02_main_tables": {"smoke": dict(categories=["wood", "grass", "nut"]), "paper": dict(categories=None)},
    "03_ablations": {
        "smoke": dict(categories=["wood"], rows=list(SMOKE_ABLATION_ROWS)),
        "paper": dict(categories=None, rows=None),
    },
    "04_push_pull": {
        # smoke: one seed for the table (CPU budget); the claim cell runs its two rows over claim_seeds
        "smoke": dict(seeds=[0], categories=["wood"], alphas=[0.0, 0.003, 0.3], ks=[1, 20]),
        "paper": dict(seeds=[0, 1, 2], categories=None, alphas=list(ALPHAS), ks=list(KS)),
    },
}


def cifar_plan(profile: str, data_root=None, classes: Sequence[str] | None = None) -> tuple[Plan, bool]:
    """Tables 1-2's CIFAR-10 one-class runs: the plan (``paper``: CIFAR-10 under the data root; not
    run in ``smoke``) and whether CIFAR-100 is there for outlier exposure."""
    if profile == "smoke":
        reason = "not run in the smoke profile (paper profile, CIFAR-10 under the data root)"
        return Plan(missing={"cifar10": reason}), False
    return plan(DATASETS["cifar"][profile], data_root, classes), not plan(["cifar100"], data_root).missing


def sensitivity_seeds(profile: str, seeds: Sequence[int]) -> list[int]:
    """Seeds of the alpha / k sweeps of adtr/04: the first seed in ``smoke`` (CPU budget), all in ``paper``."""
    return list(seeds[:1]) if profile == "smoke" else list(seeds)


def defaults(notebook: str, profile: str, **given: Any) -> Any:
    """A notebook's parameters with the profile's defaults filled in (:data:`NOTEBOOK_DEFAULTS`,
    :func:`adlib.papers.common.notebook_defaults`)."""
    return notebook_defaults(NOTEBOOK_DEFAULTS, notebook, profile, **given)


__all__ = [
    "cifar_plan",
    "sensitivity_seeds",
    "NOTEBOOK_DEFAULTS",
    "as_reported_rows",
    "example_rows",
    "label_rows",
    "defaults",
    "reproduced_on",
    "ABLATIONS",
    "ALPHAS",
    "CIFAR_METHODS",
    "CIFAR_OVERRIDES",
    "DATASETS",
    "HOLDOUT",
    "KS",
    "MAIN_METHODS",
    "REAL_COUNTS",
    "SECONDARY",
    "SMOKE_ABLATION_ROWS",
    "SMOKE_SKIPPED_ROWS",
    "STAGES",
    "TRAINED",
    "ablation_jobs",
    "ablation_overrides",
    "cifar_jobs",
    "difference_vectors",
    "main_jobs",
    "plan",
    "push_pull_jobs",
    "push_pull_runs",
    "sensitivity_jobs",
    "summarise",
]
