"""DRAEM (Zavrtanik, Kristan, Skocaj, "DRAEM - A discriminatively trained reconstruction embedding
for surface anomaly detection", ICCV 2021), registered as ``"draem"``: the official method as
released (github.com/VitjanZ/DRAEM at 2dbf673), the DRAEM column of ADL Table 1 (ADL ran the
official code, ADL footnote 2).

Not to be confused with ``"vanilla"`` (:mod:`adlib.models.pouta`): POUTA's own DRAEM-style baseline
(28.7 M parameters, 224 px, POUTA's synthesis and focal + L1 loss), which stays POUTA's baseline.

The DRAEM paper is not among the project's paper texts; equation numbers below are those of the
ICCV paper as the project reads it (Sec. 3.1 Eq. 1-2, Sec. 3.2 Eq. 3, Sec. 3.3 Eq. 4, Sec. 3.4
Eq. 5), and every function also names the released function it follows.

Equations (one function each)
    =================================== ==========================================================
    :func:`reconstruction_loss`         Eq. 1, ``L_rec = lambda L_SSIM(I, I_r) + l2(I, I_r)``
                                        (released ``train_DRAEM``: ``MSELoss + SSIM``, lambda 1)
    :func:`ssim_loss`                   Eq. 2, ``L_SSIM = 1/N_p sum_ij (1 - SSIM(I, I_r)_ij)``
                                        (released ``loss.SSIM``; the map: :func:`ssim_map`)
    :func:`segmentation_loss`           ``L_seg``: focal loss on the 2-channel softmax against the
                                        simulated mask (released ``loss.FocalLoss``, both
                                        channels; the formula of :func:`adlib.losses.focal_loss`)
    :func:`total_loss`                  Eq. 3, ``L = L_rec + L_seg``
    Eq. 4 (simulated anomalies)         :func:`adlib.synthesis.draem.adl_blend` (the same blend),
                                        through :class:`~adlib.synthesis.draem.DraemSynthesizer`
    :func:`image_score`                 Eq. 5, ``eta = max(M_o * f_{s_f x s_f})``: the maximum
                                        of the 21x21 mean-filtered anomaly map (released
                                        ``test_DRAEM``: ``avg_pool2d(21, stride 1, padding 10)``)
    =================================== ==========================================================

Networks (released ``model_unet.py``; :class:`DraemNet` = both, one ``nn.Module``)
    - Reconstructive sub-network (:class:`ReconstructiveSubNetwork`, base width ``rec_width`` =
      128): an encoder of 5 blocks (two 3x3 conv + BatchNorm + ReLU each, convolutions with bias)
      with widths ``w, 2w, 4w, 8w, 8w`` and max-pools between them (bottleneck at 1/16), and a
      decoder of 4 stages (bilinear x2 up-sampling with ``align_corners=True``, 3x3 conv + BN +
      ReLU; then a block of two convs) back to width ``w``, then a 3x3 conv to 3 channels, no
      activation; no skip connections.
    - Discriminative sub-network (:class:`DiscriminativeSubNetwork`, base width ``seg_width`` =
      64): a U-Net on ``concat(I_r, I)`` (6 channels, the reconstruction first, as released):
      6 encoder blocks (``w, 2w, 4w, 8w, 8w, 8w``, 5 max-pools: bottleneck at 1/32), 5 decoder
      stages (up-sampling + conv, concatenation with the encoder block of that resolution, two
      convs), a 3x3 conv to 2 channels; the softmax's channel 1 is the anomaly map ``M_o``.
    - The module names are the released ones, so the released checkpoints' state dicts load
      unchanged into ``net.reconstructive`` / ``net.discriminative`` (:meth:`DraemNet.load_released`;
      the released code feeds BGR images, as cv2 reads them).
    - Parameters: reconstructive 69,048,579, discriminative 28,374,146, total 97,422,725 (the
      released classes instantiated unmodified give the same numbers:
      ``tests/test_golden_draem_model.py``).
    - Initialisation ``init="released"``: every convolution weight ``N(0, 0.02)`` (biases keep
      PyTorch's default), BatchNorm weight ``N(1, 0.02)``, bias 0 (released ``weights_init``),
      applied to each sub-network right after it is built; under ``torch.manual_seed(seed)`` it
      draws what the released trainer draws. ``init="pytorch"``: PyTorch's defaults.

Training (released ``train_DRAEM.py`` / ``data_loader.py``)
    - Images resized to ``image_size`` (256, squashed as ``cv2.resize``), values in [0, 1], no
      normalisation. An epoch is ``ceil(N / batch_size)`` steps of batch 8 whose images are drawn
      uniformly **with replacement** (``epoch_sampling="replacement"``: the released dataset
      ignores the index it is asked for and draws one); ``"permutation"``: a seeded permutation.
    - Each training sample (:meth:`Draem.synthesize`): DRAEM's generator, preset ``synthesis``
      (``draem_released``, :data:`adlib.synthesis.draem.DRAEM_RELEASED`): with probability 0.3
      the image is rotated by ``U(-90, 90)`` degrees first (the reconstruction target is the
      rotated image), a Perlin mask (scale ``2**k``, ``k`` in 0..5 per axis, noise rotated
      ``U(-90, 90)``, threshold 0.5), a DTD texture (or the built-in stand-in) with 3 of DRAEM's 10
      augmenters, texture weight ``1 - 0.8 u`` (Eq. 4's ``beta``; the paper states ``[0.1, 1]``:
      ``synthesis="draem_paper"``); then, with probability ``1 - anomaly_prob`` (released 0.5),
      the sample stays normal (the rotated image, empty mask).
    - Loss Eq. 3 on every batch; **end to end**: the segmentation loss also trains the
      reconstructive sub-network (the released trainer does not detach ``I_r``).
    - Adam (lr 1e-4, one group per sub-network), MultiStepLR x0.2 at epochs ``0.8 E`` and
      ``0.9 E`` (``E = 700``): ``lr_milestones`` are fractions of ``epochs``; as released, a
      milestone whose epoch is not an integer is never reached (:func:`learning_rate`).
    - The last epoch's model is kept (no selection on the test set).

Inference (released ``test_DRAEM.py``): ``M_o`` = softmax channel 1 of the discriminative
sub-network on ``concat(I_r, I)``; the pixel map is ``M_o`` (bilinear to the masks' size when it
differs, no smoothing); the image score is Eq. 5 (:func:`image_score`, window ``score_pool``).
The released evaluation truncates bilinearly resized masks to int; adlib's shared evaluation and
geometry (:mod:`adlib.metrics`, :mod:`adlib.data`) apply to every method alike and are not
changed here.

Options (paper vs released; the defaults are the released code's, in both profiles)
    ======================== ==================================== ================================
    option                   paper / alternative                  released (default)
    ======================== ==================================== ================================
    ``synthesis``            ``draem_paper`` (beta in [0.1, 1])   ``draem_released`` ((0.2, 1])
    ``ssim_range``           ``"unit"`` (``L = 1``)               ``"released"``: ``L`` from the
                                                                  reconstruction's values
                                                                  (:func:`released_ssim_range`)
    ``ssim_weight``          lambda of Eq. 1 (not given)          1
    ``epoch_sampling``       ``"permutation"``                    ``"replacement"``
    ``init``                 ``"pytorch"``                        ``"released"``
    ======================== ==================================== ================================

Not bit-exact with the released code (stated; the shared data and synthesis code, not options here)
    - resizing: PIL bilinear (antialiased when shrinking) for images, masks and textures, where the
      released code calls ``cv2.resize`` (bilinear, no antialiasing);
    - the 10 texture augmenters are torch re-implementations of DRAEM's imgaug list with its
      parameters (:mod:`adlib.synthesis.draem`), not imgaug's pixels; the Perlin noise, its
      threshold and the blend match the released code (``tests/test_golden_draem.py``);
    - channel order RGB; the released code reads BGR (cv2). Training from scratch is indifferent to
      it except through the hue augmenter; released checkpoints expect BGR input;
    - random streams: seeded ``torch.Generator`` streams (``sampling``, ``synthesis``) instead of
      the released global numpy / torch RNGs in 16 data-loader workers.

SSIM (released ``loss.ssim``): an 11x11 Gaussian window (sigma 1.5) per channel, **zero padding**
5, ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``, the map averaged over every pixel, channel and image.
This differs from POUTA's SSIM (``pytorch-msssim``, valid pixels only; tested in
``tests/test_golden_draem.py``). ``L`` is read from the *reconstruction* (the first argument):
``max > 128`` gives an upper bound 255 (else 1), ``min < -0.5`` a lower bound -1 (else 0), so an
unbounded reconstruction that dips below -0.5 doubles ``L``.

Smoke profile (``smoke``: CPU seconds, not the paper): 64 px, ``rec_width = 4``,
``seg_width = 4`` (180,965 parameters), 20 epochs at lr 2e-3 (x0.2 at 16 and 18), 7x7 score
pooling (21 px at 256 is 5 px at 64; 7 as POUTA's smoke profile), and the two schedule rules of
the project's other short DRAEM-style schedules (:mod:`adlib.models.pouta`, "Smoke profile"):
every training sample anomalous (``anomaly_prob = 1``) and BatchNorm statistics recomputed on 16
training batches after the last epoch (``bn_recalibration = 16``). Everything else (networks,
losses, synthesis, initialisation, sampling) is the released method. Measured (seed 0, one
thread, reference numerics, a shared 2-core machine): ``adlib train draem --dataset synth
--category wood`` fits in about 11 s; image AUROC on synth/wood 1.0, 0.955, 0.965 for seeds 0-2
(pixel AUROC 0.986-0.997), synth/grass 0.98; the object-like synth/nut and synth/brick stay near
chance (0.5, 0.58) at this budget. Widths 8 / 8 took 15 s for no better wood numbers.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .. import rehearsal
from ..complexity import count_parameters
from ..data.base import ImageTransform
from .base import Prediction, recalibrate_batchnorm, register, resolve_device
from .core import DraemSynthesis, EpochMethod, MethodConfig, input_hw
from .scores import mean_pool_max_same

log = logging.getLogger(__name__)

#: the released trainer's constants (train_DRAEM.py, README): lr, epochs, batch, LR steps, image size
RELEASED = {"lr": 1e-4, "epochs": 700, "batch_size": 8, "lr_milestones": (0.8, 0.9), "lr_gamma": 0.2, "image_size": 256}
INITS = ("released", "pytorch")
SSIM_RANGES = ("released", "unit")
EPOCH_SAMPLINGS = ("replacement", "permutation")


# ----------------------------------------------------------------------------------------------
# The equations


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The ``size x size`` Gaussian window of DRAEM's SSIM (released ``loss.create_window``): the
    normalised 1-D Gaussian (float32, centre ``size // 2``) times its transpose."""
    g = torch.tensor(
        [math.exp(-((i - size // 2) ** 2) / float(2 * sigma**2)) for i in range(size)], dtype=torch.float32
    )
    g = g / g.sum()
    return g[:, None].mm(g[None, :])


def released_ssim_range(img: torch.Tensor) -> float:
    """The dynamic range ``L`` of released ``loss.ssim`` (``val_range=None``), read from ``img``
    (the reconstruction, the first argument): upper bound 255 if ``max(img) > 128`` else 1, lower
    bound -1 if ``min(img) < -0.5`` else 0; ``L`` = upper - lower (1, 2, 255 or 256)."""
    img = img.detach()
    hi = 255.0 if float(img.max()) > 128 else 1.0
    lo = -1.0 if float(img.min()) < -0.5 else 0.0
    return hi - lo


def ssim_map(a: torch.Tensor, b: torch.Tensor, window: int = 11, data_range: float = 1.0) -> torch.Tensor:
    """The SSIM map of ``a`` and ``b`` (``B x C x H x W``), as released ``loss.ssim``: Gaussian
    window (:func:`gaussian_window`, sigma 1.5) per channel with zero padding ``window // 2``,
    ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2`` with ``L = data_range``; same shape as the inputs
    (for odd ``window``)."""
    c = a.shape[1]
    w = gaussian_window(window).to(device=a.device, dtype=a.dtype).expand(c, 1, window, window).contiguous()
    pad = window // 2

    def blur(x):
        return F.conv2d(x, w, padding=pad, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    mu_aa, mu_bb, mu_ab = mu_a.pow(2), mu_b.pow(2), mu_a * mu_b
    var_a = blur(a * a) - mu_aa
    var_b = blur(b * b) - mu_bb
    cov = blur(a * b) - mu_ab
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    v1 = 2.0 * cov + c2
    v2 = var_a + var_b + c2
    return ((2 * mu_ab + c1) * v1) / ((mu_aa + mu_bb + c1) * v2)


def ssim_loss(reconstruction: torch.Tensor, image: torch.Tensor, window: int = 11, ssim_range: str = "released"):
    """``L_SSIM(I, I_r) = 1/N_p sum_ij (1 - SSIM(I, I_r)_ij)`` (DRAEM Eq. 2; released
    ``loss.SSIM()(I_r, I)``): one minus the mean of :func:`ssim_map` over every pixel, channel and
    image. ``ssim_range``: ``"released"`` (``L`` = :func:`released_ssim_range` of the
    reconstruction) or ``"unit"`` (``L = 1``, images in [0, 1])."""
    if ssim_range not in SSIM_RANGES:
        raise ValueError(f"ssim_range must be one of {SSIM_RANGES}, got {ssim_range!r}")
    L = released_ssim_range(reconstruction) if ssim_range == "released" else 1.0
    return 1.0 - ssim_map(reconstruction, image, window, L).mean()


def reconstruction_loss(
    reconstruction: torch.Tensor,
    image: torch.Tensor,
    ssim_weight: float = 1.0,
    window: int = 11,
    ssim_range: str = "released",
    parts: bool = False,
):
    """``L_rec(I, I_r) = lambda L_SSIM(I, I_r) + l2(I, I_r)`` (DRAEM Eq. 1; released
    ``MSELoss()(I_r, I) + SSIM()(I_r, I)``, lambda = ``ssim_weight`` = 1). ``l2``: the mean
    squared error; ``L_SSIM``: :func:`ssim_loss`. ``parts=True`` returns ``(L_rec, l2, L_SSIM)``."""
    l2 = F.mse_loss(reconstruction, image)
    ls = ssim_loss(reconstruction, image, window, ssim_range)
    total = l2 + ssim_weight * ls
    return (total, l2, ls) if parts else total


def segmentation_loss(
    probs: torch.Tensor, mask: torch.Tensor, gamma: float = 2.0, alpha: float = 1.0, smoothing: float = 1e-5
) -> torch.Tensor:
    """``L_seg(M_a, M)``: the focal loss (Lin et al., ICCV 2017) of the discriminative sub-network's
    2-channel softmax ``probs`` (``B x 2 x H x W``) against the simulated anomaly mask
    (``B x H x W`` or ``B x 1 x H x W``), mean over pixels (DRAEM Sec. 3.2; released
    ``loss.FocalLoss()`` on the softmax: gamma 2, no class weights, smoothing 1e-5)::

        p_t = w_1 p_1 + w_0 p_0 + smoothing,   w_c = clamp(onehot_c(t), smoothing, 1 - smoothing)
        loss = -alpha (1 - p_t)^gamma log p_t

    with ``t`` the mask truncated to an integer class (released ``target.long()``), ``p_0``,
    ``p_1`` **both** softmax channels and both clamped one-hot weights: the formula of
    :func:`adlib.losses.focal_loss`, which takes ``1 - p`` and ``1 - w_1`` instead; on confidently
    wrong pixels those are not the same floats (``1 - float32(1 - 1e-5)`` is ``1.0014e-5``), 0.002 %
    apart on the fixture's logits of scale 8 (``tests/test_golden_draem_model.py``)."""
    if not 0.0 <= smoothing < 0.5:
        raise ValueError(f"smoothing must be in [0, 0.5), got {smoothing}")
    p0, p1 = probs[:, 0], probs[:, 1]
    t = mask.reshape(p1.shape).long().to(p1.dtype)
    w1 = t.clamp(smoothing, 1.0 - smoothing)
    w0 = (1.0 - t).clamp(smoothing, 1.0 - smoothing)
    pt = w0 * p0 + w1 * p1 + smoothing
    return (-alpha * (1.0 - pt).pow(gamma) * pt.log()).mean()


def total_loss(l_rec: torch.Tensor, l_seg: torch.Tensor) -> torch.Tensor:
    """``L(I, I_r, M_a, M) = L_rec(I, I_r) + L_seg(M_a, M)`` (DRAEM Eq. 3; released
    ``l2_loss + ssim_loss + segment_loss``)."""
    return l_rec + l_seg


def image_score(heat: torch.Tensor, pool: int = 21) -> torch.Tensor:
    """``eta = max(M_o * f_{s_f x s_f})`` (DRAEM Eq. 5; released ``test_DRAEM``): the maximum of
    the anomaly map mean-filtered with a ``pool x pool`` box (stride 1, zero padding ``pool // 2``
    counted, as ``avg_pool2d``), :func:`adlib.models.scores.mean_pool_max_same`.
    ``heat``: ``B x H x W`` -> ``B``."""
    return mean_pool_max_same(heat, pool)


def learning_rate(cfg: DraemConfig, epoch: int) -> float:
    """The learning rate of (0-based) ``epoch``: ``lr * lr_gamma ** n`` with ``n`` the milestones
    ``f * epochs`` (``f`` in ``lr_milestones``) that are integers ``<= epoch``; released
    ``MultiStepLR(opt, [epochs * 0.8, epochs * 0.9], gamma=0.2)`` stepped after every epoch, which
    matches its float milestones against the integer epoch count (so 560 and 630 of 700; a
    fractional milestone is never reached)."""
    n = 0
    for f in cfg.lr_milestones:
        m = cfg.epochs * f
        if float(m).is_integer() and int(epoch) >= int(m):
            n += 1
    return float(cfg.lr * cfg.lr_gamma**n)


# ----------------------------------------------------------------------------------------------
# Networks (the released module names: the released state dicts load unchanged)


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel_size=3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _block(cin: int, cmid: int, cout: int) -> nn.Sequential:
    """Two (3x3 conv with bias, BatchNorm, ReLU): ``cin -> cmid -> cout``."""
    return nn.Sequential(*_conv_bn_relu(cin, cmid), *_conv_bn_relu(cmid, cout))


def _up(cin: int, cout: int) -> nn.Sequential:
    """Bilinear x2 up-sampling (``align_corners=True``), then 3x3 conv + BatchNorm + ReLU."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), *_conv_bn_relu(cin, cout))


def _pool() -> nn.Sequential:
    return nn.Sequential(nn.MaxPool2d(2))


class _Encoder(nn.Module):
    """``len(widths)`` blocks with a max-pool before each but the first; returns every block's output."""

    def __init__(self, in_channels: int, widths: list[int]) -> None:
        super().__init__()
        self.n = len(widths)
        cin = in_channels
        for i, w in enumerate(widths, start=1):  # registration order as released: block1, mp1, block2, ...
            setattr(self, f"block{i}", _block(cin, w, w))
            if i < self.n:
                setattr(self, f"mp{i}", _pool())
            cin = w

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i in range(1, self.n + 1):
            x = getattr(self, f"block{i}")(getattr(self, f"mp{i - 1}")(x) if i > 1 else x)
            out.append(x)
        return out


class _ReconstructiveDecoder(nn.Module):
    """Four stages ``up<i>`` (x2 + conv) and ``db<i>`` (two convs), no skips, then ``fin_out``."""

    def __init__(self, w: int, out_channels: int) -> None:
        super().__init__()
        # (up in -> up out, db out) per stage: 8w->8w, 8w->4w | 4w->4w, 4w->2w | 2w->2w, 2w->w | w->w, w->w
        stages = [(8 * w, 4 * w), (4 * w, 2 * w), (2 * w, w), (w, w)]
        for i, (c, cout) in enumerate(stages, start=1):
            setattr(self, f"up{i}", _up(c, c))
            setattr(self, f"db{i}", _block(c, c, cout))
        self.fin_out = nn.Sequential(nn.Conv2d(w, out_channels, kernel_size=3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, 5):
            x = getattr(self, f"db{i}")(getattr(self, f"up{i}")(x))
        return self.fin_out(x)


class _SegmentDecoder(nn.Module):
    """Five stages (``up_b``/``db_b``, then ``up1..4``/``db1..4``): x2 + conv, concatenation with the
    encoder block of that resolution, two convs; then ``fin_out``."""

    NAMES = ("_b", "1", "2", "3", "4")

    def __init__(self, w: int, out_channels: int) -> None:
        super().__init__()
        # (up in, up out, skip width) per stage, deepest first; db: up out + skip -> up out -> up out
        stages = [(8 * w, 8 * w, 8 * w), (8 * w, 4 * w, 8 * w), (4 * w, 2 * w, 4 * w), (2 * w, w, 2 * w), (w, w, w)]
        for name, (cin, cout, skip) in zip(self.NAMES, stages):
            setattr(self, f"up{name}", _up(cin, cout))
            setattr(self, f"db{name}", _block(cout + skip, cout, cout))
        self.fin_out = nn.Sequential(nn.Conv2d(w, out_channels, kernel_size=3, padding=1))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for name, skip in zip(self.NAMES, feats[-2::-1]):
            x = getattr(self, f"db{name}")(torch.cat([getattr(self, f"up{name}")(x), skip], dim=1))
        return self.fin_out(x)


class ReconstructiveSubNetwork(nn.Module):
    """DRAEM's reconstructive sub-network (Sec. 3.1; released ``ReconstructiveSubNetwork``):
    encoder ``w, 2w, 4w, 8w, 8w`` (bottleneck at 1/16), decoder back to ``w``, 3x3 conv to
    ``out_channels``, no activation. ``base_width`` 128 as released."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, base_width: int = 128) -> None:
        super().__init__()
        w = int(base_width)
        self.encoder = _Encoder(in_channels, [w, 2 * w, 4 * w, 8 * w, 8 * w])
        self.decoder = _ReconstructiveDecoder(w, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x)[-1])


class DiscriminativeSubNetwork(nn.Module):
    """DRAEM's discriminative sub-network (Sec. 3.2; released ``DiscriminativeSubNetwork``): a U-Net
    with encoder ``w, 2w, 4w, 8w, 8w, 8w`` (bottleneck at 1/32), skip concatenations, a 3x3 conv
    to ``out_channels`` logits. ``base_width`` 64 as released."""

    def __init__(self, in_channels: int = 6, out_channels: int = 2, base_width: int = 64) -> None:
        super().__init__()
        w = int(base_width)
        self.encoder_segment = _Encoder(in_channels, [w, 2 * w, 4 * w, 8 * w, 8 * w, 8 * w])
        self.decoder_segment = _SegmentDecoder(w, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder_segment(self.encoder_segment(x))


def released_init(module: nn.Module) -> None:
    """Released ``weights_init`` on one module (used with ``module.apply``): convolution weights
    ``N(0, 0.02)``, BatchNorm weights ``N(1, 0.02)`` and biases 0; anything else untouched."""
    name = type(module).__name__
    if "Conv" in name:
        module.weight.data.normal_(0.0, 0.02)
    elif "BatchNorm" in name:
        module.weight.data.normal_(1.0, 0.02)
        module.bias.data.fill_(0)


class DraemNet(nn.Module):
    """The reconstructive and discriminative sub-networks as one module (the method's ``network``).

    ``forward(x)`` -> dict with ``reconstruction`` (``I_r``), ``logits`` and ``probs`` (the
    2-channel output and its softmax, ``B x 2 x H x W``) and ``heat`` (``M_o`` = ``probs[:, 1]``,
    ``B x H x W``). The discriminative input is ``concat(I_r, x)`` (released order). Input sides
    must be multiples of 32. ``init``: ``"released"`` applies :func:`released_init` to each
    sub-network right after building it (the released trainer's order of random draws)."""

    def __init__(self, rec_width: int = 128, seg_width: int = 64, init: str = "released", in_channels: int = 3):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        self.reconstructive = ReconstructiveSubNetwork(in_channels, in_channels, rec_width)
        if init == "released":
            self.reconstructive.apply(released_init)
        self.discriminative = DiscriminativeSubNetwork(2 * in_channels, 2, seg_width)
        if init == "released":
            self.discriminative.apply(released_init)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        rec = self.reconstructive(x)
        logits = self.discriminative(torch.cat([rec, x], dim=1))
        probs = torch.softmax(logits, dim=1)
        return {"reconstruction": rec, "logits": logits, "probs": probs, "heat": probs[:, 1]}

    def load_released(self, reconstructive: dict[str, torch.Tensor], discriminative: dict[str, torch.Tensor]) -> None:
        """Load the released checkpoints' state dicts (``<run>.pckl`` into ``reconstructive``,
        ``<run>_seg.pckl`` into ``discriminative``; strict: the key names are the released ones)."""
        self.reconstructive.load_state_dict(reconstructive)
        self.discriminative.load_state_dict(discriminative)


def parameter_counts(model) -> dict[str, int]:
    """``total``, ``reconstructive`` and ``discriminative`` parameter counts of a DRAEM network (or
    a :class:`Draem` model)."""
    net = model.network if hasattr(model, "network") else model
    return {
        "total": count_parameters(net),
        "reconstructive": count_parameters(net.reconstructive),
        "discriminative": count_parameters(net.discriminative),
    }


# ----------------------------------------------------------------------------------------------
# Configuration


@dataclass
class DraemConfig(MethodConfig):
    """DRAEM settings. Defaults (= ``paper`` profile): the released trainer (256 px, widths 128 /
    64, Adam 1e-4, 700 epochs, x0.2 at 0.8 and 0.9 of them, batch 8, DRAEM's synthesis, L2 +
    SSIM + focal, 21x21 score filter). ``smoke``: 64 px, widths 4 / 4, 20 epochs at lr 2e-3, 7x7
    score filter, every sample anomalous, BatchNorm statistics recomputed on 16 batches (see the
    module docstring). The options of the "Options" table are named fields."""

    # input (released: cv2.resize to 256 x 256, values / 255)
    image_size: int = 256
    # networks (released base widths)
    rec_width: int = 128
    seg_width: int = 64
    init: str = "released"
    # synthesis (released data_loader)
    synthesis: str = "draem_released"
    anomaly_prob: float = 0.5
    # losses (released: MSE + SSIM(window 11) + FocalLoss(gamma 2, smooth 1e-5))
    ssim_window: int = 11
    ssim_range: str = "released"
    ssim_weight: float = 1.0
    focal_gamma: float = 2.0
    focal_alpha: float = 1.0
    focal_smoothing: float = 1e-5
    # optimisation (released train_DRAEM.py and README command)
    lr: float = 1e-4
    lr_milestones: tuple[float, ...] = (0.8, 0.9)
    lr_gamma: float = 0.2
    epochs: int = 700
    batch_size: int = 8
    epoch_sampling: str = "replacement"
    seed: int = 0
    # BatchNorm statistics after the last epoch (the project's; 0 = the running averages, released)
    bn_recalibration: int = 0
    # inference (released test_DRAEM.py: 21 x 21 mean filter)
    score_pool: int = 21
    data_root: str | None = None

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        "smoke": dict(
            image_size=64,
            rec_width=4,
            seg_width=4,
            epochs=20,
            lr=2e-3,
            score_pool=7,
            anomaly_prob=1.0,
            bn_recalibration=16,
        ),
    }

    # 64 px, not rehearsal.SIDE: the networks' bottleneck (1/32 of the side) keeps 2 x 2 values per channel,
    # so a last batch of one image passes BatchNorm in training as it does at 256 px
    REHEARSAL: ClassVar[dict[str, int]] = {"image_size": max(64, rehearsal.SIDE), "epochs": rehearsal.EPOCHS}

    def _validate(self) -> None:
        super()._validate()
        self.lr_milestones = tuple(float(m) for m in self.lr_milestones)
        if self.image_size < 32 or self.image_size % 32:
            raise ValueError(
                f"image_size must be a multiple of 32 (five poolings in the discriminative sub-network), got {self.image_size}"
            )
        if self.rec_width < 1 or self.seg_width < 1:
            raise ValueError(f"rec_width and seg_width must be >= 1, got {self.rec_width}, {self.seg_width}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.ssim_range not in SSIM_RANGES:
            raise ValueError(f"ssim_range must be one of {SSIM_RANGES}, got {self.ssim_range!r}")
        if self.ssim_window < 1 or self.ssim_window % 2 == 0:
            raise ValueError(f"ssim_window must be an odd positive int, got {self.ssim_window}")
        if self.epoch_sampling not in EPOCH_SAMPLINGS:
            raise ValueError(f"epoch_sampling must be one of {EPOCH_SAMPLINGS}, got {self.epoch_sampling!r}")
        if self.epochs < 0 or self.batch_size < 1:
            raise ValueError(f"need epochs >= 0 and batch_size >= 1, got {self.epochs}, {self.batch_size}")
        if not all(0.0 < m <= 1.0 for m in self.lr_milestones):
            raise ValueError(f"lr_milestones are fractions of epochs in (0, 1], got {self.lr_milestones}")
        if not 0.0 <= self.anomaly_prob <= 1.0:
            raise ValueError(f"anomaly_prob must lie in [0, 1], got {self.anomaly_prob}")
        if self.bn_recalibration < 0:
            raise ValueError(f"bn_recalibration must be >= 0 (number of batches), got {self.bn_recalibration}")
        if self.score_pool < 1 or self.score_pool % 2 == 0:
            raise ValueError(f"score_pool must be an odd positive int (same-size pooling), got {self.score_pool}")
        from ..synthesis.draem import PRESETS

        if self.synthesis not in PRESETS or not self.synthesis.startswith("draem"):
            raise ValueError(f"synthesis must be a DRAEM preset (draem_released, draem_paper), got {self.synthesis!r}")


# ----------------------------------------------------------------------------------------------
# The method


class DraemExport(nn.Module):
    """DRAEM inference as one module, for export (:mod:`adlib.export`): images in [0, 1]
    ``B x 3 x H x W`` -> image score ``B`` (Eq. 5, :func:`image_score`) and ``M_o`` at ``size``
    (bilinear when the sizes differ), as :meth:`Draem.predict`."""

    def __init__(self, net: DraemNet, size: tuple[int, int], pool: int) -> None:
        super().__init__()
        self.net = net
        self.size = (int(size[0]), int(size[1]))
        self.pool = int(pool)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        heat = self.net(images)["heat"]
        maps = (
            heat
            if tuple(heat.shape[-2:]) == self.size
            else F.interpolate(heat[:, None], self.size, mode="bilinear")[:, 0]
        )
        return image_score(heat, self.pool), maps.float()


@register("draem", display="DRAEM")
class Draem(DraemSynthesis, EpochMethod):
    """DRAEM as released (see the module docstring); lifecycle of :class:`adlib.models.core.EpochMethod`."""

    Config: ClassVar[type] = DraemConfig
    STREAMS: ClassVar[tuple[str, ...]] = ("sampling", "synthesis")

    def __init__(self, cfg: DraemConfig | None = None) -> None:
        super().__init__(cfg)
        c = self.cfg
        with self._seeded_init():
            self.net = DraemNet(c.rec_width, c.seg_width, c.init)
        self.optimizer = torch.optim.Adam(
            [
                {"params": self.net.reconstructive.parameters(), "lr": c.lr},
                {"params": self.net.discriminative.parameters(), "lr": c.lr},
            ]
        )
        self.net.eval()

    @property
    def transform(self) -> ImageTransform:
        """Resize to ``image_size`` (square), values in [0, 1] (no normalisation)."""
        return ImageTransform(resize=self.cfg.image_size, crop=None, normalize=False)

    # -- data ----------------------------------------------------------------------------------
    def synthesize(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """DRAEM's training samples for normal images (``B x 3 x H x W`` in [0, 1]): each goes
        through the synthesiser (optional rotation, Perlin mask, augmented texture, Eq. 4), then
        stays normal with probability ``1 - anomaly_prob`` (released: ``rand > 0.5``). Returns
        ``(inputs, targets, masks B x H x W)``: the target is the (possibly rotated) anomaly-free
        image. Draws from ``generator`` (default: the ``synthesis`` stream)."""
        self._prepare()
        g = self.generators["synthesis"] if generator is None else generator
        xs, ts, ms = [], [], []
        for x in images:
            x_in, m, _, info = self.synthesizer(x, g, return_info=True)
            target = info["image"]
            if float(torch.rand((), generator=g, dtype=torch.float64)) >= self.cfg.anomaly_prob:
                x_in, m = target, torch.zeros_like(m)
            xs.append(x_in.to(images.dtype))
            ts.append(target.to(images.dtype))
            ms.append(m)
        return torch.stack(xs), torch.stack(ts), torch.stack(ms)

    def epoch_batches(self, n: int) -> list[torch.Tensor]:
        """The image indices of one epoch's batches: ``n`` draws with replacement (released) or a
        permutation, from the ``sampling`` stream, in batches of ``batch_size``."""
        g = self.generators["sampling"]
        if self.cfg.epoch_sampling == "replacement":
            idx = torch.randint(n, (n,), generator=g)
        else:
            idx = torch.randperm(n, generator=g)
        return list(torch.split(idx, self.cfg.batch_size))

    # -- training ------------------------------------------------------------------------------
    @property
    def _focal(self) -> dict[str, float]:
        c = self.cfg
        return dict(gamma=c.focal_gamma, alpha=c.focal_alpha, smoothing=c.focal_smoothing)

    def compute_losses(self, x_in: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The losses of one batch: inputs ``x_in``, anomaly-free targets (``B x 3 x H x W``), masks
        (``B x H x W``). Keys: ``loss`` (Eq. 3), ``rec`` (Eq. 1), ``l2``, ``ssim`` (Eq. 2),
        ``seg`` (focal)."""
        c = self.cfg
        out = self.net(x_in)
        l_rec, l2, ls = reconstruction_loss(
            out["reconstruction"], target, c.ssim_weight, c.ssim_window, c.ssim_range, parts=True
        )
        l_seg = segmentation_loss(out["probs"], mask, **self._focal)
        return {"loss": total_loss(l_rec, l_seg), "rec": l_rec, "l2": l2, "ssim": ls, "seg": l_seg}

    def _run_epoch(self, images: torch.Tensor) -> dict[str, float]:
        lr = learning_rate(self.cfg, self.epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batches = self.epoch_batches(len(images))
        sums: dict[str, float] = {}
        for idx in batches:
            x_in, target, mask = self.synthesize(images[idx])
            for k, v in self.train_step(x_in, target, mask).items():
                sums[k] = sums.get(k, 0.0) + v
        self.net.eval()
        return {**{k: v / max(len(batches), 1) for k, v in sums.items()}, "lr": lr}

    def _epoch_end(self, images: torch.Tensor, stats: dict[str, Any]) -> None:
        if self.epoch == self.cfg.epochs and self.cfg.bn_recalibration:
            self.recalibrate_batchnorm(images)

    @torch.no_grad()
    def recalibrate_batchnorm(self, images: torch.Tensor, batches: int | None = None) -> None:
        """BatchNorm running statistics replaced by their average over ``batches`` (default
        ``cfg.bn_recalibration``) training batches of the final weights
        (:func:`adlib.models.base.recalibrate_batchnorm`), synthesised as in training from a
        dedicated generator seeded from ``seed`` (the training streams are untouched)."""
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

        recalibrate_batchnorm(self.net, draws(), lambda x: self.net(x.to(self.device)))

    # -- inference -----------------------------------------------------------------------------
    @torch.no_grad()
    def heat_map(self, images: torch.Tensor) -> torch.Tensor:
        """``M_o`` (``B x H x W``, anomaly probability) of images in [0, 1], model in eval mode."""
        self.net.eval()
        return self.net(images.to(self.device))["heat"]

    @torch.no_grad()
    def predict(self, test_ds, *, device=None, batch_size: int | None = None, progress: bool = True) -> Prediction:
        """Image scores (Eq. 5) and pixel maps (``M_o`` at the masks' resolution) of every test image."""
        if device is not None:
            self.to(resolve_device(device))
        self.net.eval()

        def score_batch(batch):
            heat = self.heat_map(batch.image)
            size = tuple(batch.mask.shape[-2:])
            maps = heat if tuple(heat.shape[-2:]) == size else F.interpolate(heat[:, None], size, mode="bilinear")[:, 0]
            return image_score(heat, self.cfg.score_pool), maps.float().cpu().numpy()

        return self._predict_batches(test_ds, score_batch, batch_size, progress)

    def export_module(self) -> DraemExport:
        """:meth:`predict`'s path as one module (:class:`DraemExport`) at the transform's size."""
        self.net.eval()
        return DraemExport(self.net, input_hw(self.transform), self.cfg.score_pool).eval()

    # -- persistence: DraemSynthesis._state / _load_state (trained modules, texture provenance)

    # -- provenance ----------------------------------------------------------------------------
    def _info(self) -> dict[str, Any]:
        return {
            "weights": "none (trained from scratch)",
            "parameters": parameter_counts(self),
            "released_code": "VitjanZ/DRAEM 2dbf67397ab5c10a1494e5ae70ab59a25d7c35ef",
            "texture_source": self.texture_description,
            "texture_is_stand_in": self.texture_is_stand_in,
            "batchnorm_statistics": (
                f"recalibrated on {self.cfg.bn_recalibration} training batches after the last epoch"
                if self.cfg.bn_recalibration
                else "running averages of training"
            ),
        }


__all__ = [
    "DiscriminativeSubNetwork",
    "Draem",
    "DraemConfig",
    "DraemExport",
    "DraemNet",
    "ReconstructiveSubNetwork",
    "gaussian_window",
    "image_score",
    "learning_rate",
    "parameter_counts",
    "reconstruction_loss",
    "released_init",
    "released_ssim_range",
    "segmentation_loss",
    "ssim_loss",
    "ssim_map",
    "total_loss",
]
