"""2-D Perlin noise and the thresholded, rotated Perlin masks of DRAEM-style anomaly synthesis.

GLASS (LAS, Sec. 3.3), ADL (Sec. 3.3.1) and POUTA (Sec. III, "M is specified by Perlin generator")
all draw their anomaly regions the way DRAEM does: gradient noise on a coarse lattice, rotated,
thresholded at 0.5. The papers only name the ingredients; the settings below are the ones the
implementation notes give for the released GLASS / ADL code (and the usual MemSeg ones for POUTA).

Noise (:func:`perlin_noise`)
    Classic gradient noise. A lattice of ``sy x sx`` cells covers the ``H x W`` image; every
    lattice corner ``(i, j)`` (``0 <= i <= sy``, ``0 <= j <= sx``) gets a unit gradient
    ``g = (cos t, sin t)`` with ``t ~ U[0, 2 pi)``. Pixel ``(y, x)`` sits at lattice coordinate
    ``(y * sy / H, x * sx / W)`` (pixel index, not pixel centre: the first row and column lie on
    lattice corners, where the noise is exactly 0). With ``(fy, fx)`` the offset inside its cell,
    the four corner contributions ``g . (fy - dy, fx - dx)`` are interpolated with the quintic fade
    ``6t^5 - 15t^4 + 10t^3`` (:func:`fade`), first along y, then along x, and the result is
    multiplied by ``sqrt(2)``.

    Value range: exactly ``[-1, 1]``. Unscaled 2-D Perlin noise with unit gradients is bounded by
    ``sqrt(N/4) = sqrt(1/2)`` (N = 2 dimensions; the bound is reached only at a cell centre when all
    four gradients point at it, a probability-zero event), so the ``sqrt(2)`` factor (as in DRAEM's
    released ``rand_perlin_2d``) maps it onto ``[-1, 1]``. In practice the values are concentrated
    near 0: over 99 % of the pixels lie in ``[-0.75, 0.75]``.

    Sizes need not be divisible by the lattice size (DRAEM's tiling requires it; the direct
    per-pixel formula used here gives the same values when it is divisible and is defined always).

Masks (:func:`perlin_mask`, :func:`perlin_masks`)
    Per mask: ``ky, kx`` drawn independently and uniformly from ``min_scale_exp .. max_scale_exp - 1``
    (defaults 0..5, i.e. ``max_scale_exp`` is exclusive as in the released code's
    ``randint(0, 6)``), lattice ``2**ky x 2**kx``; the noise field is rotated about the image centre
    by an angle ``~ U(rotate[0], rotate[1])`` degrees (default ``(-90, 90)``; positive =
    counter-clockwise on screen, torchvision's convention) with bilinear interpolation; the mask is
    ``noise > threshold`` (strict, default 0.5).

    Corners after rotation: pixels that the rotation brings in from outside the field are filled
    with noise value 0 (imgaug's ``Affine`` default of the released code: constant fill, cval 0),
    which is below any non-negative threshold, so those corner regions are never anomalous. Along
    the border of that region the bilinear interpolation blends towards 0 (it can only lower
    |noise| there).

    Coverage distribution (fraction of mask pixels) with the defaults (k uniform 0..5 per axis,
    rotation U(-90, 90), threshold 0.5), measured with this implementation:

    ============ ======= ======= ======== ========= ============ =========
    size         masks   mean    std      median    99th pct.    empty
    ============ ======= ======= ======== ========= ============ =========
    64 x 64      20,000  0.040   0.031    0.034     0.16         5.4 %
    288 x 288     4,000  0.048   0.029    0.046     0.15         5.4 %
    ============ ======= ======= ======== ========= ============ =========

    (Without rotation the mean is 0.057 at 64 x 64: the zero-filled corners remove area. At 64 x 64
    the finest lattices have 2-pixel cells and the bilinear rotation smooths their peaks, hence the
    lower mean there.) The distribution is strongly skewed: a coarse lattice on both axes (k = 0)
    gives nothing in about half the draws or one large blob; fine lattices give many small blobs
    and are never empty. Coverage is far below 0.5 because the threshold sits at half the noise's
    maximum while the noise is concentrated around 0 (over 99 % of values within +-0.75). That is
    why GLASS re-draws masks until they are non-empty (:mod:`adlib.synthesis.las`) while DRAEM/ADL
    keep empty masks and label those samples normal (:mod:`adlib.synthesis.draem`).

Randomness: every function takes a ``torch.Generator`` (CPU) and draws, in this fixed order,
the lattice exponents ``(n, 2)``, the gradient angles on a ``(2**(max_scale_exp-1) + 1)^2``
lattice per mask (always that size, whatever the drawn scale, so the number of draws is
independent of the outcome), then the rotation angles ``(n,)``. :func:`perlin_mask` is
``perlin_masks(1, ...)[0]``. Computation is vectorised over the batch in torch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as nnf

log = logging.getLogger(__name__)

__all__ = ["fade", "perlin_noise", "perlin_noise_batch", "rotate_fields", "perlin_masks", "perlin_mask"]


def _hw(shape: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(shape, int):
        return (shape, shape)
    h, w = shape
    return (int(h), int(w))


def fade(t: torch.Tensor) -> torch.Tensor:
    """Perlin's quintic fade curve ``6t^5 - 15t^4 + 10t^3`` (zero first and second derivative at 0 and 1)."""
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def perlin_noise_batch(shape: int | Sequence[int], scales: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Perlin noise for a batch, given lattice sizes and gradient angles (no randomness here).

    ``scales``: integer tensor ``(n, 2)`` of lattice cells per axis ``(sy, sx)``; ``angles``: float
    tensor ``(n, Ly, Lx)`` of gradient angles (radians) with ``Ly > max sy``, ``Lx > max sx``; only
    the top-left ``(sy + 1) x (sx + 1)`` corners of sample ``i`` are used. Returns ``(n, H, W)``
    float32 noise in ``[-1, 1]`` (see the module docstring).
    """
    h, w = _hw(shape)
    scales = torch.as_tensor(scales, dtype=torch.long)
    n = scales.shape[0]
    top = scales.max(0).values.tolist()
    if angles.shape[0] != n or angles.shape[1] <= top[0] or angles.shape[2] <= top[1]:
        raise ValueError(f"gradient lattice {tuple(angles.shape)} too small for scales up to {top}")
    if int(scales.min()) < 1:
        raise ValueError("lattice scales must be >= 1")
    dtype = torch.float64  # coordinates in double so y * s / H is exact for the sizes used here
    ty = torch.arange(h, dtype=dtype)[None, :] * scales[:, 0:1].to(dtype) / h  # (n, H)
    tx = torch.arange(w, dtype=dtype)[None, :] * scales[:, 1:2].to(dtype) / w  # (n, W)
    iy = ty.floor().long()
    ix = tx.floor().long()
    fy = (ty - iy).float()[:, :, None]  # (n, H, 1)
    fx = (tx - ix).float()[:, None, :]  # (n, 1, W)
    g0 = torch.cos(angles).float()  # component along y
    g1 = torch.sin(angles).float()  # component along x
    b = torch.arange(n)[:, None, None]
    iy3 = iy[:, :, None]
    ix3 = ix[:, None, :]

    def corner(dy: int, dx: int) -> torch.Tensor:
        gy = g0[b, iy3 + dy, ix3 + dx]
        gx = g1[b, iy3 + dy, ix3 + dx]
        return gy * (fy - dy) + gx * (fx - dx)

    n00, n10, n01, n11 = corner(0, 0), corner(1, 0), corner(0, 1), corner(1, 1)
    uy, ux = fade(fy), fade(fx)
    return math.sqrt(2.0) * torch.lerp(torch.lerp(n00, n10, uy), torch.lerp(n01, n11, uy), ux)


def perlin_noise(shape: int | Sequence[int], scale: int | Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """One ``H x W`` Perlin noise field on a lattice of ``scale = (sy, sx)`` cells, values in ``[-1, 1]``.

    Draws ``(sy + 1) * (sx + 1)`` gradient angles from ``generator``. Not rotated, not thresholded.
    """
    sy, sx = _hw(scale)
    angles = torch.rand((1, sy + 1, sx + 1), generator=generator, dtype=torch.float64) * (2 * math.pi)
    return perlin_noise_batch(shape, torch.tensor([[sy, sx]]), angles)[0]


def rotate_fields(fields: torch.Tensor, degrees: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Rotate each ``(n, [C,] H, W)`` field about its centre by its own angle (degrees, counter-clockwise).

    Bilinear interpolation; pixels brought in from outside are 0 (``padding_mode="zeros"``, the
    released code's constant fill) or mirrored (``"reflection"``). Rotation is done in pixel
    units, so non-square fields are rotated without shear.
    """
    squeeze = fields.dim() == 3
    x = fields[:, None] if squeeze else fields
    n, _, h, w = x.shape
    rad = torch.as_tensor(degrees, dtype=torch.float64).reshape(n) * (math.pi / 180.0)
    c, s = torch.cos(rad), torch.sin(rad)
    # affine_grid maps output coords to input coords (normalised to [-1, 1] per axis). A
    # counter-clockwise rotation on screen (y down) samples the input at R(-theta) applied to the
    # output position in pixel units; converting pixels <-> normalised units per axis gives:
    theta = torch.zeros((n, 2, 3), dtype=torch.float64)
    theta[:, 0, 0] = c
    theta[:, 0, 1] = -s * h / w
    theta[:, 1, 0] = s * w / h
    theta[:, 1, 1] = c
    grid = nnf.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    out = nnf.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    return out[:, 0] if squeeze else out


def perlin_masks(
    n: int,
    shape: int | Sequence[int],
    generator: torch.Generator,
    min_scale_exp: int = 0,
    max_scale_exp: int = 6,
    rotate: tuple[float, float] | None = (-90.0, 90.0),
    threshold: float = 0.5,
    return_info: bool = False,
):
    """``n`` Perlin masks ``(n, H, W)`` (torch.bool), vectorised; see the module docstring.

    ``max_scale_exp`` is exclusive (scales ``2**k``, ``k in min_scale_exp .. max_scale_exp - 1``),
    ``rotate=None`` (or ``(0, 0)``) disables rotation (the rotation angles are still drawn, so the
    random stream does not depend on it). With ``return_info=True`` returns ``(masks, info)``,
    ``info = {"scale_exp": (n, 2) long, "angle": (n,) float64 degrees, "noise": (n, H, W)}``.
    """
    h, w = _hw(shape)
    if not 0 <= min_scale_exp < max_scale_exp:
        raise ValueError(f"need 0 <= min_scale_exp < max_scale_exp, got {min_scale_exp}, {max_scale_exp}")
    exps = torch.randint(min_scale_exp, max_scale_exp, (n, 2), generator=generator)
    lattice = 2 ** (max_scale_exp - 1) + 1
    angles = torch.rand((n, lattice, lattice), generator=generator, dtype=torch.float64) * (2 * math.pi)
    lo, hi = rotate if rotate is not None else (0.0, 0.0)
    rot = lo + (hi - lo) * torch.rand((n,), generator=generator, dtype=torch.float64)
    noise = perlin_noise_batch((h, w), 2**exps, angles)
    if rotate is not None and (lo != 0.0 or hi != 0.0):
        noise = rotate_fields(noise, rot)
    else:
        rot = torch.zeros_like(rot)
    masks = noise > threshold
    if return_info:
        return masks, {"scale_exp": exps, "angle": rot, "noise": noise}
    return masks


def perlin_mask(
    shape: int | Sequence[int],
    generator: torch.Generator,
    min_scale_exp: int = 0,
    max_scale_exp: int = 6,
    rotate: tuple[float, float] | None = (-90.0, 90.0),
    threshold: float = 0.5,
) -> torch.Tensor:
    """One ``H x W`` boolean Perlin mask (``perlin_masks(1, ...)[0]``); see the module docstring."""
    return perlin_masks(1, shape, generator, min_scale_exp, max_scale_exp, rotate, threshold)[0]
