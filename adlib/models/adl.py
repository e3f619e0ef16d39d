"""ADL: Adaptive Deviation Learning for visual anomaly detection with data contamination
(Das, Pang, Bhuyan, WACV 2025), registered as ``"adl"``, with the ablation variants of its Table 2.

The training images are *contaminated*: an unknown fraction ``eps`` of them are anomalies that
look like normal images to the model (every training record has label 0; see
:mod:`adlib.synthesis.contamination`). ADL learns an anomaly score end to end from them and from
synthetic pseudo-anomalies, and copes with the contamination by soft labels and per-batch instance
reweighting (Sec. 3).

Network (Sec. 3.3-3.4, Fig. 1; layout as released, implementation notes)
    - Feature encoder: ResNet-18 (timm, ``features_only``), **fine-tuned** (not frozen): ``layer2``
      (128 ch, stride 8), ``layer3`` (256 ch) up x2 and ``layer4`` (512 ch) up x4 by learned
      blocks (:class:`UpBlock`: nearest up-sampling, 3x3 conv to 2C, BatchNorm, GLU back to C),
      concatenated: ``F_Co`` with 896 channels at stride 8 (32 x 32 for a 256 input). Layer 4's
      x4 (``layer4_upsampling``): ``"two_x2"`` (released ``modeling/networks/resnet18.py:49-50,
      62``: ``upsample4_2(upsample4_1(x4))``, two x2 blocks with a 3x3 conv each; paper profile) or
      ``"one_x4"`` (one x4 block, this project's former layout; smoke profile). The released
      block convs have no bias (``conv3x3(..., bias=False)`` before BatchNorm; ``upsample_bias``
      False, paper profile; True, smoke). Parameters of the whole network (ResNet-18 without its
      unused ``fc``): 22,465,540 released (``two_x2``, no bias), 22,468,100 ``two_x2`` with bias,
      17,746,436 ``one_x4`` with bias (the former 17.75 M; the issue's 22.47 M is ``two_x2``);
      asserted in ``tests/test_adl.py``. The encoder
      is built through :class:`adlib.backbones.FeatureExtractor` (same weight sources, offline
      rules and :class:`~adlib.backbones.WeightsUnavailable` message), whose timm module is then
      unfrozen and trained (:func:`build_encoder`). The ``paper`` profile uses the pretrained
      ImageNet weights (``resnet18.tv_in1k``, torchvision's) and fails with instructions when they
      cannot be had; ``smoke`` a seeded random initialisation of a ResNet-18 with a quarter of the
      channels (``encoder_width``, see "Smoke profile"). Loading a checkpoint never needs the
      pretrained weights (the checkpoint holds the fine-tuned encoder).
    - Anomaly scoring network: 1x1 conv ``896 -> 1``, absolute value (released: the score vector
      ``psi(x_i)`` is ``|conv(F_Co)|``), then the mean of the top ``K = max(int(0.1 n), 1)`` of
      the ``n`` positions: ``psi_K`` (:func:`top_k_score`, Eq. 2). **The image score is
      ``psi_K``** (released evaluation).
    - Anomaly classification head: global average pool of ``F_last`` (``layer4``), Linear
      ``512 -> 1``, sigmoid: ``p(x_i)``.
    - Segmentation network (Sec. 3.4; layout released): two (3x3 conv, BN, ReLU) ``896 -> 64 ->
      64``, three (nearest up x2, 3x3 conv 64, BN, ReLU), 3x3 conv to 2 channels, softmax;
      the anomaly channel is ``M_o`` at the input resolution. :func:`segmentation_loss`: focal
      loss (gamma 2) against the synthetic Perlin mask ``M_p``.

Losses (one function each; all per sample unless said otherwise)
    ====================================== ======================================================
    :func:`top_k_score`                    Eq. 2, ``psi_K``
    :func:`reference_scores`               Eq. 3, ``mu_S`` (and ``sigma_S``) of ``m`` draws of
                                           ``N(mu, sigma)`` (``m = 5000``, ``N(0, 1)``; fresh
                                           draws every iteration, Alg. 1 line 5)
    :func:`deviation_loss`                 Eq. 4, ``l_dev`` with the given (hard) labels
    :func:`soft_deviation_loss`            Eq. 5, ``l_soft`` with the classifier's ``p``
                                           (detached: a target, not a path for gradients)
    :func:`two_means_labels`               the k-means (k = 2) pseudo-labels ``y~`` of Eq. 6
    :func:`pseudo_labels`                  ``y~`` OR-ed with ``y`` (released) or ``y~`` alone
    :func:`bce_loss`                       Eq. 6, ``l_bce`` against ``y^ in {y, y~}``
    :func:`segmentation_loss`              Sec. 3.4, ``l_seg`` (focal loss; mean over pixels)
    :func:`kl_weights`                     Eq. 8 (KL divergence)
    :func:`reverse_kl_weights`             Eq. 9 (reverse KL)
    :func:`alpha_divergence_weights`       Eq. 10 (alpha divergence; Eq. 8 at ``alpha = 1``,
                                           Eq. 9 at ``alpha = 0``)
    :func:`reweighted_loss`                Eq. 7's objective ``sum_i w_i L(x_i)`` (or the released
                                           ``mean_i w_i L(x_i)``, ``reweight_reduction``)
    :func:`adl_objective`                  Eq. 11, ``sum w1 l_dev|soft + sum w2 l_bce + l_seg``
    ====================================== ======================================================

    The KL case is the ``alpha -> 1`` limit of Eq. 10: with ``e = 1 - alpha``,
    ``(e L_i + lambda)^(-1/e) = lambda^(-1/e) (1 + e L_i / lambda)^(-1/e)``; the factor
    ``lambda^(-1/e)`` is common to all ``i`` and cancels in the normalisation, and
    ``(1 + e L / lambda)^(-1/e) -> exp(-L / lambda)`` as ``e -> 0``: Eq. 8. At ``alpha = 0`` Eq. 10
    is Eq. 9 exactly. The weights are computed in log space (a softmax of
    ``log((1 - alpha) L + lambda) / (alpha - 1)``), so ``alpha`` close to 1 does not overflow;
    for ``alpha > 1`` a non-positive ``[.]_+`` gives weight 0, and if every weight is 0 the batch
    falls back to uniform weights (a choice: Eq. 10 is 0/0 there).

Training (Algorithm 1; released details from the implementation notes)
    - Every step takes ``2B`` images: ``B`` training images ("normal", contaminated, label 0,
      empty mask) and ``B`` pseudo-anomalies (label 1) made from ``B`` other draws of the same
      training images by :class:`adlib.synthesis.draem.DraemSynthesizer` (preset ``synthesis``:
      ``adl_released``, default, or ``adl_paper``; it rotates the image by ``U(-90, 90)`` degrees
      with probability 0.3 first). The normal half is rotated the same way (released
      ``transform_train_normal``: probability 0.3, ``U(-90, 90)``, black corners). Pseudo-anomalies
      keep label 1 even when the Perlin mask happens to be empty (about 5 % of draws at 64-96 px;
      released: the label is the set's, not the mask's). Textures: DTD under ``data_root`` or the
      built-in stand-in (:func:`adlib.data.textures.texture_source`, recorded in :meth:`ADL.info`).
    - ``steps_per_epoch`` steps an epoch (released 20, ``B = 24``); the indices of each half are
      drawn as consecutive seeded permutations of the training images (the released balanced
      sampler cycles through permutations; here each epoch starts fresh permutations and the
      unused rest of the last one is dropped, so an epoch is self-contained and resumable).
    - Adam (lr ``2e-4``, weight decay ``1e-5``), StepLR (x0.1 every 10 epochs), gradient norm
      clipped at 1.0 over all parameters, 25 epochs (paper; the released ``argparse`` default is 50,
      its shell script 2). BatchNorm layers of the encoder train too (released ``model.train()``).
    - Burn-in (Alg. 1 lines 7-11): the first ``int(burn_in * total_iterations)`` iterations
      (``burn_in = 0.06``, released; :func:`burn_in_iterations`, :func:`in_burn_in`) use uniform
      weights ``1/(2B)``. ``burn_in_mode="released"`` (default): during burn-in the deviation loss
      uses the given labels (Eq. 4) and the BCE target is the given labels; afterwards the soft
      deviation (Eq. 5) and the pseudo-labels. ``burn_in_mode="paper"``: Algorithm 1 as printed
      computes ``l_soft`` and ``l_bce`` in every iteration, only the weights are uniform during
      burn-in. (The released code keeps the hard labels one iteration longer, ``curr_iter <=
      burnin``, and for ever when ``int(0.06 * total)`` is 0; here iteration ``t`` (0-based) is in
      burn-in iff ``t < int(burn_in * total)``. Paper Alg. 1 counts burn-in in epochs without a
      value; the released iteration fraction is used.)
    - After burn-in: k-means (k = 2) on the batch's ``psi_K`` (detached), the higher cluster
      labelled 1, OR-ed with the given labels (``pseudo_label_rule="or"``, released; ``"kmeans"``:
      ``y~`` alone, the paper's wording); the BCE target is that with probability
      ``pseudo_label_prob = 0.6`` per batch, else the given labels (``pseudo_label_schedule=
      "random"``, released ``np.random.rand() >= 0.4``, drawn from the ``labels`` stream;
      ``"alternate"``: the paper's "alternately used", pseudo-labels in the 1st, 3rd, ...
      iteration after burn-in, and in every other one during it under ``burn_in_mode="paper"``).
    - Reweighting: ``w1`` from the deviation losses and ``w2`` from the BCE losses of the batch
      (both detached), each by Eq. 10 with ``alpha = 0.1``, ``lambda = 0.1`` (Sec. 4.1, released),
      normalised to sum 1 over the batch; the objective is Eq. 11 with ``l_seg`` the focal loss
      averaged over the batch's pixels. Eq. 11's reduction (``reweight_reduction``, both named):
      ``"batch_mean"``, released and the **paper profile's default**: the released trainer
      (ADL4VAD 0e809c1, ``adl_train.py:149-152``: ``CE_loss = torch.mean(CE_losses * w1)``,
      ``loss = torch.mean(losses * w2)``, ``total = loss + CE_loss + segment_loss``) with the
      weights of ``utils.get_loss_weights`` (its source is in ``utils.py:58-77``, normalised to
      sum 1; the same weights as :func:`alpha_divergence_weights`, ``tests/test_golden_adl.py``)
      takes ``(1/n) sum_i w_i L_i`` over the ``n = 2B`` images of the step, so both reweighted
      terms are divided by ``n`` relative to the mean segmentation loss; ``"sum"``, Eq. 11 as
      printed, ``sum_i w_i L_i`` (the **smoke profile's**, unchanged: its calibration and recorded
      numbers were made with it). With uniform burn-in weights ``1/n`` the sum is the plain batch
      mean and the released form the mean divided by ``n``. Gradient clipping is the same in
      both codes: every step, norm 1.0 over all parameters (released ``adl_train.py:154``,
      ``grad_clip = 1.0`` here); with the sum the reweighted terms are ``n`` times larger, so the
      clip binds on more steps and the segmentation gradient is a smaller share of the clipped
      step.
    - The last epoch's model is kept (no selection on the test set).

Paper vs released code (named options; defaults = released, except ``epochs``; the ``smoke``
profile keeps ``reweight_reduction="sum"``, ``layer4_upsampling="one_x4"`` and ``upsample_bias=True``,
with which its numbers were recorded)
    ======================== ===================================== =================================
    option                   paper                                 released (default)
    ======================== ===================================== =================================
    ``margin``               ``gamma = 5`` (Sec. 4.1)              10 (``confidence_margin``)
    ``resize`` / ``crop``    resize 256, centre crop 224           256, no crop (``crop=None``)
    ``normalize``            not stated                            False (inputs in [0, 1])
    ``rotate_prob``          not stated                            0.3 (normal half, +-90 degrees)
    ``synthesis``            ``adl_paper`` (opacity in [0.1, 1])   ``adl_released`` ((0.2, 1])
    ``burn_in_mode``         ``"paper"`` (only weights uniform)    ``"released"`` (hard labels too)
    ``pseudo_label_rule``    ``"kmeans"`` (``y~`` alone)           ``"or"`` (``y~`` OR ``y``)
    ``pseudo_label_schedule`` ``"alternate"``                      ``"random"`` (p = 0.6)
    ``reweight_reduction``   ``"sum"`` (Eq. 11; smoke)             ``"batch_mean"`` (``mean(L w)``)
    ``layer4_upsampling``    interpolated (Sec. 3.3.2; no layout)  ``"two_x2"`` (``"one_x4"``: smoke)
    ``upsample_bias``        not stated                            False (True: smoke)
    ``epochs``               25 (default)                          50 (argparse) / 2 (script)
    ======================== ===================================== =================================

Ablations (Table 2; :data:`VARIANTS`, config ``variant``, default ``"proposed"``)
    ================ ======= ======== ======= ========== ======= ==========================
    variant          l_dev   l_soft   l_bce   reweight   l_seg   Table 2 column
    ================ ======= ======== ======= ========== ======= ==========================
    ``dl``           x                                           DL (DevNet-style baseline)
    ``wt-dl``        x                        x                  Wt-DL
    ``dl-ce``        x                x                          DL-CE
    ``softdl-ce``             x       x                          SoftDL-CE
    ``wt-softdl-ce``          x       x       x                  Wt-SoftDL-CE
    ``proposed``     x       x        x       x          x       Proposed
    ================ ======= ======== ======= ========== ======= ==========================

    Reading of the table (the project's): ``l_dev`` is the deviation loss with the given labels,
    ``l_soft`` the one with the classifier's probability. A variant with ``l_soft`` but without
    ``l_dev`` uses the soft deviation from the first iteration; one with both (Proposed) uses
    ``l_dev`` in the burn-in and ``l_soft`` after it (the released code, and why Table 2 ticks
    both for Proposed); under ``burn_in_mode="paper"`` the soft one throughout. The printed
    table has no ``l_soft`` tick for Wt-SoftDL-CE, but its name and the text ("the proposed
    reweighted soft deviation loss") say it has one, so it is encoded with it. ``l_bce`` includes
    the pseudo-label mixing of Eq. 6. Variants without ``l_seg`` skip the segmentation branch in
    training (its weights stay untrained), so their pixel maps default to the scoring network's
    ``|psi|`` map (``pixel_map``).

Inference (the paper evaluates image AUROC / AUPR only; pixel maps are the project's addition)
    Image score: ``psi_K`` (Eq. 2). Pixel map (``pixel_map``, None = by variant): the segmentation
    network's anomaly probability ``M_o`` (``"segmentation"``, variants with ``l_seg``), bilinearly
    resized to the mask resolution (the input resolution here, so unchanged); or the scoring
    network's ``|psi|`` map at stride 8, bilinearly up-sampled (``"score"``, the other variants).
    This is what gives the pixel metrics.

Choices the paper leaves open (the project's, documented here)
    - k-means: an exact 1-D 2-means (:func:`two_means_labels`): the optimal 2-clustering of
      real numbers is a split of the sorted values, so every split between distinct values is
      scored by its within-cluster sum of squares and the best one kept (the first on ties);
      deterministic, no initialisation, the global optimum Lloyd's algorithm (released: scikit-
      learn) only approaches. All-equal scores give one cluster (every ``y~ = 0``).
    - Reference scores: sample mean and sample standard deviation with Bessel's correction
      (released ``torch.std``).
    - ``upsample_kernel`` (3 as released): the smoke profile uses 1 (CPU cost); with a 1x1
      kernel the block is computed at the low resolution and then up-sampled, which gives the
      same outputs (a 1x1 conv, BatchNorm statistics and GLU commute with nearest up-sampling;
      only BatchNorm's running variance sees a different ``n / (n - 1)`` correction).
    - ``seg_width`` (64 released) is a field so the smoke profile can shrink the segmentation
      network, which at 64 px costs more than the encoder.
    - Randomness: four CPU ``torch.Generator`` streams seeded from ``seed`` (``sampler``: batch
      indices; ``synthesis``: pseudo-anomalies and the normal-image rotation; ``reference``: the
      ``N(0, 1)`` reference scores; ``labels``: the pseudo-label coin and the ``shuffle_labels``
      permutations); head initialisation under ``torch.manual_seed(seed)`` in a forked RNG; the
      random-init encoder (``pretrained=False``) under ``backbone_seed`` (fixed like a choice of
      weights). Checkpoints (``last.pt`` after every epoch) hold all four generator states, the
      optimiser state and the iteration counter, so a resumed fit continues exactly.
      ``epochs`` may differ when resuming; the burn-in length follows the current ``epochs``.
    - ``shuffle_labels`` is a test hook, not in the paper: the labels of every training batch are
      randomly permuted (masks kept), so the scoring and classification heads learn nothing about
      anomalies.

Smoke profile (CPU-sized; the paper's settings are the ``paper`` profile)
    Random-init ResNet-18 with every channel count divided by 4 (``encoder_width = 0.25``: layer2
    / 3 / 4 give 32 / 64 / 128 channels, ``F_Co`` 224), 64 px, 1x1 up-sampling convs,
    segmentation width 16, ``B = 8`` (16 images a step), 8 steps x 10 epochs = 80 Adam steps at
    lr ``2e-3`` (x0.1 from epoch 8). Three rules make so short a schedule train, none chosen on a
    category's result:

    - *burn-in to the learning-rate step* (``burn_in = 0.8``): the soft labels and the reweighting
      refine a model at the decayed learning rate; started earlier (the released 6 %), the k-means
      pseudo-labels of a classifier that has separated nothing mark normal images as anomalies and
      the runs collapse to one score for every image;
    - *lr 2e-3* (10x the paper's, for 80 steps instead of tens of thousands);
    - *BatchNorm statistics of the final weights* (``bn_recalibration = 16``): recomputed after the
      last epoch on 16 training batches (:meth:`ADL.recalibrate_batchnorm`); the running averages
      lag weights that moved a lot, and the eval network then scored every image near the margin,
      a ranking that float round-off decided (numbers moved between machines).

    The measurements behind these rules (per-category AUROC, seeds, the collapsed runs, the
    contamination effect at this scale) are in ``benchmarks/RESULTS.md``, "Smoke-profile
    calibration: ADL"; ``tests/test_smoke_bands_pouta_adl.py`` states the measured spread over
    seeds and numerics.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .. import losses, rehearsal
from ..backbones import BackboneInfo, FeatureExtractor
from ..data.base import IMAGENET_MEAN, IMAGENET_STD, ImageTransform
from .base import Prediction, recalibrate_batchnorm, register, resolve_device
from .core import DraemSynthesis, EpochMethod, MethodConfig, Workload, input_hw
from .scores import top_k_mean

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Components:
    """Which terms of Eq. 11 a variant trains with (Table 2's rows)."""

    dev: bool  # l_dev, Eq. 4 (given labels)
    soft: bool  # l_soft, Eq. 5 (classifier probability)
    bce: bool  # l_bce, Eq. 6 (with the k-means pseudo-labels)
    reweight: bool  # sample reweighting, Eq. 7-10
    seg: bool  # l_seg, Sec. 3.4

    def as_dict(self) -> dict[str, bool]:
        return dataclasses.asdict(self)


#: variant -> components: ADL Table 2 (see the module docstring for the reading)
VARIANTS: dict[str, Components] = {
    "dl": Components(dev=True, soft=False, bce=False, reweight=False, seg=False),
    "wt-dl": Components(dev=True, soft=False, bce=False, reweight=True, seg=False),
    "dl-ce": Components(dev=True, soft=False, bce=True, reweight=False, seg=False),
    "softdl-ce": Components(dev=False, soft=True, bce=True, reweight=False, seg=False),
    "wt-softdl-ce": Components(dev=False, soft=True, bce=True, reweight=True, seg=False),
    "proposed": Components(dev=True, soft=True, bce=True, reweight=True, seg=True),
}
#: variant -> Table 2 column name
TABLE2_NAMES: dict[str, str] = {
    "dl": "DL",
    "wt-dl": "Wt-DL",
    "dl-ce": "DL-CE",
    "softdl-ce": "SoftDL-CE",
    "wt-softdl-ce": "Wt-SoftDL-CE",
    "proposed": "Proposed",
}
#: variant -> (MVTec AD, VisA) average image AUROC at eps = 10 % printed in Table 2
TABLE2_REPORTED: dict[str, tuple[float, float]] = {
    "dl": (0.842, 0.788),
    "wt-dl": (0.851, 0.791),
    "dl-ce": (0.865, 0.795),
    "softdl-ce": (0.881, 0.805),
    "wt-softdl-ce": (0.892, 0.821),
    "proposed": (0.924, 0.843),
}
BURN_IN_MODES = ("released", "paper")
PSEUDO_LABEL_RULES = ("or", "kmeans")
PSEUDO_LABEL_SCHEDULES = ("random", "alternate")
REWEIGHT_REDUCTIONS = ("sum", "batch_mean")
LAYER4_UPSAMPLINGS = ("two_x2", "one_x4")
PIXEL_MAPS = ("segmentation", "score")
GENERATORS = ("sampler", "synthesis", "reference", "labels")


# ----------------------------------------------------------------------------------------------
# The equations


def top_k_score(score_map: torch.Tensor, k_ratio: float = 0.1) -> torch.Tensor:
    """``psi_K(x_i) = (1/K) sum_{x_ij in P(x_i)} psi(x_ij)`` (ADL, Eq. 2).

    ``score_map``: the patch scores ``psi(x_ij)`` (``B x ...``, flattened per image; ADL's
    scoring network gives ``|conv(F_Co)|``). ``P(x_i)``: the ``K = max(int(k_ratio * n), 1)``
    highest of the ``n`` positions (``k_ratio = 0.1``, Sec. 4.1). Returns ``B``.
    """
    n = score_map[0].numel()
    return top_k_mean(score_map, max(int(n * k_ratio), 1))


def reference_scores(
    generator: torch.Generator | None,
    m: int = 5000,
    mean: float = 0.0,
    std: float = 1.0,
    samples: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``mu_S = (1/m) sum_j s_j`` with ``s_j ~ N(mean, std)`` (ADL, Eq. 3), and ``sigma_S``.

    Draws ``m`` reference scores from ``generator`` (float32, CPU) unless ``samples`` are given
    (tests). Returns ``(mu_S, sigma_S)``: the sample mean and the sample standard deviation with
    Bessel's correction (released ``torch.std``), as 0-d tensors.
    """
    if samples is None:
        if m < 2:
            raise ValueError(f"need at least 2 reference scores, got m={m}")
        samples = mean + std * torch.randn(int(m), generator=generator, dtype=torch.float32)
    s = torch.as_tensor(samples).reshape(-1)
    return s.mean(), s.std()


def _z_score(score: torch.Tensor, mu_s, sigma_s) -> torch.Tensor:
    return (score - torch.as_tensor(mu_s, dtype=score.dtype, device=score.device)) / torch.as_tensor(
        sigma_s, dtype=score.dtype, device=score.device
    )


def deviation_loss(score: torch.Tensor, y, mu_s, sigma_s, margin: float = 10.0) -> torch.Tensor:
    """``l_dev = (1 - y)|Z| + y max(0, gamma - Z)``, ``Z = (psi_K - mu_S) / sigma_S`` (ADL, Eq. 4).

    ``score``: ``psi_K`` (``B``); ``y``: the given labels (0 normal, 1 anomalous; ``B`` or a
    constant); ``gamma = margin`` (10 released, 5 in the paper). Per sample (``B``).
    """
    z = _z_score(score, mu_s, sigma_s)
    t = torch.as_tensor(y, dtype=score.dtype, device=score.device).expand_as(z)
    return (1.0 - t) * z.abs() + t * (margin - z).clamp_min(0.0)


def soft_deviation_loss(score: torch.Tensor, p: torch.Tensor, mu_s, sigma_s, margin: float = 10.0) -> torch.Tensor:
    """``l_soft = (1 - p)|Z| + p max(0, gamma - Z)`` (ADL, Eq. 5): Eq. 4 with the anomaly
    classification head's probability ``p(x_i)`` in place of the label. ``p`` is detached (released:
    a soft target; no gradient reaches the classifier through this loss). Per sample (``B``)."""
    return deviation_loss(score, p.detach().reshape(score.shape).to(score.dtype), mu_s, sigma_s, margin)


def two_means_labels(values: torch.Tensor) -> torch.Tensor:
    """Exact 1-D k-means with ``k = 2`` (the k-means of ADL Eq. 6's ``y~``): 1 for the cluster with
    the higher mean, 0 for the other (``int64``, same length).

    The optimal 2-clustering of real numbers splits the sorted values; every split between two
    distinct values is scored by the total within-cluster sum of squares and the smallest kept
    (the first, i.e. the lowest threshold, on exact ties). Fewer than two distinct values: all 0.
    """
    v = values.detach().reshape(-1).to("cpu", torch.float64)
    n = v.numel()
    out = torch.zeros(n, dtype=torch.int64)
    if n < 2:
        return out.to(values.device)
    order = torch.argsort(v, stable=True)
    s = v[order]
    best, best_k = math.inf, None
    for k in range(1, n):
        if not s[k - 1] < s[k]:
            continue
        left, right = s[:k], s[k:]
        sse = float(((left - left.mean()) ** 2).sum() + ((right - right.mean()) ** 2).sum())
        if sse < best:
            best, best_k = sse, k
    if best_k is not None:
        out[order[best_k:]] = 1
    return out.to(values.device)


def pseudo_labels(score: torch.Tensor, y: torch.Tensor, rule: str = "or") -> torch.Tensor:
    """The pseudo-labels ``y~`` of ADL Eq. 6: :func:`two_means_labels` of the batch's ``psi_K``,
    OR-ed with the given labels ``y`` (``rule="or"``, released) or alone (``rule="kmeans"``).
    Returns float labels in {0, 1} (``B``)."""
    if rule not in PSEUDO_LABEL_RULES:
        raise ValueError(f"rule must be one of {PSEUDO_LABEL_RULES}, got {rule!r}")
    km = two_means_labels(score).to(y.device)
    if rule == "or":
        return ((km + y.to(torch.int64)) >= 1).to(torch.float32)
    return km.to(torch.float32)


def bce_loss(p: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``l_bce = -(1 - y^) log(1 - p) - y^ log p`` (ADL, Eq. 6), per sample (``B``); ``y^`` is the
    given label or the pseudo-label. As ``torch.nn.BCELoss`` (logs clamped at -100)."""
    return losses.bce(p.reshape(-1), target.reshape(-1).to(p.dtype), reduction="none")


def segmentation_loss(
    p: torch.Tensor, mask: torch.Tensor, gamma: float = 2.0, alpha: float = 1.0, smoothing: float = 1e-5
) -> torch.Tensor:
    """``l_seg`` (ADL, Sec. 3.4): the focal loss (Lin et al. 2017; :func:`adlib.losses.focal_loss`,
    ``gamma = 2``, the released DRAEM focal loss with smoothing ``1e-5``) between the segmentation
    network's anomaly probability ``M_o`` (``B x H x W``) and the synthetic mask ``M_p``, averaged
    over all pixels of the batch (released)."""
    return losses.focal_loss(p, mask.to(p.dtype).reshape(p.shape), gamma=gamma, alpha=alpha, smoothing=smoothing)


def _check_weight_args(loss_values: torch.Tensor, lam: float) -> torch.Tensor:
    if not lam > 0:
        raise ValueError(f"the Lagrange multiplier lambda must be > 0, got {lam}")
    L = loss_values.detach().reshape(-1).to(torch.float64)
    if L.numel() == 0:
        raise ValueError("no losses to weight")
    if bool((L < 0).any()):
        raise ValueError("instance weights need non-negative losses")
    return L


def kl_weights(loss_values: torch.Tensor, lam: float = 0.1) -> torch.Tensor:
    """``w_i = exp(-L_i / lambda) / sum_j exp(-L_j / lambda)`` (ADL, Eq. 8; KL divergence).
    Detached, float32, summing to 1."""
    L = _check_weight_args(loss_values, lam)
    return torch.softmax(-L / lam, dim=0).to(torch.float32)


def reverse_kl_weights(loss_values: torch.Tensor, lam: float = 0.1) -> torch.Tensor:
    """``w_i = (1 / (L_i + lambda)) / sum_j 1 / (L_j + lambda)`` (ADL, Eq. 9; reverse KL).
    Detached, float32, summing to 1."""
    L = _check_weight_args(loss_values, lam)
    inv = 1.0 / (L + lam)
    return (inv / inv.sum()).to(torch.float32)


def alpha_divergence_weights(loss_values: torch.Tensor, alpha: float = 0.1, lam: float = 0.1) -> torch.Tensor:
    """``w_i = [(1 - alpha) L_i + lambda]_+^(1/(alpha-1)) / sum_j [...]`` (ADL, Eq. 10).

    ``alpha = 1`` is the limit, Eq. 8 (:func:`kl_weights`; derivation in the module docstring);
    ``alpha = 0`` gives Eq. 9. Computed as a softmax of ``log([.]_+) / (alpha - 1)`` (stable for
    ``alpha`` near 1); a zero ``[.]_+`` (possible only for ``alpha > 1``) gives weight 0; all zero
    falls back to uniform weights. Losses detached; float32 weights summing to 1 (``B``).
    ``alpha = 0.1``, ``lambda = 0.1`` (Sec. 4.1).
    """
    L = _check_weight_args(loss_values, lam)
    if alpha == 1.0:
        return kl_weights(L, lam)
    base = (1.0 - alpha) * L + lam
    logits = torch.where(
        base > 0,
        torch.log(base.clamp_min(torch.finfo(torch.float64).tiny)) / (alpha - 1.0),
        torch.full_like(base, -math.inf),
    )
    if not bool(torch.isfinite(logits).any()):
        return torch.full(L.shape, 1.0 / L.numel(), dtype=torch.float32)
    return torch.softmax(logits, dim=0).to(torch.float32)


def uniform_weights(n: int, device=None) -> torch.Tensor:
    """``w_i = 1 / batch_size`` (ADL, Alg. 1 line 10: the burn-in weights)."""
    return torch.full((int(n),), 1.0 / int(n), dtype=torch.float32, device=device)


def reweighted_loss(loss_values: torch.Tensor, weights: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """``sum_i w_i L(x_i)`` (ADL, Eq. 7's objective for a mini-batch; weights detached).

    ``reduction="sum"`` is the paper's Eq. 7 / Eq. 11 (weights summing to 1); ``"batch_mean"`` is
    the released trainer's ``torch.mean(L * w)`` (ADL4VAD ``adl_train.py:149-150``), the same sum
    divided by the number of images ``n`` in the batch."""
    terms = weights.detach().to(loss_values.device, loss_values.dtype) * loss_values.reshape(-1)
    if reduction == "sum":
        return terms.sum()
    if reduction == "batch_mean":
        return terms.mean()
    raise ValueError(f"reduction must be one of {REWEIGHT_REDUCTIONS}, got {reduction!r}")


def adl_objective(
    l_dev: torch.Tensor,
    l_bce: torch.Tensor | None,
    l_seg: torch.Tensor | float,
    w1: torch.Tensor,
    w2: torch.Tensor | None,
    reduction: str = "sum",
) -> torch.Tensor:
    """``sum_i w1_i l_soft(x_i) + w2_i l_bce(x_i) + l_seg`` (ADL, Eq. 11).

    ``l_dev``: the per-sample deviation losses (soft, Eq. 5, or hard, Eq. 4, per variant and
    burn-in); ``l_bce`` (per sample) or None when the variant has no BCE term; ``l_seg`` the
    batch's mean focal loss (0 without it); ``w1``, ``w2`` sum to 1 each. ``reduction``: see
    :func:`reweighted_loss`: ``"sum"`` is Eq. 11 as printed; ``"batch_mean"`` the released
    ``mean(l w1) + mean(l w2) + l_seg`` (ADL4VAD ``adl_train.py:149-152``), i.e. both reweighted
    terms divided by the batch's ``n`` images (the config's ``reweight_reduction``)."""
    total = reweighted_loss(l_dev, w1, reduction)
    if l_bce is not None:
        total = total + reweighted_loss(l_bce, w2, reduction)
    return total + l_seg


def burn_in_iterations(total_iterations: int, fraction: float = 0.06) -> int:
    """Number of burn-in iterations: ``int(fraction * total_iterations)`` (released: 6 %)."""
    return int(float(fraction) * int(total_iterations))


def in_burn_in(iteration: int, total_iterations: int, fraction: float = 0.06) -> bool:
    """Whether 0-based ``iteration`` is a burn-in one (ADL, Alg. 1 lines 7-11): the first
    :func:`burn_in_iterations` of all ``total_iterations``."""
    return int(iteration) < burn_in_iterations(total_iterations, fraction)


def learning_rate(cfg: ADLConfig, epoch: int) -> float:
    """Learning rate of 0-based ``epoch``: ``lr * lr_gamma ** (epoch // lr_step)`` (released
    ``StepLR(step_size=10, gamma=0.1)``, stepped after every epoch)."""
    return float(cfg.lr * cfg.lr_gamma ** (int(epoch) // int(cfg.lr_step)))


# ----------------------------------------------------------------------------------------------
# Networks


class UpBlock(nn.Module):
    """Nearest up-sampling by ``scale``, ``kernel x kernel`` conv ``C -> 2C`` (with a bias unless
    ``bias=False``, the released ``conv3x3``), BatchNorm, GLU (``-> C``). With ``kernel = 1`` the
    conv / BN / GLU run before the up-sampling (same outputs, see the module docstring)."""

    def __init__(self, channels: int, scale: int, kernel: int = 3, bias: bool = True) -> None:
        super().__init__()
        self.scale, self.kernel = int(scale), int(kernel)
        self.conv = nn.Conv2d(channels, 2 * channels, kernel, padding=kernel // 2, bias=bool(bias))
        self.bn = nn.BatchNorm2d(2 * channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == 1:
            y = F.glu(self.bn(self.conv(x)), dim=1)
            return F.interpolate(y, scale_factor=self.scale, mode="nearest") if self.scale != 1 else y
        if self.scale != 1:
            x = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return F.glu(self.bn(self.conv(x)), dim=1)


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SegmentationNet(nn.Module):
    """ADL's segmentation network (Sec. 3.4; released layout): two 3x3 conv-BN-ReLU
    (``C -> w -> w``), three (nearest up x2, 3x3 conv-BN-ReLU), 3x3 conv to 2 channels; returns
    the anomaly-channel softmax probability ``B x 8h x 8w``."""

    def __init__(self, in_channels: int, width: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_bn_relu(in_channels, width), *_conv_bn_relu(width, width))
        self.ups = nn.ModuleList(nn.Sequential(*_conv_bn_relu(width, width)) for _ in range(3))
        self.out = nn.Conv2d(width, 2, 3, padding=1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        h = self.body(f)
        for up in self.ups:
            h = up(F.interpolate(h, scale_factor=2, mode="nearest"))
        return torch.softmax(self.out(h), dim=1)[:, 1]


class ADLNet(nn.Module):
    """Fine-tuned ResNet encoder + up-sampling blocks + scoring, classification and segmentation
    heads. ``forward(x, seg=True)`` -> dict: ``score_map`` (``|psi|``, ``B x h x w``), ``score``
    (``psi_K``, ``B``), ``prob`` (``p``, ``B``), ``seg`` (``M_o``, ``B x H x W``, or None).
    ``layer4_upsampling``: ``"two_x2"`` (``up4`` = two x2 :class:`UpBlock` s, released) or
    ``"one_x4"`` (one x4 block); ``upsample_bias``: the blocks' conv bias (released: none)."""

    def __init__(
        self,
        encoder: nn.Module,
        channels: tuple[int, int, int],
        top_k: float = 0.1,
        upsample_kernel: int = 3,
        seg_width: int = 64,
        normalize: bool = False,
        layer4_upsampling: str = "two_x2",
        upsample_bias: bool = False,
    ) -> None:
        super().__init__()
        if layer4_upsampling not in LAYER4_UPSAMPLINGS:
            raise ValueError(f"layer4_upsampling must be one of {LAYER4_UPSAMPLINGS}, got {layer4_upsampling!r}")
        c2, c3, c4 = channels
        self.encoder = encoder
        self.up3 = UpBlock(c3, 2, upsample_kernel, upsample_bias)
        if layer4_upsampling == "one_x4":
            self.up4 = UpBlock(c4, 4, upsample_kernel, upsample_bias)
        else:  # released: upsample4_2(upsample4_1(x4))
            self.up4 = nn.Sequential(
                UpBlock(c4, 2, upsample_kernel, upsample_bias), UpBlock(c4, 2, upsample_kernel, upsample_bias)
            )
        width = c2 + c3 + c4
        self.scoring = nn.Conv2d(width, 1, 1)
        self.classifier = nn.Linear(c4, 1)
        self.segmentation = SegmentationNet(width, seg_width)
        self.top_k = float(top_k)
        self.normalize = bool(normalize)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(F_Co, F_last)``: the concatenated 896-channel map at stride 8 and ``layer4``."""
        if self.normalize:
            x = (x - self.mean) / self.std
        f2, f3, f4 = self.encoder(x)
        return torch.cat([f2, self.up3(f3), self.up4(f4)], dim=1), f4

    def forward(self, x: torch.Tensor, seg: bool = True) -> dict[str, Any]:
        fco, f4 = self.features(x)
        score_map = self.scoring(fco)[:, 0].abs()
        prob = torch.sigmoid(self.classifier(f4.mean(dim=(2, 3))))[:, 0]
        return {
            "score_map": score_map,
            "score": top_k_score(score_map, self.top_k),
            "prob": prob,
            "seg": self.segmentation(fco) if seg else None,
        }


ENCODER_LAYERS = ("layer2", "layer3", "layer4")


def build_encoder(cfg: ADLConfig) -> tuple[nn.Module, BackboneInfo]:
    """The trainable encoder (timm, ``features_only``: ``layer2``, ``layer3``, ``layer4``) and its
    :class:`~adlib.backbones.BackboneInfo`.

    ``encoder_width = 1``: built by :class:`adlib.backbones.FeatureExtractor` (pretrained weights
    from the same sources, the same offline rules and :class:`~adlib.backbones.WeightsUnavailable`
    message; or a seeded random initialisation), whose timm module is then unfrozen.
    ``encoder_width < 1`` (smoke only, ``pretrained=False``): the same architecture with every
    stage's channels (and the stem) scaled by ``encoder_width``, seeded random initialisation.
    """
    if cfg.encoder_width == 1.0:
        fx = FeatureExtractor.from_config(cfg, layers=ENCODER_LAYERS)
        encoder, info = fx.model, fx.info
    else:
        import timm

        from ..backbones import BACKBONES, resolve_layers

        tag = cfg.backbone_tag or BACKBONES.get(cfg.backbone, cfg.backbone)
        arch = tag.split(".")[0]
        idx, names = resolve_layers(arch, ENCODER_LAYERS)
        w = float(cfg.encoder_width)
        widths = tuple(max(int(round(c * w)), 1) for c in (64, 128, 256, 512))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.backbone_seed)
            encoder = timm.create_model(
                arch,
                pretrained=False,
                features_only=True,
                out_indices=tuple(idx),
                channels=widths,
                stem_width=widths[0],
            )
        fi = encoder.feature_info
        info = BackboneInfo(
            name=cfg.backbone,
            tag=f"{arch} (channels x{w:g})",
            pretrained=False,
            weights=f"random-init seed={cfg.backbone_seed}",
            layers=tuple(names),
            channels=tuple(int(c) for c in fi.channels()),
            strides=tuple(int(r) for r in fi.reduction()),
        )
    for p in encoder.parameters():  # ADL fine-tunes the encoder (Sec. 3.3.2)
        p.requires_grad_(True)
    encoder.train()
    return encoder, info


def parameter_count(model) -> int:
    """Number of parameters of a network or of a method's network (``.net``)."""
    module = model.net if hasattr(model, "net") else model
    return int(sum(p.numel() for p in module.parameters()))


# ----------------------------------------------------------------------------------------------
# Configuration


@dataclass
class ADLConfig(MethodConfig):
    """ADL settings. Defaults (= ``paper`` profile): Sec. 4.1 with the released choices of the module
    docstring's table (input 256 in [0, 1], margin 10, pretrained ResNet-18 ``tv_in1k``, batches of
    24 + 24, 20 steps an epoch, 25 epochs, Eq. 11 as ``mean(L w)``, layer 4 up-sampled by two x2
    blocks without conv bias). ``smoke``: CPU-sized (see :attr:`PROFILES`)."""

    variant: str = "proposed"
    # encoder (Sec. 3.3.2, 4.1)
    backbone: str = "resnet18"
    pretrained: bool = True
    backbone_tag: str | None = None  # None: adlib.backbones.BACKBONES (".tv_in1k")
    weights_file: str | None = None
    backbone_seed: int = 0  # random initialisation when pretrained=False
    encoder_width: float = 1.0  # < 1: channels scaled (smoke only, random init)
    upsample_kernel: int = 3
    layer4_upsampling: str = "two_x2"  # released; "one_x4": one x4 block (smoke)
    upsample_bias: bool = False  # released conv3x3(bias=False); True: smoke
    seg_width: int = 64
    # input
    resize: int = 256
    crop: int | None = None  # paper: 224
    normalize: bool = False
    # scoring and losses (Sec. 3.3, 4.1)
    top_k: float = 0.1
    ref_samples: int = 5000
    ref_mean: float = 0.0
    ref_std: float = 1.0
    margin: float = 10.0  # paper: gamma = 5
    alpha: float = 0.1
    lam: float = 0.1
    burn_in: float = 0.06
    burn_in_mode: str = "released"
    pseudo_label_rule: str = "or"
    pseudo_label_schedule: str = "random"
    pseudo_label_prob: float = 0.6
    reweight_reduction: str = "batch_mean"  # released mean(L * w); "sum": Eq. 11 as printed (smoke)
    focal_gamma: float = 2.0
    focal_alpha: float = 1.0
    focal_smoothing: float = 1e-5
    # synthesis (Sec. 3.3.1)
    synthesis: str = "adl_released"
    rotate_prob: float = 0.3
    # optimisation (Sec. 4.1, released)
    batch_size: int = 24  # B: per half (2B images a step)
    steps_per_epoch: int = 20
    epochs: int = 25
    lr: float = 2e-4
    weight_decay: float = 1e-5
    lr_step: int = 10
    lr_gamma: float = 0.1
    grad_clip: float | None = 1.0
    seed: int = 0
    # BatchNorm statistics after the last epoch (the project's; 0 = the EMA of training, as released)
    bn_recalibration: int = 0
    # inference
    pixel_map: str | None = None  # None: "segmentation" if the variant trains it, else "score"
    data_root: str | None = None
    # test hook (not in the paper)
    shuffle_labels: bool = False

    #: ``smoke`` (see "Smoke profile" in the module docstring): random-init ResNet-18 with a
    #: quarter of the channels, 64 px, 1x1 up-sampling convs, segmentation width 16, B = 8 (16
    #: images a step), 8 steps x 10 epochs (80 Adam steps) at lr 2e-3 (x0.1 from epoch 8), burn-in
    #: 80 % of the iterations (it ends at the learning-rate step), BatchNorm statistics
    #: recalibrated on 16 training batches after the last epoch (``bn_recalibration``). The rules
    #: (not chosen on any category, see "Smoke profile"): the soft-label phase refines a model at
    #: the decayed learning rate, and inference uses normalisation statistics of the final weights.
    #: It keeps the settings its numbers were recorded with where the paper profile now follows
    #: the released code: Eq. 11 as a sum, one x4 layer-4 block, conv biases in the blocks.
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        "smoke": dict(
            pretrained=False,
            encoder_width=0.25,
            resize=64,
            crop=None,
            upsample_kernel=1,
            seg_width=16,
            batch_size=8,
            steps_per_epoch=8,
            epochs=10,
            lr=2e-3,
            lr_step=8,
            burn_in=0.8,
            bn_recalibration=16,
            reweight_reduction="sum",
            layer4_upsampling="one_x4",
            upsample_bias=True,
        ),
    }

    @property
    def input_size(self) -> int:
        return int(self.crop if self.crop is not None else self.resize)

    @property
    def components(self) -> Components:
        return VARIANTS[self.variant]

    REHEARSAL: ClassVar[dict[str, int]] = {
        "resize": rehearsal.SIDE,
        "crop": rehearsal.SIDE,
        "epochs": rehearsal.EPOCHS,
        "steps_per_epoch": rehearsal.STEPS,
    }

    def rehearsal_changes(self) -> dict[str, Any]:
        """As :meth:`MethodConfig.rehearsal_changes`, the learning-rate step scaled with the epochs."""
        out = super().rehearsal_changes()
        if "epochs" in out:
            out["lr_step"] = rehearsal.scaled_milestones((self.lr_step,), self.epochs, out["epochs"])[0]
        return out

    def _validate(self) -> None:
        super()._validate()
        if self.variant not in VARIANTS:
            raise ValueError(f"ADL variant must be one of {sorted(VARIANTS)}, got {self.variant!r}")
        if not 0.0 < self.encoder_width <= 1.0:
            raise ValueError(f"encoder_width must lie in (0, 1], got {self.encoder_width}")
        if self.encoder_width != 1.0 and self.pretrained:
            raise ValueError(
                "encoder_width < 1 needs pretrained=False (there are no pretrained weights for a narrower ResNet)"
            )
        if self.crop is not None and self.crop > self.resize:
            raise ValueError(f"crop ({self.crop}) must not exceed resize ({self.resize})")
        if self.input_size < 32 or self.input_size % 32:
            raise ValueError(
                f"the input size (crop, else resize) must be a multiple of 32 (layer4 up x4 meets layer2), got {self.input_size}"
            )
        if self.upsample_kernel not in (1, 3, 5):
            raise ValueError(f"upsample_kernel must be 1, 3 or 5, got {self.upsample_kernel}")
        if self.layer4_upsampling not in LAYER4_UPSAMPLINGS:
            raise ValueError(f"layer4_upsampling must be one of {LAYER4_UPSAMPLINGS}, got {self.layer4_upsampling!r}")
        if not isinstance(self.upsample_bias, bool):
            raise ValueError(f"upsample_bias must be True or False, got {self.upsample_bias!r}")
        if self.seg_width < 1:
            raise ValueError(f"seg_width must be >= 1, got {self.seg_width}")
        if not 0.0 < self.top_k <= 1.0:
            raise ValueError(f"top_k must lie in (0, 1], got {self.top_k}")
        if self.ref_samples < 2 or not self.ref_std > 0:
            raise ValueError(f"need ref_samples >= 2 and ref_std > 0, got {self.ref_samples}, {self.ref_std}")
        if not self.margin > 0:
            raise ValueError(f"margin must be > 0, got {self.margin}")
        if not self.lam > 0:
            raise ValueError(f"lam (the Lagrange multiplier lambda) must be > 0, got {self.lam}")
        if not math.isfinite(self.alpha):
            raise ValueError(f"alpha must be a finite number, got {self.alpha}")
        if not 0.0 <= self.burn_in <= 1.0:
            raise ValueError(f"burn_in must lie in [0, 1], got {self.burn_in}")
        if self.burn_in_mode not in BURN_IN_MODES:
            raise ValueError(f"burn_in_mode must be one of {BURN_IN_MODES}, got {self.burn_in_mode!r}")
        if self.pseudo_label_rule not in PSEUDO_LABEL_RULES:
            raise ValueError(f"pseudo_label_rule must be one of {PSEUDO_LABEL_RULES}, got {self.pseudo_label_rule!r}")
        if self.reweight_reduction not in REWEIGHT_REDUCTIONS:
            raise ValueError(
                f"reweight_reduction must be one of {REWEIGHT_REDUCTIONS}, got {self.reweight_reduction!r}"
            )
        if self.pseudo_label_schedule not in PSEUDO_LABEL_SCHEDULES:
            raise ValueError(
                f"pseudo_label_schedule must be one of {PSEUDO_LABEL_SCHEDULES}, got {self.pseudo_label_schedule!r}"
            )
        if not 0.0 <= self.pseudo_label_prob <= 1.0:
            raise ValueError(f"pseudo_label_prob must lie in [0, 1], got {self.pseudo_label_prob}")
        if not 0.0 <= self.rotate_prob <= 1.0:
            raise ValueError(f"rotate_prob must lie in [0, 1], got {self.rotate_prob}")
        if self.batch_size < 1 or self.steps_per_epoch < 1 or self.epochs < 0:
            raise ValueError(
                f"need batch_size >= 1, steps_per_epoch >= 1 and epochs >= 0, got "
                f"{self.batch_size}, {self.steps_per_epoch}, {self.epochs}"
            )
        if not self.lr > 0 or self.weight_decay < 0 or self.lr_step < 1 or not self.lr_gamma > 0:
            raise ValueError("need lr > 0, weight_decay >= 0, lr_step >= 1 and lr_gamma > 0")
        if self.bn_recalibration < 0:
            raise ValueError(f"bn_recalibration must be >= 0 (number of batches), got {self.bn_recalibration}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be None or > 0, got {self.grad_clip}")
        if self.pixel_map is not None and self.pixel_map not in PIXEL_MAPS:
            raise ValueError(f"pixel_map must be None or one of {PIXEL_MAPS}, got {self.pixel_map!r}")
        from ..synthesis.draem import PRESETS

        if self.synthesis not in PRESETS or not self.synthesis.startswith("adl"):
            raise ValueError(f"synthesis must be an ADL preset (adl_released, adl_paper), got {self.synthesis!r}")


# ----------------------------------------------------------------------------------------------
# The method


@register("adl", display="ADL", variants={v: ("ADL" if v == "proposed" else TABLE2_NAMES[v]) for v in VARIANTS})
class ADL(DraemSynthesis, EpochMethod):
    """Adaptive Deviation Learning (WACV 2025); ``cfg.variant`` picks a Table 2 ablation."""

    Config: ClassVar[type] = ADLConfig
    name: ClassVar[str] = "adl"
    STREAMS: ClassVar[tuple[str, ...]] = GENERATORS
    #: config fields added after checkpoints were written, at the value those checkpoints ran with
    #: (as :data:`adlib.results.ADDED_FIELDS` for run keys): filled in where a checkpoint lacks them
    FORMER_CONFIG: ClassVar[dict[str, Any]] = {
        "reweight_reduction": "sum",
        "layer4_upsampling": "one_x4",
        "upsample_bias": True,
    }

    def __init__(self, cfg: ADLConfig | None = None, *, load_weights: bool = True) -> None:
        """``load_weights=False`` (used by :meth:`load`): build the architecture without fetching
        pretrained weights, which a checkpoint then replaces (the encoder is fine-tuned, so the
        checkpoint holds all of it)."""
        super().__init__(cfg)
        cfg = self.cfg
        self._weights_loaded = load_weights
        encoder, self.backbone_info = build_encoder(cfg if load_weights else dataclasses.replace(cfg, pretrained=False))
        with self._seeded_init():
            self.net = ADLNet(
                encoder,
                tuple(self.backbone_info.channels),
                cfg.top_k,
                cfg.upsample_kernel,
                cfg.seg_width,
                cfg.normalize,
                cfg.layer4_upsampling,
                cfg.upsample_bias,
            )
        self.iteration = 0
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.texture_description: str | None = None
        self.texture_is_stand_in: bool | None = None
        self.synthesizer = None
        self.net.eval()

    # -- basics --------------------------------------------------------------------------------
    @property
    def transform(self) -> ImageTransform:
        """Resize to ``resize`` (then centre crop ``crop`` if set), values in [0, 1]; ImageNet
        normalisation, if ``normalize``, happens inside the network (synthesis works in [0, 1])."""
        return ImageTransform(resize=self.cfg.resize, crop=self.cfg.crop, normalize=False)

    @property
    def components(self) -> Components:
        return self.cfg.components

    @property
    def pixel_map(self) -> str:
        """``"segmentation"`` or ``"score"``: where :meth:`predict`'s pixel maps come from."""
        if self.cfg.pixel_map is not None:
            return self.cfg.pixel_map
        return "segmentation" if self.components.seg else "score"

    @property
    def total_iterations(self) -> int:
        return int(self.cfg.epochs) * int(self.cfg.steps_per_epoch)

    def forward(self, x: torch.Tensor, seg: bool = True) -> dict[str, Any]:
        """The network's outputs for images ``x`` (``B x 3 x H x W`` in [0, 1])."""
        return self.net(x.to(self.device), seg=seg)

    # -- data ----------------------------------------------------------------------------------
    def _load_images(self, ds, progress: bool) -> torch.Tensor:
        samples = self._load_samples(ds, progress)
        n_labelled = sum(int(s.label) != 0 for s in samples)
        if n_labelled:
            log.warning(
                "%s: %d training image(s) carry label 1; ADL treats every training image as unlabelled "
                "'normal' (label 0)",
                self.label,
                n_labelled,
            )
        return torch.stack([s.image for s in samples])

    def _rotate_normal(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        from ..synthesis.perlin import rotate_fields

        coin = float(torch.rand((), generator=g, dtype=torch.float64))
        angle = -90.0 + 180.0 * float(torch.rand((), generator=g, dtype=torch.float64))
        if coin < self.cfg.rotate_prob:
            return rotate_fields(x[None].float(), torch.tensor([angle]))[0].to(x.dtype)
        return x

    def make_batch(
        self,
        images: torch.Tensor,
        normal_idx: torch.Tensor,
        synth_idx: torch.Tensor,
        generator: torch.Generator | None = None,
    ):
        """One training batch: the normal half (``images[normal_idx]``, each rotated with
        probability ``rotate_prob``; label 0, empty mask) followed by the pseudo-anomalies made
        from ``images[synth_idx]`` (label 1, Perlin mask). Returns ``(x 2B x 3 x H x W,
        y 2B, masks 2B x H x W)``; draws from ``generator`` (default: the ``synthesis`` stream)."""
        self._prepare()
        g = self.generators["synthesis"] if generator is None else generator
        xs, ms = [], []
        for i in normal_idx.tolist():
            xs.append(self._rotate_normal(images[i], g))
            ms.append(torch.zeros(images.shape[-2:], dtype=torch.float32))
        for i in synth_idx.tolist():
            x_aug, m, _ = self.synthesizer(images[i], g)
            xs.append(x_aug.to(images.dtype))
            ms.append(m)
        y = torch.cat([torch.zeros(len(normal_idx)), torch.ones(len(synth_idx))])
        return torch.stack(xs), y, torch.stack(ms)

    def _epoch_indices(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        count = self.cfg.steps_per_epoch * self.cfg.batch_size
        g = self.generators["sampler"]

        def stream() -> torch.Tensor:
            parts, have = [], 0
            while have < count:
                parts.append(torch.randperm(n, generator=g))
                have += n
            return torch.cat(parts)[:count].view(self.cfg.steps_per_epoch, self.cfg.batch_size)

        return stream(), stream()

    # -- losses --------------------------------------------------------------------------------
    def compute_losses(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, iteration: int
    ) -> dict[str, torch.Tensor]:
        """The losses of one batch at 0-based ``iteration`` (burn-in, labels, weights as in the
        module docstring). Keys: ``loss`` (Eq. 11), ``dev`` (weighted deviation term), ``bce``,
        ``seg``, ``burn_in`` (1.0 in burn-in), ``soft`` (1.0 if the soft deviation was used),
        ``pseudo`` (1.0 if the BCE target was the pseudo-labels), ``ess_dev`` / ``ess_bce``
        (effective sample size of the weights over the batch size, 1 for uniform weights)."""
        cfg, comp = self.cfg, self.components
        out = self.net(x, seg=comp.seg)
        score, prob = out["score"], out["prob"]
        n = score.shape[0]
        burn = in_burn_in(iteration, self.total_iterations, cfg.burn_in)
        hard_phase = burn and cfg.burn_in_mode == "released"
        mu_s, sigma_s = reference_scores(self.generators["reference"], cfg.ref_samples, cfg.ref_mean, cfg.ref_std)
        use_soft = comp.soft and not (comp.dev and hard_phase)
        if use_soft:
            l_dev = soft_deviation_loss(score, prob, mu_s, sigma_s, cfg.margin)
        else:
            l_dev = deviation_loss(score, y, mu_s, sigma_s, cfg.margin)
        l_bce, used_pseudo = None, False
        if comp.bce:
            target = y
            if not hard_phase:
                used_pseudo = self._use_pseudo_labels(iteration)
                if used_pseudo:
                    target = pseudo_labels(score, y, cfg.pseudo_label_rule)
            l_bce = bce_loss(prob, target)
        if comp.reweight and not burn:
            w1 = alpha_divergence_weights(l_dev, cfg.alpha, cfg.lam).to(score.device)
            w2 = alpha_divergence_weights(l_bce, cfg.alpha, cfg.lam).to(score.device) if l_bce is not None else None
        else:
            w1 = uniform_weights(n, score.device)
            w2 = uniform_weights(n, score.device) if l_bce is not None else None
        l_seg = (
            segmentation_loss(out["seg"], mask, cfg.focal_gamma, cfg.focal_alpha, cfg.focal_smoothing)
            if comp.seg
            else torch.zeros((), device=score.device)
        )
        loss = adl_objective(l_dev, l_bce, l_seg, w1, w2, cfg.reweight_reduction)
        ess = lambda w: 1.0 / (float((w.double() ** 2).sum()) * n) if w is not None else 1.0  # noqa: E731
        zero = torch.zeros((), device=score.device)
        return {
            "loss": loss,
            "dev": reweighted_loss(l_dev, w1, cfg.reweight_reduction),
            "bce": reweighted_loss(l_bce, w2, cfg.reweight_reduction) if l_bce is not None else zero,
            "seg": l_seg,
            "burn_in": torch.tensor(float(burn)),
            "soft": torch.tensor(float(use_soft)),
            "pseudo": torch.tensor(float(used_pseudo)),
            "ess_dev": torch.tensor(ess(w1)),
            "ess_bce": torch.tensor(ess(w2)),
        }

    def _use_pseudo_labels(self, iteration: int) -> bool:
        cfg = self.cfg
        if cfg.pseudo_label_schedule == "alternate":
            return (int(iteration) - burn_in_iterations(self.total_iterations, cfg.burn_in)) % 2 == 0
        return float(torch.rand((), generator=self.generators["labels"], dtype=torch.float64)) < cfg.pseudo_label_prob

    # -- training ------------------------------------------------------------------------------
    def train_step(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
        """One Adam step on Eq. 11 for a batch (at :attr:`iteration`, then incremented)."""
        self.net.train()
        if self.cfg.shuffle_labels:
            y = y[torch.randperm(len(y), generator=self.generators["labels"])]
        out = self.compute_losses(x.to(self.device), y.to(self.device), mask.to(self.device), self.iteration)
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        if self.cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.iteration += 1
        return {k: float(v.detach()) for k, v in out.items()}

    def _fit_description(self, train_ds, images) -> str:
        return (
            f"{len(images)} images; burn-in: {burn_in_iterations(self.total_iterations, self.cfg.burn_in)} of "
            f"{self.total_iterations} iterations"
        )

    def _epoch_end(self, images: torch.Tensor, stats: dict[str, Any]) -> None:
        if self.epoch == self.cfg.epochs and self.cfg.bn_recalibration:
            self.recalibrate_batchnorm(images)

    def workload(self, n_train: int, n_test: int) -> Workload:
        """A fixed schedule, whatever the training set's size: ``epochs x steps_per_epoch`` steps of
        ``2 x batch_size`` images (the normal half and the pseudo-anomalies), each through ``train``;
        ``bn_recalibration`` batches through ``infer`` after the last epoch; every test image once."""
        cfg = self.cfg
        train = int(cfg.epochs) * int(cfg.steps_per_epoch) * 2 * int(cfg.batch_size)
        recal = int(cfg.bn_recalibration) * 2 * int(cfg.batch_size)
        return Workload(train, int(n_test), {"train": train, "infer": int(n_test) + recal})

    def _run_epoch(self, images: torch.Tensor) -> dict[str, float]:
        lr = learning_rate(self.cfg, self.epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        normal, synth = self._epoch_indices(len(images))
        sums: dict[str, float] = {}
        for step in range(self.cfg.steps_per_epoch):
            x, y, mask = self.make_batch(images, normal[step], synth[step])
            for k, v in self.train_step(x, y, mask).items():
                sums[k] = sums.get(k, 0.0) + v
        self.net.eval()
        return {**{k: v / self.cfg.steps_per_epoch for k, v in sums.items()}, "lr": lr}

    @torch.no_grad()
    def recalibrate_batchnorm(self, images: torch.Tensor, batches: int | None = None) -> None:
        """Replace every BatchNorm layer's running mean / variance by their plain average over
        ``batches`` (default ``cfg.bn_recalibration``) training batches of the final weights
        ("precise BN"): batches made as in training (:meth:`make_batch`: normal half and
        pseudo-anomalies, indices and synthesis from a dedicated generator seeded from ``seed``, so
        the training streams and a resumed fit are untouched), forwarded in train mode without
        gradients. The running averages of training are exponential averages over weights that
        changed from step to step; after a short schedule at a high learning rate they lag the
        final weights, and the eval-mode network then scores every image differently from the one
        trained (the smoke failure this fixes: see "Smoke profile" in the module docstring).
        Training itself never reads the running statistics, so this changes inference only."""
        n = self.cfg.bn_recalibration if batches is None else int(batches)
        if n <= 0:
            return
        self._prepare()
        g = torch.Generator().manual_seed(self.seed_for(len(self.STREAMS)))
        b = self.cfg.batch_size

        def draws():
            for _ in range(n):
                idx = torch.cat([torch.randperm(len(images), generator=g) for _ in range(-(-2 * b // len(images)))])
                yield self.make_batch(images, idx[:b], idx[b : 2 * b], generator=g)[0]

        recalibrate_batchnorm(self.net, draws(), lambda x: self.net(x.to(self.device), seg=self.components.seg))

    # -- inference -----------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(psi_K (B), pixel map B x H x W at the input resolution)`` of images in [0, 1], eval mode."""
        self.net.eval()
        seg = self.pixel_map == "segmentation"
        out = self.forward(images, seg=seg)
        m = out["seg"] if seg else out["score_map"]
        return out["score"], _resize(m, tuple(images.shape[-2:]))

    @torch.no_grad()
    def predict(self, test_ds, *, device=None, batch_size: int | None = None, progress: bool = True) -> Prediction:
        """Image scores ``psi_K`` (Eq. 2) and pixel maps (:attr:`pixel_map`, resized bilinearly to the
        masks' resolution) of every test image."""
        if device is not None:
            self.to(resolve_device(device))
        self.net.eval()

        def score_batch(batch):
            s, m = self.score(batch.image)
            return s, _resize(m, tuple(batch.mask.shape[-2:])).float().cpu().numpy()

        return self._predict_batches(test_ds, score_batch, batch_size or 2 * self.cfg.batch_size, progress)

    def export_module(self) -> ADLExport:
        """:meth:`predict`'s path as one module (:class:`ADLExport`) at the transform's size."""
        self.net.eval()
        return ADLExport(self.net, input_hw(self.transform), self.pixel_map == "segmentation").eval()

    # -- persistence ---------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "iteration": int(self.iteration), "backbone": self.backbone_info.as_dict()}

    def _load_state(self, state: dict[str, Any], path=None, strict: bool = True) -> None:
        self._load_trained_state(state)
        self.iteration = int(state["iteration"])
        self._load_texture_state(state)
        if state.get("backbone") and not self._weights_loaded:  # built without its weights: the checkpoint's record
            self.backbone_info = BackboneInfo(
                **{k: tuple(v) if isinstance(v, list) else v for k, v in state["backbone"].items()}
            )
        self.to(self.device)

    @classmethod
    def read(cls, path) -> dict[str, Any]:
        """A checkpoint (:meth:`Method.read`) whose config has the :data:`FORMER_CONFIG` values
        where it predates those fields (it loads and resumes as the network it holds)."""
        state = super().read(path)
        state["config"] = {**cls.FORMER_CONFIG, **state["config"]}
        return state

    @classmethod
    def _from_config(cls, cfg: ADLConfig) -> ADL:
        return cls(cfg, load_weights=False)

    # -- provenance ----------------------------------------------------------------------------
    def _info(self) -> dict[str, Any]:
        return {
            "table2": TABLE2_NAMES[self.variant],
            "components": self.components.as_dict(),
            "config": self.cfg.as_dict(),
            "backbone": self.backbone_info.as_dict(),
            "weights": self.backbone_info.weights,
            "fine_tuned_encoder": True,
            "parameters": parameter_count(self),
            "pixel_map": self.pixel_map,
            "image_score": "top-K mean of |psi| (Eq. 2)",
            "eq11_reduction": (
                "released: mean(l_dev w1) + mean(l_bce w2) + l_seg (adl_train.py:149-152)"
                if self.cfg.reweight_reduction == "batch_mean"
                else "Eq. 11 as printed: sum(w1 l_dev) + sum(w2 l_bce) + l_seg"
            ),
            "layer4_upsampling": (
                "two x2 blocks (released resnet18.py)" if self.cfg.layer4_upsampling == "two_x2" else "one x4 block"
            )
            + (", conv bias" if self.cfg.upsample_bias else ", no conv bias (released)"),
            "texture_source": self.texture_description,
            "texture_is_stand_in": self.texture_is_stand_in,
            "iterations_trained": self.iteration,
            "burn_in_iterations": burn_in_iterations(self.total_iterations, self.cfg.burn_in),
            "batchnorm_statistics": (
                f"recalibrated on {self.cfg.bn_recalibration} training batches after the last epoch"
                if self.cfg.bn_recalibration
                else "running averages of training"
            ),
        }


def _resize(m: torch.Tensor, size) -> torch.Tensor:
    if tuple(m.shape[-2:]) == tuple(size):
        return m
    return F.interpolate(m[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


class ADLExport(nn.Module):
    """ADL inference as one module, for export (:mod:`adlib.export`): images in [0, 1]
    ``B x 3 x H x W`` (the ImageNet normalisation, if any, is inside :class:`ADLNet`) -> ``psi_K``
    ``B`` (Eq. 2) and the pixel map (:attr:`ADL.pixel_map`: the segmentation head's ``M_o`` or the
    score map) at ``size`` (bilinear), as :meth:`ADL.predict`."""

    def __init__(self, net: ADLNet, size: tuple[int, int], segmentation: bool) -> None:
        super().__init__()
        self.net = net
        self.size = (int(size[0]), int(size[1]))
        self.segmentation = bool(segmentation)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(images, seg=self.segmentation)
        m = out["seg"] if self.segmentation else out["score_map"]
        return out["score"], _resize(m, self.size).float()


__all__ = [
    "ADL",
    "ADLExport",
    "ADLConfig",
    "ADLNet",
    "BURN_IN_MODES",
    "Components",
    "LAYER4_UPSAMPLINGS",
    "PIXEL_MAPS",
    "PSEUDO_LABEL_RULES",
    "PSEUDO_LABEL_SCHEDULES",
    "REWEIGHT_REDUCTIONS",
    "SegmentationNet",
    "TABLE2_NAMES",
    "TABLE2_REPORTED",
    "UpBlock",
    "VARIANTS",
    "adl_objective",
    "alpha_divergence_weights",
    "bce_loss",
    "burn_in_iterations",
    "deviation_loss",
    "in_burn_in",
    "kl_weights",
    "learning_rate",
    "parameter_count",
    "pseudo_labels",
    "reference_scores",
    "reweighted_loss",
    "reverse_kl_weights",
    "segmentation_loss",
    "soft_deviation_loss",
    "top_k_score",
    "two_means_labels",
    "uniform_weights",
]
