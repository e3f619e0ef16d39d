"""Drawing primitives for the built-in benchmark (:mod:`adlib.data.synth`).

Everything works on float32 arrays in [0, 1]: images are ``H x W x 3``, alpha maps ``H x W``.
Shapes are anti-aliased by drawing them with PIL on a canvas ``SS`` times larger and box-filtering
it down, so the alpha map of a shape is also the exact set of pixels it touches. Coordinates are
``(x, y)`` in pixels of the output image, pixel centres at integer positions.

No Perlin noise and no texture images live here: defects are drawn from curves, polygons,
ellipses and sums of Gaussian blobs only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SS = 4  # supersampling factor of the anti-aliased rasteriser
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


# --------------------------------------------------------------------------- basic helpers
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(xx, yy)`` of a ``size x size`` image, float32."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return xx, yy


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def coverage(sdf: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance in pixels (negative inside)."""
    return np.clip(0.5 - sdf, 0.0, 1.0).astype(np.float32)


def luminance(img: np.ndarray) -> np.ndarray:
    return (img @ LUMA).astype(np.float32)


def quantize(img: np.ndarray) -> np.ndarray:
    """Float [0, 1] to uint8 with round-half-even (deterministic across platforms)."""
    return np.clip(np.rint(np.asarray(img, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def save_png(path: Path, arr: np.ndarray) -> None:
    """Write a uint8 ``H x W`` or ``H x W x 3`` array as PNG with fixed encoder settings."""
    Image.fromarray(np.ascontiguousarray(arr)).save(path, format="PNG", compress_level=6)


def lowfreq(rng: np.random.Generator, size: int, cells: int = 6) -> np.ndarray:
    """Smooth random field (bicubic upsampling of a ``cells x cells`` normal grid), roughly N(0, 1)."""
    small = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(small, mode="F").resize((size, size), Image.BICUBIC), dtype=np.float32)


def crop_resize(src: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """Crop ``box = (x0, y0, x1, y1)`` (sub-pixel) of a float ``H x W [x C]`` image and resize it."""
    if src.ndim == 2:
        return np.asarray(
            Image.fromarray(src, mode="F").resize((size, size), Image.BILINEAR, box=box), dtype=np.float32
        )
    return np.stack([crop_resize(np.ascontiguousarray(src[..., c]), box, size) for c in range(src.shape[2])], -1)


# --------------------------------------------------------------------------- anti-aliased shapes
def _canvas(size: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("L", (size * SS, size * SS), 0)
    return img, ImageDraw.Draw(img)


def _finish(img: Image.Image) -> np.ndarray:
    return np.asarray(img.reduce(SS), dtype=np.float32) / 255.0


def _ss(pts: np.ndarray) -> np.ndarray:
    return np.asarray(pts, dtype=np.float64) * SS + (SS - 1) / 2.0


def polygon_alpha(size: int, pts: np.ndarray) -> np.ndarray:
    img, d = _canvas(size)
    d.polygon([tuple(p) for p in _ss(pts)], fill=255)
    return _finish(img)


def polyline_alpha(size: int, pts: np.ndarray, width: float | np.ndarray) -> np.ndarray:
    """A polyline with round joints; ``width`` in pixels, scalar or one per point."""
    pts = np.asarray(pts, dtype=np.float64)
    w = np.broadcast_to(np.asarray(width, dtype=np.float64), (len(pts),))
    p = _ss(pts)
    img, d = _canvas(size)
    for i in range(len(p) - 1):
        wi = max(1, int(round(0.5 * (w[i] + w[i + 1]) * SS)))
        d.line([tuple(p[i]), tuple(p[i + 1])], fill=255, width=wi)
    for i in range(len(p)):
        r = w[i] * SS / 2.0
        if r >= 1.0:
            d.ellipse([p[i, 0] - r, p[i, 1] - r, p[i, 0] + r, p[i, 1] + r], fill=255)
    return _finish(img)


def ellipse_points(center, axes, angle: float, n: int = 96) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = axes[0] * np.cos(t), axes[1] * np.sin(t)
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([center[0] + c * x - s * y, center[1] + s * x + c * y], -1)


def ellipse_alpha(size: int, center, axes, angle: float) -> np.ndarray:
    return polygon_alpha(size, ellipse_points(center, axes, angle))


def blob_polygon(rng: np.random.Generator, center, radius: float, n: int = 9, irregular: float = 0.35) -> np.ndarray:
    """A star-convex irregular polygon (radii jittered around ``radius``)."""
    t = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = radius * (1.0 - irregular + 2 * irregular * rng.random(n))
    return np.stack([center[0] + r * np.cos(t), center[1] + r * np.sin(t)], -1)


# --------------------------------------------------------------------------- curves
def bezier(ctrl: np.ndarray, n: int = 48) -> np.ndarray:
    """Points of a Bezier curve with control points ``ctrl`` (k x 2)."""
    ctrl = np.asarray(ctrl, dtype=np.float64)
    t = np.linspace(0, 1, n)[:, None]
    out = np.repeat(ctrl[None], n, 0)
    # de Casteljau on all parameters at once
    while out.shape[1] > 1:
        out = out[:, :-1] * (1 - t[:, None]) + out[:, 1:] * t[:, None]
    return out[:, 0]


def smooth_walk(
    rng: np.random.Generator, start, angle: float, length: float, step: float = 3.0, turn: float = 0.12
) -> np.ndarray:
    """A smoothly bending curve (a fibre, a thread): the heading drifts by a random walk."""
    n = max(2, int(length / step))
    dturn = np.cumsum(rng.normal(0, turn, n))
    heading = angle + np.cumsum(dturn * 0.35)
    steps = np.stack([np.cos(heading), np.sin(heading)], -1) * step
    return np.vstack([np.asarray(start, dtype=np.float64)[None], start + np.cumsum(steps, 0)])


def jagged_walk(
    rng: np.random.Generator, start, angle: float, length: float, step: float = 4.0, jitter: float = 0.55
) -> np.ndarray:
    """A jagged crack path: straight-ish overall direction, random kinks at every step."""
    n = max(2, int(length / step))
    heading = angle + rng.normal(0, jitter, n) + np.cumsum(rng.normal(0, 0.08, n))
    steps = np.stack([np.cos(heading), np.sin(heading)], -1) * step * rng.uniform(0.6, 1.4, (n, 1))
    return np.vstack([np.asarray(start, dtype=np.float64)[None], start + np.cumsum(steps, 0)])


def gaussian_blobs(size: int, centers: np.ndarray, sigmas: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Sum of isotropic Gaussian bumps (a smooth, non-Perlin field)."""
    xx, yy = grid(size)
    f = np.zeros((size, size), np.float32)
    for (cx, cy), s, w in zip(centers, sigmas, weights):
        f += np.float32(w) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / np.float32(2 * s * s))
    return f
