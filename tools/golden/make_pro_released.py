"""Golden fixture for the PRO of GLASS's released code (github.com/cqylunlun/GLASS, ``metrics.compute_pro``).

Usage::

    git clone https://github.com/cqylunlun/GLASS /tmp/ref-glass
    git -C /tmp/ref-glass checkout f788d567db552820d744ca2d93e989265aad8c45
    OMP_NUM_THREADS=1 .venv/bin/python tools/golden/make_pro_released.py --reference /tmp/ref-glass --out tests/golden/

Imports the reference's ``metrics.py`` unmodified (its module-level imports are sklearn, skimage,
cv2, numpy and pandas; no torch) and calls ``metrics.compute_pro(masks, amaps[, num_th])`` on fixed
seeded inputs. Writes ``<out>/pro_released.npz`` (the inputs: masks uint8, maps float32) and
``<out>/pro_released.json`` (provenance, seeds, and the reference's return value of every case in
full float64 precision). ``tests/test_metrics_released.py`` hands the same inputs to
:func:`adlib.metrics.pro_released`.

Inputs (numpy ``default_rng(SEED)``): images with rectangles as ground-truth regions (one image
normal, one region of one pixel width, two rectangles touching only at a corner, so one 8-connected
region), maps = smoothed noise plus a bump on and around each region and a false-positive blob.
The masks go to the reference as float64 {0, 1} arrays and the maps as float32 (what the released
``GLASS._evaluate`` passes: ``np.squeeze(np.array(masks_gt))`` of tensor lists, and the
segmentor's float32 maps), except case ``f64``, whose maps (float32 values) are upcast to float64.
No shims.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

SEED = 20251206


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage

    return np.stack([ndimage.gaussian_filter(im, sigma) for im in x])


def make_inputs(rng: np.random.Generator, n: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` masks (uint8 {0, 1}) with rectangles and float32 maps that partly find them."""
    masks = np.zeros((n, h, w), dtype=np.uint8)
    masks[1, h // 4 : h // 4 + 6, w // 3 : w // 3 + 9] = 1  # one rectangle
    masks[2, 3:11, 5:6] = 1  # one pixel wide
    masks[2, h - 9 : h - 3, w - 12 : w - 4] = 1
    masks[3, 4:9, 4:10] = 1  # two rectangles touching at a corner: one 8-connected region
    masks[3, 9:13, 10:15] = 1
    masks[3, h - 6 : h - 2, 2:5] = 1  # and a third, apart
    for i in range(4, n):  # further images: random rectangles
        for _ in range(rng.integers(1, 3)):
            y0, x0 = rng.integers(0, h - 6), rng.integers(0, w - 6)
            masks[i, y0 : y0 + rng.integers(2, 7), x0 : x0 + rng.integers(2, 7)] = 1
    noise = _blur(rng.standard_normal((n, h, w)), 1.5)
    bump = _blur(masks.astype(np.float64), 1.0) * rng.uniform(0.5, 2.5, size=(n, 1, 1))
    blob = np.zeros((n, h, w))
    for i in range(n):
        y, x = rng.integers(0, h), rng.integers(0, w)
        blob[i, y, x] = 40.0 * rng.uniform(0.2, 1.0)
    maps = 0.4 * noise + bump + _blur(blob, 2.0)
    return masks, maps.astype(np.float32)


def main() -> None:
    args = _common.parse_args(__doc__.splitlines()[0], "pro_released")
    ref = args.reference.resolve()
    commit = _common.commit_of(ref, args.commit)
    sys.path.insert(0, str(ref))
    import metrics as ref_metrics  # noqa: E402  (reference: cqylunlun/GLASS metrics.py)

    rng = np.random.default_rng(SEED)
    cases = {  # name: (n, h, w, dtype given to the reference, quantisation step or None, num_th or None)
        "f32": (4, 32, 32, "float32", None, None),
        "ties": (4, 32, 32, "float32", 0.05, None),
        "f64_rect": (6, 24, 40, "float64", None, None),
        "num_th_50": (4, 32, 32, "float32", None, 50),
    }
    arrays: dict[str, np.ndarray] = {}
    expected: dict[str, float] = {}
    described = {}
    for name, (n, h, w, dtype, step, num_th) in cases.items():
        masks, maps = make_inputs(rng, n, h, w)
        if step is not None:
            maps = (np.round(maps / np.float32(step)) * np.float32(step)).astype(np.float32)
        arrays[f"{name}_masks"] = masks
        arrays[f"{name}_maps"] = maps
        amaps = maps.astype(dtype)
        kwargs = {} if num_th is None else {"num_th": num_th}
        value = ref_metrics.compute_pro(masks.astype(np.float64), amaps, **kwargs)
        expected[name] = float(value)
        described[name] = {
            "shape": [n, h, w],
            "maps_dtype_in_reference": dtype,
            "masks_dtype_in_reference": "float64",
            "quantised_to": step,
            "num_th": 200 if num_th is None else num_th,
            "anomalous_pixels": int(masks.sum()),
        }
        print(f"{name}: compute_pro = {value!r}")

    meta = {
        "component": "PRO of GLASS's released code (metrics.compute_pro)",
        "repo": "https://github.com/cqylunlun/GLASS",
        "commit": commit,
        "generator": "tools/golden/make_pro_released.py",
        "versions": _common.versions("cv2", "skimage", "sklearn", "pandas", "scipy"),
        "seeds": {"inputs_numpy_default_rng": SEED},
        "cases": described,
        "reference_call": "metrics.compute_pro(<name>_masks.astype(float64), <name>_maps.astype(dtype)[, num_th])",
        "expected": expected,
        "shims": [],
    }
    _common.write(args.out, args.name, arrays, meta)


if __name__ == "__main__":
    main()
