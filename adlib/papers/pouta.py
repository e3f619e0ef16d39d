"""The POUTA paper's experiments, as data and small analysis functions.

The notebooks under ``notebooks/pouta/`` call these; every training run goes through the results
store (:mod:`adlib.results`): cached, resumable, several worker processes.

- Table I (MVTec AD, image AUROC / pixel AUROC / pixel AP per category), Table II (VisA, image
  AUROC), Table III (DAGM, image AUROC): :func:`main_jobs` trains POUTA, Vanilla (the DRAEM-style
  baseline, shown in the DRAEM rows) and PatchCore. VisA and DAGM are classification-only in the
  paper (CLS); the reproduced pixel metrics are computed where masks exist but not tabulated.
- Table IV (few-shot, MVTec AD, k = 2, 4, 8): :func:`few_shot_jobs`, POUTA trained on ``k``
  normal images drawn per seed (:mod:`adlib.protocols`), averaged over seeds.
- Table V (ablations): :data:`ABLATIONS`, configurations of the same code.
- Table VI (complexity): :func:`complexity_table` (parameters, FLOPs at 224 px, ms per image).
- Figs. 2 / 10 (representations): :func:`representations` collects the last encoder (``F_E4``)
  and first decoder (``F_D4``) representations of test images with per-position labels, and
  :func:`discrepancy_map` is the anomaly map "predicted only by the differences in
  representation of the aforementioned two layers" (Fig. 2). The paper does not say how that map
  is computed: here it is the per-position L2 distance between ``F_E4`` and ``F_D4`` (same shape
  in this architecture), bilinearly up-sampled to the image and min-max scaled per image.
- Figs. 3 / 9 (Grad-CAM): :func:`gradcam_maps` with the maintained ``grad-cam`` package. The paper
  does not name the layer; the target layer here is the last convolution block before the
  2-channel head of the discriminative network (Vanilla: the U-Net's last decoder block; POUTA:
  the aggregation's 3x3 block), and the target is the anomaly channel summed over the predicted
  anomalous region (``heat > 0.5``; the whole image when nothing is predicted), grad-cam's
  semantic-segmentation recipe.

Reported methods that are not implemented here (RSTD, ReContrast, DeSTSeg, DBPI, EdgRec, RD, CCNN,
MS, TDG, DifferNet, RegAD) appear with their reported numbers and "not reproduced".

Datasets per profile: ``smoke`` uses the built-in benchmark ``synth`` for every table (it stands
in for MVTec AD, VisA and DAGM alike, and the captions say so); ``paper`` uses ``mvtec``,
``visa`` and ``dagm`` under the data root, and marks missing ones instead of dropping them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..results import Job
from .common import Plan, as_reported_rows, example_rows, label_rows, notebook_defaults, plan, reproduced_on

log = logging.getLogger(__name__)

#: (name in the tables, reported method, reproduced label); None = not reproduced
TABLE1_METHODS: tuple[tuple[str, str | None, str | None], ...] = (
    ("RSTD", "RSTD", None),
    ("PatchCore", "PatchCore", "patchcore"),
    ("DRAEM / Vanilla", "DRAEM", "vanilla"),
    ("ReContrast", "ReContrast", None),
    ("DeSTSeg", "DeSTSeg", None),
    ("DBPI", "DBPI", None),
    ("POUTA", "POUTA", "pouta"),
)
TABLE2_METHODS: tuple[tuple[str, str | None, str | None], ...] = (
    ("RD", "RD", None),
    ("PatchCore", "PatchCore", "patchcore"),
    ("ReContrast", "ReContrast", None),
    ("EdgRec", "EdgRec", None),
    ("POUTA", "POUTA", "pouta"),
)
TABLE3_METHODS: tuple[tuple[str, str | None, str | None], ...] = (
    ("CCNN", "CCNN", None),
    ("MS", "MS", None),
    ("PatchCore", "PatchCore", "patchcore"),
    ("DRAEM / Vanilla", "DRAEM", "vanilla"),
    ("DBPI", "DBPI", None),
    ("POUTA", "POUTA", "pouta"),
)
TABLE4_METHODS: tuple[tuple[str, str | None, str | None], ...] = (
    ("DifferNet", "DifferNet", None),
    ("TDG", "TDG", None),
    ("RegAD", "RegAD", None),
    ("POUTA", "POUTA", "pouta"),
)
#: reproduced label -> (registered method, overrides)
TRAINED: dict[str, tuple[str, dict[str, Any]]] = {
    "pouta": ("pouta", {}),
    "vanilla": ("vanilla", {}),
    "patchcore": ("patchcore", {}),
}
#: Table V rows -> (registered method, overrides); the labels are those of the reported file
ABLATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "Vanilla": ("vanilla", {}),
    "POUTA-base": ("pouta", dict(hsg=False, mss=False)),
    "POUTA-base+HSG": ("pouta", dict(hsg=True, mss=False)),
    "POUTA-base+MSS": ("pouta", dict(hsg=False, mss=True)),
    "POUTA": ("pouta", {}),
}
#: Table VI rows -> registered method
COMPLEXITY_METHODS = {"PatchCore": "patchcore", "Vanilla": "vanilla", "POUTA": "pouta"}

DATASETS = {
    "table1": {"smoke": ("synth",), "paper": ("mvtec",)},
    "table2": {"smoke": ("synth",), "paper": ("visa",)},
    "table3": {"smoke": ("synth",), "paper": ("dagm",)},
    "table4": {"smoke": ("synth",), "paper": ("mvtec",)},
}
SHOTS = (2, 4, 8)


def main_jobs(
    p: Plan,
    profile: str,
    seeds: Sequence[int] = (0,),
    labels: Sequence[str] = tuple(TRAINED),
    overrides: dict[str, dict[str, Any]] | None = None,
) -> list[Job]:
    """Runs of Tables I-III: every label of :data:`TRAINED` on every planned category and seed.
    ``overrides``: registered method -> extra config."""
    overrides = overrides or {}
    return [
        Job.make(
            TRAINED[label][0], ds, cat, profile, s, **{**TRAINED[label][1], **overrides.get(TRAINED[label][0], {})}
        )
        for ds, cats in p.categories.items()
        for cat in cats
        for label in labels
        for s in seeds
    ]


def ablation_jobs(
    p: Plan, profile: str, seeds: Sequence[int] = (0,), rows: Sequence[str] = tuple(ABLATIONS)
) -> dict[str, list[Job]]:
    """Table V row -> its jobs over the plan."""
    return {
        row: [
            Job.make(ABLATIONS[row][0], ds, c, profile, s, **ABLATIONS[row][1])
            for ds, cats in p.categories.items()
            for c in cats
            for s in seeds
        ]
        for row in rows
    }


def few_shot_jobs(
    p: Plan, profile: str, shots: Sequence[int] = SHOTS, seeds: Sequence[int] = (0, 1, 2), method: str = "pouta"
) -> dict[int, list[Job]]:
    """Table IV: ``k`` -> POUTA jobs trained on ``k`` normal images (one draw per seed)."""
    return {
        int(k): [
            Job.make(method, ds, c, profile, s, protocol={"shots": int(k)})
            for ds, cats in p.categories.items()
            for c in cats
            for s in seeds
        ]
        for k in shots
    }


# ----------------------------------------------------------------------------------------------
# Table VI: complexity

#: Table VI's PatchCore memory bank: a 10 % coreset of the mean MVTec AD training set
#: (3629 images / 15 categories = 242) x 28 x 28 patches
PAPER_BANK_SIZE = int(0.1 * 242 * 28 * 28)


def inference_path(
    name: str,
    profile: str = "paper",
    device="cpu",
    bank_size: int | None = None,
    bf16: bool = False,
    channels_last: bool = False,
) -> dict[str, Any]:
    """What Table VI times for one method, built with random weights (speed and FLOPs do not
    depend on them): ``module`` (the network whose parameters are counted), ``infer(x)`` (image
    score and pixel map of a batch already on the device), ``normalize`` (whether ``x`` is
    ImageNet-normalised), ``image_size`` and ``notes``.

    - ``pouta`` / ``vanilla``: ``heat_map`` (POUTA without its training-only MSS heads) and the
      pooled image score; ``module`` is the whole network (MSS heads included: they are
      parameters of the model).
    - ``patchcore``: ``score`` (features, exact nearest-neighbour search, reweighting) and
      ``anomaly_maps`` (up-sampling, Gaussian filter) against a random memory bank of
      ``bank_size`` rows (default: :data:`PAPER_BANK_SIZE` in the paper profile, a 10 % coreset
      of 32 images' patch grid in the smoke profile); the search costs the same whatever the
      rows hold, so no fit is needed. ``module`` is the truncated backbone (the bank is data).
    """
    import contextlib

    from ..models import build

    device = torch.device(device)
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    if name in ("pouta", "vanilla"):
        from ..models.pouta import image_score

        model = build(name, profile)
        model.to(device)
        model.net.eval()
        if channels_last:
            model.net.to(memory_format=torch.channels_last)

        def infer(x):
            with amp():
                heat = model.heat_map(x)
            return image_score(heat.float(), model.cfg.score_pool)

        what = (
            "reconstructive net + coarse-to-fine discriminator (no MSS heads)"
            if name == "pouta"
            else "reconstructive net + U-Net discriminator"
        )
        return {
            "module": model.net,
            "infer": infer,
            "normalize": False,
            "image_size": model.cfg.image_size,
            "notes": f"heat map ({what}) + image score",
        }
    if name == "patchcore":
        from ..models.patchcore import anomaly_maps

        model = build("patchcore", profile, pretrained=False)
        model.to(device)
        if channels_last:
            model.features.backbone.model.to(memory_format=torch.channels_last)
        size = int(model.cfg.crop or model.cfg.resize)
        if bank_size is None:  # layer2's grid is 1/8 of the input
            bank_size = PAPER_BANK_SIZE if profile == "paper" else max(1, int(0.1 * 32 * (size // 8) ** 2))
        g = torch.Generator().manual_seed(0)
        model.memory_bank = torch.randn(bank_size, model.features.dim, generator=g).to(device)

        def infer(x):
            with amp():
                s, grid_scores = model.score(x)
            return s, anomaly_maps(grid_scores.float(), tuple(x.shape[-2:]), model.cfg.smooth_sigma)

        return {
            "module": model.features,
            "infer": infer,
            "normalize": True,
            "image_size": size,
            "notes": f"{model.cfg.backbone} features + exact kNN vs {bank_size} x {model.features.dim} bank + "
            f"reweighting + up-sampling + Gaussian filter",
        }
    raise ValueError(f"no Table VI inference path for {name!r}; expected pouta, vanilla or patchcore")


def _example(path: dict[str, Any], batch: int, size: int, device) -> torch.Tensor:
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    if path["normalize"]:
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        x = (x - mean) / std
    return x.to(device)


def complexity_table(
    profile: str = "smoke",
    device="cpu",
    repeats: int = 3,
    batch_size: int = 1,
    methods: dict[str, str] = COMPLEXITY_METHODS,
):
    """Table VI: per method, ``params_m`` and ``flops_g`` / ``macs_g`` of the **paper-profile**
    architecture on one 224 x 224 image (``torch.utils.flop_counter``; a multiply-add counts 2
    FLOPs, ``macs_g`` = half), and ``ms_per_img`` of the ``profile``'s architecture at its own
    input size on ``device`` (:func:`adlib.complexity.time_inference`: one discarded batch, the
    median of ``repeats``), with ``timed_size`` and ``timed_profile``. In the smoke profile the
    timings are of the small CPU models, so they compare the methods with each other, not with
    the paper's GPU milliseconds."""
    import pandas as pd

    from ..complexity import count_flops, count_parameters, flops_to_macs, time_inference

    rows = []
    for label, name in methods.items():
        big = inference_path(name, "paper", "cpu")
        flops = count_flops(big["infer"], _example(big, 1, 224, "cpu"))
        params = count_parameters(big["module"])
        del big
        timed = inference_path(name, profile, device)
        x = _example(timed, batch_size, timed["image_size"], device)
        ms = time_inference(timed["infer"], x, device, warmup=1, repeats=repeats)
        rows.append(
            {
                "method": label,
                "params_m": params / 1e6,
                "flops_g": flops / 1e9,
                "macs_g": flops_to_macs(flops) / 1e9,
                "ms_per_img": ms,
                "timed_profile": profile,
                "timed_size": timed["image_size"],
                "timed": timed["notes"],
            }
        )
        log.info(
            "Table VI %s: %.2f M parameters, %.2f GFLOPs, %.1f ms/img (%s)",
            label,
            params / 1e6,
            flops / 1e9,
            ms,
            profile,
        )
    return pd.DataFrame(rows).set_index("method")


# ----------------------------------------------------------------------------------------------
# Figs. 2 / 10: representations


@torch.no_grad()
def representations(
    model, ds, indices: Sequence[int], level: int = 4, max_normal: int = 400, min_fraction: float = 0.25, seed: int = 0
) -> dict[str, np.ndarray]:
    """Encoder ``F_E<level>`` and decoder ``F_D<level>`` representations of ``ds[indices]``, one row
    per position of the level's grid, with the position's label: 1 where at least
    ``min_fraction`` of its cell is anomalous in the ground-truth mask (area pooling; the
    default 0.25 keeps small defects, which cover under half of any cell of the coarse
    ``F_E4`` grid, at 1/8 of the input resolution).

    Returns ``enc``, ``dec`` (``N x C``), ``labels`` (``N``), subsampled with ``seed`` to all
    anomalous positions plus at most ``max_normal`` normal ones."""
    model.net.eval()
    images = torch.stack([ds[int(i)].image for i in indices])
    masks = torch.stack([ds[int(i)].mask for i in indices])
    out = model.forward(images, side=False)
    e, d = out["enc"][level - 1].cpu(), out["dec"][level - 1].cpu()
    lab = F.adaptive_avg_pool2d(masks.float(), e.shape[-2:]) >= min_fraction
    enc = e.permute(0, 2, 3, 1).reshape(-1, e.shape[1]).numpy()
    dec = d.permute(0, 2, 3, 1).reshape(-1, d.shape[1]).numpy()
    labels = lab.reshape(-1).numpy().astype(np.int64)
    rng = np.random.default_rng(seed)
    normal = np.flatnonzero(labels == 0)
    if len(normal) > max_normal:
        normal = np.sort(rng.choice(normal, size=max_normal, replace=False))
    keep = np.concatenate([normal, np.flatnonzero(labels == 1)])
    return {"enc": enc[keep], "dec": dec[keep], "labels": labels[keep]}


@torch.no_grad()
def discrepancy_map(model, images: torch.Tensor, level: int = 4) -> torch.Tensor:
    """Fig. 2's anomaly map from two layers alone: ``||F_E<level> - F_D<level>||_2`` per position,
    bilinearly up-sampled to the image size and min-max scaled to [0, 1] per image (``B x H x W``).
    The paper does not give the formula; this is the project's reading (module docstring)."""
    model.net.eval()
    out = model.forward(images, side=False)
    dist = (out["enc"][level - 1] - out["dec"][level - 1]).pow(2).sum(dim=1, keepdim=True).sqrt()
    up = F.interpolate(dist, size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
    lo = up.flatten(1).amin(dim=1)[:, None, None]
    hi = up.flatten(1).amax(dim=1)[:, None, None]
    return ((up - lo) / (hi - lo).clamp_min(1e-12)).cpu()


def separability(points: np.ndarray, labels: np.ndarray) -> float:
    """How separable normal and anomalous representations are: the AUROC of the distance to the
    mean normal representation (0.5: indistinguishable, 1: every anomalous position farther
    than every normal one). A number to put beside the t-SNE pictures of Figs. 2 / 10."""
    from ..metrics import image_auroc

    labels = np.asarray(labels)
    if labels.min() == labels.max():
        return float("nan")
    mu = points[labels == 0].mean(axis=0)
    return float(image_auroc(labels, np.linalg.norm(points - mu, axis=1)))


# ----------------------------------------------------------------------------------------------
# Figs. 3 / 9: Grad-CAM


class _TwoChannel(torch.nn.Module):
    """A method's network as a segmentation model for grad-cam: ``B x 2 x H x W`` (normal,
    anomalous) probabilities."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        heat = self.net(x, side=False)["heat"]
        return torch.stack([1 - heat, heat], dim=1)


def gradcam_layer(model) -> torch.nn.Module:
    """The Grad-CAM target layer of a POUTA or Vanilla model (module docstring)."""
    disc = model.net.discriminative
    if hasattr(disc, "aggregate"):
        return disc.aggregate.body
    return disc.decoder[-1]


def gradcam_maps(model, images: torch.Tensor) -> np.ndarray:
    """Grad-CAM maps (``B x H x W`` in [0, 1]) of the anomaly channel over the predicted anomalous
    region, with ``pytorch_grad_cam.GradCAM`` at :func:`gradcam_layer` (module docstring)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    wrapped = _TwoChannel(model.net).eval()
    with torch.no_grad():
        heat = model.heat_map(images).cpu().numpy()
    targets = []
    for h in heat:
        region = (h > 0.5).astype(np.float32)
        targets.append(SemanticSegmentationTarget(1, region if region.any() else np.ones_like(region)))
    with GradCAM(model=wrapped, target_layers=[gradcam_layer(model)]) as cam:
        maps = cam(input_tensor=images.to(model.device), targets=targets)
    return np.asarray(maps, dtype=np.float32)


#: each notebook's parameters left empty -> the profile's default (None: everything on disk);
#: smoke: the categories and seeds a CPU budget carries; paper: the paper's
NOTEBOOK_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "01_representations": {"smoke": dict(category="wood"), "paper": dict(category="hazelnut")},
    "02_main_tables": {"smoke": dict(categories=["wood", "grass", "nut"]), "paper": dict(categories=None)},
    "03_few_shot": {
        "smoke": dict(seeds=[0, 1], categories=["wood"]),
        "paper": dict(seeds=[0, 1, 2, 3, 4], categories=None),
    },
    # rows: Table V's rows trained (smoke: Vanilla, POUTA-base and POUTA, CPU budget; the +HSG and +MSS
    # rows are illustrative, no claim rests on them; None: every row)
    "04_ablations": {
        "smoke": dict(categories=["wood"], rows=["Vanilla", "POUTA-base", "POUTA"]),
        "paper": dict(categories=None, rows=None),
    },
}


def defaults(notebook: str, profile: str, **given: Any) -> Any:
    """A notebook's parameters with the profile's defaults filled in (:data:`NOTEBOOK_DEFAULTS`,
    :func:`adlib.papers.common.notebook_defaults`)."""
    return notebook_defaults(NOTEBOOK_DEFAULTS, notebook, profile, **given)


__all__ = [
    "NOTEBOOK_DEFAULTS",
    "as_reported_rows",
    "example_rows",
    "defaults",
    "reproduced_on",
    "ABLATIONS",
    "COMPLEXITY_METHODS",
    "PAPER_BANK_SIZE",
    "complexity_table",
    "inference_path",
    "DATASETS",
    "SHOTS",
    "TABLE1_METHODS",
    "TABLE2_METHODS",
    "TABLE3_METHODS",
    "TABLE4_METHODS",
    "TRAINED",
    "Plan",
    "ablation_jobs",
    "discrepancy_map",
    "few_shot_jobs",
    "gradcam_layer",
    "gradcam_maps",
    "label_rows",
    "main_jobs",
    "plan",
    "representations",
    "separability",
]
