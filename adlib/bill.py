"""The bill before the run: what a profile's notebooks will train, and what that will cost.

>>> b = bill("paper")          # doctest: +SKIP
>>> print(b.text())            # doctest: +SKIP

``adlib reproduce --profile paper --plan`` prints it and writes it as a CSV, without executing a
notebook or training anything. Per notebook and in total:

- **runs**: the distinct training runs (:class:`adlib.results.Job`) the notebook asks the results
  store for, built by :data:`NOTEBOOKS` with the same paper-module functions and defaults as the
  notebook's code (``NOTEBOOK_DEFAULTS`` and the notebook's own parameter defaults, as
  ``adlib reproduce`` leaves them). A run that two notebooks share is trained once: the total
  counts it once, and each notebook says how many of its runs an earlier notebook already has
  (``shared``). Work a notebook does outside the store (a t-SNE, the Table VI complexity
  measurement, GLASS-j's judgement) is small and listed in ``extras``, not costed.
- **images**: training images processed (each epoch counts) and test images scored (with GLASS
  and SimpleNet's test-set selection, the test set every ``select_every`` epochs too), from the
  method's :meth:`~adlib.models.core.Method.workload`.
- **FLOPs**: the parts of each method (:meth:`~adlib.models.core.Method.flop_parts`) measured with
  :class:`torch.utils.flop_counter.FlopCounterMode` (a multiply-add = 2 FLOPs; convolutions and
  matrix products only, see :mod:`adlib.complexity`), built at the run's config with
  ``pretrained=False`` on the ``meta`` device (shapes only: nothing is computed, no weights are
  needed; and, unlike a CPU run, attention's fused kernel is counted), one image, forward (and
  backward where the part trains), times the passes of the workload, plus what the workload
  counts by formula (PatchCore's coreset and nearest-neighbour search). Measured once per config
  (the seed aside).
- **disk**: what the results store keeps per run (:mod:`adlib.results`): ``model.pt`` (the
  resume checkpoint ``checkpoints/last.pt`` of an epoch method, as large, is deleted once the
  training is recorded; it counts while a run trains, not in the total) (the trained modules' parameters and buffers, the
  optimisers' state, 2 values per parameter for Adam / AdamW, 1 with momentum SGD, and the
  workload's ``extra_state_bytes``: PatchCore's memory bank, GLASS's last-epoch copy), the
  uncompressed size of ``prediction.npz`` (scores, labels, fixed-width path and defect-type
  strings, float16 maps and boolean masks at the input size when they fit in
  :data:`adlib.results.MAX_MAP_BYTES`; an upper bound, the file is compressed) and
  :data:`RECORD_BYTES` for the two JSON records. A frozen pretrained backbone is rebuilt from its
  weights, not saved.
- **done**: runs whose record is already in the profile's store (``ResultsStore.get``).
- **GPU hours**: FLOPs / throughput. The throughput is the one ``benchmarks/RESULTS.md`` states as
  measured (a line ``measured GPU training throughput: X TFLOPS``; there is none yet) or else
  :data:`ASSUMED_TFLOPS`, an assumption stated in the table's footer and in the CSV's
  ``throughput`` columns; ``--throughput`` overrides both.

Categories: datasets found under the data root contribute the categories on disk
(:func:`adlib.papers.common.plan`, as the notebooks plan) and their counts; a dataset that is
missing is filled in from :data:`DATASET_FACTS` (all its categories, with the sizes the sources
give, or an assumption stated there), so the paper profile can be billed without any data. Each
row says which (``sizes``: ``on disk``, ``expected`` or ``mixed``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from .results import MAX_MAP_BYTES, Job, ResultsStore

log = logging.getLogger(__name__)

#: GPU throughput assumed when ``benchmarks/RESULTS.md`` states no measured one, in TFLOPS
#: (10^12 FLOP/s, multiply-add = 2): what one A100/H100-class GPU is taken to sustain on these
#: runs. Their peaks are far higher (A100: 19.5 FP32, 156 TF32 tensor; H100 SXM: 67 FP32, 495 TF32;
#: PyTorch runs convolutions in TF32 by default), but the runs use small batches (8-24 images, one
#: image at a time for GLASS's feature rows), frozen-backbone feature pipelines and CPU-side
#: anomaly synthesis, which keep a GPU far from its peak. An assumption, not a measurement:
#: override it with ``--throughput`` once a GPU run has been timed.
ASSUMED_TFLOPS = 25.0
#: how ``benchmarks/RESULTS.md`` states a measured throughput (the first match is used)
MEASURED_THROUGHPUT = re.compile(r"measured GPU training throughput:\s*([0-9]+(?:\.[0-9]+)?)\s*TFLOPS", re.I)
#: ``record.json`` + ``train.json`` of one run (assumed; a few KB of key, config, metrics, environment)
RECORD_BYTES = 32 * 1024
#: characters numpy keeps per test image for its path and its defect type (fixed-width UTF-32 arrays,
#: 4 bytes a character; assumed longest path / defect-type name)
PATH_CHARS, DEFECT_CHARS = 120, 24

# ----------------------------------------------------------------------------------------------
# Dataset facts


@dataclass(frozen=True)
class DatasetFacts:
    """What a dataset holds when it is not on disk: category -> ``(train, test_good,
    test_anomalous, defect_types)`` (normal training images, normal and anomalous test images,
    defect types), where the sizes come from (``source``) and, where the source gives totals only,
    how they were spread (``assumption``; empty when the per-category counts are the source's)."""

    name: str
    categories: dict[str, tuple[int, int, int, int]]
    source: str
    assumption: str = ""


def _even(names: Sequence[str], train: int, good: int, anomalous: int) -> dict[str, tuple[int, int, int, int]]:
    """Totals spread evenly over ``names`` (the first categories take the remainders), 1 defect type each."""
    n = len(names)

    def part(total: int, i: int) -> int:
        return total // n + (i < total % n)

    return {c: (part(train, i), part(good, i), part(anomalous, i), 1) for i, c in enumerate(names)}


#: MVTec AD per category: (train good, test good, test defective, defect types); Bergmann et al.,
#: CVPR 2019 / IJCV 2021, Table 1 (3,629 training, 467 + 1,258 test images, 73 defect types)
_MVTEC = {
    "bottle": (209, 20, 63, 3),
    "cable": (224, 58, 92, 8),
    "capsule": (219, 23, 109, 5),
    "carpet": (280, 28, 89, 5),
    "grid": (264, 21, 57, 5),
    "hazelnut": (391, 40, 70, 4),
    "leather": (245, 32, 92, 5),
    "metal_nut": (220, 22, 93, 4),
    "pill": (267, 26, 141, 7),
    "screw": (320, 41, 119, 5),
    "tile": (230, 33, 84, 5),
    "toothbrush": (60, 12, 30, 1),
    "transistor": (213, 60, 40, 4),
    "wood": (247, 19, 60, 5),
    "zipper": (240, 32, 119, 7),
}
#: VisA, the 1cls split (Zou et al., ECCV 2022, ``split_csv/1cls.csv``): train normal, test normal,
#: test anomalous (100 per category)
_VISA = {
    "candle": (900, 100, 100, 1),
    "capsules": (542, 60, 100, 1),
    "cashew": (450, 50, 100, 1),
    "chewinggum": (453, 50, 100, 1),
    "fryum": (450, 50, 100, 1),
    "macaroni1": (900, 100, 100, 1),
    "macaroni2": (900, 100, 100, 1),
    "pcb1": (904, 100, 100, 1),
    "pcb2": (901, 100, 100, 1),
    "pcb3": (905, 101, 100, 1),
    "pcb4": (904, 101, 100, 1),
    "pipe_fryum": (450, 50, 100, 1),
}
_TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
#: MAD-sys (adlib.synthesis.weak): MVTec AD's training images; its test/good images, half kept good,
#: half given one weak defect
_MAD = {c: (_MVTEC[c][0], _MVTEC[c][1] - _MVTEC[c][1] // 2, _MVTEC[c][1] // 2, 1) for c in _TEXTURES}
_MAD_NOTE = (
    "adlib's MAD-sys ('MVTec AD-synthesis (GLASS)', adlib.data; GLASS builds it from the five MVTec AD texture "
    "categories, adlib.synthesis.weak): the five texture categories, MVTec AD's training images, a test set of "
    "MVTec AD's test/good size (half good, half with a weak defect)"
)
#: MAD-man (GLASS Sec. 4.1, implementation-notes): every MVTec AD category; five people each chose 2 normal
#: and 6 weakly defective test images per category (10 + 30); training on MVTec AD's training images
_MAD_MAN = {c: (v[0], 10, 30, 1) for c, v in _MVTEC.items()}
_MAD_MAN_NOTE = (
    "MAD-man ('MVTec AD-manual (GLASS)'): all 15 MVTec AD categories, MVTec AD's training images, 5 x (2 normal + "
    "6 weak-defect) test images per category as GLASS describes the selection; one defect type assumed"
)
_CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

#: dataset -> :class:`DatasetFacts`: the sizes the bill uses for a dataset that is not on disk
DATASET_FACTS: dict[str, DatasetFacts] = {
    "mvtec": DatasetFacts("mvtec", _MVTEC, "MVTec AD paper (Bergmann et al. 2019/2021), per category"),
    "visa": DatasetFacts(
        "visa",
        _VISA,
        "VisA (Zou et al. 2022) 1cls split, per category: 8,659 train / 962 + 1,200 test in total",
        "defect types: 1 per category (no paper-profile VisA run uses them)",
    ),
    "mpdd": DatasetFacts(
        "mpdd",
        _even(("bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes"), 888, 176, 282),
        "MPDD (Jezek et al. 2021): 1,346 images, 888 train / 176 good + 282 defective test",
        "totals spread evenly over the 6 categories, 1 defect type each",
    ),
    "wfdd": DatasetFacts(
        "wfdd",
        _even(("grey_cloth", "grid_cloth", "yellow_cloth", "pink_flower"), 3076, 513, 512),
        "WFDD (GLASS paper, Chen et al. 2024): 4,101 images in 4 categories",
        "train/test split not known here: 3/4 train (normal), 1/4 test (half good, half defective), spread evenly "
        "over the 4 categories, 1 defect type each",
    ),
    "mad-man": DatasetFacts("mad-man", dict(_MAD_MAN), "GLASS Sec. 4.1 and its appendix A", _MAD_MAN_NOTE),
    "mad-sys": DatasetFacts("mad-sys", dict(_MAD), "MVTec AD's counts (see the assumption)", _MAD_NOTE),
    "dagm": DatasetFacts(
        "dagm",
        {f"class{i}": ((1000, 1000, 150, 1) if i <= 6 else (2000, 2000, 300, 1)) for i in range(1, 11)},
        "DAGM 2007 (Wieler & Hahn): per split, classes 1-6 1,000 normal + 150 defective images, classes 7-10 "
        "2,000 + 300; training uses the normal images only (adlib.data.dagm)",
    ),
    "cifar10": DatasetFacts(
        "cifar10",
        {c: (5000, 1000, 9000, 9) for c in _CIFAR10},
        "CIFAR-10 (Krizhevsky 2009): 5,000 training images per class; the 10,000 test images per one-class run",
    ),
}

# ----------------------------------------------------------------------------------------------
# Which runs each notebook trains


@dataclass
class Context:
    """What planning a notebook's runs needs: the profile, the data root, and which datasets were
    filled in from :data:`DATASET_FACTS` (``expected``) or are missing without facts (``missing``)."""

    profile: str
    data_root: Any = None
    expected: set[str] = field(default_factory=set)
    missing: dict[str, str] = field(default_factory=dict)
    #: assumptions made while planning (said in the bill's footer)
    notes: list[str] = field(default_factory=list)

    def plan(self, datasets: Iterable[str], categories: Sequence[str] | dict | None = None):
        """:func:`adlib.papers.common.plan`, with each missing dataset that has facts filled in with
        its categories (those of ``categories`` it has, as ``plan`` keeps them; else all)."""
        from .papers.common import Plan, plan

        datasets = list(datasets)
        found = plan(datasets, self.data_root, categories)
        out = Plan()
        for ds in datasets:
            if ds in found.categories:
                out.categories[ds] = found.categories[ds]
            elif ds in DATASET_FACTS:
                have = list(DATASET_FACTS[ds].categories)
                want = categories.get(ds) if isinstance(categories, dict) else categories
                out.categories[ds] = [c for c in (want or ()) if c in have] or have
                self.expected.add(ds)
            elif ds in found.missing:
                out.missing[ds] = found.missing[ds]
                self.missing[ds] = found.missing[ds]
        return out

    def on_disk(self, dataset: str) -> bool:
        return dataset not in self.expected

    def runnable(self, jobs: Iterable[Job]) -> list[Job]:
        """The jobs whose contamination draw can be made, in order, without duplicates: on disk
        :func:`adlib.papers.adl.runnable` (the notebooks' filter); for an expected dataset the same
        rule (:func:`adlib.synthesis.contamination.draw_plan`) on the facts' counts."""
        from .papers import adl
        from .synthesis.contamination import ContaminationError, draw_plan

        jobs = list(dict.fromkeys(jobs))
        disk = set(adl.runnable([j for j in jobs if self.on_disk(j.dataset)], self.data_root))
        out = []
        for j in jobs:
            proto = dict(j.protocol)
            if self.on_disk(j.dataset):
                if j in disk:
                    out.append(j)
                continue
            if "contamination" in proto:
                train, _, anomalous, _ = DATASET_FACTS[j.dataset].categories[j.category]
                try:
                    draw_plan(proto["contamination"], train, anomalous, proto["contamination_protocol"])
                except ContaminationError:
                    continue
            out.append(j)
        return out

    def runnable_grid(self, grid: dict) -> dict:
        """:func:`adlib.papers.adl.runnable_grid` with :meth:`runnable`."""
        ok = set(self.runnable(j for js in grid.values() for j in js))
        dropped = {(j.dataset, j.category) for js in grid.values() for j in js if j not in ok}
        return {k: [j for j in js if (j.dataset, j.category) not in dropped] for k, js in grid.items()}


@dataclass
class NotebookRuns:
    """The runs a notebook asks the store for (in order, without duplicates) and the work it does
    outside the store (``extras``, not costed)."""

    jobs: list[Job]
    extras: list[str] = field(default_factory=list)


def run_id(job: Job) -> tuple:
    """What names a run in the store (its run folder: label, dataset, category, seed, config hash):
    two jobs with the same id are one run, trained once (e.g. an override that states a profile's
    default, GLASS's ``select_best_on_test=True`` in the paper profile)."""
    return (job.label, job.dataset, job.category, job.seed, job.key()["config_hash"])


def unique_runs(jobs: Iterable[Job]) -> list[Job]:
    """``jobs`` in order, each run (:func:`run_id`) once (its first job)."""
    out: dict[tuple, Job] = {}
    for j in jobs:
        out.setdefault(run_id(j), j)
    return list(out.values())


def _flat(*groups: Any) -> list[Job]:
    out: list[Job] = []
    for g in groups:
        if isinstance(g, dict):
            out += [j for js in g.values() for j in js]
        else:
            out += list(g)
    return unique_runs(out)


CLAIM_SEEDS = [0, 1, 2]  # the notebooks' claim_seeds default


def _glass_02(ctx: Context) -> NotebookRuns:
    from .papers import glass as paper

    dataset, category = paper.defaults("02_tsne", ctx.profile, dataset=None, category=None)
    ctx.plan([dataset], [category])  # marks the dataset expected when it is not on disk
    job = Job.make("glass", dataset, category, ctx.profile, 0, variant="m")
    return NotebookRuns([job], ["t-SNE of 8 training images' features of the trained model (seconds)"])


def _glass_03(ctx: Context) -> NotebookRuns:
    from .papers import glass as paper

    p = ctx.profile
    categories, weak_categories = paper.defaults("03_main_tables", p, categories=None, weak_categories=None)
    main = ctx.plan(paper.MAIN_DATASETS[p], categories)
    weak = ctx.plan(paper.WEAK_DATASETS[p], weak_categories)
    runs = paper.main_jobs(main, p, [0]) + paper.main_jobs(weak, p, [0])
    pair = ("glass-m", "simplenet")
    claims = paper.main_jobs(main, p, CLAIM_SEEDS, labels=pair) + paper.main_jobs(weak, p, CLAIM_SEEDS, labels=pair)
    selection_categories = paper.defaults("03_main_tables", p, selection_categories=None)
    sel = paper.selection_jobs(ctx.plan(paper.MAIN_DATASETS[p], selection_categories), p, CLAIM_SEEDS)
    return NotebookRuns(
        _flat(runs, claims, sel),
        ["GLASS-j's judgement per category (the released choices, or one FFT of the mean training image)"],
    )


def _glass_04(ctx: Context) -> NotebookRuns:
    from .papers import glass as paper

    p = ctx.profile
    categories, t5_categories, t5_rows = paper.defaults(
        "04_ablations", p, categories=None, table5_categories=None, table5_rows=None
    )
    rows5 = {k: v for k, v in paper.table5_settings(p).items() if t5_rows is None or k in t5_rows}
    t4_plan = ctx.plan(paper.MAIN_DATASETS[p][:1] + paper.WEAK_DATASETS[p], categories)
    t5_plan = ctx.plan(paper.MAIN_DATASETS[p][:1], t5_categories)
    t4 = paper.table4_jobs(t4_plan, p, [0])
    ad = paper.table4_jobs(ctx.plan(paper.MAIN_DATASETS[p][:1], categories), p, [0], rows=paper.ADAPTOR)
    t5 = paper.table4_jobs(t5_plan, p, [0], rows=rows5)
    rows = {k: paper.TABLE4[k] for k in ("LAS", "LAS+GAS(GN+GA+TP)")}
    claims = paper.table4_jobs(t4_plan, p, CLAIM_SEEDS, rows=rows)
    return NotebookRuns(_flat(t4, ad, t5, claims))


def _glass_05(ctx: Context) -> NotebookRuns:
    from .papers import glass as paper

    p = ctx.profile
    categories, factors = paper.defaults("05_sensitivity", p, categories=None, factors=None)
    plan = ctx.plan(paper.MAIN_DATASETS[p][:1], categories)
    rows = {f"r1={r}": o for r, o in paper.r1_settings(p, factors).items()}
    return NotebookRuns(_flat(paper.table4_jobs(plan, p, [0], rows=rows)))


def _pouta_01(ctx: Context) -> NotebookRuns:
    from .papers import pouta as paper

    p = ctx.profile
    dataset = paper.DATASETS["table1"][p][0]
    category = paper.defaults("01_representations", p, category=None)
    ctx.plan([dataset], [category])
    models = (paper.ABLATIONS["POUTA"], paper.ABLATIONS["POUTA-base+HSG"])
    jobs = [Job.make(m, dataset, category, p, 0, **o) for m, o in models]
    return NotebookRuns(jobs, ["representations and t-SNE of the test images of two trained models (seconds)"])


def _pouta_02(ctx: Context) -> NotebookRuns:
    from .papers import pouta as paper

    p = ctx.profile
    categories = paper.defaults("02_main_tables", p, categories=None)
    plans = [ctx.plan(paper.DATASETS[t][p], categories) for t in ("table1", "table2", "table3")]
    return NotebookRuns(_flat(*[paper.main_jobs(pl, p, [0]) for pl in plans]))


def _pouta_03(ctx: Context) -> NotebookRuns:
    from .papers import pouta as paper

    p = ctx.profile
    seeds, categories = paper.defaults("03_few_shot", p, seeds=None, categories=None)
    p4 = ctx.plan(paper.DATASETS["table4"][p], categories)
    few = paper.few_shot_jobs(p4, p, [2, 4, 8], seeds)
    full = paper.main_jobs(p4, p, seeds[:1], labels=["pouta"])
    return NotebookRuns(_flat(few, full), ["t-SNE of one few-shot model's test representations (seconds)"])


def _pouta_04(ctx: Context) -> NotebookRuns:
    from .papers import pouta as paper

    p = ctx.profile
    categories, rows = paper.defaults("04_ablations", p, categories=None, rows=None)
    p5 = ctx.plan(paper.DATASETS["table1"][p], categories)
    ab = paper.ablation_jobs(p5, p, [0], rows or tuple(paper.ABLATIONS))
    claims = paper.ablation_jobs(p5, p, CLAIM_SEEDS, rows=("Vanilla", "POUTA"))
    return NotebookRuns(
        _flat(ab, claims),
        ["Table VI complexity: FLOPs and 1+3 timed batches per method (seconds)", "Grad-CAM of 3 test images"],
    )


def _adl_01(ctx: Context) -> NotebookRuns:
    from .papers import adl as paper

    p = ctx.profile
    seeds, categories, protocols = paper.defaults("01_main_table", p, seeds=None, categories=None, protocols=None)
    plan = ctx.plan(paper.DATASETS[p], categories)
    grid = paper.protocol_grid(plan, p, paper.TRAINED, [0.1, 0.15, 0.2], seeds, protocols)
    return NotebookRuns(ctx.runnable(_flat(grid)))


def _adl_02(ctx: Context) -> NotebookRuns:
    from .papers import adl as paper

    p, cp = ctx.profile, "leak-free"
    seeds, categories, eps_grid, protocols, study = paper.defaults(
        "02_robustness", p, seeds=None, categories=None, eps_grid=None, protocols=None, study_methods=None
    )
    study = {k: paper.STUDY_METHODS[k] for k in (study or paper.STUDY_METHODS)}
    plan = ctx.plan(paper.DATASETS[p], categories)
    grid = paper.grid_jobs(plan, p, study, eps_grid, seeds, cp)
    fig2 = paper.protocol_grid(plan, p, paper.TRAINED, eps_grid, seeds, protocols)
    first = ctx.runnable(_flat(grid, fig2))
    lo, hi = eps_grid[0], eps_grid[-1]
    two = {k: paper.STUDY_METHODS[k] for k in ("ADL", "PatchCore")}
    cg = ctx.runnable_grid(paper.grid_jobs(plan, p, two, [lo, hi], CLAIM_SEEDS, cp))
    cmp = ctx.runnable_grid(
        paper.protocol_grid(plan, p, {"ADL": paper.TRAINED["ADL"]}, [hi], CLAIM_SEEDS, paper.PROTOCOLS)
    )
    return NotebookRuns(_flat(first, cg, cmp))


def _adl_03(ctx: Context) -> NotebookRuns:
    from .papers import adl as paper

    p, cp = ctx.profile, "leak-free"
    seeds, categories, lams, alphas = paper.defaults(
        "03_ablation_sensitivity", p, seeds=None, categories=None, lams=None, alphas=None
    )
    plan = ctx.plan(paper.DATASETS[p], categories)
    variants = {name: ("adl", opts) for name, opts in paper.TABLE2.items()}
    grid2 = paper.grid_jobs(plan, p, variants, [0.1], seeds, cp)
    sens = []
    for param, values in paper.sensitivity_settings(lams, alphas).items():
        g = paper.grid_jobs(plan, p, {f"{param}={v:g}": ("adl", o) for v, o in values.items()}, [0.1], seeds, cp)
        sens += _flat(g)
    return NotebookRuns(_flat(ctx.runnable(_flat(grid2)), ctx.runnable(sens)))


def _adtr_02(ctx: Context) -> NotebookRuns:
    from .papers import adtr as paper

    p = ctx.profile
    categories = paper.defaults("02_main_tables", p, categories=None)
    main = ctx.plan(paper.DATASETS["main"][p], categories)
    jobs = paper.main_jobs(main, p, [0])
    if p != "smoke":
        from .papers.common import plan

        cifar = ctx.plan(paper.DATASETS["cifar"][p])
        outliers = "cifar10" in ctx.expected or not plan(["cifar100"], ctx.data_root).missing
        if "cifar10" in ctx.expected:
            ctx.notes.append("cifar10 expected with cifar100 beside it: the ADTR+ outlier-exposure runs are billed")
        if cifar.categories:
            jobs = jobs + _flat(paper.cifar_jobs(cifar, p, [0], outliers=outliers))
    return NotebookRuns(_flat(jobs))


def _adtr_03(ctx: Context) -> NotebookRuns:
    from .papers import adtr as paper

    p = ctx.profile
    categories, rows = paper.defaults("03_ablations", p, categories=None, rows=None)
    rows = [tuple(r) for r in rows] if rows else None
    plan = ctx.plan(paper.DATASETS["main"][p], categories)
    abl = paper.ablation_jobs(plan, p, [0], rows)
    ds0, cat0 = next((d, c[0]) for d, c in plan.categories.items())
    tsne = Job.make("adtr", ds0, cat0, p, 0, variant="normal")
    return NotebookRuns(_flat(abl, [tsne]), ["t-SNE of 16 test images' difference vectors (seconds)"])


def _adtr_04(ctx: Context) -> NotebookRuns:
    from .papers import adtr as paper

    p = ctx.profile
    seeds, categories, alphas, ks = paper.defaults("04_push_pull", p, seeds=None, categories=None, alphas=None, ks=None)
    counts, holdout = [1, 2, 4], 4
    plan = ctx.plan(paper.DATASETS["main"][p], categories)
    pp = paper.push_pull_jobs(plan, p, seeds, counts=counts, holdout=holdout)
    sens = paper.sensitivity_jobs(
        plan, p, paper.sensitivity_seeds(p, seeds), n=max(counts), holdout=holdout, alphas=alphas, ks=ks
    )
    cj = paper.push_pull_jobs(plan, p, CLAIM_SEEDS, counts=counts, holdout=holdout)
    claims = {k: cj[k] for k in ("normal-only", "pixel labels, confetti")}
    return NotebookRuns(_flat(pp, sens, claims))


def _nothing(note: str) -> Callable[[Context], NotebookRuns]:
    def runs(ctx: Context) -> NotebookRuns:
        return NotebookRuns([], [note])

    return runs


#: notebook (path under ``notebooks/`` without ``.ipynb``) -> its runs for a context, in the order
#: ``adlib reproduce`` executes them
NOTEBOOKS: dict[str, Callable[[Context], NotebookRuns]] = {
    "00_datasets": _nothing("trains nothing: dataset counts and example grids"),
    "adl/00_contamination": _nothing("trains nothing: contamination counts and examples"),
    "adl/01_main_table": _adl_01,
    "adl/02_robustness": _adl_02,
    "adl/03_ablation_sensitivity": _adl_03,
    "adtr/01_confetti": _nothing("trains nothing: confetti noise on four images"),
    "adtr/02_main_tables": _adtr_02,
    "adtr/03_ablations": _adtr_03,
    "adtr/04_push_pull": _adtr_04,
    "glass/01_synthesis": _nothing("trains nothing: LAS / GAS figures; writes the weak-defect sets (image I/O)"),
    "glass/02_tsne": _glass_02,
    "glass/03_main_tables": _glass_03,
    "glass/04_ablations": _glass_04,
    "glass/05_sensitivity": _glass_05,
    "pouta/01_representations": _pouta_01,
    "pouta/02_main_tables": _pouta_02,
    "pouta/03_few_shot": _pouta_03,
    "pouta/04_ablations": _pouta_04,
}


def notebook_jobs(notebook: str, profile: str = "paper", data_root=None) -> list[Job]:
    """The runs ``notebook`` (a key of :data:`NOTEBOOKS`) trains in ``profile`` with the data under
    ``data_root`` (missing datasets filled in from :data:`DATASET_FACTS`)."""
    if notebook not in NOTEBOOKS:
        raise ValueError(f"unknown notebook {notebook!r}; known: {', '.join(NOTEBOOKS)}")
    return unique_runs(NOTEBOOKS[notebook](Context(profile, data_root)).jobs)


# ----------------------------------------------------------------------------------------------
# What one run costs


@functools.lru_cache(maxsize=64)
def _disk_table(dataset: str, data_root: str | None) -> dict[str, tuple[int, int, int, int]]:
    from .data.info import category_table

    tab = category_table(dataset, data_root)
    return {
        r.category: (
            int(r.train_good),
            int(r.test_good),
            int(r.test_anomalous),
            max(1, len([d for d in str(r.defect_types).split(", ") if d])),
        )
        for r in tab.itertuples()
    }


def _base_sizes(job: Job, ctx: Context) -> tuple[int, int, int, int]:
    if ctx.on_disk(job.dataset):
        table = _disk_table(job.dataset, None if ctx.data_root is None else str(ctx.data_root))
    else:
        table = DATASET_FACTS[job.dataset].categories
    if job.category not in table:
        raise ValueError(f"{job.dataset}: no category {job.category!r} (known: {', '.join(table)})")
    return table[job.category]


def run_sizes(job: Job, ctx: Context) -> tuple[int, int]:
    """``(training images the method sees per epoch, test images)`` of ``job`` after its protocol
    (:mod:`adlib.protocols`): ``shots`` keeps ``k`` normal images; ``contamination`` adds
    ``contamination_count(eps, n)`` test anomalies to training (and, leak-free, takes them out of
    the test set); ``real_holdout`` takes ``M`` anomalies per defect type out of the test set. The
    labelled anomalies of ``real_anomalies`` / ``outliers`` are not counted as training images
    (ADTR, the only method using them, mixes them into its epochs over the normal images)."""
    from .synthesis.contamination import contamination_count

    train, good, anomalous, defects = _base_sizes(job, ctx)
    test = good + anomalous
    proto = dict(job.protocol)
    if "shots" in proto:
        train = min(train, int(proto["shots"]))
    if "contamination" in proto:
        k = contamination_count(float(proto["contamination"]), train)
        if proto.get("contamination_protocol", "leak-free") == "leak-free":
            test -= min(k, anomalous)
        train += k
    if proto.get("real_holdout"):
        test -= min(int(proto["real_holdout"]) * defects, anomalous)
    return train, max(test, 0)


@dataclass
class Measured:
    """One config's measured FLOPs per part (one input) and checkpoint bytes, and the built model
    (on the ``meta`` device: shapes only), whose :meth:`workload` the bill asks."""

    flops: dict[str, int]
    state_bytes: int
    map_size: int
    model: Any = field(repr=False)


def _outputs_sum(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out.float().sum() if out.requires_grad else None
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        parts = [t for t in (_outputs_sum(o) for o in out) if t is not None]
        return sum(parts[1:], parts[0]) if parts else None
    return None


def part_flops(module: torch.nn.Module, shape: Sequence[int], backward: bool = False, device=None) -> int:
    """FLOPs of ``module`` on one zero input of ``shape`` (:class:`FlopCounterMode`; multiply-add =
    2): forward, plus with ``backward`` the backward of the sum of its outputs (the gradients of
    its trainable parameters; a frozen part is not back-propagated through). Runs on ``device``
    (default: where the module's parameters are; ``meta`` computes nothing). Gradients stay on
    (the counter's module tracker needs them); the module's train/eval mode is restored."""
    from torch.utils.flop_counter import FlopCounterMode

    if device is None:
        first = next(iter(module.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    was_training = module.training
    module.train(bool(backward))
    x = torch.zeros(tuple(int(s) for s in shape), device=device)
    counter = FlopCounterMode(display=False)
    try:
        with torch.enable_grad(), counter:
            out = module(x)
            if backward:
                loss = _outputs_sum(out)
                if loss is not None:
                    loss.backward()
    finally:
        module.train(was_training)
        for p in module.parameters():
            p.grad = None
    return int(counter.get_total_flops())


def _state_bytes(model) -> int:
    """The trained part of a checkpoint: parameters that train, buffers of the modules holding them,
    and the optimisers' state (Adam / AdamW: 2 values a parameter; SGD with momentum: 1)."""
    total = 0
    for net in model.modules().values():
        for mod in net.modules():
            own = list(mod.parameters(recurse=False))
            if any(p.requires_grad for p in own):
                total += sum(p.numel() * p.element_size() for p in own if p.requires_grad)
                total += sum(b.numel() * b.element_size() for b in mod.buffers(recurse=False))
    for opt in model.optimizers():
        if opt is None:
            continue
        per = (
            2 if isinstance(opt, (torch.optim.Adam, torch.optim.AdamW)) else (1 if opt.defaults.get("momentum") else 0)
        )
        total += per * sum(p.numel() * p.element_size() for g in opt.param_groups for p in g["params"])
    return int(total)


@functools.lru_cache(maxsize=256)
def _measure(method: str, profile: str, overrides: tuple) -> Measured:
    from .models import build
    from .models.base import MODELS, _load_all
    from .models.core import input_size

    _load_all()
    opts = dict(overrides)
    fields = {f.name for f in dataclasses.fields(MODELS[method].Config)}
    if "pretrained" in fields:
        opts["pretrained"] = False
    quiet = logging.getLogger("adlib.backbones")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # one "backbone ... random-init" line per config is noise here
    try:
        with torch.device("meta"):
            model = build(method, profile, **opts)
    finally:
        quiet.setLevel(level)
    for net in model.modules().values():  # buffers made from data (torch.tensor) and plain tensor attributes follow
        net.to("meta")
        for mod in net.modules():
            for k, v in list(vars(mod).items()):
                if isinstance(v, torch.Tensor) and v.device.type != "meta":
                    setattr(mod, k, v.to("meta"))
    flops = {name: part_flops(p.module, p.shape, p.backward, "meta") for name, p in model.flop_parts().items()}
    return Measured(flops, _state_bytes(model), input_size(model.transform), model)


def measure(job: Job) -> Measured:
    """:class:`Measured` of ``job``'s config (cached per method, profile and overrides: the seed
    does not change a network's shape)."""
    return _measure(job.method, job.profile, job.overrides)


@dataclass
class RunCost:
    """What one run costs (see the module docstring)."""

    job: Job
    train_images: int
    test_images: int
    flops: float
    disk_bytes: int
    done: bool
    expected: bool
    note: str = ""


def prediction_bytes(n_test: int, map_size: int) -> int:
    """Uncompressed bytes of a ``prediction.npz`` of ``n_test`` images with ``map_size`` square maps
    (kept only when maps (float16) and masks (bool) fit in :data:`adlib.results.MAX_MAP_BYTES`)."""
    per = 8 + 8 + 4 * (PATH_CHARS + DEFECT_CHARS)
    pixels = n_test * map_size * map_size
    maps = 3 * pixels if 3 * pixels <= MAX_MAP_BYTES else 0
    return n_test * per + maps


def run_cost(job: Job, ctx: Context, store: ResultsStore | None = None) -> RunCost:
    """The cost of ``job``: its sizes (:func:`run_sizes`), the method's workload, the measured FLOPs
    of its parts, its disk, and whether ``store`` already has it."""
    n_train, n_test = run_sizes(job, ctx)
    m = measure(job)
    w = m.model.workload(n_train, n_test)
    unknown = sorted(set(w.passes) - set(m.flops))
    if unknown:
        raise ValueError(f"{job}: workload passes {unknown} name no measured part ({sorted(m.flops)})")
    flops = sum(float(n) * m.flops[k] for k, n in w.passes.items()) + float(w.extra_flops)
    checkpoint = m.state_bytes + int(w.extra_state_bytes)
    disk = checkpoint + prediction_bytes(n_test, m.map_size) + RECORD_BYTES
    done = store is not None and store.get(job) is not None
    return RunCost(job, w.train_images, w.test_images, flops, disk, done, not ctx.on_disk(job.dataset), w.note)


# ----------------------------------------------------------------------------------------------
# The bill


def throughput_from_results(path: str | os.PathLike | None = None) -> float | None:
    """The measured GPU throughput (TFLOPS) ``benchmarks/RESULTS.md`` states (:data:`MEASURED_THROUGHPUT`), else None."""
    from .paths import repo_root

    p = Path(path) if path else repo_root() / "benchmarks" / "RESULTS.md"
    try:
        m = MEASURED_THROUGHPUT.search(p.read_text())
    except OSError:
        return None
    return float(m.group(1)) if m else None


@dataclass
class Bill:
    """The bill of a profile: ``frame`` (one row per notebook and a ``total`` row), ``runs`` (one
    row per distinct run), the throughput used and where it comes from, and how long the bill took."""

    profile: str
    frame: pd.DataFrame
    runs: pd.DataFrame
    throughput: float
    throughput_source: str
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> pd.Series:
        return self.frame.set_index("notebook").loc["total"]

    def text(self) -> str:
        """The table, with units, and a footer stating the throughput and the assumptions."""
        cols = [
            ("notebook", "notebook", str),
            ("runs", "runs", lambda v: f"{int(v)}"),
            ("shared", "shared", lambda v: f"{int(v)}"),
            ("done", "done", lambda v: f"{int(v)}"),
            ("train_images", "train images", lambda v: _si(v)),
            ("test_images", "test images", lambda v: _si(v)),
            ("pflops", "PFLOPs", lambda v: f"{v:,.1f}"),
            ("disk_gb", "disk GB", lambda v: f"{v:,.1f}"),
            ("gpu_hours", "GPU h", lambda v: f"{v:,.1f}"),
            ("gpu_hours_todo", "GPU h to do", lambda v: f"{v:,.1f}"),
            ("sizes", "sizes", str),
        ]
        rows = [[fmt(r[c]) for c, _, fmt in cols] for r in self.frame.to_dict("records")]
        head = [h for _, h, _ in cols]
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
        line = lambda vals: "  ".join(
            v.ljust(w) if i in (0, len(vals) - 1) else v.rjust(w) for i, (v, w) in enumerate(zip(vals, widths))
        )  # noqa: E731,E501
        out = [f"the bill of the {self.profile} profile ({len(self.runs)} distinct runs)", line(head)]
        out.append("  ".join("-" * w for w in widths))
        out += [line(r) for r in rows[:-1]] + ["  ".join("-" * w for w in widths), line(rows[-1])]
        foot = [
            f"GPU time at {self.throughput:g} TFLOPS ({self.throughput_source}); FLOPs by "
            "torch.utils.flop_counter (multiply-add = 2; convolutions and matrix products only).",
            "shared: runs an earlier notebook already trains (the total counts each run once); done: finished in "
            "the store; disk: checkpoints + uncompressed predictions + records.",
        ]
        return "\n".join(out + [""] + foot + [f"- {n}" for n in self.notes])

    def write_csv(self, path: str | os.PathLike) -> Path:
        """The per-notebook table (with the throughput columns) as CSV at ``path``, and the per-run
        table beside it (``<stem>-runs.csv``), both written atomically; returns ``path``."""
        from .io import atomic_write_text

        path = Path(path)
        atomic_write_text(path.with_name(f"{path.stem}-runs.csv"), self.runs.to_csv(index=False))
        return atomic_write_text(path, self.frame.to_csv(index=False))


def _si(v: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:,.1f}{unit}"
    return f"{int(v)}"


def _notebook_matches(notebook: str, only: str | None) -> bool:
    if not only:
        return True
    path = f"{notebook}.ipynb"
    return fnmatch.fnmatch(path, only) or only in path


def bill(
    profile: str = "paper",
    data_root=None,
    only: str | None = None,
    throughput: float | None = None,
    store: ResultsStore | None = None,
    progress: bool = False,
) -> Bill:
    """The bill of ``profile``'s notebooks (those matching ``only``, a glob or substring of their
    path as ``adlib reproduce --only`` takes it) with the data under ``data_root`` (missing datasets
    from :data:`DATASET_FACTS`), against ``store`` (default: the profile's results store).
    ``throughput``: TFLOPS (default: :func:`throughput_from_results`, else :data:`ASSUMED_TFLOPS`)."""
    from .profiles import get_profile

    get_profile(profile)
    t0 = time.perf_counter()
    if throughput is not None:
        if not throughput > 0:
            raise ValueError(f"--throughput must be a positive number of TFLOPS, got {throughput}")
        tput, source = float(throughput), "given"
    else:
        measured = throughput_from_results()
        tput, source = (
            (measured, "measured, benchmarks/RESULTS.md")
            if measured
            else (ASSUMED_TFLOPS, "assumed: adlib.bill.ASSUMED_TFLOPS, no GPU throughput measured yet")
        )
    store = store if store is not None else ResultsStore.for_profile(profile)
    notebooks = [nb for nb in NOTEBOOKS if _notebook_matches(nb, only)]
    if not notebooks:
        raise ValueError(f"--only {only!r} matches no notebook; known: {', '.join(NOTEBOOKS)}")
    costs: dict[tuple, RunCost] = {}
    rows: list[dict[str, Any]] = []
    ctx_all = Context(profile, data_root)
    extras_all: list[str] = []
    for nb in tqdm(notebooks, desc="bill", disable=not progress, leave=False):
        ctx = Context(profile, data_root)
        nr = NOTEBOOKS[nb](ctx)
        ctx_all.expected |= ctx.expected
        ctx_all.missing.update(ctx.missing)
        ctx_all.notes += [n for n in ctx.notes if n not in ctx_all.notes]
        ids = [run_id(j) for j in nr.jobs]
        shared = sum(i in costs for i in ids)
        for i, j in zip(ids, nr.jobs):
            if i not in costs:
                costs[i] = run_cost(j, ctx, store)
        mine = [costs[i] for i in ids]
        rows.append(_row(nb, mine, shared, tput, ctx, nr.extras))
        extras_all += [f"{nb}: {e}" for e in nr.extras]
    rows.append(_row("total", list(costs.values()), 0, tput, ctx_all, []))
    frame = pd.DataFrame(rows)
    frame["throughput_tflops"] = tput
    frame["throughput_source"] = source
    runs = pd.DataFrame(
        [
            {
                "run": str(c.job),
                "method": c.job.method,
                "dataset": c.job.dataset,
                "category": c.job.category,
                "train_images": c.train_images,
                "test_images": c.test_images,
                "flops": c.flops,
                "disk_bytes": c.disk_bytes,
                "done": c.done,
                "expected": c.expected,
                "note": c.note,
            }
            for c in costs.values()
        ]
    )
    notes = []
    for ds in sorted(ctx_all.expected):
        f = DATASET_FACTS[ds]
        notes.append(
            f"{ds}: expected sizes ({len(f.categories)} categories): {f.source}"
            + (f"; assumption: {f.assumption}" if f.assumption else "")
        )
    for ds, why in sorted(ctx_all.missing.items()):
        notes.append(f"{ds}: {why}; no runs billed")
    notes += ctx_all.notes
    if extras_all:
        notes.append("work outside the store, not costed: " + "; ".join(extras_all))
    seconds = time.perf_counter() - t0
    log.info("bill of %s: %d runs in %.1f s", profile, len(costs), seconds)
    return Bill(profile, frame, runs, tput, source, seconds, notes)


def _row(name: str, costs: list[RunCost], shared: int, tput: float, ctx: Context, extras: list[str]) -> dict[str, Any]:
    flops = sum(c.flops for c in costs)
    todo = sum(c.flops for c in costs if not c.done)
    expected = sum(c.expected for c in costs)
    sizes = "-" if not costs else ("expected" if expected == len(costs) else ("on disk" if not expected else "mixed"))
    return {
        "notebook": name,
        "runs": len(costs),
        "shared": shared,
        "done": sum(c.done for c in costs),
        "train_images": sum(c.train_images for c in costs),
        "test_images": sum(c.test_images for c in costs),
        "images": sum(c.train_images + c.test_images for c in costs),
        "flops": flops,
        "pflops": flops / 1e15,
        "disk_bytes": sum(c.disk_bytes for c in costs),
        "disk_gb": sum(c.disk_bytes for c in costs) / 1e9,
        "gpu_hours": flops / (tput * 1e12) / 3600.0,
        "gpu_hours_todo": todo / (tput * 1e12) / 3600.0,
        "sizes": sizes,
        "extras": "; ".join(extras),
    }


__all__ = [
    "ASSUMED_TFLOPS",
    "Bill",
    "Context",
    "DATASET_FACTS",
    "DatasetFacts",
    "Measured",
    "NOTEBOOKS",
    "NotebookRuns",
    "RunCost",
    "bill",
    "measure",
    "notebook_jobs",
    "part_flops",
    "prediction_bytes",
    "run_cost",
    "run_id",
    "run_sizes",
    "unique_runs",
    "throughput_from_results",
]
