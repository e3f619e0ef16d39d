"""The built-in benchmark: a small, seeded, MVTec-AD-layout dataset generated on the spot.

Real datasets (MVTec AD, VisA, MPDD, ...) cannot be downloaded everywhere; every notebook of adlib
still runs on this benchmark. :func:`generate_benchmark` writes, deterministically from a seed,
three folders under a data root::

    <out>/synth/<category>/train/good/000.png ...                 normal training images
    <out>/synth/<category>/test/good/*.png                        normal test images
    <out>/synth/<category>/test/<defect>/*.png                    defective test images
    <out>/synth/<category>/ground_truth/<defect>/<stem>_mask.png  uint8 0/255 pixel masks
    <out>/synth/manifest.json
    <out>/synth-weak/...                                          same layout, weak defects
    <out>/builtin-textures/images/<class>/*.png                   texture bank (DTD layout)

They are read with ``adlib.data.get_dataset("synth", category, split, root=out)`` (and
``"synth-weak"``).

Categories
----------
Five textures and three objects (:data:`CATEGORIES`); defect folder names, and the real-world
defect each one draws:

========= ======= ================================================ =====================================
category  kind    normal images                                    defect types
========= ======= ================================================ =====================================
brick     texture photograph ``skimage.data.brick()``, tinted       crack, hole, stain, scratch
grass     texture photograph ``skimage.data.grass()``, tinted       color, thread, foreign
gravel    texture photograph ``skimage.data.gravel()``, tinted      foreign, stain, hole
fabric    texture procedural plain-weave cloth                      hole, thread, stain, color
wood      texture procedural wood grain                             scratch, crack, hole, color
nut       object  hexagonal steel nut seen from above               scratch, chip, stain, thread
pill      object  two-colour capsule                                crack, color, chip, contamination
screw     object  screw lying on a table (any rotation)             bent, broken_tip, scratch, rust
========= ======= ================================================ =====================================

Photographs give varied normal images through random crops (38-55 % of the side, resized to the
output size), rotations by multiples of 90 degrees, flips, a small brightness/contrast/tint
jitter and a slight lens softness. Objects are drawn analytically (signed distances,
anti-aliased) on a plain background, with pose (rotation, translation, scale), colour and
lighting (brightness gradient, Lambert + specular shading) variation; background and object
differ clearly in colour so that a simple foreground estimate separates them
(:func:`render_sample` returns the object mask).

Defects and their masks
-----------------------
Defects imitate real ones: scratches (thin curved lines), cracks (branching jagged lines), holes
(dark ellipse with a lit rim), stains (soft-edged colour blotch made of Gaussian blobs), colour
changes (recoloured irregular region), threads (a shaded fibre), foreign material / contamination
(a small shaded particle with its shadow), chips and broken tips (part of the object removed and
background shown, with a fresh fracture rim) and bent parts (the tip of the screw rotated).
Surface defects on objects are clipped to the object.

Every defect is rendered on top of the very same normal image, and the mask is exactly the set of
pixels the defect changed: pixels outside the mask are bit-identical to the defect-free render
(anti-aliased edges are inside the mask).

Defects deliberately do **not** use the recipe anomaly-synthesis methods (DRAEM, GLASS, ...) use
at training time -- a Perlin-noise mask filled with an image of a texture dataset. Were the test
defects made that way, a method trained on such synthetic anomalies would be scored on its own
training distribution and the benchmark would measure nothing. No Perlin noise and no texture-bank
image enters any defect here.

Weak variant
------------
``synth-weak`` holds the same test defects (same positions, shapes and masks) rendered at a
controlled low contrast ``c`` (``weak_contrast``, default 0.3)::

    weak = normal + c * (defective - normal)     # = normal*(1 - c*m) + defective*(c*m)

so the mean change inside the mask is ``c`` times that of ``synth`` (up to rounding); a chip or
a bent tip becomes a faint, half-transparent ghost of the change. Its
``train/good`` and ``test/good`` are byte-identical copies of ``synth``'s. ``c`` is recorded in
``synth-weak/manifest.json`` (``contrast``).

Texture bank
------------
``builtin-textures/images/<class>/*.png`` is a stand-in for the Describable Textures Dataset (DTD)
when it is absent (a texture source for anomaly synthesis). It has 11 procedural classes
(stripes, checkers, dots, cells, waves, blobs, zigzag, grid, plaid, rings, marble) and 4 classes
cropped from scikit-image photographs (lunar: ``moon``, stained: ``immunohistochemistry``,
starry: ``hubble_deep_field``, veined: ``retina``). Disjointness rule: no bank image comes from a
photograph or a generator used for a benchmark category's normal images (brick, grass, gravel,
woven cloth, wood grain are never in the bank), so a method pasting bank textures never pastes
the benchmark's own material. A ``README.txt`` there says it is not DTD.

Sizes, determinism and timing
-----------------------------
Defaults: 256 x 256 RGB PNG, per category 32 train/good, 10 test/good and 5 images per defect
type: 8 categories and 30 defect types give 486 images + 150 masks in ``synth``, as many in
``synth-weak``, and 90 images in the bank, about 55 MB (58 MB of 4 KiB disk blocks). A full
default generation took 10-11 s on 2 CPU cores with 2 worker threads (the default: one per
core) and about 18-20 s on one thread or on a busy machine; a rerun that finds matching
manifests returns in milliseconds.

Each image is drawn from its own ``numpy.random.Generator`` seeded from
``SeedSequence(seed, spawn_key=(category, split, group, index, stream))``, so categories are
independent of each other and of generation order, and a seed gives byte-identical PNGs (fixed
PIL encoder settings). ``manifest.json`` is written last; :func:`generate_benchmark` skips a
folder whose manifest matches the requested version, seed and parameters, and otherwise wipes and
regenerates it (a folder without a manifest is an interrupted generation). Only folders adlib
made are wiped: a ``synth`` folder holding anything else raises :class:`~adlib.data.DataError`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from . import _draw as dr
from .base import DataError

log = logging.getLogger(__name__)

GENERATOR = "adlib.data.synth"
GENERATOR_VERSION = "1.0"
SYNTH_DIR = "synth"
WEAK_DIR = "synth-weak"
BANK_DIR = "builtin-textures"
MANIFEST = "manifest.json"
_MARKER = ".adlib-generating"

DEFAULT_N_TRAIN = 32
DEFAULT_N_TEST_GOOD = 10
DEFAULT_N_PER_DEFECT = 5
DEFAULT_BANK_PER_CLASS = 6

# name -> kind ("texture"/"object"), defect folder names, the real-world defect each one draws,
# and where the normal images come from.
CATEGORIES: dict[str, dict] = {
    "brick": {
        "kind": "texture",
        "source": "photograph skimage.data.brick(): random crops, rotations, flips, brightness jitter",
        "defects": {"crack": "crack", "hole": "hole", "stain": "stain", "scratch": "scratch"},
    },
    "grass": {
        "kind": "texture",
        "source": "photograph skimage.data.grass(): random crops, rotations, flips, brightness jitter",
        "defects": {"color": "color", "thread": "thread", "foreign": "foreign"},
    },
    "gravel": {
        "kind": "texture",
        "source": "photograph skimage.data.gravel(): random crops, rotations, flips, brightness jitter",
        "defects": {"foreign": "foreign", "stain": "stain", "hole": "hole"},
    },
    "fabric": {
        "kind": "texture",
        "source": "procedural plain-weave cloth (thread jitter, waviness, rotation)",
        "defects": {"hole": "hole", "thread": "thread", "stain": "stain", "color": "color"},
    },
    "wood": {
        "kind": "texture",
        "source": "procedural wood grain (growth rings, streaks, orientation)",
        "defects": {"scratch": "scratch", "crack": "crack", "hole": "hole", "color": "color"},
    },
    "nut": {
        "kind": "object",
        "source": "procedural hexagonal steel nut seen from above, on a dark blue background",
        "defects": {"scratch": "scratch", "chip": "missing", "stain": "stain", "thread": "thread"},
    },
    "pill": {
        "kind": "object",
        "source": "procedural red/white capsule on a dark green background",
        "defects": {"crack": "crack", "color": "color", "chip": "missing", "contamination": "foreign"},
    },
    "screw": {
        "kind": "object",
        "source": "procedural screw lying on a light table, any rotation",
        "defects": {"bent": "bent", "broken_tip": "missing", "scratch": "scratch", "rust": "stain"},
    },
}

# Per-category drawing style of the defects (colours, bright/dark scratches).
_STYLE: dict[str, dict] = {
    "brick": {"scratch": "bright", "stain": [(0.42, 0.40, 0.40), (0.55, 0.45, 0.35)]},
    "grass": {
        "color": [(0.95, 0.75, 0.25), (0.75, 0.45, 0.30)],
        "thread": [(0.85, 0.10, 0.10), (0.15, 0.20, 0.70), (0.95, 0.95, 0.95)],
        "foreign": [(0.15, 0.35, 0.90), (0.95, 0.55, 0.10), (0.92, 0.92, 0.92)],
    },
    "gravel": {
        "foreign": [(0.85, 0.15, 0.15), (0.10, 0.60, 0.25), (0.15, 0.30, 0.85)],
        "stain": [(0.35, 0.28, 0.22), (0.30, 0.35, 0.45)],
    },
    "fabric": {
        "thread": [(0.90, 0.15, 0.10), (0.95, 0.85, 0.15), (0.05, 0.05, 0.05)],
        "stain": [(0.60, 0.42, 0.22), (0.45, 0.45, 0.40)],
        "color": [(0.85, 0.35, 0.30), (0.55, 0.75, 0.35)],
    },
    "wood": {"scratch": "bright", "color": [(0.45, 0.52, 0.62), (0.35, 0.38, 0.40)]},
    "nut": {
        "scratch": "bright",
        "stain": [(0.90, 0.50, 0.22), (0.55, 0.45, 0.30)],
        "thread": [(0.90, 0.15, 0.10), (0.95, 0.90, 0.20), (0.10, 0.75, 0.30)],
    },
    "pill": {
        "color": [(0.80, 0.62, 0.25), (0.40, 0.55, 0.80)],
        "foreign": [(0.08, 0.07, 0.06), (0.15, 0.25, 0.45)],
    },
    "screw": {"scratch": "bright", "stain": [(0.95, 0.50, 0.20), (0.80, 0.40, 0.18)]},
}

_SPLIT_CODE = {"train": 0, "test": 1}
_EPS = 0.02  # alpha below this is no defect (and the pixel is left untouched)


class Rendered(NamedTuple):
    """One rendered sample: ``image`` (uint8 H x W x 3), ``mask`` (bool H x W, the defect pixels),
    ``normal`` (the same sample without its defect, uint8) and ``foreground`` (bool H x W: where
    the object is or was; all True for textures)."""

    image: np.ndarray
    mask: np.ndarray
    normal: np.ndarray
    foreground: np.ndarray


def _rng(seed: int, *key) -> np.random.Generator:
    words = tuple(zlib.crc32(str(k).encode()) for k in key)
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=words))


# =========================================================================== normal images
@dataclass
class _Scene:
    image: np.ndarray  # float H x W x 3
    fg: np.ndarray | None  # object coverage (float H x W), None for textures
    rerender: Callable | None = None  # geometry -> (image, fg) for objects


@functools.cache
def _photo(name: str) -> np.ndarray:
    from skimage import data as skdata

    img = np.asarray(getattr(skdata, name)())
    if img.ndim == 3:
        img = img[..., :3]
    return np.ascontiguousarray(img.astype(np.float32) / 255.0)


def _random_crop(rng, src: np.ndarray, size: int, lo: float, hi: float, region=(0.0, 0.0, 1.0, 1.0)) -> np.ndarray:
    h, w = src.shape[:2]
    rx0, ry0, rx1, ry1 = region[0] * w, region[1] * h, region[2] * w, region[3] * h
    side = rng.uniform(lo, hi) * min(rx1 - rx0, ry1 - ry0)
    x0 = rng.uniform(rx0, rx1 - side)
    y0 = rng.uniform(ry0, ry1 - side)
    out = dr.crop_resize(src, (x0, y0, x0 + side, y0 + side), size)
    out = np.rot90(out, int(rng.integers(4)))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def _photo_texture(name: str, tint) -> Callable:
    def make(rng, size):
        g = _random_crop(rng, _photo(name), size, 0.38, 0.55)
        g = ndimage.gaussian_filter(g, 0.7 * size / 256)  # a slightly soft lens; also keeps PNGs small
        m = float(g.mean())
        g = (g - m) * rng.uniform(0.9, 1.1) + m * rng.uniform(0.92, 1.08)
        t = np.asarray(tint, np.float32) * rng.uniform(0.97, 1.03, 3).astype(np.float32)
        return _Scene(np.clip(g[..., None] * t, 0, 1).astype(np.float32), None)

    return make


def _fabric(rng, size):
    xx, yy = dr.grid(size)
    th = rng.uniform(-0.06, 0.06) + (np.pi / 2 if rng.random() < 0.5 else 0.0)
    c, s = np.cos(th), np.sin(th)
    x = c * xx + s * yy + rng.uniform(0, 100)
    y = -s * xx + c * yy + rng.uniform(0, 100)
    x = x + rng.uniform(0.5, 1.8) * np.sin(2 * np.pi * y / rng.uniform(60, 140) + rng.uniform(0, 6.3))
    y = y + rng.uniform(0.5, 1.8) * np.sin(2 * np.pi * x / rng.uniform(60, 140) + rng.uniform(0, 6.3))
    p = rng.uniform(11.0, 13.0) * size / 256
    gx, gy = x / p, y / p
    i, j = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
    fx, fy = (gx - i).astype(np.float32), (gy - j).astype(np.float32)
    jit_w = rng.normal(0, 0.07, 97).astype(np.float32)[i % 97]
    jit_f = rng.normal(0, 0.07, 89).astype(np.float32)[j % 89]
    warp_top = (i + j) % 2 == 0
    sx, sy = np.maximum(np.sin(np.pi * fx), 0), np.maximum(np.sin(np.pi * fy), 0)
    prof_w = sx**0.7 * (0.6 + 0.4 * sy)
    prof_f = sy**0.7 * (0.6 + 0.4 * sx)
    val = np.where(warp_top, prof_w * (1 + jit_w), prof_f * (1 + jit_f)).astype(np.float32)
    warp_c = np.array([0.22, 0.32, 0.58], np.float32) * rng.uniform(0.93, 1.07)
    weft_c = np.array([0.78, 0.77, 0.80], np.float32) * rng.uniform(0.93, 1.05)
    col = np.where(warp_top[..., None], warp_c, weft_c) * (0.35 + 0.75 * val)[..., None]
    return _Scene(np.clip(col, 0, 1).astype(np.float32), None)


def _wood(rng, size):
    xx, yy = dr.grid(size)
    th = rng.uniform(-0.25, 0.25) + (np.pi / 2 if rng.random() < 0.5 else 0.0)
    c, s = np.cos(th), np.sin(th)
    x = c * xx + s * yy
    y = -s * xx + c * yy
    sc = size / 256
    g = (
        y
        + rng.uniform(6, 16) * sc * np.sin(2 * np.pi * x / (rng.uniform(250, 600) * sc) + rng.uniform(0, 6.3))
        + rng.uniform(-0.5, 0.5) * ((x - rng.uniform(0, size)) ** 2) / size
    )
    period = rng.uniform(16, 26) * sc
    t = g / period + 0.05 * np.sin(2 * np.pi * x / (rng.uniform(60, 120) * sc) + rng.uniform(0, 6.3))
    # ring widths vary from ring to ring
    t = t + 0.25 * rng.uniform(-1, 1, 512).astype(np.float32)[np.floor(t).astype(np.int64) % 512]
    f = t - np.floor(t)
    ring = np.exp(-(((f - 0.75) / 0.08) ** 2)) + 0.45 * np.exp(-(((f - 0.5) / 0.22) ** 2))
    # fine streaks following the grain: 1D random values along the grain coordinate
    knots = rng.normal(0, 1, 2048).astype(np.float32)
    q = np.mod(g * 0.6 + 1024, 2047)
    k0 = np.floor(q).astype(np.int64)
    streak = knots[k0] * (1 - (q - k0)) + knots[k0 + 1] * (q - k0)
    w = np.clip(0.55 * ring + 0.05 * streak, 0, 1).astype(np.float32)
    light = np.array([0.80, 0.60, 0.40], np.float32) * rng.uniform(0.94, 1.05)
    dark = np.array([0.52, 0.32, 0.17], np.float32) * rng.uniform(0.92, 1.05)
    img = light * (1 - w[..., None]) + dark * w[..., None]
    return _Scene(np.clip(img, 0, 1).astype(np.float32), None)


def _lighting(rng, size) -> np.ndarray:
    """A smooth multiplicative light field: global brightness, a linear gradient, a slight mottling."""
    xx, yy = dr.grid(size)
    phi = rng.uniform(0, 2 * np.pi)
    grad = rng.uniform(0.0, 0.08)
    b = rng.uniform(0.94, 1.06)
    ramp = ((xx - size / 2) * np.cos(phi) + (yy - size / 2) * np.sin(phi)) / (size / 2)
    return (b * (1 + grad * ramp) * (1 + 0.012 * dr.lowfreq(rng, size, 5))).astype(np.float32)


def _local(size, center, angle):
    xx, yy = dr.grid(size)
    X, Y = xx - np.float32(center[0]), yy - np.float32(center[1])
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return c * X + s * Y, -s * X + c * Y


def _jag(geo, t):
    """A small irregular offset along a fracture line (sum of a few sines)."""
    return sum(a * np.sin(f * t + p) for a, f, p in geo["jag"]).astype(np.float32)


def _object_scene(size, bg, light, layers) -> _Scene:
    def compose(geo):
        alpha, col = layers(geo)
        img = (bg * (1 - alpha[..., None]) + col * alpha[..., None]) * light[..., None]
        return np.clip(img, 0, 1).astype(np.float32), alpha

    img, alpha = compose(None)
    return _Scene(img, alpha, compose)


def _nut(rng, size):
    sc = size / 256
    center = size / 2 + rng.normal(0, 5 * sc, 2)
    rot = rng.uniform(0, np.pi / 3)
    R = size * rng.uniform(0.29, 0.32)
    rh = R * rng.uniform(0.40, 0.45)
    wall = 4.5 * sc
    steel = np.array([0.66, 0.67, 0.70], np.float32) * rng.uniform(0.93, 1.05)
    bg = np.array([0.15, 0.19, 0.30], np.float32) * rng.uniform(0.9, 1.1)
    phi = rng.uniform(0, 2 * np.pi)
    ring_jit = rng.normal(0, 0.03, 1024).astype(np.float32)
    brushed = 0.03 * dr.lowfreq(rng, size, 24)
    bgtex = 1 + 0.015 * dr.lowfreq(rng, size, 7)
    light = _lighting(rng, size)
    u, v = _local(size, center, rot)
    r = np.hypot(u, v)
    ang = np.arctan2(v, u)
    ap = R * np.sqrt(3) / 2
    d_hex = np.max([np.abs(u * np.cos(k * np.pi / 3) + v * np.sin(k * np.pi / 3)) for k in range(3)], 0) - ap
    base_alpha = dr.coverage(d_hex) * dr.coverage((rh - wall) - r)
    lam = 1 + 0.16 * (u * np.cos(phi) + v * np.sin(phi)) / R
    top = lam * (1 + ring_jit[np.minimum((r / (2.2 * sc)).astype(np.int64), 1023)] + brushed)
    cham = dr.smoothstep(0.95 * ap - 1, 0.95 * ap + 1, r)
    top = top * (1 - 0.22 * cham) + 0.12 * np.cos(ang - phi) * cham
    w = dr.coverage(r - rh)
    wallv = (0.42 + 0.18 * np.cos(ang - phi + np.pi)) * (1 + 0.08 * np.sin(2 * np.pi * r / (2.5 * sc)))
    shade = top * (1 - w) + wallv * w
    base_col = steel * shade[..., None]

    def layers(geo):
        if geo is None:
            return base_alpha, base_col
        # chip: a corner broken off along a jagged line, fresh (brighter) fracture rim
        psi = geo["vertex"] * np.pi / 3 + np.pi / 6
        t = u * np.cos(psi) + v * np.sin(psi)
        tan = -u * np.sin(psi) + v * np.cos(psi)
        th = geo["depth"] * R + _jag(geo, tan / R)
        cut = dr.coverage(th - t)
        rim = np.clip(dr.coverage(th - 2.2 * sc - t) - cut, 0, 1)
        col = base_col * (1 - rim[..., None]) + np.clip(steel * 1.3, 0, 1) * rim[..., None]
        return base_alpha * (1 - cut), col

    return _object_scene(size, bg * bgtex[..., None], light, layers)


def _pill(rng, size):
    sc = size / 256
    center = size / 2 + rng.normal(0, 5 * sc, 2)
    rot = rng.uniform(-0.35, 0.35)
    a = size * rng.uniform(0.20, 0.22)
    r = size * rng.uniform(0.105, 0.115)
    split = rng.uniform(-0.12, 0.12) * a
    sign = 1.0 if rng.random() < 0.5 else -1.0
    red = np.array([0.80, 0.17, 0.15], np.float32) * rng.uniform(0.95, 1.05)
    white = np.array([0.94, 0.93, 0.89], np.float32) * rng.uniform(0.97, 1.02)
    bg = np.array([0.17, 0.24, 0.21], np.float32) * rng.uniform(0.9, 1.1)
    phi = rng.uniform(0, 2 * np.pi)
    L = np.array([0.55 * np.cos(phi), 0.55 * np.sin(phi), 1.0])
    L = (L / np.linalg.norm(L)).astype(np.float32)
    H = L + np.array([0, 0, 1], np.float32)
    H = H / np.linalg.norm(H)
    bgtex = 1 + 0.015 * dr.lowfreq(rng, size, 7)
    light = _lighting(rng, size)
    u, v = _local(size, center, rot)
    du = u - np.clip(u, -a, a)
    rho = np.hypot(du, v)
    base_alpha = dr.coverage(rho - r)
    nx, ny = np.clip(du / r, -1, 1), np.clip(v / r, -1, 1)
    nz = np.sqrt(np.clip(1 - nx**2 - ny**2, 0, 1))
    lam = np.clip(nx * L[0] + ny * L[1] + nz * L[2], 0, 1)
    spec = 0.35 * np.clip(nx * H[0] + ny * H[1] + nz * H[2], 0, 1) ** 40
    half = dr.smoothstep(-0.8, 0.8, (u - split) * sign)
    basec = white * (1 - half[..., None]) + red * half[..., None]
    seam = 1 - 0.25 * np.exp(-(((u - split) / (1.0 * sc)) ** 2))
    base_col = basec * (seam * (0.3 + 0.72 * lam))[..., None] + spec[..., None]
    chalk = np.array([0.90, 0.88, 0.82], np.float32)

    def layers(geo):
        if geo is None:
            return base_alpha, base_col
        # chip: a bite out of the rim, chalky fracture surface around it
        t = geo["pos"]  # position along the outline, in [-1, 1] of the straight part + caps
        side = geo["side"]
        cu, cv = t * (a + 0.5 * r), side * r * np.sqrt(max(0.0, 1 - max(0.0, abs(t * (a + 0.5 * r)) - a) ** 2 / r**2))
        rad = geo["radius"] * r
        d = np.hypot(u - cu, v - cv) + _jag(geo, np.arctan2(v - cv, u - cu))
        cut = dr.coverage(d - rad)
        rim = np.clip(dr.coverage(d - rad - 2.0 * sc) - cut, 0, 1)
        col = base_col * (1 - rim[..., None]) + (chalk * (0.5 + 0.5 * lam[..., None])) * rim[..., None]
        return base_alpha * (1 - cut), col

    return _object_scene(size, bg * bgtex[..., None], light, layers)


def _screw(rng, size):
    sc = size / 256
    center = size / 2 + rng.normal(0, 6 * sc, 2)
    rot = rng.uniform(0, 2 * np.pi)
    L = size * rng.uniform(0.58, 0.63)
    r = size * rng.uniform(0.042, 0.048)
    hr = r * rng.uniform(1.85, 2.05)
    hL = L * rng.uniform(0.14, 0.17)
    tL = 2.4 * r
    P = size * rng.uniform(0.021, 0.024)
    td = 0.28 * r
    metal = np.array([0.50, 0.50, 0.53], np.float32) * rng.uniform(0.92, 1.06)
    bg = np.array([0.84, 0.82, 0.77], np.float32) * rng.uniform(0.95, 1.03)
    phi = rng.uniform(0, 2 * np.pi)
    ly = np.float32(0.6 * np.sin(phi))
    brushed = 0.03 * dr.lowfreq(rng, size, 20)
    bgtex = 1 + 0.012 * dr.lowfreq(rng, size, 7)
    light = _lighting(rng, size)
    u, v = _local(size, center, rot)
    u0 = -L / 2

    def fields(u, v):
        # head: rounded box
        rc = 0.45 * hr
        qx = np.abs(u - (u0 + hL / 2)) - hL / 2 + rc
        qy = np.abs(v) - hr + rc
        sdf_h = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0) - rc
        a_h = dr.coverage(sdf_h)
        # threaded shaft with a conical tip
        phase = (u - (v / r) * P * 0.25) / P
        tri = 2 * np.abs(phase - np.floor(phase) - 0.5)
        hw = 0.9 * r + td * tri
        taper = np.clip((u0 + L - u) / tL, 0, 1)
        hw = hw * (0.15 + 0.85 * taper)
        sdf_s = np.maximum(np.abs(v) - hw, np.maximum(u0 + hL - 1 - u, u - (u0 + L)))
        a_s = dr.coverage(sdf_s)
        ny = np.clip(v / np.maximum(hw, 1e-3), -1, 1)
        nz = np.sqrt(1 - ny**2)
        lam_s = np.clip(ny * ly + nz * 0.8, 0, 1)
        shade_s = (0.35 + 0.7 * lam_s) * (0.78 + 0.22 * np.cos(2 * np.pi * phase)) + 0.25 * np.exp(
            -(((ny + 0.35 * np.sign(ly + 1e-6)) / 0.18) ** 2)
        )
        nyh = np.clip(v / hr, -1, 1)
        nzh = np.sqrt(1 - nyh**2)
        shade_h = 0.35 + 0.7 * np.clip(nyh * ly + nzh * 0.8, 0, 1) + 0.2 * np.exp(-(((nyh + 0.3) / 0.2) ** 2))
        alpha = np.maximum(a_h, a_s)
        wh = a_h / np.maximum(a_h + a_s * (1 - a_h), 1e-6)
        shade = wh * shade_h + (1 - wh) * shade_s
        return alpha, shade

    def layers(geo):
        if geo is None:
            alpha, shade = fields(u, v)
        elif geo["kind"] == "bent":
            ub, beta = geo["ub"] * L / 2, geo["beta"]
            a1, s1 = fields(u, v)
            a1 = a1 * dr.coverage(u - ub)
            cb, sb = np.float32(np.cos(-beta)), np.float32(np.sin(-beta))
            u2 = cb * (u - ub) - sb * v + ub
            v2 = sb * (u - ub) + cb * v
            a2, s2 = fields(u2, v2)
            a2 = a2 * dr.coverage(ub - u2)
            alpha = np.clip(a1 + a2, 0, 1)
            shade = (s1 * a1 + s2 * a2) / np.maximum(a1 + a2, 1e-6)
        else:  # broken tip: everything beyond a jagged fracture line is gone
            alpha, shade = fields(u, v)
            uc = geo["uc"] * L / 2 + _jag(geo, v / r)
            cut = dr.coverage(uc - u)
            rim = np.clip(dr.coverage(uc - 2.0 * sc - u) - cut, 0, 1)
            shade = shade * (1 - rim) + 1.25 * rim
            alpha = alpha * (1 - cut)
        return alpha, metal * (shade * (1 + brushed))[..., None]

    return _object_scene(size, bg * bgtex[..., None], light, layers)


_NORMAL: dict[str, Callable] = {
    "brick": _photo_texture("brick", (1.05, 0.66, 0.52)),
    "grass": _photo_texture("grass", (0.62, 0.92, 0.38)),
    "gravel": _photo_texture("gravel", (0.98, 0.94, 0.86)),
    "fabric": _fabric,
    "wood": _wood,
    "nut": _nut,
    "pill": _pill,
    "screw": _screw,
}


# =========================================================================== defects
@dataclass
class _Ctx:
    size: int
    fg: np.ndarray | None  # object coverage, None for textures
    inner: np.ndarray | None  # eroded object, where defects are anchored

    @property
    def sc(self) -> float:
        return self.size / 256

    @property
    def obj(self) -> bool:
        return self.fg is not None

    def point(self, rng, margin: float = 12.0) -> np.ndarray:
        if self.inner is None:
            m = margin * self.sc
            return rng.uniform(m, self.size - m, 2)
        idx = np.flatnonzero(self.inner)
        k = int(idx[rng.integers(len(idx))])
        y, x = divmod(k, self.size)
        return np.array([x, y], dtype=np.float64) + rng.uniform(-0.5, 0.5, 2)


def _pick(rng, options):
    return np.asarray(options[int(rng.integers(len(options)))], np.float32)


def _d_scratch(N, rng, ctx, style):
    sc = ctx.sc
    p0 = ctx.point(rng)
    ang = rng.uniform(0, 2 * np.pi)
    length = rng.uniform(25, 55) * sc if ctx.obj else rng.uniform(40, 100) * sc
    p2 = p0 + length * np.array([np.cos(ang), np.sin(ang)])
    nrm = np.array([-np.sin(ang), np.cos(ang)])
    mid = (p0 + p2) / 2 + nrm * rng.normal(0, 0.18 * length)
    pts = dr.bezier(np.stack([p0, mid, p2]), 40)
    w = rng.uniform(1.0, 2.0) * sc
    widths = w * (0.45 + 0.55 * np.sin(np.linspace(0, np.pi, len(pts))))
    a = dr.polyline_alpha(ctx.size, pts, widths)
    if style == "bright":
        layer = N + (1 - N) * np.float32(rng.uniform(0.55, 0.75))
    else:
        layer = N * np.float32(rng.uniform(0.3, 0.45))
    return N * (1 - a[..., None]) + layer * a[..., None], a


def _d_crack(N, rng, ctx, style):
    sc = ctx.sc
    p0 = ctx.point(rng)
    ang = rng.uniform(0, 2 * np.pi)
    length = rng.uniform(30, 60) * sc if ctx.obj else rng.uniform(50, 100) * sc
    main = dr.jagged_walk(rng, p0, ang, length, 4.0 * sc)
    a = dr.polyline_alpha(ctx.size, main, np.linspace(rng.uniform(2.0, 3.0) * sc, 0.8 * sc, len(main)))
    for _ in range(int(rng.integers(1, 4))):
        k = int(rng.integers(1, len(main) - 1))
        ab = ang + rng.choice([-1, 1]) * rng.uniform(0.5, 1.1)
        br = dr.jagged_walk(rng, main[k], ab, length * rng.uniform(0.25, 0.5), 3.5 * sc)
        a = np.maximum(a, dr.polyline_alpha(ctx.size, br, np.linspace(1.6 * sc, 0.7 * sc, len(br))))
    dark = N * np.float32(rng.uniform(0.12, 0.25))
    return N * (1 - a[..., None]) + dark * a[..., None], a


def _d_hole(N, rng, ctx, style):
    sc = ctx.sc
    c = ctx.point(rng, 20)
    ax = rng.uniform(6, 14) * sc
    axes = (ax, ax * rng.uniform(0.6, 1.0))
    ang = rng.uniform(0, np.pi)
    rim_w = rng.uniform(1.8, 3.0) * sc
    a_in = dr.ellipse_alpha(ctx.size, c, axes, ang)
    a_out = dr.ellipse_alpha(ctx.size, c, (axes[0] + rim_w, axes[1] + rim_w), ang)
    a_rim = np.clip(a_out - a_in, 0, 1)
    xx, yy = dr.grid(ctx.size)
    phi = rng.uniform(0, 2 * np.pi)
    side = np.cos(np.arctan2(yy - c[1], xx - c[0]) - phi).astype(np.float32)
    rim_col = np.clip(N * (1 + 0.5 * side[..., None]) + 0.1 * side[..., None], 0, 1)
    in_col = N * np.float32(rng.uniform(0.06, 0.14)) * (1 - 0.5 * side[..., None]) + 0.02
    D = N * (1 - a_out[..., None]) + rim_col * a_rim[..., None] + in_col * a_in[..., None]
    return D, a_out


def _d_stain(N, rng, ctx, style):
    sc = ctx.sc
    c = ctx.point(rng, 20)
    R = rng.uniform(7, 14) * sc if ctx.obj else rng.uniform(10, 22) * sc
    k = int(rng.integers(3, 7))
    centers = c + rng.normal(0, 0.45 * R, (k, 2))
    f = dr.gaussian_blobs(ctx.size, centers, R * rng.uniform(0.35, 0.7, k), rng.uniform(0.6, 1.0, k))
    a = dr.smoothstep(0.25, 0.65, f / f.max()) * np.float32(rng.uniform(0.75, 0.95))
    tint = _pick(rng, style)
    return N * (1 - a[..., None]) + N * tint * a[..., None], a


def _d_color(N, rng, ctx, style):
    sc = ctx.sc
    c = ctx.point(rng, 20)
    R = rng.uniform(8, 14) * sc if ctx.obj else rng.uniform(12, 24) * sc
    poly = dr.blob_polygon(rng, c, R, n=10, irregular=0.3)
    a = ndimage.gaussian_filter(dr.polygon_alpha(ctx.size, poly), 1.5 * sc)
    a = np.clip((a - 0.05) / 0.85, 0, 1).astype(np.float32)
    tint = _pick(rng, style)
    recol = np.clip(dr.luminance(N)[..., None] * tint / np.float32(tint @ dr.LUMA), 0, 1)
    return N * (1 - a[..., None]) + recol * a[..., None], a


def _d_thread(N, rng, ctx, style):
    sc = ctx.sc
    p0 = ctx.point(rng)
    length = rng.uniform(35, 70) * sc if ctx.obj else rng.uniform(60, 140) * sc
    pts = dr.smooth_walk(rng, p0, rng.uniform(0, 2 * np.pi), length, 2.5 * sc, 0.06)
    w = rng.uniform(1.6, 2.6) * sc
    a_o = dr.polyline_alpha(ctx.size, pts, w)
    a_c = dr.polyline_alpha(ctx.size, pts - 0.25 * w, 0.45 * w) * a_o * 0.8
    col = _pick(rng, style)
    D = N * (1 - a_o[..., None]) + col * 0.8 * a_o[..., None]
    D = D * (1 - a_c[..., None]) + np.minimum(col * 1.2 + 0.1, 1) * a_c[..., None]
    return D, a_o


def _d_foreign(N, rng, ctx, style):
    sc = ctx.sc
    c = ctx.point(rng, 16)
    R = rng.uniform(2.5, 5.5) * sc if ctx.obj else rng.uniform(4, 10) * sc
    poly = dr.blob_polygon(rng, c, R, n=int(rng.integers(6, 10)), irregular=0.4)
    a_p = dr.polygon_alpha(ctx.size, poly)
    phi = rng.uniform(0, 2 * np.pi)
    off = 0.35 * R * np.array([np.cos(phi), np.sin(phi)])
    a_s = ndimage.gaussian_filter(dr.polygon_alpha(ctx.size, poly + off), 1.0 * sc)
    a_s = np.clip((a_s - 0.08) / 0.92, 0, 1).astype(np.float32)
    col = _pick(rng, style)
    xx, yy = dr.grid(ctx.size)
    g = 0.85 - 0.3 * np.clip(((xx - c[0]) * np.cos(phi) + (yy - c[1]) * np.sin(phi)) / R, -1, 1)
    D = N * (1 - 0.55 * a_s[..., None])
    D = D * (1 - a_p[..., None]) + np.clip(col * g[..., None], 0, 1) * a_p[..., None]
    return D, np.maximum(a_p, a_s)


def _geo_missing(rng, category):
    jag = [(rng.uniform(0.3, 1.2), rng.uniform(2, 9), rng.uniform(0, 6.3)) for _ in range(3)]
    if category == "nut":
        return {"kind": "missing", "vertex": int(rng.integers(6)), "depth": rng.uniform(0.62, 0.78), "jag": jag}
    if category == "pill":
        return {
            "kind": "missing",
            "pos": rng.uniform(-1, 1),
            "side": float(rng.choice([-1, 1])),
            "radius": rng.uniform(0.35, 0.6),
            "jag": jag,
        }
    if category == "screw":
        return {"kind": "missing", "uc": rng.uniform(0.25, 0.6), "jag": jag}
    raise ValueError(f"no missing-part geometry for {category}")


def _geo_bent(rng, category):
    return {"kind": "bent", "ub": rng.uniform(0.05, 0.5), "beta": rng.choice([-1, 1]) * rng.uniform(0.28, 0.5)}


_SURFACE = {
    "scratch": _d_scratch,
    "crack": _d_crack,
    "hole": _d_hole,
    "stain": _d_stain,
    "color": _d_color,
    "thread": _d_thread,
    "foreign": _d_foreign,
}
_GEOMETRIC = {"missing": _geo_missing, "bent": _geo_bent}


def _min_area(size: int) -> float:
    return 20.0 * (size / 256) ** 2


def _apply_defect(scene: _Scene, category: str, defect: str, rng, size: int):
    """(defective float image, mask bool, object foreground of the defective render)."""
    N = scene.image
    kind = CATEGORIES[category]["defects"][defect]
    style = _STYLE.get(category, {}).get(kind)
    if kind in _GEOMETRIC:
        for _ in range(12):
            D, fg_d = scene.rerender(_GEOMETRIC[kind](rng, category))
            mask = np.abs(D - N).max(-1) > (1.0 / 255)
            if mask.sum() >= _min_area(size):
                break
        D = np.where(mask[..., None], D, N)
        return D, mask, fg_d
    if kind not in _SURFACE:
        raise ValueError(f"unknown defect kind {kind!r}")
    inner = None
    if scene.fg is not None:
        inner = ndimage.binary_erosion(scene.fg > 0.5, iterations=max(1, int(round(6 * size / 256))))
    ctx = _Ctx(size, scene.fg, inner)
    for _ in range(12):
        D, alpha = _SURFACE[kind](N, rng, ctx, style or [(0.5, 0.5, 0.5)])
        if scene.fg is not None:  # surface defects stay on the object
            D = N + (D - N) * scene.fg[..., None]
            alpha = alpha * scene.fg
        mask = alpha > _EPS
        if mask.sum() >= _min_area(size):
            break
    D = np.where(mask[..., None], np.clip(D, 0, 1), N).astype(np.float32)
    return D, mask, scene.fg


def _render(category: str, split: str, group: str, index: int, seed: int, size: int):
    """Float normal image, float defective image (None for good), mask, foreground."""
    if category not in CATEGORIES:
        raise DataError(f"unknown synth category {category!r}; known: {', '.join(CATEGORIES)}")
    if split not in _SPLIT_CODE:
        raise DataError(f"unknown split {split!r}; expected 'train' or 'test'")
    if group != "good" and group not in CATEGORIES[category]["defects"]:
        raise DataError(
            f"unknown defect {group!r} for {category!r}; known: {', '.join(CATEGORIES[category]['defects'])}"
        )
    scene = _NORMAL[category](_rng(seed, category, split, group, index, "normal"), size)
    N = scene.image
    fg = np.ones((size, size), bool) if scene.fg is None else scene.fg > 0.5
    if group == "good":
        return N, None, np.zeros((size, size), bool), fg
    D, mask, fg_d = _apply_defect(scene, category, group, _rng(seed, category, split, group, index, "defect"), size)
    if fg_d is not None:
        fg = fg | (fg_d > 0.5)
    return N, D, mask, fg


def _blend(N: np.ndarray, D: np.ndarray, contrast: float) -> np.ndarray:
    return dr.quantize(N + np.float32(contrast) * (D - N))


def render_sample(
    category: str,
    index: int,
    seed: int = 0,
    defect: str | None = None,
    *,
    split: str = "test",
    size: int = 256,
    contrast: float = 1.0,
) -> Rendered:
    """Render one sample of the benchmark in memory (no files).

    ``defect=None`` gives the ``index``-th good image of ``split``; a defect name gives the
    ``index``-th image of that defect folder (``split`` must then be ``"test"``), rendered at
    ``contrast`` (1 = ``synth``, the weak contrast = ``synth-weak``, 0 = the defect-free image).
    Exactly what :func:`generate_benchmark` writes for the same arguments.
    """
    if defect is not None and split != "test":
        raise DataError("defects exist in the test split only")
    N, D, mask, fg = _render(category, split, defect or "good", int(index), seed, size)
    normal = dr.quantize(N)
    image = normal if D is None else _blend(N, D, contrast)
    return Rendered(image, mask, normal, fg)


# =========================================================================== texture bank
def _palette(rng):
    c1 = rng.uniform(0.05, 0.95, 3).astype(np.float32)
    c2 = rng.uniform(0.05, 0.95, 3).astype(np.float32)
    if np.abs(c1 - c2).sum() < 0.6:
        c2 = (1 - c1).astype(np.float32)
    return c1, c2


def _mix(t, c1, c2):
    t = np.clip(t, 0, 1).astype(np.float32)[..., None]
    return c1 * (1 - t) + c2 * t


def _rot_coords(rng, size):
    xx, yy = dr.grid(size)
    th = rng.uniform(0, np.pi)
    c, s = np.cos(th), np.sin(th)
    return c * xx + s * yy, -s * xx + c * yy


def _bank_stripes(rng, size):
    x, _ = _rot_coords(rng, size)
    p = rng.uniform(10, 40)
    e = rng.uniform(0.1, 0.6)
    return _mix(dr.smoothstep(-e, e, np.sin(2 * np.pi * x / p)), *_palette(rng))


def _bank_checkers(rng, size):
    x, y = _rot_coords(rng, size)
    p = rng.uniform(12, 40)
    return _mix(dr.smoothstep(-0.15, 0.15, np.sin(np.pi * x / p) * np.sin(np.pi * y / p)), *_palette(rng))


def _bank_dots(rng, size):
    x, y = _rot_coords(rng, size)
    p = rng.uniform(12, 32)
    fx = x / p - np.floor(x / p) - 0.5
    fy = y / p - np.floor(y / p) - 0.5
    d = np.hypot(fx, fy) * p
    return _mix(dr.coverage(d - p * rng.uniform(0.15, 0.4)), *_palette(rng))


def _bank_cells(rng, size):
    n = int(rng.integers(15, 45))
    pts = rng.uniform(0, size, (n, 2)).astype(np.float32)
    xx, yy = dr.grid(size)
    d = np.sqrt((xx[..., None] - pts[:, 0]) ** 2 + (yy[..., None] - pts[:, 1]) ** 2)
    order = np.argsort(d, -1)
    d1 = np.take_along_axis(d, order[..., :1], -1)[..., 0]
    d2 = np.take_along_axis(d, order[..., 1:2], -1)[..., 0]
    shade = rng.uniform(0, 1, n).astype(np.float32)[order[..., 0]]
    img = _mix(shade, *_palette(rng))
    edge = dr.smoothstep(1.0, 3.0, d2 - d1)
    return img * (0.3 + 0.7 * edge[..., None])


def _bank_waves(rng, size):
    xx, yy = dr.grid(size)
    t = np.zeros((size, size), np.float32)
    for _ in range(3):
        th = rng.uniform(0, 2 * np.pi)
        t += np.sin(2 * np.pi * (xx * np.cos(th) + yy * np.sin(th)) / rng.uniform(20, 80) + rng.uniform(0, 6.3))
    return _mix(0.5 + t / 6, *_palette(rng))


def _bank_blobs(rng, size):
    n = int(rng.integers(20, 50))
    f = dr.gaussian_blobs(size, rng.uniform(0, size, (n, 2)), rng.uniform(6, 20, n), rng.uniform(0.5, 1, n))
    return _mix(dr.smoothstep(0.4, 0.7, f), *_palette(rng))


def _bank_zigzag(rng, size):
    x, y = _rot_coords(rng, size)
    lam, amp, p = rng.uniform(15, 40), rng.uniform(4, 15), rng.uniform(10, 30)
    tri = 2 * np.abs(x / lam - np.floor(x / lam) - 0.5)
    return _mix(dr.smoothstep(-0.3, 0.3, np.sin(2 * np.pi * (y + amp * tri) / p)), *_palette(rng))


def _bank_grid(rng, size):
    x, y = _rot_coords(rng, size)
    p, w = rng.uniform(12, 36), rng.uniform(1, 4)
    dx = np.abs(x - p * np.round(x / p))
    dy = np.abs(y - p * np.round(y / p))
    return _mix(np.maximum(dr.coverage(dx - w / 2), dr.coverage(dy - w / 2)), *_palette(rng))


def _bank_plaid(rng, size):
    x, y = _rot_coords(rng, size)
    img = np.zeros((size, size, 3), np.float32)
    for coord in (x, y):
        p = rng.uniform(30, 70)
        f = coord / p - np.floor(coord / p)
        band = (f < rng.uniform(0.2, 0.5)).astype(np.float32)
        img += 0.5 * _mix(band, *_palette(rng))
    return img


def _bank_rings(rng, size):
    xx, yy = dr.grid(size)
    c = rng.uniform(-0.3, 1.3, 2) * size
    d = np.hypot(xx - c[0], yy - c[1])
    return _mix(0.5 + 0.5 * np.sin(2 * np.pi * d / rng.uniform(8, 30)), *_palette(rng))


def _bank_marble(rng, size):
    x, y = _rot_coords(rng, size)
    turb = 2.5 * dr.lowfreq(rng, size, 6) + 1.0 * dr.lowfreq(rng, size, 14)
    return _mix(np.abs(np.sin(2 * np.pi * x / rng.uniform(40, 90) + turb)) ** 0.5, *_palette(rng))


def _bank_photo(name: str, region=(0.0, 0.0, 1.0, 1.0)):
    def make(rng, size):
        img = _random_crop(rng, _photo(name), size, 0.3, 0.6, region)
        return np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img

    return make


# class -> (generator, source). None of these sources is used for a benchmark category.
_BANK: dict[str, tuple[Callable, str]] = {
    "stripes": (_bank_stripes, "procedural"),
    "checkers": (_bank_checkers, "procedural"),
    "dots": (_bank_dots, "procedural"),
    "cells": (_bank_cells, "procedural (Voronoi)"),
    "waves": (_bank_waves, "procedural"),
    "blobs": (_bank_blobs, "procedural"),
    "zigzag": (_bank_zigzag, "procedural"),
    "grid": (_bank_grid, "procedural"),
    "plaid": (_bank_plaid, "procedural"),
    "rings": (_bank_rings, "procedural"),
    "marble": (_bank_marble, "procedural"),
    "lunar": (_bank_photo("moon"), "photograph skimage.data.moon()"),
    "stained": (_bank_photo("immunohistochemistry"), "photograph skimage.data.immunohistochemistry()"),
    "starry": (_bank_photo("hubble_deep_field"), "photograph skimage.data.hubble_deep_field()"),
    "veined": (_bank_photo("retina", (0.25, 0.25, 0.75, 0.75)), "photograph skimage.data.retina()"),
}
BANK_CLASSES = tuple(_BANK)

_BANK_README = """\
builtin-textures: a stand-in for the Describable Textures Dataset (DTD), generated by adlib.

