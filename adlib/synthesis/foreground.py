"""Foreground estimation for object categories (GLASS multiplies its LAS masks by it).

The GLASS authors ship precomputed foreground PNGs made by "simple thresholding" (OpenCV) and
publish no code, so this is the project's own documented, deterministic method:

1. **Background colour.** Industrial object images are taken on a plain background that fills
   the image border. The background colour is the per-channel median of a border band
   ``border`` pixels wide (default 4 % of the shorter side, at least 2 px).
2. **Distance.** Each pixel's Euclidean RGB distance (on the 0-255 scale) to that colour, after a
   Gaussian blur (sigma ``blur``) that suppresses sensor noise and background texture.
3. **Threshold.** Otsu's threshold on the distance map (``skimage.filters.threshold_otsu``),
   lowered to ``noise_factor`` times the 99th percentile of the border band's own distances when
   that is smaller (Otsu alone splits a bright object from its own shaded rim), and never below
   ``min_distance``: a nearly empty image (no object) then stays background instead of splitting
   noise in two.
4. **Clean-up.** Binary closing and opening with a disk of radius ``radius``, holes smaller than
   ``max_hole`` of the image filled (a real opening, such as a nut's bore, stays background),
   and components smaller than ``min_area`` of the image removed.

If the estimate covers almost nothing (< ``min_area``) or almost everything (> ``max_cover``), it
is not trusted and the all-ones mask is returned with a logged warning: LAS then behaves as
without a foreground mask, which is the safe failure.

Per-category switch (as in the released shells): :func:`uses_foreground` is True for object
categories of MVTec AD, VisA, WFDD and MAD-man/sys, and for the built-in benchmark's object
categories; False for MPDD and for texture categories (where the whole image is surface).
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.morphology import disk, remove_small_holes

log = logging.getLogger(__name__)

#: texture categories of the datasets GLASS uses foreground masks on (everything else is an object)
TEXTURE_CATEGORIES: dict[str, frozenset[str]] = {
    "mvtec": frozenset({"carpet", "grid", "leather", "tile", "wood"}),
    "mad-man": frozenset({"carpet", "grid", "leather", "tile", "wood"}),
    "mad-sys": frozenset({"carpet", "grid", "leather", "tile", "wood"}),
    "visa": frozenset(),
    "wfdd": frozenset({"grey_cloth", "grid_cloth", "yellow_cloth", "pink_flower"}),
    "synth": frozenset({"brick", "grass", "gravel", "fabric", "wood"}),
    "synth-weak": frozenset({"brick", "grass", "gravel", "fabric", "wood"}),
}
#: datasets whose released shells do not use foreground masks
NO_FOREGROUND_DATASETS = frozenset({"mpdd", "dagm"})


def uses_foreground(dataset: str, category: str) -> bool:
    """Whether LAS masks are multiplied by the foreground for this (dataset, category)."""
    dataset = dataset.lower()
    if dataset in NO_FOREGROUND_DATASETS:
        return False
    return category not in TEXTURE_CATEGORIES.get(dataset, frozenset())


def estimate_foreground(
    image: np.ndarray,
    *,
    border: float = 0.04,
    blur: float = 1.0,
    min_distance: float = 12.0,
    noise_factor: float = 2.0,
    radius: int = 2,
    min_area: float = 0.002,
    max_hole: float = 0.005,
    max_cover: float = 0.97,
) -> np.ndarray:
    """Boolean ``H x W`` foreground mask of an ``H x W x 3`` uint8 (or [0, 1] float) image.

    See the module docstring for the method. Deterministic: no randomness is involved.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 image, got shape {img.shape}")
    x = img.astype(np.float32)
    if img.dtype != np.uint8 and x.max() <= 1.0:
        x = x * 255.0
    h, w = x.shape[:2]
    b = max(2, int(round(border * min(h, w))))
    band = np.concatenate(
        [x[:b].reshape(-1, 3), x[-b:].reshape(-1, 3), x[:, :b].reshape(-1, 3), x[:, -b:].reshape(-1, 3)]
    )
    bg = np.median(band, axis=0)
    if blur > 0:
        x = ndimage.gaussian_filter(x, sigma=(blur, blur, 0))
    dist = np.sqrt(((x - bg) ** 2).sum(axis=2))
    band_dist = np.concatenate([dist[:b].ravel(), dist[-b:].ravel(), dist[:, :b].ravel(), dist[:, -b:].ravel()])
    otsu = float(threshold_otsu(dist)) if np.ptp(dist) > 0 else np.inf
    thr = max(min(otsu, noise_factor * float(np.percentile(band_dist, 99))), min_distance)
    fg = dist > thr
    se = disk(radius)
    fg = ndimage.binary_closing(fg, structure=se)
    fg = ndimage.binary_opening(fg, structure=se)
    fg = remove_small_holes(fg, max_size=max(1, int(max_hole * h * w)))
    lab, n = ndimage.label(fg)
    if n:
        sizes = ndimage.sum_labels(fg, lab, index=np.arange(1, n + 1))
        keep = np.flatnonzero(sizes >= min_area * h * w) + 1
        fg = np.isin(lab, keep)
    cover = fg.mean()
    if cover < min_area or cover > max_cover:
        log.warning("foreground estimate covers %.1f%% of the image: not trusted, using the whole image", 100 * cover)
        return np.ones((h, w), dtype=bool)
    return fg
