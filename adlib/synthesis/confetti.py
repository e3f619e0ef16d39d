"""FCDD confetti noise: the synthetic anomalies of ADTR+ on MVTec AD (ADTR Fig. 3, following FCDD).

ADTR (ICONIP 2022, excerpt Fig. 3) adds "confetti noise" to normal training images and trains with
the pixel-level push-pull loss (Eq. 7). ADTR has no released code; the noise is FCDD's (Liznerski
et al., ICLR 2021, github liznerski/fcdd, ``python/fcdd/datasets/noise_modes.py`` mode
``"confetti"``, ``noise.py``, ``online_supervisor.py``), as the implementation notes and
``adtr-facts.md`` (sections 5 and 7) record. Every parameter below and its source:

=========================  =============================  ==========================================
parameter                  value                          source
=========================  =============================  ==========================================
layers                     colour layer + grey layer,     FCDD ``confetti`` mode (two
                           summed                         ``confetti_noise`` calls, added)
blob centres per pixel     colour 1.8e-5, grey 1.2e-5     FCDD (``p=0.000018`` / ``0.000012``)
at least one blob          per image and per layer        FCDD ``ensureblob=True``
blob shape                 squares, side uniform on the   FCDD ``blobshaperange=((8, 8), (54, 54))``,
                           integers 8..54                 ``onlysquared=True``
rotation                   U(-45, 45) degrees per blob,   FCDD ``rotation=45``, skimage ``rotate``
                           nearest neighbour, both layers ``order=0``
colour layer value         per blob and channel, integer  FCDD ``colorrange=(-256, 0)`` drawn with
                           offset in [-256, -1]           ``torch.randint`` (high exclusive)
grey layer value           -255 in every channel          FCDD ``fillval=-255``
blur                       Gaussian, kernel 25, sigma 5,  FCDD ``smooth_noise(noise, 25, 5, 1.0)``
                           reflect border, then           (kornia ``gaussian_blur2d``, default
                           truncation to int              ``reflect``; ``.int()``)
apply                      ``clamp(img + noise, 0, 255)``  FCDD ``__malformed_normal``
                           as uint8
inversion                  see below                      FCDD ``invert_threshold = 0.025``
replacement probability    0.5 per sample                 FCDD ``OnlineSupervisor(p=0.5)``
=========================  =============================  ==========================================

Inversion rule (exact). Per image, with ``x`` the uint8 image as integers, ``n`` the blurred noise
and ``numel = C * H * W``::

    d  = | sum(clamp(x + n, 0, 255) - x) | / numel
    di = | sum(clamp(x - n, 0, 255) - x) | / numel
    if d < 0.025 and di > d:  n = -n

i.e. the (mostly dark, negative) noise is turned into bright blobs when it would change a dark image
by less than 0.025 grey levels on average and the inverted noise changes it more.

Changed mask. ``confetti_noise`` returns the pixels whose value changed in any channel
(``(noisy != img).any(channel)``), which is FCDD's ``malformed_normal_gt`` ground truth.

Grid labels (:func:`confetti_grid_label`, ``adtr-facts.md`` section 7): ``"maxpool"`` (default:
a cell is anomalous when any of its pixels changed), ``"area"`` (changed fraction >= 0.5), or
``"image"`` (every cell of a replaced image is anomalous: FCDD's default MVTec mode
``malformed_normal`` fills the ground truth with 1).

Deviations from the FCDD code (the project's choices, documented here)
    - Randomness comes from the caller's ``torch.Generator`` (FCDD mixes torch and numpy global
      RNGs). The number of centres is drawn from the binomial law of FCDD's per-pixel Bernoulli
      field conditioned on ">= 1" (one uniform, inverse CDF), then placed uniformly without
      replacement: the same distribution as FCDD's redraw-until-non-empty field.
    - The colour is drawn per blob; FCDD draws one colour per blob *size* (all same-size blobs in a
      batch share it), which differs only when two blobs have the same side.
    - Each blob is rotated on its own (a pixel belongs to the blob when its offset from the centre,
      rotated back and rounded to the nearest pixel, falls in the unrotated square). FCDD rotates a
      window of +-0.75 * side around each centre, which also rotates parts of neighbouring blobs and
      excludes the last image row/column from the window.
    - Overlapping blobs of one layer: the later one overwrites (FCDD assigns too); layers add.
    - Images smaller than the blur kernel's half width (13 px) are blurred with replicate borders,
      since reflect padding is undefined there.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

COLOUR_DENSITY = 1.8e-5
GREY_DENSITY = 1.2e-5
SIDE_RANGE = (8, 54)
MAX_ROTATION = 45.0
COLOUR_RANGE = (-256, 0)  # torch.randint convention: high exclusive, values -256..-1
GREY_FILL = -255
BLUR_KERNEL = 25
BLUR_SIGMA = 5.0
INVERT_THRESHOLD = 0.025
REPLACE_P = 0.5
GRID_MODES = ("maxpool", "area", "image")


@dataclass(frozen=True)
class Blob:
    """One square blob: sample index, centre pixel (row, col), side, rotation (degrees), value per channel."""

    sample: int
    cy: int
    cx: int
    side: int
    angle: float
    value: tuple[int, ...]


class ConfettiPattern(NamedTuple):
    noise: torch.Tensor  # int32 B x C x H x W, blurred sum of both layers (before inversion)
    colour_blobs: list[Blob]
    grey_blobs: list[Blob]


class ConfettiBatch(NamedTuple):
    images: torch.Tensor  # uint8 B x C x H x W
    replaced: torch.Tensor  # bool B
    mask: torch.Tensor  # bool B x H x W, changed pixels (all False where not replaced)


def _uniform(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator, dtype=torch.float64))


def sample_blob_count(
    n_pixels: int, density: float, generator: torch.Generator | None = None, ensure_blob: bool = True
) -> int:
    """Number of blob centres: ``Binomial(n_pixels, density)``, conditioned on ``>= 1`` if ``ensure_blob``.

    The law of FCDD's per-pixel Bernoulli centre field (``torch.rand(h, w) < p``), redrawn while
    empty when ``ensureblob=True``. Sampled by inverting the CDF with one uniform draw.
    """
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"blob density must be in [0, 1], got {density}")
    if n_pixels <= 0:
        raise ValueError(f"n_pixels must be positive, got {n_pixels}")
    if density == 0.0:
        if ensure_blob:
            raise ValueError("density 0 cannot ensure a blob")
        return 0
    if density == 1.0:
        return n_pixels
    mean = n_pixels * density
    if mean > 500:  # pmf(0) underflows; an empty field is then impossible in practice
        while True:
            k = int(torch.binomial(torch.tensor(float(n_pixels)), torch.tensor(density), generator=generator))
            if k >= 1 or not ensure_blob:
                return k
    log_q = math.log1p(-density)
    p0 = math.exp(n_pixels * log_q)
    total = -math.expm1(n_pixels * log_q) if ensure_blob else 1.0
    u = _uniform(generator) * total
    k = 1 if ensure_blob else 0
    pk = n_pixels * density * math.exp((n_pixels - 1) * log_q) if ensure_blob else p0
    cum = pk
    ratio = density / (1.0 - density)
    while cum < u and k < n_pixels:
        pk *= (n_pixels - k) / (k + 1) * ratio
        k += 1
        cum += pk
    return k


def sample_blobs(
    batch: int,
    channels: int,
    height: int,
    width: int,
    generator: torch.Generator | None,
    density: float,
    *,
    side_range: tuple[int, int] = SIDE_RANGE,
    max_rotation: float = MAX_ROTATION,
    colour_range: tuple[int, int] | None = None,
    fill: int = GREY_FILL,
    ensure_blob: bool = True,
) -> list[Blob]:
    """Draw one confetti layer's blobs for ``batch`` images (FCDD ``confetti_noise`` parameters).

    Per image: the count (:func:`sample_blob_count`), centres uniform over pixels without
    replacement, then per blob a side uniform on ``side_range`` (inclusive), an angle
    ``U(-max_rotation, max_rotation)`` and a value: per channel ``randint(*colour_range)`` when
    ``colour_range`` is given (colour layer), else ``fill`` in every channel (grey layer).
    """
    lo_side, hi_side = side_range
    if not 1 <= lo_side <= hi_side:
        raise ValueError(f"side_range must satisfy 1 <= low <= high, got {side_range}")
    blobs: list[Blob] = []
    for b in range(batch):
        k = sample_blob_count(height * width, density, generator, ensure_blob)
        centres = torch.randperm(height * width, generator=generator)[:k].tolist()
        for c in centres:
            side = int(torch.randint(lo_side, hi_side + 1, (), generator=generator))
            angle = (2.0 * _uniform(generator) - 1.0) * max_rotation
            if colour_range is not None:
                draw = torch.randint(colour_range[0], colour_range[1], (channels,), generator=generator)
                value = tuple(int(v) for v in draw)
            else:
                value = (int(fill),) * channels
            blobs.append(Blob(b, c // width, c % width, side, angle, value))
    return blobs


def blob_footprint(side: int, angle: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel offsets ``(dy, dx)`` from the centre covered by a square of ``side`` rotated by ``angle``.

    Unrotated, the square covers offsets ``lo..hi`` per axis with ``hi = side // 2`` and
    ``lo = -(side // 2)`` for odd sides, ``-(side // 2) + 1`` for even ones (FCDD's extents). A pixel
    belongs to the rotated blob when its offset rotated back by ``angle`` and rounded to the nearest
    integer lies in the unrotated square: nearest-neighbour rotation about the centre pixel.
    """
    hi = side // 2
    lo = -(side // 2) if side % 2 else -(side // 2) + 1
    reach = int(math.ceil(math.hypot(max(abs(lo), hi) + 0.5, max(abs(lo), hi) + 0.5))) + 1
    r = torch.arange(-reach, reach + 1, dtype=torch.float64)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    t = math.radians(angle)
    cos, sin = math.cos(t), math.sin(t)
    sy = torch.round(cos * dy + sin * dx)
    sx = torch.round(-sin * dy + cos * dx)
    inside = (sy >= lo) & (sy <= hi) & (sx >= lo) & (sx <= hi)
    return dy[inside].long(), dx[inside].long()


def render_blobs(blobs: list[Blob], shape: tuple[int, int, int, int]) -> torch.Tensor:
    """Paint ``blobs`` on a zero ``int32`` canvas of ``shape`` (B x C x H x W); later blobs overwrite."""
    b_, c_, h_, w_ = shape
    out = torch.zeros(shape, dtype=torch.int32)
    for blob in blobs:
        dy, dx = blob_footprint(blob.side, blob.angle)
        ys, xs = dy + blob.cy, dx + blob.cx
        keep = (ys >= 0) & (ys < h_) & (xs >= 0) & (xs < w_)
        ys, xs = ys[keep], xs[keep]
        val = torch.tensor(blob.value, dtype=torch.int32).view(c_, 1)
        out[blob.sample][:, ys, xs] = val.expand(c_, ys.numel())
    return out


def gaussian_kernel1d(kernel_size: int = BLUR_KERNEL, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Normalised 1-D Gaussian window (kornia's definition: centred offsets, sum 1)."""
    x = torch.arange(kernel_size, dtype=torch.float32) - kernel_size // 2
    if kernel_size % 2 == 0:
        x = x + 0.5
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def blur_noise(noise: torch.Tensor, kernel_size: int = BLUR_KERNEL, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """FCDD ``smooth_noise``: Gaussian blur (separable, reflect border) then truncation to ``int32``.

    An even ``kernel_size`` is reduced by one, as FCDD does.
    """
    k = kernel_size if kernel_size % 2 == 1 else kernel_size - 1
    b, c, h, w = noise.shape
    g = gaussian_kernel1d(k, sigma)
    x = noise.to(torch.float32).reshape(b * c, 1, h, w)
    pad = k // 2
    mode = "reflect" if (h > pad and w > pad) else "replicate"
    x = F.pad(x, (pad, pad, pad, pad), mode=mode)
    x = F.conv2d(x, g.view(1, 1, 1, k))
    x = F.conv2d(x, g.view(1, 1, k, 1))
    return x.reshape(b, c, h, w).to(torch.int32)  # float -> int truncates toward zero, like .int()


def confetti_pattern(
    shape: tuple[int, int, int, int],
    generator: torch.Generator | None,
    *,
    colour_density: float = COLOUR_DENSITY,
    grey_density: float = GREY_DENSITY,
    side_range: tuple[int, int] = SIDE_RANGE,
    max_rotation: float = MAX_ROTATION,
    colour_range: tuple[int, int] = COLOUR_RANGE,
    grey_fill: int = GREY_FILL,
    blur_kernel: int = BLUR_KERNEL,
    blur_sigma: float = BLUR_SIGMA,
) -> ConfettiPattern:
    """The blurred confetti noise (both layers, summed, blurred) for a B x C x H x W batch, with its blobs."""
    b, c, h, w = (int(s) for s in shape)
    colour = sample_blobs(
        b,
        c,
        h,
        w,
        generator,
        colour_density,
        side_range=side_range,
        max_rotation=max_rotation,
        colour_range=colour_range,
    )
    grey = sample_blobs(
        b,
        c,
        h,
        w,
        generator,
        grey_density,
        side_range=side_range,
        max_rotation=max_rotation,
        colour_range=None,
        fill=grey_fill,
    )
    noise = render_blobs(colour, (b, c, h, w)) + render_blobs(grey, (b, c, h, w))
    return ConfettiPattern(blur_noise(noise, blur_kernel, blur_sigma), colour, grey)


def apply_confetti(
    images: torch.Tensor, noise: torch.Tensor, invert_threshold: float = INVERT_THRESHOLD
) -> tuple[torch.Tensor, torch.Tensor]:
    """Add ``noise`` to uint8 ``images`` with FCDD's inversion rule (module docstring); clamp to uint8.

    Returns ``(noisy uint8 B x C x H x W, changed bool B x H x W)``.
    """
    x = images.to(torch.int32)
    n = noise.to(device=x.device, dtype=torch.int32)
    numel = x[0].numel()
    d = ((x + n).clamp(0, 255) - x).reshape(x.shape[0], -1).sum(1).to(torch.float64).div(numel).abs()
    di = ((x - n).clamp(0, 255) - x).reshape(x.shape[0], -1).sum(1).to(torch.float64).div(numel).abs()
    inv = (d < invert_threshold) & (di > d)
    if bool(inv.any()):
        log.debug("confetti: inverted the noise of %d image(s)", int(inv.sum()))
    n = torch.where(inv.view(-1, 1, 1, 1), -n, n)
    noisy = (x + n).clamp(0, 255).to(torch.uint8)
    changed = (noisy != images).any(dim=1)
    return noisy, changed


def _check_images(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"images must be a uint8 B x C x H x W tensor, got {images.dtype} {tuple(images.shape)}")


def confetti_noise(
    images: torch.Tensor,
    generator: torch.Generator | None,
    *,
    colour_density: float = COLOUR_DENSITY,
    grey_density: float = GREY_DENSITY,
    side_range: tuple[int, int] = SIDE_RANGE,
    max_rotation: float = MAX_ROTATION,
    colour_range: tuple[int, int] = COLOUR_RANGE,
    grey_fill: int = GREY_FILL,
    blur_kernel: int = BLUR_KERNEL,
    blur_sigma: float = BLUR_SIGMA,
    invert_threshold: float = INVERT_THRESHOLD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Confetti-noised copies of uint8 ``images`` (B x C x H x W): ``(noisy uint8, changed bool B x H x W)``.

    FCDD confetti noise as used by ADTR+ (Fig. 3); parameters, sources and the inversion rule are in
    the module docstring. ``changed`` is exactly the set of pixels whose value changed in any
    channel. Deterministic given ``generator`` (the noise is drawn on the CPU).
    """
    _check_images(images)
    pattern = confetti_pattern(
        tuple(images.shape),
        generator,
        colour_density=colour_density,
        grey_density=grey_density,
        side_range=side_range,
        max_rotation=max_rotation,
        colour_range=colour_range,
        grey_fill=grey_fill,
        blur_kernel=blur_kernel,
        blur_sigma=blur_sigma,
    )
    return apply_confetti(images, pattern.noise, invert_threshold)


def replace_with_confetti(
    batch: torch.Tensor, generator: torch.Generator | None, p: float = REPLACE_P, **confetti_kwargs
) -> ConfettiBatch:
    """Replace each sample by its confetti-noised version with probability ``p`` (FCDD ``OnlineSupervisor``, p = 0.5).

    One uniform per sample decides (``u < p``); then :func:`confetti_noise` runs on the chosen
    samples only. Returns :class:`ConfettiBatch` ``(images, replaced, mask)``; ``mask`` is the
    changed-pixel mask (all False for untouched samples). Replaced samples are anomalous (label 1).
    """
    _check_images(batch)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"replacement probability must be in [0, 1], got {p}")
    replaced = torch.rand(batch.shape[0], generator=generator) < p
    out = batch.clone()
    mask = torch.zeros((batch.shape[0], *batch.shape[-2:]), dtype=torch.bool, device=batch.device)
    idx = replaced.nonzero().flatten().to(batch.device)
    if idx.numel():
        noisy, changed = confetti_noise(batch[idx], generator, **confetti_kwargs)
        out[idx] = noisy
        mask[idx] = changed
    return ConfettiBatch(out, replaced.to(batch.device), mask)


def confetti_grid_label(
    mask: torch.Tensor,
    grid: int | tuple[int, int],
    mode: str = "maxpool",
    area_threshold: float = 0.5,
    replaced: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pixel mask (B x H x W or B x 1 x H x W) -> float {0, 1} label on a ``grid`` (B x gh x gw).

    ``adtr-facts.md`` section 7 ("label to grid"): ``"maxpool"`` (default; a cell is 1 when any of
    its pixels is set), ``"area"`` (1 when the set fraction of the cell is >= ``area_threshold``,
    0.5), ``"image"`` (all cells 1 for an anomalous image: FCDD's ``malformed_normal``; an image is
    anomalous when ``replaced`` says so, or, without ``replaced``, when any pixel is set). Cells are
    those of adaptive pooling, i.e. exact ``H/gh x W/gw`` windows when the sizes divide.
    """
    if mask.dim() == 4:
        if mask.shape[1] != 1:
            raise ValueError(f"mask must be B x H x W or B x 1 x H x W, got {tuple(mask.shape)}")
        mask = mask[:, 0]
    if mask.dim() != 3:
        raise ValueError(f"mask must be B x H x W or B x 1 x H x W, got {tuple(mask.shape)}")
    gh, gw = (grid, grid) if isinstance(grid, int) else (int(grid[0]), int(grid[1]))
    m = (mask > 0).to(torch.float32).unsqueeze(1)
    if mode == "maxpool":
        out = F.adaptive_max_pool2d(m, (gh, gw))
    elif mode == "area":
        out = (F.adaptive_avg_pool2d(m, (gh, gw)) >= area_threshold).to(torch.float32)
    elif mode == "image":
        anomalous = replaced.to(torch.bool).to(m.device) if replaced is not None else m.flatten(1).amax(1) > 0
        out = anomalous.to(torch.float32).view(-1, 1, 1, 1).expand(-1, 1, gh, gw).clone()
    else:
        raise ValueError(f"mode must be one of {GRID_MODES}, got {mode!r}")
    return out[:, 0]


__all__ = [
    "BLUR_KERNEL",
    "BLUR_SIGMA",
    "COLOUR_DENSITY",
    "COLOUR_RANGE",
    "GREY_DENSITY",
    "GREY_FILL",
    "GRID_MODES",
    "INVERT_THRESHOLD",
    "MAX_ROTATION",
    "REPLACE_P",
    "SIDE_RANGE",
    "Blob",
    "ConfettiBatch",
    "ConfettiPattern",
    "apply_confetti",
    "blob_footprint",
    "blur_noise",
    "confetti_grid_label",
    "confetti_noise",
    "confetti_pattern",
    "gaussian_kernel1d",
    "render_blobs",
    "replace_with_confetti",
    "sample_blob_count",
    "sample_blobs",
]
