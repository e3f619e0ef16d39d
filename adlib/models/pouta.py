"""POUTA ("Produce Once, Utilize Twice", Wang et al. 2023) and its Vanilla / DRAEM-style baseline.

Two registered methods share one reconstructive network, one training loop and one inference:

``"pouta"`` (:class:`POUTA`, Sec. III, Fig. 4b)
    Reconstructive network (Sec. III-A): encoder levels ``F_E1..F_E4``, a mapping layer ``F_M``,
    decoder levels ``F_D4..F_D1`` and the reconstruction ``I_r``, trained with
    ``L_rec = MSE + SSIM`` (Eq. 1, :func:`reconstruction_loss`). The coarse-to-fine
    discriminative network (Sec. III-B) *reuses* the symmetric representations:

    - FCM (:class:`FeatureContrast`): ``F_Ci = conv1x1(cat(conv1x1(F_Ei), conv1x1(F_Di)))``;
    - HSG (:class:`HighLevelGuidance`, Eq. 2-4): the deeper refined map ``F'_C(i+1)`` (``F_C4``
      for ``i = 3``) is up-sampled and convolved (3x3) once, then gives a spatial weight map
      (:func:`spatial_weight_map`, Eq. 2) and a channel weight map
      (:func:`channel_weight_map`, Eq. 3), both sigmoids, applied by element-wise products
      (:func:`hsg_refine`, Eq. 4);
    - MSS (:class:`SideHead`, Eq. 5-6): a 2-channel softmax head on each of ``F'_C1..3`` and
      ``F_C4`` (training only), ``L_SS = focal + L1`` (:func:`semantic_supervision_loss`),
      ``L_MSS = sum_i lambda_i L_SS(i)`` (:func:`mss_loss`);
    - the heat map ``M_p`` from the channel-wise aggregation of ``F'_C1, F'_C2, F'_C3, F_C4``
      (:class:`Aggregation`), ``L_pre = focal + L1`` (Eq. 7, :func:`prediction_loss`);
    - ``L_total = L_rec + L_pre + L_MSS`` (Eq. 8, :func:`total_loss`).

    Table V's ablations are config fields of the same code: ``hsg`` and ``mss`` (both True:
    POUTA; both False: POUTA-base, FCM only; one of them: POUTA-base+HSG / POUTA-base+MSS).
    ``disconnect=True`` is a test hook (not in the paper): the FCMs get zeros instead of
    ``F_Ei`` / ``F_Di``, so the discriminator cannot see the reconstructive representations.

``"vanilla"`` (:class:`Vanilla`, Fig. 4a; Table V "Vanilla")
    The same reconstructive network plus a U-Net-like discriminative network on
    ``concat(I_in, I_r)`` (:class:`UNetDiscriminator`): **Vanilla is the DRAEM-style method**
    (Zavrtanik et al., ICCV 2021) that POUTA compares against and that ADL uses as its baseline.
    Loss ``L_rec + L_pre`` (Eq. 1 + Eq. 7); ``pre_l1=False`` drops the L1 term of ``L_pre``,
    giving DRAEM's focal-only segmentation loss.

Inference (both): ``M_p`` is the anomaly channel of the 2-channel softmax at the input
resolution; the pixel map is ``M_p`` at the mask resolution (the same size here; bilinear
otherwise, no smoothing); the image score is the maximum of ``M_p`` average-pooled with a 21x21
window, stride 1, zero padding 10 (same size; the padded zeros count, as PyTorch's
``avg_pool2d`` default) (:func:`image_score`; Sec. III-B, "inspired by the vanilla method").

Architecture (the paper gives only totals: POUTA 15.02 M parameters, 35.37 GFLOPs, Vanilla
28.68 M, 39.38 GFLOPs at 224 px; every choice below is the project's)
    - Conv block: two (3x3 conv, BatchNorm, ReLU). Encoder level ``i`` = max-pool 2 (not for
      ``i = 1``) + block, widths ``widths = (c1, c2, c3, c4)``: ``F_E1`` at the input
      resolution ``H``, ``F_E4`` at ``H/8``. Mapping layer ``F_M`` = max-pool 2 + block
      (``mapping_width``) at ``H/16``, the bottleneck that maps to the "normal latent space".
      Decoder level ``i`` = bilinear up-sampling x2 + block to ``c_i``, so ``F_Di`` has the
      resolution and width of ``F_Ei``; no skip connections (an autoencoder: skips would let
      the anomaly through). ``I_r`` = 1x1 conv of ``F_D1`` to 3 channels, no activation.
    - FCM ``i``: 1x1 conv + BN + ReLU on ``F_Ei`` and on ``F_Di`` (``c_i -> k_i``), concatenated,
      1x1 conv + BN + ReLU (``2 k_i -> k_i``), ``fcm_widths = (k1..k4)``. (The paper's text
      says "F_Ei and F_Ci go through their 1x1 convolutional layers"; ``F_Di`` is meant.)
    - HSG ``i`` (i = 1, 2, 3): bilinear up-sampling of the deeper map to ``F_Ci``'s size, 3x3
      conv + BN + ReLU (``k_(i+1) -> k_i``): the shared part of ``f_sp`` and ``f_cn``; then a
      1x1 conv to 1 channel (``W_sp``) and a global average pool + 1x1 conv to ``k_i``
      channels (``W_cn``), each through a sigmoid.
    - MSS head ``i``: 1x1 conv to 2 channels, bilinear up-sampling to ``H``, softmax. (The paper
      up-samples first; a 1x1 conv and bilinear interpolation commute exactly, since the
      interpolation weights sum to one, so convolving first is the same map at a fraction of
      the cost.)
    - Aggregation: ``F'_C2, F'_C3, F_C4`` bilinearly up-sampled to ``F'_C1``'s size (``H``),
      concatenated with ``F'_C1``, 1x1 conv + BN + ReLU to ``aggregate_width``, 3x3 conv + BN +
      ReLU, 1x1 conv to 2 channels, softmax.
    - Vanilla's U-Net: 6 input channels (``I_in``, ``I_r``), encoder blocks ``disc_widths``
      with max-pools, bottleneck block ``disc_bottleneck`` at ``H/16``, decoder with bilinear
      up-sampling, skip concatenation and blocks back to ``disc_widths[0]``, 1x1 conv to 2
      channels, softmax.
    - Initialisation: PyTorch's defaults, under ``torch.manual_seed(seed)`` in a forked RNG.

    Parameter counts (:func:`parameter_count`) at the ``paper`` profile (widths
    ``(56, 112, 224, 448)``, mapping 448, FCM ``(56, 112, 224, 448)``, aggregation 64; Vanilla's
    U-Net ``(56, 112, 224, 448)``, bottleneck 512). The counts do not depend on the image size.

    ====================== =========== ============== ==========================
    model                  parameters  paper (Tab. VI) relative difference
    ====================== =========== ============== ==========================
    POUTA                  15,014,912  15.02 M         -0.03 %
    POUTA-base+HSG         15,013,224  --
    POUTA-base+MSS         13,762,077  --
    POUTA-base             13,760,389  --
    Vanilla                28,666,005  28.68 M         -0.05 %
    (reconstructive net)   12,598,099  --
    ====================== =========== ============== ==========================

Training (Sec. III-A, IV-A)
    - Synthesis: :class:`adlib.synthesis.draem.DraemSynthesizer` with its ``POUTA`` preset
      (MemSeg-style: Perlin region, ``I_aug`` = mix of a translated / rotated / identical copy of
      the image and a texture, transparency in ``[0.15, 1]``); textures from
      :func:`adlib.data.textures.texture_source` (DTD, else the built-in stand-in, recorded in
      :meth:`info`). Each training image becomes a synthetic anomaly with probability
      ``anomaly_prob`` (0.5, DRAEM's rule; the paper does not say), else stays normal with an
      empty mask. No foreground masks (the paper uses none).
    - Images are resized to ``image_size`` (224) and kept in [0, 1] (no ImageNet normalisation:
      there is no pretrained backbone, and SSIM is computed with ``data_range = 1``).
    - One Adam optimiser over both networks (lr 2e-4), end to end (the discriminative losses
      also train the encoder and decoder: that is how MSS makes the representations separable);
      the learning rate is multiplied by ``lr_gamma`` (0.2) at each of ``lr_milestones``
      (epochs 480 and 540 of 600); batch 8.
    - Losses: focal loss of :func:`adlib.losses.focal_loss` (``gamma = 2``, ``alpha = 1``,
      label smoothing 1e-5) on the anomaly-channel probability; L1 = mean absolute difference
      between that probability and the mask; SSIM term = ``1 - SSIM`` of ``pytorch-msssim``
      (Gaussian window 11, sigma 1.5, ``K = (0.01, 0.03)``).
    - MSS weights (``mss_weights_reading``, :data:`MSS_WEIGHT_READINGS`): the paper prints five
      values for the four ``lambda_1..lambda_4`` of Eq. 6, "0, 4, 0.3, 0.2 and 0.1 respectively".
      No code of POUTA was released, so nothing settles which weights produced its numbers. Two
      readings are named:

      ================ ======================== ================================================
      reading          ``lambda_1..lambda_4``   the printed text read as
      ================ ======================== ================================================
      ``"decimal"``    ``(0.4, 0.3, 0.2, 0.1)`` "0.4" with its decimal point lost (typed "0,4"):
                                                **paper-profile default**
      ``"as-printed"`` ``(4, 0.3, 0.2, 0.1)``   the leading "0" a stray, the "4" kept: the
                                                smoke profile's (this code's former default)
      ================ ======================== ================================================

      Why ``"decimal"`` for the paper profile: one lost decimal point explains both oddities of the
      printed list at once (five values for four weights, and one weight ten times the others),
      while ``"as-printed"`` needs a stray "0" *and* a weight of 4; it gives the regular
      progression 0.4, 0.3, 0.2, 0.1 (largest on the finest head, decreasing with depth); and with
      ``L_total = L_rec + L_pre + L_MSS`` (Eq. 8, unit weights on the main terms) a side head of
      weight 4 would weigh four times the prediction loss of the heat map that is evaluated, which
      auxiliary deep supervision is not usually given. The smoke profile keeps ``"as-printed"``
      only because its schedule was calibrated with it (its numbers stay as committed), not as a
      claim about the paper. The reading ``(0, 4, 0.3, 0.2)`` (the first four printed values) would
      switch the finest head off; pass ``mss_weights`` to try it or any other set (the reading is
      then recorded as ``"custom"``, or as the reading whose weights they are).
    - Epochs: each epoch draws a seeded permutation of the training images, in batches of
      ``batch_size`` (the last may be shorter). The last epoch's model is kept (no selection on
      the test set).
    - Randomness: two CPU ``torch.Generator`` streams seeded from ``seed`` (epoch permutation,
      synthesis). Checkpoints (``last.pt``, after every epoch) hold both states and the
      optimiser's, so a resumed fit continues exactly.

Smoke profile (64 px, widths (8, 16, 32, 48), 40 epochs at lr 2e-3, x0.2 at 32 and 36)
    Two rules make so short a schedule train, both about the schedule, not chosen on any category:

    - ``anomaly_prob = 1``: every training image becomes a synthetic anomaly (DRAEM's 0.5 leaves
      about 2 % anomalous pixels at 64 px, and after 160 steps the heat map had hardly left the
      constant solution: an image score that float round-off could reorder, or even invert);
    - ``bn_recalibration = 16``: BatchNorm statistics of the final weights, recomputed on 16
      training batches after the last epoch (:meth:`_ReconstructionMethod.recalibrate_batchnorm`),
      because the running averages lag weights that moved a lot at lr 2e-3.

    The measurements behind the budget and the rules (cost per epoch, AUROC at 8 and 40 epochs,
    the machine-dependent Vanilla scores they fixed, 28 against 40 epochs) are in
    ``benchmarks/RESULTS.md``, "Smoke-profile calibration: POUTA and Vanilla";
    ``tests/test_smoke_bands_pouta_adl.py`` states the measured spread over seeds and numerics.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .. import losses, rehearsal
from ..data.base import ImageTransform
from .base import Prediction, recalibrate_batchnorm, register, resolve_device
from .core import DraemSynthesis, EpochMethod, MethodConfig, input_hw
from .scores import mean_pool_max_same

log = logging.getLogger(__name__)

#: Table VI of the paper: parameters at 224 px
PAPER_PARAMETERS = {"pouta": 15.02e6, "vanilla": 28.68e6}
#: POUTA Eq. 6's ``lambda_1..lambda_4`` under the two readings of the printed "0, 4, 0.3, 0.2 and 0.1"
#: (module docstring, "MSS weights"); ``"custom"`` names any other ``mss_weights``
MSS_WEIGHT_READINGS: dict[str, tuple[float, float, float, float]] = {
    "decimal": (0.4, 0.3, 0.2, 0.1),
    "as-printed": (4.0, 0.3, 0.2, 0.1),
}
#: the reading of a config that names neither a reading nor weights (the paper profile's)
DEFAULT_MSS_WEIGHTS_READING = "decimal"
#: (hsg, mss) -> the row of Table V
ABLATIONS = {
    (False, False): "POUTA-base",
    (True, False): "POUTA-base+HSG",
    (False, True): "POUTA-base+MSS",
    (True, True): "POUTA",
}


# ----------------------------------------------------------------------------------------------
# The equations


def reconstruction_loss(reconstruction: torch.Tensor, original: torch.Tensor, ssim_window: int = 11) -> torch.Tensor:
    """``L_rec = L_MSE(I_r, I_ori) + L_SSIM(I_r, I_ori)`` (POUTA, Eq. 1).

    ``L_MSE``: mean squared error; ``L_SSIM = 1 - SSIM`` with ``pytorch_msssim.ssim``
    (``data_range = 1`` for images in [0, 1], Gaussian window ``ssim_window`` with sigma 1.5,
    averaged over the batch). Both ``B x 3 x H x W``.
    """
    from pytorch_msssim import ssim

    mse = F.mse_loss(reconstruction, original)
    s = ssim(reconstruction, original, data_range=1.0, size_average=True, win_size=ssim_window)
    return mse + (1.0 - s)


def spatial_weight_map(guide: torch.Tensor, to_spatial: nn.Module) -> torch.Tensor:
    """``W_sp(i) = f_sp(i)(F'_C(i+1))`` (POUTA, Eq. 2; ``F_C4`` for ``i = 3``).

    ``guide`` is the shared part of ``f_sp`` and ``f_cn``: the deeper map up-sampled to the
    current resolution and passed through the 3x3 convolution (``B x k x h x w``);
    ``to_spatial`` is the 1x1 convolution to one channel. Returns ``sigmoid(to_spatial(guide))``,
    ``B x 1 x h x w`` in (0, 1).
    """
    return torch.sigmoid(to_spatial(guide))


def channel_weight_map(guide: torch.Tensor, to_channel: nn.Module) -> torch.Tensor:
    """``W_cn(i) = f_cn(i)(F'_C(i+1))`` (POUTA, Eq. 3; ``F_C4`` for ``i = 3``).

    ``guide`` as in :func:`spatial_weight_map`; global average pooling to ``1 x 1``, then the
    1x1 convolution ``to_channel`` to the current width ``k``, then a sigmoid:
    ``B x k x 1 x 1`` in (0, 1).
    """
    return torch.sigmoid(to_channel(guide.mean(dim=(2, 3), keepdim=True)))


def hsg_refine(contrast: torch.Tensor, w_sp: torch.Tensor, w_cn: torch.Tensor) -> torch.Tensor:
    """``F'_Ci = W_sp(i) (.) F_Ci (.) W_cn(i)`` (POUTA, Eq. 4): element-wise products,
    ``W_sp`` (``B x 1 x h x w``) broadcast over channels, ``W_cn`` (``B x k x 1 x 1``) over
    positions."""
    return w_sp * contrast * w_cn


def _focal_plus_l1(p: torch.Tensor, mask: torch.Tensor, focal: dict[str, float], l1: bool = True) -> torch.Tensor:
    m = mask.to(p.dtype).reshape(p.shape)
    out = losses.focal_loss(p, m, **focal)
    if l1:
        out = out + (p - m).abs().mean()
    return out


def semantic_supervision_loss(
    p: torch.Tensor, mask: torch.Tensor, gamma: float = 2.0, alpha: float = 1.0, smoothing: float = 1e-5
) -> torch.Tensor:
    """``L_SS(i) = L_focal(M_p(i), M) + L_1(M_p(i), M)`` (POUTA, Eq. 5).

    ``p``: the anomaly-channel probability of MSS head ``i`` (``B x H x W``); ``mask``: the
    binary ground truth ``M`` (same number of elements). Focal loss
    :func:`adlib.losses.focal_loss` (``gamma``, ``alpha``, ``smoothing``), ``L_1`` = mean
    ``|p - M|``; both averaged over pixels.
    """
    return _focal_plus_l1(p, mask, dict(gamma=gamma, alpha=alpha, smoothing=smoothing))


def mss_loss(ss_losses: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """``L_MSS = sum_i lambda_i L_SS(i)`` (POUTA, Eq. 6), ``i = 1..4`` (finest to coarsest).

    ``ss_losses``: the four ``L_SS(i)`` (:func:`semantic_supervision_loss`); ``weights``: the
    ``lambda_i`` (:data:`MSS_WEIGHT_READINGS`: ``(0.4, 0.3, 0.2, 0.1)`` or ``(4, 0.3, 0.2, 0.1)``,
    see "MSS weights" in the module docstring)."""
    if len(ss_losses) != len(weights):
        raise ValueError(f"{len(ss_losses)} L_SS terms for {len(weights)} weights")
    total = ss_losses[0] * float(weights[0])
    for loss, w in zip(ss_losses[1:], weights[1:]):
        total = total + loss * float(w)
    return total


def prediction_loss(
    p: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 2.0,
    alpha: float = 1.0,
    smoothing: float = 1e-5,
    l1: bool = True,
) -> torch.Tensor:
    """``L_pre = L_focal(M_p, M) + L_1(M_p, M)`` (POUTA, Eq. 7) on the final heat map ``M_p``.

    Same terms as :func:`semantic_supervision_loss`. ``l1=False`` keeps the focal term only
    (DRAEM's segmentation loss, for the Vanilla baseline with ``pre_l1=False``)."""
    return _focal_plus_l1(p, mask, dict(gamma=gamma, alpha=alpha, smoothing=smoothing), l1=l1)


def total_loss(l_rec: torch.Tensor, l_pre: torch.Tensor, l_mss: torch.Tensor | float = 0.0) -> torch.Tensor:
    """``L_total = L_rec + L_pre + L_MSS`` (POUTA, Eq. 8); ``L_MSS = 0`` without MSS (and for
    Vanilla)."""
    return l_rec + l_pre + l_mss


def image_score(heat: torch.Tensor, pool: int = 21) -> torch.Tensor:
    """Image-level score ``S``: the maximum of the ``pool x pool`` average-pooled heat map
    (stride 1, zero padding ``pool // 2``, the padded zeros counted: same size for odd ``pool``)
    (POUTA Sec. III-B, after the vanilla method), :func:`adlib.models.scores.mean_pool_max_same`.
    ``heat``: ``B x H x W`` -> ``B``."""
    return mean_pool_max_same(heat, pool)


# ----------------------------------------------------------------------------------------------
# Networks


def _conv_bn_relu(cin: int, cout: int, k: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class ConvBlock(nn.Sequential):
    """Two (3x3 conv without bias, BatchNorm, ReLU)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(*_conv_bn_relu(cin, cout), *_conv_bn_relu(cout, cout))


def _up(x: torch.Tensor, size) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class ReconstructiveNetwork(nn.Module):
    """Encoder ``F_E1..F_E4``, mapping layer ``F_M``, decoder ``F_D4..F_D1``, reconstruction ``I_r``
    (POUTA Sec. III-A). ``forward(x) -> (I_r, [F_E1..F_E4], [F_D1..F_D4])``; ``F_Di`` has the
    shape of ``F_Ei``; input sides must be multiples of 16."""

    def __init__(self, widths: Sequence[int], mapping_width: int, in_channels: int = 3) -> None:
        super().__init__()
        c = list(widths)
        self.encoder = nn.ModuleList(ConvBlock(cin, cout) for cin, cout in zip([in_channels] + c[:-1], c))
        self.mapping = ConvBlock(c[-1], mapping_width)
        deeper = [mapping_width] + c[:0:-1]  # inputs of D4, D3, D2, D1
        self.decoder = nn.ModuleList(ConvBlock(cin, cout) for cin, cout in zip(deeper, c[::-1]))
        self.out = nn.Conv2d(c[0], in_channels, 1)

    def forward(self, x: torch.Tensor):
        enc = []
        h = x
        for i, block in enumerate(self.encoder):
            h = block(F.max_pool2d(h, 2) if i else h)
            enc.append(h)
        h = self.mapping(F.max_pool2d(h, 2))
        dec = []
        for block, skip_shape in zip(self.decoder, [e.shape[-2:] for e in enc[::-1]]):
            h = block(_up(h, skip_shape))
            dec.append(h)
        return self.out(h), enc, dec[::-1]


class FeatureContrast(nn.Module):
    """FCM (POUTA Sec. III-B): ``F_Ci = g(cat(f_E(F_Ei), f_D(F_Di)))``, each of ``f_E``, ``f_D``,
    ``g`` a 1x1 conv + BN + ReLU (``c -> k``, ``c -> k``, ``2k -> k``)."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.enc = nn.Sequential(*_conv_bn_relu(channels, width, 1))
        self.dec = nn.Sequential(*_conv_bn_relu(channels, width, 1))
        self.fuse = nn.Sequential(*_conv_bn_relu(2 * width, width, 1))

    def forward(self, f_e: torch.Tensor, f_d: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.enc(f_e), self.dec(f_d)], dim=1))


class HighLevelGuidance(nn.Module):
    """HSG (POUTA Sec. III-B, Eq. 2-4): refine ``F_Ci`` with the deeper map.

    ``guide`` (bilinear up-sampling + 3x3 conv + BN + ReLU, ``k_deep -> k``) is shared by
    ``f_sp`` and ``f_cn``; ``to_spatial`` (1x1, ``k -> 1``) and ``to_channel`` (1x1, ``k -> k``)
    end them. ``forward(F_Ci, deeper) -> (F'_Ci, W_sp, W_cn)``."""

    def __init__(self, deep_width: int, width: int) -> None:
        super().__init__()
        self.guide = nn.Sequential(*_conv_bn_relu(deep_width, width, 3))
        self.to_spatial = nn.Conv2d(width, 1, 1)
        self.to_channel = nn.Conv2d(width, width, 1)

    def forward(self, contrast: torch.Tensor, deeper: torch.Tensor):
        g = self.guide(_up(deeper, contrast.shape[-2:]))
        w_sp = spatial_weight_map(g, self.to_spatial)
        w_cn = channel_weight_map(g, self.to_channel)
        return hsg_refine(contrast, w_sp, w_cn), w_sp, w_cn


class SideHead(nn.Module):
    """MSS predictive head: 1x1 conv to 2 channels, bilinear up-sampling to ``size``, softmax;
    returns the anomaly-channel probability ``B x H x W`` (see the module docstring on the order)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, 2, 1)

    def forward(self, x: torch.Tensor, size) -> torch.Tensor:
        return torch.softmax(_up(self.conv(x), size), dim=1)[:, 1]


class Aggregation(nn.Module):
    """The heat map ``M_p`` from the channel-wise aggregation of ``F'_C1, F'_C2, F'_C3, F_C4``:
    up-sample to the first map's size, concatenate, 1x1 conv + BN + ReLU, 3x3 conv + BN + ReLU,
    1x1 conv to 2 channels, softmax; returns the anomaly channel ``B x H x W``.

    The 1x1 conv of the concatenation is computed as the sum of one 1x1 conv per level, each
    applied *before* its bilinear up-sampling (``reduce``): the same map (a 1x1 conv of a
    concatenation is the sum of the convs of its parts, and commutes with bilinear
    interpolation), without up-sampling the wide deep maps to full resolution."""

    def __init__(self, widths: Sequence[int], width: int) -> None:
        super().__init__()
        self.reduce = nn.ModuleList(nn.Conv2d(k, width, 1, bias=False) for k in widths)
        self.body = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(inplace=True), *_conv_bn_relu(width, width, 3))
        self.head = nn.Conv2d(width, 2, 1)

    def forward(self, maps: Sequence[torch.Tensor], size) -> torch.Tensor:
        hw = maps[0].shape[-2:]
        x = self.reduce[0](maps[0])
        for conv, m in zip(self.reduce[1:], maps[1:]):
            x = x + _up(conv(m), hw)
        return torch.softmax(_up(self.head(self.body(x)), size), dim=1)[:, 1]


class CoarseToFineDiscriminator(nn.Module):
    """POUTA's discriminative network (Sec. III-B): FCMs, optional HSGs and MSS heads, aggregation."""

    def __init__(
        self, channels: Sequence[int], widths: Sequence[int], aggregate_width: int, hsg: bool = True, mss: bool = True
    ) -> None:
        super().__init__()
        self.fcm = nn.ModuleList(FeatureContrast(c, k) for c, k in zip(channels, widths))
        # HSG i (i = 1, 2, 3) refines F_Ci with the (refined) map of level i + 1
        self.hsg = nn.ModuleList(HighLevelGuidance(widths[i + 1], widths[i]) for i in range(3)) if hsg else None
        self.side = nn.ModuleList(SideHead(k) for k in widths) if mss else None
        self.aggregate = Aggregation(widths, aggregate_width)

    def forward(
        self, enc: Sequence[torch.Tensor], dec: Sequence[torch.Tensor], size, side: bool = True
    ) -> dict[str, Any]:
        contrast = [fcm(e, d) for fcm, e, d in zip(self.fcm, enc, dec)]
        refined: list[torch.Tensor] = [None, None, None, contrast[3]]  # type: ignore[list-item]
        w_sp, w_cn = [None] * 3, [None] * 3
        for i in (2, 1, 0):
            if self.hsg is not None:
                refined[i], w_sp[i], w_cn[i] = self.hsg[i](contrast[i], refined[i + 1])
            else:
                refined[i] = contrast[i]
        out: dict[str, Any] = {"contrast": contrast, "refined": refined, "w_sp": w_sp, "w_cn": w_cn}
        out["heat"] = self.aggregate(refined, size)
        out["side"] = [h(r, size) for h, r in zip(self.side, refined)] if (self.side is not None and side) else None
        return out


class UNetDiscriminator(nn.Module):
    """Vanilla's (DRAEM-style) U-Net-like discriminative network on ``concat(I_in, I_r)`` (Fig. 4a):
    encoder blocks with max-pools, a bottleneck at 1/16, decoder with skip concatenation, a
    2-channel softmax; returns the anomaly channel ``B x H x W``."""

    def __init__(self, widths: Sequence[int], bottleneck: int, in_channels: int = 6) -> None:
        super().__init__()
        c = list(widths)
        self.encoder = nn.ModuleList(ConvBlock(cin, cout) for cin, cout in zip([in_channels] + c[:-1], c))
        self.bottleneck = ConvBlock(c[-1], bottleneck)
        deeper = [bottleneck] + c[:0:-1]
        self.decoder = nn.ModuleList(ConvBlock(d + s, s) for d, s in zip(deeper, c[::-1]))
        self.head = nn.Conv2d(c[0], 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for i, block in enumerate(self.encoder):
            h = block(F.max_pool2d(h, 2) if i else h)
            skips.append(h)
        h = self.bottleneck(F.max_pool2d(h, 2))
        for block, skip in zip(self.decoder, skips[::-1]):
            h = block(torch.cat([_up(h, skip.shape[-2:]), skip], dim=1))
        return torch.softmax(self.head(h), dim=1)[:, 1]


class POUTANet(nn.Module):
    """Reconstructive network + coarse-to-fine discriminative network (Fig. 4b).

    ``forward(x)`` -> dict with ``reconstruction`` (``I_r``), ``heat`` (``M_p``, ``B x H x W``),
    ``side`` (the four ``M_p(i)``, or None), and the intermediate maps ``enc``, ``dec``,
    ``contrast`` (``F_Ci``), ``refined`` (``F'_Ci``), ``w_sp``, ``w_cn``.
    ``disconnect``: zeros replace ``F_Ei`` / ``F_Di`` at the discriminator's input (test hook)."""

    def __init__(
        self, widths, mapping_width, fcm_widths, aggregate_width, hsg=True, mss=True, disconnect=False
    ) -> None:
        super().__init__()
        self.reconstructive = ReconstructiveNetwork(widths, mapping_width)
        self.discriminative = CoarseToFineDiscriminator(widths, fcm_widths, aggregate_width, hsg=hsg, mss=mss)
        self.disconnect = bool(disconnect)

    def forward(self, x: torch.Tensor, side: bool = True) -> dict[str, Any]:
        rec, enc, dec = self.reconstructive(x)
        e, d = enc, dec
        if self.disconnect:
            e, d = [torch.zeros_like(t) for t in enc], [torch.zeros_like(t) for t in dec]
        out = self.discriminative(e, d, x.shape[-2:], side=side)
        out.update(reconstruction=rec, enc=enc, dec=dec)
        return out


class VanillaNet(nn.Module):
    """Reconstructive network + U-Net discriminator on ``concat(I_in, I_r)`` (Fig. 4a, DRAEM-style).
    ``forward(x)`` -> dict with ``reconstruction``, ``heat``, ``side = None``."""

    def __init__(self, widths, mapping_width, disc_widths, disc_bottleneck, disconnect: bool = False) -> None:
        super().__init__()
        self.reconstructive = ReconstructiveNetwork(widths, mapping_width)
        self.discriminative = UNetDiscriminator(disc_widths, disc_bottleneck)
        self.disconnect = bool(disconnect)

    def forward(self, x: torch.Tensor, side: bool = True) -> dict[str, Any]:
        rec, enc, dec = self.reconstructive(x)
        pair = torch.cat([x, rec], dim=1)
        if self.disconnect:
            pair = torch.zeros_like(pair)
        heat = self.discriminative(pair)
        return {"reconstruction": rec, "heat": heat, "side": None, "enc": enc, "dec": dec}


def parameter_count(model) -> int:
    """Number of parameters of a network (``nn.Module``) or of a method's network (``.net``)."""
    module = model.net if hasattr(model, "net") else model
    return int(sum(p.numel() for p in module.parameters()))


def parameter_counts(model) -> dict[str, int]:
    """``total``, ``reconstructive`` and ``discriminative`` parameter counts of a method's network."""
    net = model.net if hasattr(model, "net") else model
    return {
        "total": parameter_count(net),
        "reconstructive": parameter_count(net.reconstructive),
        "discriminative": parameter_count(net.discriminative),
    }


class HeatExport(nn.Module):
    """POUTA / Vanilla inference as one module, for export (:mod:`adlib.export`): images in [0, 1]
    ``B x 3 x H x W`` -> image score ``B`` (:func:`image_score` of the heat map, window ``pool``) and
    the heat map at ``size`` (bilinear, as :meth:`_ReconstructionMethod.predict`)."""

    def __init__(self, net: nn.Module, size: tuple[int, int], pool: int) -> None:
        super().__init__()
        self.net = net
        self.size = (int(size[0]), int(size[1]))
        self.pool = int(pool)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        heat = self.net(images, side=False)["heat"]
        return image_score(heat, self.pool), _up(heat[:, None], self.size)[:, 0].float()


# ----------------------------------------------------------------------------------------------
# Configurations


@dataclass
class _SharedConfig(MethodConfig):
    # input (Sec. IV-A: resized to 224)
    image_size: int = 224
    # reconstructive network (project's widths, see the module docstring)
    widths: tuple[int, ...] = (56, 112, 224, 448)
    mapping_width: int = 448
    # synthesis (Sec. III-A, MemSeg-style preset)
    synthesis: str = "pouta"
    anomaly_prob: float = 0.5
    # losses
    ssim_window: int = 11
    focal_gamma: float = 2.0
    focal_alpha: float = 1.0
    focal_smoothing: float = 1e-5
    # optimisation (Sec. IV-A)
    lr: float = 2e-4
    lr_milestones: tuple[int, ...] = (480, 540)
    lr_gamma: float = 0.2
    epochs: int = 600
    batch_size: int = 8
    seed: int = 0
    # BatchNorm statistics after the last epoch (the project's; 0 = the running averages of training)
    bn_recalibration: int = 0
    # inference
    score_pool: int = 21
    data_root: str | None = None

    REHEARSAL: ClassVar[dict[str, int]] = {"image_size": rehearsal.SIDE, "epochs": rehearsal.EPOCHS}

    def rehearsal_changes(self) -> dict[str, Any]:
        """As :meth:`MethodConfig.rehearsal_changes`, the milestones scaled with the epochs."""
        out = super().rehearsal_changes()
        if "epochs" in out:
            out["lr_milestones"] = rehearsal.scaled_milestones(self.lr_milestones, self.epochs, out["epochs"])
        return out

    def _validate(self) -> None:
        super()._validate()
        self.widths = tuple(int(w) for w in self.widths)
        self.lr_milestones = tuple(int(m) for m in self.lr_milestones)
        if len(self.widths) != 4 or min(self.widths) < 1 or self.mapping_width < 1:
            raise ValueError(
                f"widths must be 4 positive ints (F_E1..F_E4) and mapping_width >= 1, got {self.widths}, {self.mapping_width}"
            )
        if self.image_size < 16 or self.image_size % 16:
            raise ValueError(
                f"image_size must be a multiple of 16 (four poolings and the mapping layer), got {self.image_size}"
            )
        if self.epochs < 0 or self.batch_size < 1:
            raise ValueError(f"need epochs >= 0 and batch_size >= 1, got {self.epochs}, {self.batch_size}")
        if not 0.0 <= self.anomaly_prob <= 1.0:
            raise ValueError(f"anomaly_prob must lie in [0, 1], got {self.anomaly_prob}")
        if self.bn_recalibration < 0:
            raise ValueError(f"bn_recalibration must be >= 0 (number of batches), got {self.bn_recalibration}")
        if self.score_pool < 1 or self.score_pool % 2 == 0:
            raise ValueError(f"score_pool must be an odd positive int (same-size pooling), got {self.score_pool}")
        from ..synthesis.draem import PRESETS

        if self.synthesis not in PRESETS:
            raise ValueError(f"synthesis must be one of {sorted(PRESETS)}, got {self.synthesis!r}")


#: Smoke: 64 px, narrow networks, a short schedule at a higher learning rate (CPU minutes budget).
#: Two settings follow from the rule of "Smoke profile" in the module docstring (a short schedule
#: must give the heat map enough anomaly supervision per step, and inference must use normalisation
#: statistics of the final weights), not from any category's result: every training image is made
#: a synthetic anomaly (``anomaly_prob=1``), and BatchNorm statistics are recomputed on 16 training
#: batches after the last epoch (``bn_recalibration=16``).
_SMOKE = dict(
    image_size=64,
    widths=(8, 16, 32, 48),
    mapping_width=48,
    epochs=40,
    lr=2e-3,
    lr_milestones=(32, 36),
    score_pool=7,
    anomaly_prob=1.0,
    bn_recalibration=16,
)


@dataclass
class POUTAConfig(_SharedConfig):
    """POUTA settings. Defaults (= ``paper`` profile): Sec. IV-A (224 px, 600 epochs, batch 8, Adam
    2e-4 x0.2 at 480 and 540) with the project's widths of the module docstring. ``hsg`` /
    ``mss`` select Table V's ablations; ``mss_weights`` are ``lambda_1..lambda_4`` of Eq. 6, named
    by ``mss_weights_reading`` (:data:`MSS_WEIGHT_READINGS`: ``"decimal"`` (0.4, 0.3, 0.2, 0.1),
    the paper profile's, or ``"as-printed"`` (4, 0.3, 0.2, 0.1), the smoke profile's; why in the
    module docstring, "MSS weights"). Give either: a reading alone sets the weights; weights alone
    are named after the reading whose weights they are, else ``"custom"``; both must agree. After
    validation both fields are set (the run key and ``info()`` record the name and the numbers).
    ``disconnect`` is a test hook (zeros instead of the reconstructive representations).
    ``smoke``: 64 px, widths (8, 16, 32, 48), 40 epochs at lr 2e-3 (x0.2 at 32 and 36), 7x7
    score pooling (21 px at 224 scaled to 64 px), every training image a synthetic anomaly,
    BatchNorm statistics recalibrated on 16 batches (see "Smoke profile" in the module docstring),
    MSS weights ``"as-printed"`` (as calibrated).
    ``bn_recalibration``: number of training batches whose BatchNorm statistics replace the
    running averages after the last epoch (0, the paper profile: the running averages)."""

    fcm_widths: tuple[int, ...] = (56, 112, 224, 448)
    aggregate_width: int = 64
    hsg: bool = True
    mss: bool = True
    #: ``lambda_1..lambda_4``; None: those of ``mss_weights_reading``
    mss_weights: tuple[float, ...] | None = None
    #: ``"decimal"``, ``"as-printed"`` or ``"custom"``; None: named after ``mss_weights`` (both None:
    #: :data:`DEFAULT_MSS_WEIGHTS_READING`)
    mss_weights_reading: str | None = None
    disconnect: bool = False

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        "smoke": dict(_SMOKE, fcm_widths=(8, 16, 32, 48), aggregate_width=16, mss_weights_reading="as-printed"),
    }

    @classmethod
    def for_profile(cls, profile: str = "smoke", **overrides: Any):
        """As :meth:`MethodConfig.for_profile`; ``mss_weights`` given without a reading replace the
        profile's reading too (they are then named after themselves)."""
        if overrides.get("mss_weights") is not None and "mss_weights_reading" not in overrides:
            overrides["mss_weights_reading"] = None
        return super().for_profile(profile, **overrides)

    def _validate(self) -> None:
        super()._validate()
        self.fcm_widths = tuple(int(w) for w in self.fcm_widths)
        if len(self.fcm_widths) != 4 or min(self.fcm_widths) < 1 or self.aggregate_width < 1:
            raise ValueError(
                f"fcm_widths must be 4 positive ints and aggregate_width >= 1, got {self.fcm_widths}, {self.aggregate_width}"
            )
        self._resolve_mss_weights()

    def _resolve_mss_weights(self) -> None:
        """Set both ``mss_weights`` and ``mss_weights_reading`` (see the class docstring)."""
        reading = self.mss_weights_reading
        if reading is not None and reading not in (*MSS_WEIGHT_READINGS, "custom"):
            raise ValueError(
                f"mss_weights_reading must be one of {[*MSS_WEIGHT_READINGS, 'custom']} (or None), got {reading!r}"
            )
        if self.mss_weights is None:
            reading = reading or DEFAULT_MSS_WEIGHTS_READING
            if reading == "custom":
                raise ValueError("mss_weights_reading='custom' needs mss_weights (lambda_1..lambda_4)")
            self.mss_weights, self.mss_weights_reading = MSS_WEIGHT_READINGS[reading], reading
            return
        weights = tuple(float(w) for w in self.mss_weights)
        if len(weights) != 4:
            raise ValueError(f"mss_weights must hold lambda_1..lambda_4, got {weights}")
        named = next((k for k, v in MSS_WEIGHT_READINGS.items() if v == weights), "custom")
        if reading not in (None, "custom", named):
            raise ValueError(
                f"mss_weights {weights} are not the {reading!r} reading {MSS_WEIGHT_READINGS[reading]}; "
                "give one of mss_weights and mss_weights_reading, or both alike"
            )
        self.mss_weights, self.mss_weights_reading = weights, named


@dataclass
class VanillaConfig(_SharedConfig):
    """Vanilla (DRAEM-style) settings: POUTA's reconstructive network and schedule, a U-Net
    discriminator (``disc_widths``, ``disc_bottleneck``) on ``concat(I_in, I_r)``; ``pre_l1``
    keeps Eq. 7's L1 term (False: DRAEM's focal-only loss); ``disconnect`` is a test hook
    (zeros instead of ``concat(I_in, I_r)`` at the discriminator's input: one heat map for every
    image). ``smoke`` as POUTA's, U-Net (8, 16, 32, 48), bottleneck 48."""

    disc_widths: tuple[int, ...] = (56, 112, 224, 448)
    disc_bottleneck: int = 512
    pre_l1: bool = True
    disconnect: bool = False

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        "smoke": dict(_SMOKE, disc_widths=(8, 16, 32, 48), disc_bottleneck=48),
    }

    def _validate(self) -> None:
        super()._validate()
        self.disc_widths = tuple(int(w) for w in self.disc_widths)
        if len(self.disc_widths) != 4 or min(self.disc_widths) < 1 or self.disc_bottleneck < 1:
            raise ValueError(
                f"disc_widths must be 4 positive ints and disc_bottleneck >= 1, got {self.disc_widths}, {self.disc_bottleneck}"
            )


def learning_rate(cfg: _SharedConfig, epoch: int) -> float:
    """The learning rate of (0-based) ``epoch``: ``lr * lr_gamma ** #{milestones <= epoch}``
    (step decay after epochs 480 and 540 in the paper)."""
    return float(cfg.lr * cfg.lr_gamma ** sum(int(epoch) >= m for m in cfg.lr_milestones))


# ----------------------------------------------------------------------------------------------
# The methods


class _ReconstructionMethod(DraemSynthesis, EpochMethod):
    """Synthetic anomalies -> reconstructive + discriminative network, trained end to end.

    The lifecycle (epoch loop, checkpoints, resume, save/load, provenance) is
    :class:`adlib.models.core.EpochMethod`'s; this class supplies the network and the hooks."""

    Config: ClassVar[type] = _SharedConfig
    STREAMS: ClassVar[tuple[str, ...]] = ("shuffle", "synthesis")

    def __init__(self, cfg: _SharedConfig | None = None) -> None:
        super().__init__(cfg)
        with self._seeded_init():
            self.net = self._build_net()
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.cfg.lr)
        self.texture_description: str | None = None
        self.texture_is_stand_in: bool | None = None
        self.synthesizer = None
        self.net.eval()

    def _build_net(self) -> nn.Module:
        raise NotImplementedError

    # -- basics --------------------------------------------------------------------------------
    @property
    def transform(self) -> ImageTransform:
        """Resize to ``image_size`` (square), values in [0, 1] (no normalisation)."""
        return ImageTransform(resize=self.cfg.image_size, crop=None, normalize=False)

    def forward(self, x: torch.Tensor, side: bool = True) -> dict[str, Any]:
        """The network's outputs for images ``x`` (``B x 3 x H x W`` in [0, 1])."""
        return self.net(x.to(self.device), side=side)

    # -- losses --------------------------------------------------------------------------------
    @property
    def _focal(self) -> dict[str, float]:
        c = self.cfg
        return dict(gamma=c.focal_gamma, alpha=c.focal_alpha, smoothing=c.focal_smoothing)

    def compute_losses(self, x_in: torch.Tensor, x_ori: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The losses of one batch: synthetic inputs ``x_in``, their originals ``x_ori``
        (``B x 3 x H x W``) and masks (``B x H x W``). Keys: ``loss`` (Eq. 8), ``rec`` (Eq. 1),
        ``pre`` (Eq. 7), ``mss`` (Eq. 6) and ``ss1..ss4`` (Eq. 5) where MSS is on."""
        raise NotImplementedError

    # -- data ----------------------------------------------------------------------------------
    def synthesize(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Synthetic training inputs for normal images (``B x 3 x H x W`` in [0, 1]): each becomes
        an anomaly with probability ``anomaly_prob`` (DraemSynthesizer, POUTA preset), else stays
        normal. Returns ``(inputs, masks B x H x W)``; draws from ``generator`` (default: the
        ``synthesis`` stream)."""
        self._prepare()
        g = self.generators["synthesis"] if generator is None else generator
        xs, ms = [], []
        for x in images:
            if float(torch.rand((), generator=g, dtype=torch.float64)) < self.cfg.anomaly_prob:
                x_in, m, _ = self.synthesizer(x, g)
            else:
                x_in, m = x, torch.zeros(x.shape[-2:], dtype=torch.float32)
            xs.append(x_in.to(images.dtype))
            ms.append(m)
        return torch.stack(xs), torch.stack(ms)

    # -- training ------------------------------------------------------------------------------
    def _run_epoch(self, images: torch.Tensor) -> dict[str, float]:
        lr = learning_rate(self.cfg, self.epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        perm = torch.randperm(len(images), generator=self.generators["shuffle"])
        batches = list(torch.split(perm, self.cfg.batch_size))
        sums: dict[str, float] = {}
        for idx in batches:
            x_ori = images[idx]
            x_in, mask = self.synthesize(x_ori)
            for k, v in self.train_step(x_in, x_ori, mask).items():
                sums[k] = sums.get(k, 0.0) + v
        self.net.eval()
        return {**{k: v / max(len(batches), 1) for k, v in sums.items()}, "lr": lr}

    def _epoch_end(self, images: torch.Tensor, stats: dict[str, Any]) -> None:
        if self.epoch == self.cfg.epochs and self.cfg.bn_recalibration:
            self.recalibrate_batchnorm(images)

    @torch.no_grad()
    def recalibrate_batchnorm(self, images: torch.Tensor, batches: int | None = None) -> None:
        """Replace every BatchNorm layer's running mean / variance by their plain average over
        ``batches`` (default ``cfg.bn_recalibration``) training batches of the final weights
        ("precise BN"): batches of ``batch_size`` images synthesised as in training
        (:meth:`synthesize`), indices and synthesis from a dedicated generator seeded from
        ``seed`` (the training streams, and so a resumed fit, are untouched), forwarded in train
        mode without gradients. The exponential running averages of training mix the statistics of
        weights that changed from step to step; after a short schedule at a high learning rate
        they lag the final weights and the eval-mode heat map differs from the trained one
        (normal training images scored 0.19 instead of 0.07 on synth/nut, smoke profile). Training
        never reads the running statistics, so this changes inference only."""
        n = self.cfg.bn_recalibration if batches is None else int(batches)
        if n <= 0:
            return
        self._prepare()
        g = torch.Generator().manual_seed(self.seed_for(len(self.STREAMS)))
        b = min(self.cfg.batch_size, len(images))

        def draws():
            for _ in range(n):
                idx = torch.randperm(len(images), generator=g)[:b]
                yield self.synthesize(images[idx], generator=g)[0]

        recalibrate_batchnorm(self.net, draws(), lambda x: self.net(x.to(self.device), side=False))

    # -- inference -----------------------------------------------------------------------------
    @torch.no_grad()
    def heat_map(self, images: torch.Tensor) -> torch.Tensor:
        """``M_p`` (``B x H x W``, anomaly probability) of images in [0, 1], model in eval mode."""
        self.net.eval()
        return self.forward(images, side=False)["heat"]

    @torch.no_grad()
    def predict(self, test_ds, *, device=None, batch_size: int | None = None, progress: bool = True) -> Prediction:
        """Image scores (max of the pooled heat map) and pixel maps (the heat map at the masks'
        resolution) of every test image."""
        if device is not None:
            self.to(resolve_device(device))
        self.net.eval()

        def score_batch(batch):
            heat = self.heat_map(batch.image)
            maps = _up(heat[:, None], tuple(batch.mask.shape[-2:]))[:, 0]
            return image_score(heat, self.cfg.score_pool), maps.float().cpu().numpy()

        return self._predict_batches(test_ds, score_batch, batch_size, progress)

    def export_module(self) -> HeatExport:
        """:meth:`predict`'s path as one module (:class:`HeatExport`) at the transform's size."""
        self.net.eval()
        return HeatExport(self.net, input_hw(self.transform), self.cfg.score_pool).eval()

    # -- persistence: DraemSynthesis._state / _load_state (trained modules, texture provenance)

    # -- provenance ----------------------------------------------------------------------------
    def _info(self) -> dict[str, Any]:
        return {
            "weights": "none (trained from scratch)",
            "parameters": parameter_counts(self),
            "paper_parameters": PAPER_PARAMETERS.get(self.name),
            "texture_source": self.texture_description,
            "texture_is_stand_in": self.texture_is_stand_in,
            "batchnorm_statistics": (
                f"recalibrated on {self.cfg.bn_recalibration} training batches after the last epoch"
                if self.cfg.bn_recalibration
                else "running averages of training"
            ),
        }


@register("pouta", display="POUTA")
class POUTA(_ReconstructionMethod):
    """POUTA: the discriminator reuses the reconstructive representations (see the module docstring)."""

    Config: ClassVar[type] = POUTAConfig

    def _build_net(self) -> nn.Module:
        c = self.cfg
        return POUTANet(
            c.widths, c.mapping_width, c.fcm_widths, c.aggregate_width, hsg=c.hsg, mss=c.mss, disconnect=c.disconnect
        )

    @property
    def ablation(self) -> str:
        """Table V's name of this configuration (``"POUTA"``, ``"POUTA-base"``, ...)."""
        return ABLATIONS[(bool(self.cfg.hsg), bool(self.cfg.mss))]

    def compute_losses(self, x_in: torch.Tensor, x_ori: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        out = self.net(x_in, side=cfg.mss)
        l_rec = reconstruction_loss(out["reconstruction"], x_ori, cfg.ssim_window)
        l_pre = prediction_loss(out["heat"], mask, **self._focal)
        res = {"rec": l_rec, "pre": l_pre}
        if cfg.mss:
            ss = [semantic_supervision_loss(p, mask, **self._focal) for p in out["side"]]
            l_mss = mss_loss(ss, cfg.mss_weights)
            res.update({f"ss{i + 1}": s for i, s in enumerate(ss)})
        else:
            l_mss = torch.zeros((), device=l_rec.device)
        res["mss"] = l_mss
        res["loss"] = total_loss(l_rec, l_pre, l_mss)
        return res

    def info(self) -> dict[str, Any]:
        out = super().info()
        c = self.cfg
        out.update(
            ablation=self.ablation,
            modules={"fcm": True, "hsg": bool(c.hsg), "mss": bool(c.mss)},
            mss_weights={"reading": c.mss_weights_reading, "lambda": list(c.mss_weights), "used": bool(c.mss)},
            disconnected=bool(c.disconnect),
        )
        return out


@register("vanilla", display="Vanilla")
class Vanilla(_ReconstructionMethod):
    """Vanilla = DRAEM-style: reconstructive network + U-Net discriminator on ``concat(I_in, I_r)``."""

    Config: ClassVar[type] = VanillaConfig

    def _build_net(self) -> nn.Module:
        c = self.cfg
        return VanillaNet(c.widths, c.mapping_width, c.disc_widths, c.disc_bottleneck, disconnect=c.disconnect)

    def compute_losses(self, x_in: torch.Tensor, x_ori: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        out = self.net(x_in)
        l_rec = reconstruction_loss(out["reconstruction"], x_ori, cfg.ssim_window)
        l_pre = prediction_loss(out["heat"], mask, l1=cfg.pre_l1, **self._focal)
        zero = torch.zeros((), device=l_rec.device)
        return {"rec": l_rec, "pre": l_pre, "mss": zero, "loss": total_loss(l_rec, l_pre)}

    def info(self) -> dict[str, Any]:
        out = super().info()
        out.update(
            ablation="Vanilla",
            modules={"fcm": False, "hsg": False, "mss": False},
            disconnected=bool(self.cfg.disconnect),
            draem_style=True,
        )
        return out


__all__ = [
    "ABLATIONS",
    "Aggregation",
    "CoarseToFineDiscriminator",
    "DEFAULT_MSS_WEIGHTS_READING",
    "FeatureContrast",
    "HeatExport",
    "HighLevelGuidance",
    "MSS_WEIGHT_READINGS",
    "PAPER_PARAMETERS",
    "POUTA",
    "POUTAConfig",
    "POUTANet",
    "ReconstructiveNetwork",
    "SideHead",
    "UNetDiscriminator",
    "Vanilla",
    "VanillaConfig",
    "VanillaNet",
    "channel_weight_map",
    "hsg_refine",
    "image_score",
    "learning_rate",
    "mss_loss",
    "parameter_count",
    "parameter_counts",
    "prediction_loss",
    "reconstruction_loss",
    "semantic_supervision_loss",
    "spatial_weight_map",
    "total_loss",
]
