"""The maps' Gaussian smoothing: SciPy's per image (the default), or a fixed batched convolution
(exported graphs, :mod:`adlib.export`; the fast path ``smoothing``, :mod:`adlib.fastpath`).

GLASS, SimpleNet, PatchCore and ADTR (with ``smooth_sigma > 0``) smooth their up-sampled maps with
``scipy.ndimage.gaussian_filter(m, sigma)`` (defaults ``mode="reflect"``, ``truncate=4.0``), on
NumPy arrays outside the network. An exported graph cannot call SciPy, so :class:`GaussianFilter`
computes the same filter with tensor operations an ONNX graph holds:

- the 1-D kernel as SciPy builds it: radius ``r = int(truncate * sigma + 0.5)``, weights
  ``exp(-x^2 / (2 sigma^2))`` for ``x = -r..r`` normalised to sum 1 (:func:`gaussian_kernel1d`);
- SciPy's ``"reflect"`` border (``d c b a | a b c d | d c b a``, the edge sample repeated) as a
  gather of precomputed row / column indices (:func:`reflect_indices`; any radius, also one larger
  than the map, where the reflection repeats);
- the separable filter as two convolutions, rows (axis 0) first, then columns (axis 1), the order
  SciPy filters the axes in.

The weights are float32 in the graph (SciPy accumulates in float64 and rounds after each axis);
the difference is a few float32 ulps of the map's scale (tests/test_export.py checks 1e-6 against
SciPy). The filter works at one map size, fixed when it is built (the model's input size).

:func:`gaussian_maps` is the one place the methods smooth their maps (GLASS and SimpleNet's Eq. 9,
PatchCore, ADTR with ``smooth_sigma > 0``): SciPy on each image on the CPU by default (the path
every recorded number was made with), or, on the opt-in fast path ``smoothing``, one
:class:`GaussianFilter` pass over the batch on the maps' device (the same filter up to float32
rounding, about 1e-6 of the map's scale; no copy to the CPU before it, no per-image Python loop).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """The 1-D Gaussian weights of ``scipy.ndimage.gaussian_filter`` (order 0), float64, summing to 1:
    ``2 r + 1`` taps, ``r = int(truncate * sigma + 0.5)``."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 / float(sigma) ** 2 * x * x)
    return phi / phi.sum()


def reflect_indices(n: int, radius: int) -> np.ndarray:
    """Indices ``-radius .. n + radius - 1`` of a length-``n`` axis folded back into ``0..n-1`` by
    SciPy's ``"reflect"`` rule (half-sample symmetric: the edge sample is repeated)."""
    idx = np.mod(np.arange(-radius, n + radius), 2 * n)
    return np.where(idx >= n, 2 * n - 1 - idx, idx).astype(np.int64)


class GaussianFilter(nn.Module):
    """``scipy.ndimage.gaussian_filter(m, sigma)`` on every ``H x W`` map of a ``B x H x W`` batch
    (module docstring); ``size = (H, W)`` is fixed at construction."""

    def __init__(self, sigma: float, size: tuple[int, int], truncate: float = 4.0) -> None:
        super().__init__()
        kernel = torch.from_numpy(gaussian_kernel1d(sigma, truncate).astype(np.float32))
        radius = (len(kernel) - 1) // 2
        h, w = int(size[0]), int(size[1])
        self.size = (h, w)
        self.register_buffer("kernel_rows", kernel.view(1, 1, -1, 1))
        self.register_buffer("kernel_cols", kernel.view(1, 1, 1, -1))
        self.register_buffer("index_rows", torch.from_numpy(reflect_indices(h, radius)))
        self.register_buffer("index_cols", torch.from_numpy(reflect_indices(w, radius)))

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        x = maps[:, None]  # B x 1 x H x W
        x = F.conv2d(x.index_select(2, self.index_rows), self.kernel_rows)  # axis 0 first, as SciPy
        x = F.conv2d(x.index_select(3, self.index_cols), self.kernel_cols)
        return x[:, 0]


@functools.lru_cache(maxsize=16)
def _filter(sigma: float, size: tuple[int, int], device: str) -> GaussianFilter:
    return GaussianFilter(sigma, size).to(device)


def gaussian_maps(maps: torch.Tensor, sigma: float, on_device: bool = False) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(m, sigma)`` of each map of ``maps`` (``B x H x W``; reflect
    borders, truncated at 4 sigma) as ``B x H x W`` float32 NumPy; ``sigma <= 0``: the maps as they
    are. ``on_device``: one batched :class:`GaussianFilter` on the maps' device (the fast path
    ``smoothing``, equal up to float32 rounding) instead of SciPy per image on the CPU."""
    if sigma <= 0:
        return maps.detach().cpu().numpy().astype(np.float32)
    if on_device:
        filt = _filter(float(sigma), (int(maps.shape[-2]), int(maps.shape[-1])), str(maps.device))
        return filt(maps.detach().float()).cpu().numpy()
    up = maps.detach().cpu().numpy().astype(np.float32)
    return np.stack([ndimage.gaussian_filter(m, sigma=sigma) for m in up]).astype(np.float32)


__all__ = ["GaussianFilter", "gaussian_kernel1d", "gaussian_maps", "reflect_indices"]