This is NOT DTD. It is written by adlib.data.synth.generate_texture_bank() when DTD is absent,
in the DTD layout (images/<class>/*.png), as a texture source for anomaly-synthesis methods.
Classes: {classes}.
Procedural classes are drawn from seeded random patterns; lunar, stained, starry and veined are
random crops of photographs bundled with scikit-image (moon, immunohistochemistry,
hubble_deep_field, retina). No image here comes from a photograph or generator used for the
normal images of adlib's built-in benchmark (synth), so pasted textures are never the
benchmark's own material.
Seed: {seed}; {n} images per class, {size}x{size} RGB PNG. See manifest.json.
"""


# =========================================================================== writing
def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _up_to_date(folder: Path, manifest: dict) -> bool:
    on_disk = _read_manifest(folder)
    return on_disk is not None and on_disk == json.loads(json.dumps(manifest))


def _prepare(folder: Path, known: set[str]) -> None:
    """Wipe ``folder`` and mark a generation as started.

    Only a folder adlib made is wiped: one with the in-progress marker, an adlib manifest, or
    nothing but names adlib writes there (``known``, e.g. the categories: a generation that was
    interrupted, or whose manifest was deleted). Anything else raises :class:`DataError`.
    """
    if folder.exists():
        if not folder.is_dir():
            raise DataError(f"{folder} exists and is not a folder")
        m = _read_manifest(folder)
        names = {p.name for p in folder.iterdir()}
        ours = (
            (folder / _MARKER).exists()
            or (m is not None and m.get("generator") == GENERATOR)
            or names <= known | {MANIFEST, MANIFEST + ".tmp", _MARKER}
        )
        if not ours:
            raise DataError(
                f"{folder} exists but was not generated by adlib (no adlib manifest, unexpected "
                f"entries {sorted(names - known)[:5]}); move it away or choose another output folder"
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / _MARKER).write_text("generation in progress; a folder without manifest.json is incomplete\n")


def _finish(folder: Path, manifest: dict) -> None:
    _write_json(folder / MANIFEST, manifest)
    (folder / _MARKER).unlink(missing_ok=True)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, leave=False)


def _bank_job(args) -> int:
    out_dir, cls, seed, n, size = args
    gen = _BANK[cls][0]
    d = Path(out_dir) / "images" / cls
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = gen(_rng(seed, "texture-bank", cls, i), size)
        dr.save_png(d / f"{cls}_{i:03d}.png", dr.quantize(img))
    return n


def generate_texture_bank(
    out: str | os.PathLike,
    seed: int = 0,
    *,
    n_per_class: int = DEFAULT_BANK_PER_CLASS,
    size: int = 256,
    force: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Write the DTD stand-in ``<out>/builtin-textures/images/<class>/*.png`` (+ README.txt,
    manifest.json); skipped when its manifest already matches. Returns the manifest."""
    _check_int("seed", seed, 0)
    _check_int("n_per_class", n_per_class, 1)
    _check_int("size", size, 32)
    folder = Path(out) / BANK_DIR
    manifest = {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "dataset": BANK_DIR,
        "layout": "DTD (images/<class>/*.png)",
        "note": "stand-in for DTD generated by adlib; not DTD",
        "seed": int(seed),
        "size": int(size),
        "n_per_class": int(n_per_class),
        "classes": {c: src for c, (_, src) in _BANK.items()},
    }
    if not force and _up_to_date(folder, manifest):
        log.info("texture bank up to date in %s (seed %d), skipped", folder, seed)
        return manifest
    t0 = time.perf_counter()
    log.info("generating texture bank (%d classes x %d) into %s", len(_BANK), n_per_class, folder)
    _prepare(folder, {"images", "README.txt"})
    jobs = [(str(folder), c, int(seed), int(n_per_class), int(size)) for c in _BANK]
    with _progress(len(jobs) * n_per_class, "texture bank", progress) as bar:
        for n in _map(_bank_job, jobs, workers):
            bar.update(n)
    (folder / "README.txt").write_text(
        _BANK_README.format(classes=", ".join(_BANK), seed=seed, n=n_per_class, size=size)
    )
    _finish(folder, manifest)
    log.info("texture bank done in %.1f s", time.perf_counter() - t0)
    return manifest


def _map(fn, jobs, workers):
    """``map`` over jobs, in threads when ``workers > 1`` (results in job order).

    Threads, not processes: numpy, scipy and PIL release the GIL in the heavy parts, so two
    threads nearly halve the time on 2 cores, without pickling or spawn-start pitfalls in
    notebooks and scripts. Every job writes its own files from its own generators, so the output
    does not depend on the number of workers."""
    workers = _workers(workers)
    if workers <= 1 or len(jobs) <= 1:
        yield from map(fn, jobs)
        return
    with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as ex:
        yield from ex.map(fn, jobs)


def _workers(workers: int | None) -> int:
    if workers is not None:
        return max(1, int(workers))
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def _check_int(name, value, lo):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")


def _category_job(args) -> tuple[str, int]:
    """Render one category (one split/group at a time) and write synth and/or synth-weak files."""
    cat, seed, size, n_train, n_test_good, n_per_defect, contrast, strong_dir, weak_dir = args
    written = 0
    for split, n in (("train", n_train), ("test", n_test_good)):
        if strong_dir is None:
            break
        d = Path(strong_dir) / cat / split / "good"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            N, _, _, _ = _render(cat, split, "good", i, seed, size)
            dr.save_png(d / f"{i:03d}.png", dr.quantize(N))
            written += 1
    for defect in CATEGORIES[cat]["defects"]:
        targets = [(strong_dir, 1.0), (weak_dir, contrast)]
        targets = [(Path(t), c) for t, c in targets if t is not None]
        for t, _ in targets:
            (t / cat / "test" / defect).mkdir(parents=True, exist_ok=True)
            (t / cat / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_defect):
            N, D, mask, _ = _render(cat, "test", defect, i, seed, size)
            m = mask.astype(np.uint8) * 255
            for t, c in targets:
                dr.save_png(t / cat / "test" / defect / f"{i:03d}.png", _blend(N, D, c))
                dr.save_png(t / cat / "ground_truth" / defect / f"{i:03d}_mask.png", m)
                written += 1
    return cat, written


def _copy_goods(src: Path, dst: Path, cats) -> None:
    for cat in cats:
        for split in ("train", "test"):
            s, d = src / cat / split / "good", dst / cat / split / "good"
            d.mkdir(parents=True, exist_ok=True)
            for f in sorted(s.glob("*.png")):
                shutil.copyfile(f, d / f.name)


def _manifest(variant: str, seed, size, cats, n_train, n_test_good, n_per_defect, contrast) -> dict:
    return {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "dataset": SYNTH_DIR if variant == "strong" else WEAK_DIR,
        "variant": variant,
        "contrast": float(contrast),
        "blend": "normal + contrast * (defective - normal)",
        "seed": int(seed),
        "size": int(size),
        "image_format": "RGB PNG; masks uint8 0/255 PNG",
        "n_train": int(n_train),
        "n_test_good": int(n_test_good),
        "n_per_defect": int(n_per_defect),
        "categories": {
            c: {
                "kind": CATEGORIES[c]["kind"],
                "source": CATEGORIES[c]["source"],
                "train_good": int(n_train),
                "test_good": int(n_test_good),
                "defects": {d: {"kind": k, "count": int(n_per_defect)} for d, k in CATEGORIES[c]["defects"].items()},
            }
            for c in cats
        },
        "texture_bank": BANK_DIR,
        "note": "built-in synthetic benchmark generated by adlib, not a real dataset",
    }


def generate_benchmark(
    out: str | os.PathLike,
    seed: int = 0,
    *,
    categories: list[str] | None = None,
    n_train: int | None = None,
    n_test_good: int | None = None,
    n_per_defect: int | None = None,
    size: int = 256,
    weak_contrast: float = 0.3,
    force: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Generate ``<out>/synth``, ``<out>/synth-weak`` and ``<out>/builtin-textures``.

    ``out`` is the data root. Counts default to 32 train/good, 10 test/good and 5 images per
    defect type; ``categories`` defaults to all of :data:`CATEGORIES`. A folder whose
    ``manifest.json`` matches the version, seed and parameters is left untouched (fast); any
    other (or ``force=True``) is wiped and regenerated, its manifest written last. ``workers``
    threads render categories in parallel (default: one per CPU core, at most 8); the files do
    not depend on it. ``progress`` shows a tqdm bar; progress is also logged.

    Returns the ``synth`` manifest, plus ``weak_contrast`` and ``paths`` (the three folders).
    """
    _check_int("seed", seed, 0)
    _check_int("size", size, 32)
    n_train = DEFAULT_N_TRAIN if n_train is None else n_train
    n_test_good = DEFAULT_N_TEST_GOOD if n_test_good is None else n_test_good
    n_per_defect = DEFAULT_N_PER_DEFECT if n_per_defect is None else n_per_defect
    _check_int("n_train", n_train, 1)
    _check_int("n_test_good", n_test_good, 1)
    _check_int("n_per_defect", n_per_defect, 1)
    if not 0.0 < float(weak_contrast) <= 1.0:
        raise ValueError(f"weak_contrast must be in (0, 1], got {weak_contrast!r}")
    cats = list(CATEGORIES) if categories is None else list(dict.fromkeys(categories))
    unknown = [c for c in cats if c not in CATEGORIES]
    if unknown or not cats:
        raise DataError(f"unknown synth categories {unknown}; known: {', '.join(CATEGORIES)}")

    out = Path(out)
    t0 = time.perf_counter()
    generate_texture_bank(out, seed, size=size, force=force, workers=workers, progress=progress)
    common = (seed, size, cats, n_train, n_test_good, n_per_defect)
    strong_m = _manifest("strong", *common, 1.0)
    weak_m = _manifest("weak", *common, float(weak_contrast))
    sdir, wdir = out / SYNTH_DIR, out / WEAK_DIR
    need_s = force or not _up_to_date(sdir, strong_m)
    need_w = force or not _up_to_date(wdir, weak_m)
    result = dict(
        strong_m,
        weak_contrast=float(weak_contrast),
        paths={"synth": str(sdir), "synth-weak": str(wdir), "builtin-textures": str(out / BANK_DIR)},
    )
    if not (need_s or need_w):
        log.info("synth benchmark up to date in %s (seed %d), skipped", out, seed)
        return result
    log.info(
        "generating %s into %s: %d categories, seed %d, %dx%d, %d train / %d test good / %d per defect",
        " and ".join(n for n, f in ((SYNTH_DIR, need_s), (WEAK_DIR, need_w)) if f),
        out,
        len(cats),
        seed,
        size,
        size,
        n_train,
        n_test_good,
        n_per_defect,
    )
    if need_s:
        _prepare(sdir, set(CATEGORIES))
    if need_w:
        _prepare(wdir, set(CATEGORIES))
    jobs = [
        (
            c,
            int(seed),
            int(size),
            int(n_train),
            int(n_test_good),
            int(n_per_defect),
            float(weak_contrast),
            str(sdir) if need_s else None,
            str(wdir) if need_w else None,
        )
        for c in cats
    ]
    n_def = sum(len(CATEGORIES[c]["defects"]) for c in cats) * n_per_defect
    total = (len(cats) * (n_train + n_test_good) + n_def) * int(need_s) + n_def * int(need_w)
    with _progress(total, "synth benchmark", progress) as bar:
        for cat, n in _map(_category_job, jobs, workers):
            bar.update(n)
            log.debug("synth: %s done (%d images)", cat, n)
    if need_s:
        _finish(sdir, strong_m)
    if need_w:
        _copy_goods(sdir, wdir, cats)
        _finish(wdir, weak_m)
    log.info("synth benchmark generated in %.1f s", time.perf_counter() - t0)
    return result


__all__ = [
    "BANK_CLASSES",
    "CATEGORIES",
    "GENERATOR_VERSION",
    "Rendered",
    "generate_benchmark",
    "generate_texture_bank",
    "render_sample",
]
